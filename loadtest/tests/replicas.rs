//! Testbed replicas against real servers: a PostgreSQL 15 streaming replica and a MariaDB GTID
//! replica, checked through real drivers (tokio-postgres) and the servers' own clients.

use std::time::{Duration, Instant};

use std::net::{Ipv4Addr, TcpListener};
use std::process::{Command, Output};

use sidepool_loadtest::testbed::{MariaDbOptions, MariaDbServer, PgAuth, PgOptions, PgServer};
use tokio_postgres::{Client, NoTls};

/// A small primary: replicas double the servers a test runs, and CI has 2 cores.
fn small_pg() -> PgServer {
    PgServer::must_start(&PgOptions {
        auth: PgAuth::Scram,
        max_connections: 20,
        extra_conf: vec!["shared_buffers = '16MB'".into()],
        ..PgOptions::default()
    })
}

async fn connect(dsn: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls)
        .await
        .unwrap_or_else(|err| panic!("connecting to {dsn}: {err}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Polls `f` every 20 ms until it is true or 10 s pass; returns the last answer.
fn poll_until(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn count_rows(client: &Client, v: i32) -> i64 {
    client
        .query_one("SELECT count(*) FROM t WHERE v = $1", &[&v])
        .await
        .expect("counting rows")
        .get(0)
}

#[tokio::test]
async fn pg_replica_is_in_recovery_and_shows_primary_rows_after_wait_caught_up() {
    let primary = small_pg();
    // Created before the replica exists: the base backup carries role and table over.
    primary
        .create_user("app", "pw", PgAuth::Scram)
        .expect("create role");
    primary
        .psql(
            "postgres",
            "CREATE TABLE t (v int); GRANT SELECT ON t TO app;",
        )
        .expect("create table");
    let replica = primary.must_start_replica();
    assert_ne!(replica.port(), primary.port());
    assert_eq!(replica.primary_port(), primary.port());
    assert!(replica.is_in_recovery().unwrap());
    assert!(!primary.is_in_recovery().unwrap());

    primary
        .psql("postgres", "INSERT INTO t VALUES (1)")
        .expect("insert");
    replica.wait_caught_up().expect("replica catches up");

    let app = connect(&replica.dsn("app", "pw", "postgres")).await;
    assert_eq!(count_rows(&app, 1).await, 1);
    let in_recovery: bool = app
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(in_recovery);
    let write = app.simple_query("INSERT INTO t VALUES (2)").await;
    assert!(write.is_err(), "a standby must refuse writes");
}

#[tokio::test]
async fn pg_paused_replay_keeps_new_rows_invisible_until_resumed() {
    let primary = small_pg();
    primary
        .psql("postgres", "CREATE TABLE t (v int)")
        .expect("create table");
    let replica = primary.must_start_replica();
    let reader = connect(&replica.dsn(
        replica.superuser(),
        replica.superuser_password(),
        "postgres",
    ))
    .await;

    replica.pause_replay().expect("pause");
    primary
        .psql("postgres", "INSERT INTO t VALUES (1)")
        .expect("insert");
    // The WAL with the row has arrived; only the paused replay holds it back.
    replica.wait_received().expect("WAL received");
    // The pause takes hold when the startup process reaches the next record.
    assert!(poll_until(|| replica.is_replay_paused().unwrap()));
    assert_eq!(count_rows(&reader, 1).await, 0);

    replica.resume_replay().expect("resume");
    replica.wait_caught_up().expect("replica catches up");
    assert_eq!(count_rows(&reader, 1).await, 1);
}

#[tokio::test]
async fn pg_stopped_replica_refuses_connections_and_catches_up_after_start_again() {
    let primary = small_pg();
    primary
        .psql("postgres", "CREATE TABLE t (v int)")
        .expect("create table");
    let mut replica = primary.must_start_replica();
    let dsn = replica.dsn(
        replica.superuser(),
        replica.superuser_password(),
        "postgres",
    );

    replica.stop().expect("stop replica");
    assert!(!replica.is_running());
    assert!(tokio_postgres::connect(&dsn, NoTls).await.is_err());
    primary
        .psql("postgres", "INSERT INTO t VALUES (1)")
        .expect("insert while the replica is down");

    replica.start_again().expect("start replica again");
    assert!(replica.is_running());
    replica.wait_caught_up().expect("replica catches up");
    let reader = connect(&dsn).await;
    assert_eq!(count_rows(&reader, 1).await, 1);
}

/// The `mariadb` client logging in over TCP as `user`, running `sql` in batch mode.
fn client_output(db: &MariaDbServer, user: &str, password: &str, sql: &str) -> Output {
    Command::new(db.bin("mariadb"))
        .args([
            "--no-defaults",
            "-h",
            db.host(),
            "-P",
            &db.port().to_string(),
        ])
        .args(["-u", user, &format!("--password={password}")])
        .args(["-N", "-B", "-e", sql])
        .output()
        .expect("run the mariadb client")
}

/// `sql`'s output for root over TCP; panics with the client's stderr if it fails.
fn mariadb_query(db: &MariaDbServer, sql: &str) -> String {
    let out = client_output(db, db.superuser(), db.superuser_password(), sql);
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
}

fn small_mariadb() -> MariaDbServer {
    MariaDbServer::must_start(&MariaDbOptions {
        max_connections: 20,
        extra_conf: Vec::new(),
    })
}

#[test]
fn mariadb_replica_shows_primary_rows_has_its_own_server_id_and_is_read_only() {
    let primary = small_mariadb();
    // Before the replica exists: replayed from the primary's binlog.
    primary.create_user("app", "pw").expect("create user");
    primary.create_database("appdb", "app").expect("create db");
    primary
        .sql("CREATE TABLE appdb.t (v INT PRIMARY KEY)")
        .expect("create table");
    let replica = primary.must_start_replica();
    assert_eq!(replica.primary_port(), primary.port());

    primary
        .sql("INSERT INTO appdb.t VALUES (1)")
        .expect("insert");
    replica.wait_caught_up().expect("replica catches up");
    assert_eq!(mariadb_query(&replica, "SELECT v FROM appdb.t"), "1");

    let ids = (
        mariadb_query(&primary, "SELECT @@server_id"),
        mariadb_query(&replica, "SELECT @@server_id"),
    );
    assert_ne!(ids.0, ids.1);
    assert_eq!(ids.0, primary.server_id().to_string());
    assert_eq!(ids.1, replica.server_id().to_string());
    assert_eq!(mariadb_query(&replica, "SELECT @@read_only"), "1");
    let write = client_output(&replica, "app", "pw", "INSERT INTO appdb.t VALUES (2)");
    assert!(!write.status.success(), "a read-only replica took a write");
    let stderr = String::from_utf8_lossy(&write.stderr);
    assert!(stderr.contains("ERROR 1290"), "{stderr}");
    let status = replica.replica_status().expect("slave status");
    assert_eq!(status["Slave_IO_Running"], "Yes", "{status:?}");
    assert_eq!(status["Slave_SQL_Running"], "Yes", "{status:?}");
}

#[test]
fn mariadb_stopped_sql_thread_keeps_new_rows_invisible_until_started() {
    let primary = small_mariadb();
    primary
        .sql("CREATE DATABASE d; CREATE TABLE d.t (v INT PRIMARY KEY)")
        .expect("create table");
    let replica = primary.must_start_replica();

    replica.stop_replication().expect("stop SQL thread");
    primary.sql("INSERT INTO d.t VALUES (1)").expect("insert");
    // The event has arrived; only the stopped applier holds it back.
    replica.wait_received().expect("event fetched");
    assert_eq!(mariadb_query(&replica, "SELECT COUNT(*) FROM d.t"), "0");
    assert_eq!(replica.replica_status().unwrap()["Slave_SQL_Running"], "No");

    replica.start_replication().expect("start SQL thread");
    replica.wait_caught_up().expect("replica catches up");
    assert_eq!(mariadb_query(&replica, "SELECT COUNT(*) FROM d.t"), "1");
}

#[test]
fn mariadb_stopped_replica_catches_up_after_start_again() {
    let primary = small_mariadb();
    primary
        .sql("CREATE DATABASE d; CREATE TABLE d.t (v INT PRIMARY KEY)")
        .expect("create table");
    let mut replica = primary.must_start_replica();
    let port = replica.port();

    replica.stop().expect("stop replica");
    assert!(!replica.is_running());
    assert!(TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok());
    primary
        .sql("INSERT INTO d.t VALUES (1)")
        .expect("insert while the replica is down");

    replica.start_again().expect("start replica again");
    assert_eq!(replica.port(), port);
    replica.wait_caught_up().expect("replica catches up");
    assert_eq!(mariadb_query(&replica, "SELECT COUNT(*) FROM d.t"), "1");
}
