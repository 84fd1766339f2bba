//! Read/write split through sidepool against a real MariaDB primary and GTID replica (issue 6,
//! docs/design.md §6): `@@server_id` tells which server answered; sysbench runs with the split on.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::support::mysql::{DB, PASSWORD, USER};
use mysql_async::prelude::Queryable;
use sidepool::Server;
use sidepool::service::Service;
use sidepool_loadtest::testbed::{MariaDbOptions, MariaDbReplica, MariaDbServer};

struct Cluster {
    primary: MariaDbServer,
    replica: MariaDbReplica,
}

fn must_start_cluster() -> Cluster {
    let primary = MariaDbServer::must_start(&MariaDbOptions::default());
    primary.create_user(USER, PASSWORD).expect("create user");
    primary.create_database(DB, USER).expect("create database");
    let replica = primary.must_start_replica();
    Cluster { primary, replica }
}

async fn must_start_proxy(cluster: &Cluster, limits: &str) -> Server {
    let text = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[pools]]
name = "test"
protocol = "mysql"
listen = "127.0.0.1:0"
mode = "transaction"
primary = "127.0.0.1:{primary}"
replicas = ["127.0.0.1:{replica}"]

[pools.limits]
{limits}

[pools.routing]
split = true

[[pools.users]]
name = "{USER}"
password = "{PASSWORD}"
"#,
        primary = cluster.primary.port(),
        replica = cluster.replica.port(),
    );
    let config = sidepool_config::parse(&text, "test.toml", &|_| None)
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{text}"));
    Server::start(&config).await.expect("sidepool starts")
}

fn port(server: &Server) -> u16 {
    server.local_addr("test").expect("pool bound").port()
}

async fn must_connect(server: &Server) -> mysql_async::Conn {
    let url = format!(
        "mysql://{USER}:{PASSWORD}@127.0.0.1:{}/{DB}?prefer_socket=false",
        port(server)
    );
    let opts = mysql_async::Opts::from_url(&url).expect("url");
    mysql_async::Conn::new(opts)
        .await
        .expect("connect through sidepool")
}

