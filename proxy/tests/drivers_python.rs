//! Python drivers through sidepool in transaction mode (`max_open = 4`) against a real
//! PostgreSQL: psycopg 3 with every statement server-prepared under a name, and asyncpg with its
//! statement cache and type introspection, 40 concurrent clients each, COPY both ways, a
//! `search_path` that must follow the client across server connections, and error recovery.
//!
//! The suite lives in `tests/python/` at the repo root; these tests start the server and the
//! proxy, prepare the virtualenv with `scripts/python-venv.sh` (PyPI must be reachable the first
//! time) and run pytest on one driver's file, so a failure names the driver.

// Integration tests: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

#[path = "support/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use harness::*;
use sidepool_loadtest::testbed::PgAuth;
use tokio::process::Command;

/// 40 clients per driver share these 4 server connections; a long queue wait is not the
/// failure under test, so waits may last as long as the suite.
const LIMITS: &str = "max_open = 4\nmax_idle = 4\nwait_timeout = \"30s\"";
/// Creating the venv and installing the requirements from PyPI (first run only).
const VENV_TIMEOUT: Duration = Duration::from_secs(300);
/// One driver's file; it takes a few seconds when everything works.
const PYTEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Quiet, a summary line per failure, one line per traceback (assertion diffs still show; it
/// also spares pytest's source formatting, which crashed with "AST constructor recursion depth
/// mismatch" under CPython 3.11.7), nothing written into the source tree.
const PYTEST_ARGS: [&str; 8] = [
    "-q",
    "-rfE",
    "--tb=line",
    "--show-capture=no",
    "-p",
    "no:cacheprovider",
    "-o",
    "asyncio_default_fixture_loop_scope=function",
];

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `postgresql://app:app-secret@127.0.0.1:PORT/app`.
fn url(port: u16) -> String {
    format!("postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{DB}")
}

/// Stdout and stderr of a finished command, for failure messages.
fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` to the end within `limit`, killing it on timeout; panics naming `what`.
async fn must_finish(cmd: &mut Command, limit: Duration, what: &str) -> Output {
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
/// the script's message (an install hint when python3 is missing): the suite never skips.
async fn must_venv_python() -> PathBuf {
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

/// Runs pytest on `target` (relative to the repo root) with the suite's two DSNs; panics with
/// pytest's report unless every test passed.
async fn must_pass_pytest(target: &str, sidepool_dsn: &str, direct_dsn: &str) {
    let python = must_venv_python().await;
    let out = must_finish(
        Command::new(&python)
            .current_dir(repo_root())
            .args(["-m", "pytest"])
            .args(PYTEST_ARGS)
            .arg(target)
            .env("SIDEPOOL_DSN", sidepool_dsn)
            .env("DIRECT_DSN", direct_dsn)
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        PYTEST_TIMEOUT,
        &format!("pytest {target}"),
    )
    .await;
    // Test output is shown on failure (or with --nocapture): pytest's report comes first.
    println!("{}", output_text(&out));
    assert!(
        out.status.success(),
        "pytest {target} with SIDEPOOL_DSN={sidepool_dsn} failed ({}): its report is above",
        out.status
    );
}

/// Starts PostgreSQL and a transaction-mode sidepool and runs `tests/python/<file>` through it.
async fn must_pass_through_sidepool(file: &str) {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(&pg, &PoolSpec::transaction(LIMITS)).await;
    must_pass_pytest(
        &format!("tests/python/{file}"),
        &url(proxy.addr.port()),
        &url(pg.port()),
    )
    .await;
    // The 40 clients really took turns on at most 4 server connections.
    let stats = proxy.stats();
    assert!(stats.open <= 4 && stats.wait_count > 0, "{stats:?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_prepared_statements_copy_session_state_and_errors_through_transaction_pool() {
    must_pass_through_sidepool("test_psycopg.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_prepared_statements_copy_types_session_state_and_errors_through_transaction_pool()
{
    must_pass_through_sidepool("test_asyncpg.py").await;
}

/// The control: with both DSNs on the server itself the whole suite passes, so a failure
/// through sidepool is sidepool's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_suite_passes_straight_against_postgresql() {
    let pg = must_start_pg(PgAuth::Scram);
    must_pass_pytest("tests/python", &url(pg.port()), &url(pg.port())).await;
}
