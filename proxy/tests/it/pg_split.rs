//! Read/write split through sidepool against a real PostgreSQL 15 primary and streaming replica
//! (issue 6, docs/design.md §6). `pg_is_in_recovery()` tells which server answered: true on the replica.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::harness::{
    DB, PASSWORD, PoolSpec, USER, config_text, db_message, http_get, must_connect, must_eventually,
    must_one,
};
use sidepool::Server;
use sidepool::route::health::CHECK_INTERVAL;
use sidepool::service::Service;
use sidepool_loadtest::testbed::{PgAuth, PgOptions, PgReplica, PgServer};
use tokio_postgres::Client;

/// A primary with role `app`, database `app` owned by it, table `t` and sequence `s`, and a
/// streaming replica of it, caught up.
struct Cluster {
    primary: PgServer,
    replica: PgReplica,
}

fn must_start_cluster() -> Cluster {
    let primary = PgServer::must_start(&PgOptions {
        auth: PgAuth::Scram,
        max_connections: 30,
        extra_conf: vec!["shared_buffers = '16MB'".into()],
        ..PgOptions::default()
    });
    primary
        .create_user(USER, PASSWORD, PgAuth::Scram)
        .expect("create role");
    primary.create_database(DB, USER).expect("create database");
    primary
        .psql(
            DB,
            "CREATE TABLE t (v int); CREATE SEQUENCE s; \
             ALTER TABLE t OWNER TO app; ALTER SEQUENCE s OWNER TO app;",
        )
        .expect("create table and sequence");
    let replica = primary.must_start_replica();
    replica.wait_caught_up().expect("replica catches up");
    Cluster { primary, replica }
}

/// sidepool in transaction mode with `split = true` in front of `cluster`; `routing` adds
/// lines to `[pools.routing]`.
async fn must_start_proxy(cluster: &Cluster, routing: &str) -> Server {
    let replica = format!("127.0.0.1:{}", cluster.replica.port());
    let text = config_text(
        &format!("127.0.0.1:{}", cluster.primary.port()),
        &PoolSpec::transaction("max_open = 4").split(&[replica], routing),
    );
    let config = sidepool_config::parse(&text, "test.toml", &|_| None)
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{text}"));
    Server::start(&config).await.expect("sidepool starts")
}

fn dsn(server: &Server) -> String {
    let port = server.local_addr("test").expect("pool bound").port();
    format!(
        "host=127.0.0.1 port={port} user={USER} password={PASSWORD} dbname={DB} connect_timeout=10"
    )
}

fn service(server: &Server) -> Arc<dyn Service> {
    server.pool("test").expect("pool exists")
}

/// Waits until the replica is in rotation (its first health check passed).
async fn must_see_replica_in_rotation(server: &Server) {
    let svc = service(server);
    must_eventually(Duration::from_secs(10), "replica in rotation", || {
        let in_rotation = svc.core().replicas[0].in_rotation();
        async move { in_rotation }
    })
    .await;
}

