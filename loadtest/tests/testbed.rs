//! The PostgreSQL testbed against real servers, driven by tokio-postgres and psql.

use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use sidepool_loadtest::testbed::{PgAuth, PgOptions, PgServer, TestbedError};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

fn opts(auth: PgAuth) -> PgOptions {
    PgOptions {
        auth,
        ..PgOptions::default()
    }
}

async fn connect(dsn: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Polls `f` until it returns `want` or 10 s pass; returns the last value seen. Yields to the
/// runtime between polls so spawned connection tasks can run (e.g. send `Terminate`).
async fn poll_until<T: PartialEq + Copy>(want: T, mut f: impl FnMut() -> T) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = f();
        if got == want || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn trust_server_answers_tokio_postgres_over_tcp() {
    let pg = PgServer::must_start(&opts(PgAuth::Trust));
    assert_eq!(pg.host(), "127.0.0.1");
    let client = connect(&pg.dsn(pg.superuser(), "", "postgres"))
        .await
        .unwrap();
    let row = client.query_one("SELECT 40 + 2", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    let version = client
        .query_one("SHOW server_version_num", &[])
        .await
        .unwrap();
    assert!(version.get::<_, String>(0).parse::<u32>().unwrap() >= 100_000);
}

/// Logs `user` in with the right password (must work) and a wrong one (must fail with 28P01).
async fn assert_password_login(pg: &PgServer, user: &str, password: &str) {
    pg.create_database(user, user).expect("create database");
    let client = connect(&pg.dsn(user, password, user))
        .await
        .expect("login with the right password");
    let row = client
        .query_one("SELECT current_user::text, current_database()::text", &[])
        .await
        .expect("query as the new user");
    assert_eq!(row.get::<_, String>(0), user);
    assert_eq!(row.get::<_, String>(1), user);

    let err = connect(&pg.dsn(user, "wrong", user))
        .await
        .expect_err("login with a wrong password must fail");
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{err}");
}

#[tokio::test]
async fn scram_user_logs_in_with_right_password_and_gets_28p01_with_wrong_one() {
    let pg = PgServer::must_start(&opts(PgAuth::Scram));
    pg.create_user("app", "s3cret pw", PgAuth::Scram).unwrap();
    let stored = pg
        .psql(
            "postgres",
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'",
        )
        .unwrap();
    assert!(stored.starts_with("SCRAM-SHA-256$"), "{stored}");
    assert_password_login(&pg, "app", "s3cret pw").await;
}

#[tokio::test]
async fn md5_user_logs_in_with_right_password_and_gets_28p01_with_wrong_one() {
    let pg = PgServer::must_start(&opts(PgAuth::Md5));
    pg.create_user("legacy", "0ld'pass", PgAuth::Md5).unwrap();
    let stored = pg
        .psql(
            "postgres",
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'legacy'",
        )
        .unwrap();
    assert!(stored.starts_with("md5"), "{stored}");
    assert_password_login(&pg, "legacy", "0ld'pass").await;
}

#[tokio::test]
async fn scram_server_refuses_a_password_stored_as_md5() {
    let pg = PgServer::must_start(&opts(PgAuth::Scram));
    pg.create_user("old", "pw", PgAuth::Md5).unwrap();
    let err = connect(&pg.dsn("old", "pw", "postgres"))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{err}");
}

#[tokio::test]
async fn superuser_logs_in_over_tcp_with_its_password() {
    let pg = PgServer::must_start(&opts(PgAuth::Scram));
    let dsn = pg.dsn(pg.superuser(), pg.superuser_password(), "postgres");
    let client = connect(&dsn).await.unwrap();
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), pg.superuser());
}

