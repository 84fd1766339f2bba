//! The MariaDB testbed against real servers, driven by the `mariadb` command-line client.

use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sidepool_loadtest::testbed::{MariaDbOptions, MariaDbServer, TestbedError};

/// The `mariadb` client logging in over TCP as `user`.
fn client(db: &MariaDbServer, user: &str, password: &str) -> Command {
    let mut cmd = Command::new(db.bin("mariadb"));
    cmd.args([
        "--no-defaults",
        "-h",
        db.host(),
        "-P",
        &db.port().to_string(),
    ])
    .args(["-u", user, &format!("--password={password}"), "-N", "-B"]);
    cmd
}

fn query(db: &MariaDbServer, user: &str, password: &str, sql: &str) -> Output {
    client(db, user, password)
        .args(["-e", sql])
        .output()
        .expect("run the mariadb client")
}

/// An idle client session: connected over TCP, waiting on its (open) stdin.
fn idle_session(db: &MariaDbServer, user: &str, password: &str) -> Child {
    client(db, user, password)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the mariadb client")
}

/// Polls `f` until it returns `want` or 10 s pass; returns the last value seen.
fn poll_until(want: usize, mut f: impl FnMut() -> usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = f();
        if got == want || Instant::now() >= deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn mariadb_user_logs_in_over_tcp_with_right_password_and_gets_1045_with_wrong_one() {
    let db = MariaDbServer::must_start(&MariaDbOptions::default());
    db.create_user("app", "s3cret pw").unwrap();
    db.create_database("appdb", "app").unwrap();

    let ok = query(
        &db,
        "app",
        "s3cret pw",
        "SELECT CURRENT_USER(); USE appdb; SELECT DATABASE()",
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "app@%\nappdb\n");

    let refused = query(&db, "app", "wrong", "SELECT 1");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("ERROR 1045"), "{stderr}");

    let root = query(&db, db.superuser(), db.superuser_password(), "SELECT 1");
    assert!(
        root.status.success(),
        "{}",
        String::from_utf8_lossy(&root.stderr)
    );
}

#[test]
fn mariadb_connections_of_counts_sessions_per_user() {
    let db = MariaDbServer::must_start(&MariaDbOptions::default());
    db.create_user("counted", "pw").unwrap();
    assert_eq!(db.connections_of("counted").unwrap(), 0);

    let mut sessions: Vec<Child> = (0..3).map(|_| idle_session(&db, "counted", "pw")).collect();
    assert_eq!(poll_until(3, || db.connections_of("counted").unwrap()), 3);
    // The asking session is not counted.
    assert_eq!(db.connections_of(db.superuser()).unwrap(), 0);

    let mut closed = sessions.pop().unwrap();
    drop(closed.stdin.take()); // EOF: the client quits and disconnects
    closed.wait().unwrap();
    assert_eq!(poll_until(2, || db.connections_of("counted").unwrap()), 2);

    for mut session in sessions {
        session.kill().unwrap();
        session.wait().unwrap();
    }
}

#[test]
fn mariadb_options_reach_the_server() {
    let db = MariaDbServer::must_start(&MariaDbOptions {
        max_connections: 42,
        extra_conf: vec!["max_allowed_packet=8M".into()],
    });
    let shown = db
        .sql("SELECT @@max_connections, @@max_allowed_packet, @@bind_address")
        .unwrap();
    assert_eq!(shown, "42\t8388608\t127.0.0.1");
}

#[test]
fn mariadb_sql_errors_carry_the_server_message() {
    let db = MariaDbServer::must_start(&MariaDbOptions::default());
    let err = db.sql("SELECT * FROM mysql.no_such_table").unwrap_err();
    match &err {
        TestbedError::Command { stderr, .. } => assert!(stderr.contains("ERROR 1146"), "{err}"),
        other => panic!("expected a Command error, got {other:?}"),
    }
}

#[test]
fn mariadb_drop_kills_the_server_removes_its_dir_and_frees_the_port() {
    let db = MariaDbServer::must_start(&MariaDbOptions::default());
    let (port, data_dir) = (db.port(), db.data_dir().to_owned());
    assert!(data_dir.join("mysql").is_dir());
    assert!(TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err());

    drop(db);
    assert!(!data_dir.exists());
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
}