/// Whether `sql` (answering a boolean, simple protocol) was answered by the replica.
async fn on_replica(client: &Client, sql: &str) -> bool {
    let rows = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", db_message(&e)));
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(|v| v == "t"),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

const IN_RECOVERY: &str = "SELECT pg_is_in_recovery()";

#[tokio::test]
async fn split_sends_autocommit_reads_and_read_only_transactions_to_the_replica_and_the_rest_to_the_primary()
 {
    let cluster = must_start_cluster();
    let server = must_start_proxy(&cluster, "").await;
    let client = must_connect(&dsn(&server)).await;
    must_see_replica_in_rotation(&server).await;

    assert!(on_replica(&client, IN_RECOVERY).await, "autocommit read");
    let extended: bool = must_one(&client, IN_RECOVERY).await.get(0);
    assert!(extended, "autocommit read, extended protocol");

    client.batch_execute("BEGIN").await.unwrap();
    assert!(!on_replica(&client, IN_RECOVERY).await, "inside BEGIN");
    client.batch_execute("COMMIT").await.unwrap();

    client.batch_execute("BEGIN READ ONLY").await.unwrap();
    assert!(
        on_replica(&client, IN_RECOVERY).await,
        "inside BEGIN READ ONLY"
    );
    let again: bool = must_one(&client, IN_RECOVERY).await.get(0);
    assert!(
        again,
        "the whole READ ONLY transaction stays on the replica"
    );
    client.batch_execute("COMMIT").await.unwrap();

    let hinted = format!("/* sidepool:primary */ {IN_RECOVERY}");
    assert!(!on_replica(&client, &hinted).await, "primary hint");

    let next: i64 = must_one(&client, "SELECT nextval('s')").await.get(0);
    assert_eq!(next, 1, "nextval runs on the primary");
    let inserted: i32 = must_one(
        &client,
        "WITH x AS (INSERT INTO t VALUES (5) RETURNING v) SELECT v FROM x",
    )
    .await
    .get(0);
    assert_eq!(inserted, 5, "a writable CTE runs on the primary");

    let metrics = http_get(server.admin_addr(), "/metrics").await.text();
    let replica = format!("127.0.0.1:{}", cluster.replica.port());
    assert!(
        metrics.contains(&format!(
            "sidepool_backend_up{{pool=\"test\",backend=\"{replica}\",role=\"replica\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "sidepool_replica_lag_seconds{{pool=\"test\",backend=\"{replica}\"}}"
        )),
        "{metrics}"
    );
    let replica_queries = metrics
        .lines()
        .find(|l| l.starts_with("sidepool_queries_total{pool=\"test\",route=\"replica\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no replica query counter:\n{metrics}"));
    assert!(replica_queries >= 4.0, "{metrics}");
    let pools = http_get(server.admin_addr(), "/pools").await.text();
    assert!(
        pools.contains("\"role\":\"replica\"") && pools.contains(&replica),
        "{pools}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn two_hundred_insert_then_read_pairs_all_see_their_own_row() {
    let cluster = must_start_cluster();
    let server = must_start_proxy(&cluster, "").await;
    let client = must_connect(&dsn(&server)).await;
    must_see_replica_in_rotation(&server).await;
    let insert = client.prepare("INSERT INTO t VALUES ($1)").await.unwrap();
    let count = client
        .prepare("SELECT count(*) FROM t WHERE v = $1")
        .await
        .unwrap();
    for v in 1000..1200i32 {
        client.execute(&insert, &[&v]).await.unwrap();
        let n: i64 = client.query_one(&count, &[&v]).await.unwrap().get(0);
        assert_eq!(n, 1, "row {v} not seen right after its insert");
    }
    // Outside the window, reads go back to the replica.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(on_replica(&client, IN_RECOVERY).await);
    server.shutdown().await;
}

#[tokio::test]
async fn a_write_pipelined_behind_a_replica_read_runs_on_the_primary() {
    let cluster = must_start_cluster();
    let server = must_start_proxy(&cluster, "read_your_writes = \"0s\"").await;
    let client = must_connect(&dsn(&server)).await;
    must_see_replica_in_rotation(&server).await;
    let read = client.prepare(IN_RECOVERY).await.unwrap();
    let insert = client.prepare("INSERT INTO t VALUES ($1)").await.unwrap();
    for v in 0..20i32 {
        // Polled together, tokio-postgres sends both before reading either answer: the write
        // arrives while the read's replica connection is still attached.
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&v];
        let (r, w) = tokio::join!(
            client.query_one(&read, &[]),
            client.execute(&insert, &params)
        );
        let r: bool = r
            .unwrap_or_else(|e| panic!("read: {}", db_message(&e)))
            .get(0);
        assert!(r, "the read ran on the replica");
        w.unwrap_or_else(|e| panic!("write {v}: {}", db_message(&e)));
        let (r, w) = tokio::join!(
            on_replica(&client, IN_RECOVERY),
            client.simple_query("INSERT INTO t VALUES (-1)"),
        );
        assert!(r, "the simple-protocol read ran on the replica");
        w.unwrap_or_else(|e| panic!("simple write {v}: {}", db_message(&e)));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn with_the_replica_stopped_twenty_reads_in_a_row_succeed_on_the_primary() {
    let mut cluster = must_start_cluster();
    let server = must_start_proxy(&cluster, "").await;
    let client = must_connect(&dsn(&server)).await;
    must_see_replica_in_rotation(&server).await;
    assert!(
        on_replica(&client, IN_RECOVERY).await,
        "an idle replica connection exists"
    );

    cluster.replica.stop().expect("stop replica");
    for i in 0..20 {
        assert!(
            !on_replica(&client, IN_RECOVERY).await,
            "read {i} answered by the primary"
        );
    }
    assert!(!service(&server).core().replicas[0].in_rotation());
    server.shutdown().await;
}

/// The replica's own view of its lag, as the health check computes it.
async fn replica_lag(direct: &Client) -> f64 {
    let row = direct
        .query_one(
            &format!(
                "SELECT ({})::float8",
                sidepool::pg::health::LAG_QUERY.replace("SELECT pg_is_in_recovery(), ", "")
            ),
            &[],
        )
        .await
        .expect("lag query");
    row.get::<_, Option<f64>>(0).unwrap_or(0.0)
}

#[tokio::test]
async fn with_replay_paused_beyond_max_replica_lag_reads_leave_the_replica_within_one_check_and_return_after_resume()
 {
    let cluster = must_start_cluster();
    let server = must_start_proxy(&cluster, "max_replica_lag = \"1s\"").await;
    let client = must_connect(&dsn(&server)).await;
    must_see_replica_in_rotation(&server).await;
    assert!(on_replica(&client, IN_RECOVERY).await);
    let direct = must_connect(&cluster.replica.dsn(
        cluster.replica.superuser(),
        cluster.replica.superuser_password(),
        "postgres",
    ))
    .await;

    cluster.replica.pause_replay().expect("pause replay");
    cluster
        .primary
        .psql(DB, "INSERT INTO t VALUES (1)")
        .expect("insert on the primary");
    cluster.replica.wait_received().expect("WAL received");
    // From the moment the replica's own lag passes max_replica_lag, the next check takes it out.
    must_eventually(Duration::from_secs(20), "lag above 1s", || {
        let direct = &direct;
        async move { replica_lag(direct).await > 1.0 }
    })
    .await;
    let over = Instant::now();
    must_eventually(
        CHECK_INTERVAL + Duration::from_millis(900),
        "reads leave the lagging replica",
        || {
            let client = &client;
            async move { !on_replica(client, IN_RECOVERY).await }
        },
    )
    .await;
    assert!(over.elapsed() < CHECK_INTERVAL + Duration::from_secs(1));
    for _ in 0..5 {
        assert!(
            !on_replica(&client, IN_RECOVERY).await,
            "stays off while lagging"
        );
    }

    cluster.replica.resume_replay().expect("resume replay");
    cluster.replica.wait_caught_up().expect("caught up");
    must_eventually(
        CHECK_INTERVAL * 5,
        "reads return to the replica after resume",
        || {
            let client = &client;
            async move { on_replica(client, IN_RECOVERY).await }
        },
    )
    .await;
    server.shutdown().await;
}