#[tokio::test]
async fn connections_of_counts_client_backends_per_user() {
    let pg = PgServer::must_start(&opts(PgAuth::Scram));
    pg.create_user("counted", "pw", PgAuth::Scram).unwrap();
    pg.create_user("other", "pw", PgAuth::Scram).unwrap();
    assert_eq!(pg.connections_of("counted").unwrap(), 0);

    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(connect(&pg.dsn("counted", "pw", "postgres")).await.unwrap());
    }
    let _other = connect(&pg.dsn("other", "pw", "postgres")).await.unwrap();
    assert_eq!(pg.connections_of("counted").unwrap(), 3);
    assert_eq!(pg.connections_of("other").unwrap(), 1);
    // The psql session that asks is not counted.
    assert_eq!(pg.connections_of(pg.superuser()).unwrap(), 0);

    drop(clients.pop());
    // A backend exits shortly after its client hangs up.
    assert_eq!(
        poll_until(2, || pg.connections_of("counted").unwrap()).await,
        2
    );
}

#[test]
fn drop_stops_the_server_removes_its_dir_and_frees_the_port() {
    let pg = PgServer::must_start(&opts(PgAuth::Trust));
    let (port, data_dir, socket_dir) = (
        pg.port(),
        pg.data_dir().to_owned(),
        pg.socket_dir().to_owned(),
    );
    assert!(data_dir.join("PG_VERSION").is_file());
    assert!(TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err());

    drop(pg);
    assert!(!data_dir.exists());
    assert!(!socket_dir.exists());
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
}

#[tokio::test]
async fn restart_keeps_data_and_port_and_ends_sessions() {
    let mut pg = PgServer::must_start(&opts(PgAuth::Trust));
    pg.psql(
        "postgres",
        "CREATE TABLE kept (v int); INSERT INTO kept VALUES (7);",
    )
    .unwrap();
    let client = connect(&pg.dsn(pg.superuser(), "", "postgres"))
        .await
        .unwrap();
    let port = pg.port();

    pg.restart().unwrap();

    assert_eq!(pg.port(), port);
    assert!(client.simple_query("SELECT 1").await.is_err());
    assert_eq!(pg.psql("postgres", "SELECT v FROM kept").unwrap(), "7");
    let fresh = connect(&pg.dsn(pg.superuser(), "", "postgres"))
        .await
        .unwrap();
    let row = fresh
        .query_one("SELECT count(*) FROM kept", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
}

#[test]
fn options_reach_postgresql_conf() {
    let pg = PgServer::must_start(&PgOptions {
        auth: PgAuth::Trust,
        max_connections: 42,
        extra_conf: vec!["work_mem = '7MB'".into(), "shared_buffers = '16MB'".into()],
        ..PgOptions::default()
    });
    let shown = pg
        .psql(
            "postgres",
            "SHOW max_connections; SHOW work_mem; SHOW shared_buffers; SHOW fsync;",
        )
        .unwrap();
    assert_eq!(shown, "42\n7MB\n16MB\noff");
}

#[test]
fn psql_errors_carry_the_server_message() {
    let pg = PgServer::must_start(&opts(PgAuth::Trust));
    let err = pg
        .psql("postgres", "SELECT * FROM no_such_table")
        .unwrap_err();
    match &err {
        TestbedError::Command { stderr, .. } => {
            assert!(
                stderr.contains("relation \"no_such_table\" does not exist"),
                "{err}"
            )
        }
        other => panic!("expected a Command error, got {other:?}"),
    }
    let err = pg
        .create_user("twice", "pw", PgAuth::Scram)
        .and_then(|()| pg.create_user("twice", "pw", PgAuth::Scram));
    assert!(err.unwrap_err().to_string().contains("already exists"));
}

#[test]
fn bin_points_at_the_servers_own_client_tools() {
    let pg = PgServer::must_start(&opts(PgAuth::Trust));
    let out = std::process::Command::new(pg.bin("psql"))
        .arg("--version")
        .output()
        .unwrap();
    let server = pg.psql("postgres", "SHOW server_version").unwrap();
    let major = server.split('.').next().unwrap();
    let client = String::from_utf8_lossy(&out.stdout);
    assert!(
        client.contains(&format!(" {major}.")),
        "{client} vs {server}"
    );
    assert!(pg.bin("pgbench").is_file());
}

#[test]
fn start_on_a_taken_port_fails_with_the_bind_error_in_the_log_tail() {
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = PgServer::start_on_port(&opts(PgAuth::Trust), port).unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("could not bind"), "{shown}");
}
