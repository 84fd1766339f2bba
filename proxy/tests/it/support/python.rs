//! Running the Python driver suites (`tests/python/`) from integration tests: the virtualenv
//! from `scripts/python-venv.sh` (PyPI must be reachable the first time) and pytest with a
//! deadline. A failed step panics with its output; the suites never skip.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::process::Command;

/// Creating the venv and installing the requirements from PyPI (first run only).
pub const VENV_TIMEOUT: Duration = Duration::from_secs(300);
/// One driver's file; it takes a few seconds when everything works.
pub const PYTEST_TIMEOUT: Duration = Duration::from_secs(180);

/// Quiet, a summary line per failure, one line per traceback, nothing written into the tree.
pub const PYTEST_ARGS: [&str; 6] = [
    "-q",
    "-rfE",
    "--tb=line",
    "--show-capture=no",
    "-p",
    "no:cacheprovider",
];

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Stdout and stderr of a finished command, for failure messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` to the end within `limit`, killing it on timeout; panics naming `what`.
pub async fn must_finish(cmd: &mut Command, limit: Duration, what: &str) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The virtualenv's python, after `scripts/python-venv.sh` created or updated it. Panics with
/// the script's message (an install hint when python3 is missing).
pub async fn must_venv_python() -> PathBuf {
    let script = repo_root().join("scripts/python-venv.sh");
    let out = must_finish(
        Command::new("bash").arg(&script),
        VENV_TIMEOUT,
        "scripts/python-venv.sh",
    )
    .await;
    assert!(
        out.status.success(),
        "scripts/python-venv.sh failed ({}); the Python driver suite needs python3 with venv \
         support (Debian: `apt-get install python3 python3-venv`, or `make deps`) and PyPI:\n{}",
        out.status,
        output_text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let python = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(
        python.is_file(),
        "scripts/python-venv.sh printed no python path:\n{}",
        output_text(&out)
    );
    python
}

/// Runs pytest from the repo root with `args` (paths and options) and `env`; panics with
/// pytest's report unless every test passed.
pub async fn must_pass_pytest(args: &[&str], env: &[(&str, &str)]) {
    let python = must_venv_python().await;
    let what = format!("pytest {}", args.join(" "));
    let mut cmd = Command::new(&python);
    cmd.current_dir(repo_root())
        .args(["-m", "pytest"])
        .args(PYTEST_ARGS)
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = must_finish(&mut cmd, PYTEST_TIMEOUT, &what).await;
    // Test output is shown on failure (or with --nocapture): pytest's report comes first.
    println!("{}", output_text(&out));
    assert!(
        out.status.success(),
        "{what} with {env:?} failed ({}): its report is above",
        out.status
    );
}
