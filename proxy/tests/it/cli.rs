//! The `sidepool` binary's command line: `check` validates a config, lists every problem with
//! its line and exits 64 before anything listens.

use std::process::Command;

fn sidepool() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sidepool"))
}

#[test]
fn check_lists_all_three_mistakes_with_line_numbers_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"[admin]
listen = "127.0.0.1:9930"

[[pools]]
name = "app"
protocol = "postgres"
listen = "127.0.0.1:6432"
primary = "127.0.0.1:5432"
mode = "statement-ish"

[pools.limits]
max_open = 5
max_idle = 10
wait_timeot = "5s"
"#,
    )
    .unwrap();
    let out = sidepool()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    for (line, what) in [(9, "mode"), (13, "max_idle"), (14, "wait_timeot")] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&format!("bad.toml:{line}:")) && l.contains(what)),
            "no problem reported for {what} at line {line}:\n{stderr}"
        );
    }
}

#[test]
fn check_prints_the_effective_config_with_defaults_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.toml");
    std::fs::write(
        &path,
        r#"[[pools]]
name = "app"
protocol = "postgres"
listen = "127.0.0.1:6432"
primary = "db.internal:5432"

[[pools.users]]
name = "app"
password = "${SIDEPOOL_TEST_PW}"
"#,
    )
    .unwrap();
    let out = sidepool()
        .args(["check", "--config"])
        .arg(&path)
        .env("SIDEPOOL_TEST_PW", "hunter2-secret")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("max_open = 20"),
        "defaults filled in:\n{stdout}"
    );
    assert!(stdout.contains("wait_timeout = \"5s\""), "{stdout}");
    assert!(
        !stdout.contains("hunter2-secret"),
        "secret printed:\n{stdout}"
    );
}

#[test]
fn running_with_an_invalid_config_exits_64_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[[pools]]\nname = \"x\"\nbogus = 1\n").unwrap();
    let out = sidepool().arg("--config").arg(&path).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_warns_when_a_file_with_inline_passwords_is_readable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inline.toml");
    std::fs::write(
        &path,
        r#"[[pools]]
name = "app"
protocol = "postgres"
listen = "127.0.0.1:6432"
primary = "db.internal:5432"

[[pools.users]]
name = "alice"
password = "inline-hunter2"
"#,
    )
    .unwrap();
    let check = |mode| {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = sidepool()
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains("inline-hunter2"), "{stderr}");
        stderr
    };
    let shared = check(0o644);
    assert!(
        shared.contains("warning") && shared.contains("mode 644") && shared.contains("app/alice"),
        "{shared}"
    );
    assert!(!check(0o600).contains("warning"));
}