/// Waits until the replica is in rotation (a client logged in and a check passed).
async fn must_see_replica_in_rotation(server: &Server) {
    let svc: Arc<dyn Service> = server.pool("test").expect("pool exists");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !svc.core().replicas[0].in_rotation() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica not in rotation within 10 s: {:?}",
            svc.core().replicas[0].state()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn server_id(conn: &mut mysql_async::Conn) -> u32 {
    conn.query_first::<u32, _>("SELECT @@server_id")
        .await
        .expect("SELECT @@server_id")
        .expect("a row")
}

#[tokio::test]
async fn server_id_is_the_replicas_in_autocommit_and_the_primarys_inside_a_transaction() {
    let cluster = must_start_cluster();
    let (primary_id, replica_id) = (cluster.primary.server_id(), cluster.replica.server_id());
    assert_ne!(primary_id, replica_id);
    let server = must_start_proxy(&cluster, "max_open = 4").await;
    let mut conn = must_connect(&server).await;
    must_see_replica_in_rotation(&server).await;

    assert_eq!(server_id(&mut conn).await, replica_id, "autocommit read");
    let prepared: Option<u32> = conn
        .exec_first("SELECT @@server_id + ?", (0,))
        .await
        .expect("prepared read");
    assert_eq!(prepared, Some(replica_id), "prepared autocommit read");

    conn.query_drop("BEGIN").await.unwrap();
    assert_eq!(server_id(&mut conn).await, primary_id, "inside BEGIN");
    conn.query_drop("COMMIT").await.unwrap();

    conn.query_drop("START TRANSACTION READ ONLY")
        .await
        .unwrap();
    assert_eq!(server_id(&mut conn).await, replica_id, "inside READ ONLY");
    conn.query_drop("COMMIT").await.unwrap();

    conn.query_drop("CREATE TABLE IF NOT EXISTS t (v int)")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    let seen: Option<i64> = conn
        .query_first("SELECT count(*) FROM t WHERE v = 1")
        .await
        .unwrap();
    assert_eq!(
        seen,
        Some(1),
        "read-your-writes: the read after the insert sees it"
    );
    assert_eq!(
        server_id(&mut conn).await,
        primary_id,
        "within read_your_writes, reads stay on the primary"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(server_id(&mut conn).await, replica_id, "after the window");
    drop(conn);
    server.shutdown().await;
}

/// Runs sysbench `script` with `extra` arguments through sidepool; asserts it succeeded.
async fn must_run_sysbench(port: u16, script: &str, phase: &str, extra: &[&str]) -> String {
    let mut args: Vec<String> = vec![
        script.into(),
        "--db-driver=mysql".into(),
        "--mysql-host=127.0.0.1".into(),
        format!("--mysql-port={port}"),
        format!("--mysql-user={USER}"),
        format!("--mysql-password={PASSWORD}"),
        format!("--mysql-db={DB}"),
        "--tables=4".into(),
        "--table-size=10000".into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args.push(phase.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("sysbench")
            .args(args)
            .output()
            .expect("sysbench installed (scripts/install-deps.sh)")
    })
    .await
    .expect("sysbench task");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sysbench {script} {phase} {extra:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// sysbench ran without an error. Only InnoDB deadlocks (1213) are let through
/// (`--mysql-ignore-errors=1213`, sysbench retries the transaction): oltp_read_write's random
/// DELETE/INSERT pairs deadlock now and then on the server itself, with or without a proxy.
/// Any other error stops sysbench, and deadlocks must stay rare.
fn assert_no_errors(stdout: &str) {
    let count = |label: &str| -> f64 {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no `{label}` in sysbench's report:\n{stdout}"))
    };
    let transactions = count("transactions:");
    let deadlocks = count("ignored errors:");
    assert!(transactions > 0.0, "{stdout}");
    assert!(
        deadlocks <= transactions / 100.0,
        "{deadlocks} deadlocks in {transactions} transactions:\n{stdout}"
    );
    for line in stdout
        .lines()
        .filter(|l| l.contains("transactions:") || l.contains("errors:"))
    {
        eprintln!("sysbench: {}", line.trim());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysbench_oltp_read_write_with_split_on_has_no_errors_and_reads_reach_the_replica() {
    let cluster = must_start_cluster();
    let server = must_start_proxy(&cluster, "max_open = 8\nwait_timeout = \"60s\"").await;
    let conn = must_connect(&server).await;
    must_see_replica_in_rotation(&server).await;
    drop(conn);
    let port = port(&server);
    must_run_sysbench(port, "oltp_read_write", "prepare", &[]).await;
    cluster
        .replica
        .wait_caught_up()
        .expect("replica catches up");

    let run = ["--threads=16", "--time=5", "--mysql-ignore-errors=1213"];
    assert_no_errors(&must_run_sysbench(port, "oltp_read_write", "run", &run).await);
    // oltp_read_write keeps its reads inside BEGIN/COMMIT (primary). Without transactions the
    // read-only script's selects are autocommit reads, which must reach the replica.
    // (`oltp_read_write --skip-trx` itself fails on any server: its delete and re-insert of the
    // same id race between threads without a transaction.)
    let skip_trx = [run.as_slice(), &["--skip-trx=on"]].concat();
    assert_no_errors(&must_run_sysbench(port, "oltp_read_only", "run", &skip_trx).await);

    let metrics = must_get_metrics(&server).await;
    let replica_queries = metrics
        .lines()
        .find(|l| l.starts_with("sidepool_queries_total{pool=\"test\",route=\"replica\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        replica_queries > 100.0,
        "reads did not reach the replica:\n{metrics}"
    );
    server.shutdown().await;
}

/// The admin listener's `/metrics` text.
async fn must_get_metrics(server: &Server) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server.admin_addr())
        .await
        .expect("connect to the admin listener");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: sidepool\r\nConnection: close\r\n\r\n")
        .await
        .expect("send request");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read response");
    String::from_utf8_lossy(&buf).into_owned()
}
