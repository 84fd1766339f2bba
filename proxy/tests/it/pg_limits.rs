//! The hard limits against a real PostgreSQL: the server never sees more than `max_open`
//! connections, exhaustion fails with 53300 naming the pool and counts, `max_waiting` and
//! `max_clients` reject at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::harness::*;
use sidepool_loadtest::testbed::PgAuth;
use tokio_postgres::types::Type;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_never_sees_more_than_max_open_under_200_clients() {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(
        &pg,
        &PoolSpec::transaction("max_open = 10\nmax_idle = 10\nwait_timeout = \"30s\""),
    )
    .await;
    let direct = must_connect_direct(&pg).await;
    direct
        .batch_execute("CREATE TABLE hits (n int)")
        .await
        .unwrap();

    let sampler = PeakSampler::start(direct);

    let errors = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for i in 0..200 {
        let (dsn, errors) = (proxy.app_dsn(), errors.clone());
        clients.push(tokio::spawn(async move {
            let c = must_connect(&dsn).await;
            for j in 0..10 {
                let r = if j % 2 == 0 {
                    c.simple_query(
                        "BEGIN; INSERT INTO hits VALUES (1); SELECT pg_sleep(0.001); COMMIT",
                    )
                    .await
                    .map(drop)
                } else {
                    one(&c, "SELECT $1::int + 1", &[(&i, Type::INT4)])
                        .await
                        .map(drop)
                };
                if let Err(e) = r {
                    eprintln!("client {i}: {}", db_message(&e));
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let peak = sampler.peak().await;

    assert_eq!(errors.load(Ordering::Relaxed), 0, "queries failed");
    assert!(
        peak <= 10,
        "server saw {peak} connections of the pool's user; max_open is 10"
    );
    assert!(
        peak >= 2,
        "the sampler saw {peak} connections: the load did not run through the pool"
    );
    let direct = must_connect_direct(&pg).await;
    let rows: i64 = direct
        .query_one("SELECT count(*) FROM hits", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 200 * 5);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_pool_fails_after_wait_timeout_with_53300_naming_pool_and_counts() {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(
        &pg,
        &PoolSpec::transaction("max_open = 2\nmax_idle = 2\nwait_timeout = \"1s\""),
    )
    .await;
    let (a, b, c) = (
        proxy.must_connect().await,
        proxy.must_connect().await,
        proxy.must_connect().await,
    );
    a.batch_execute("BEGIN; SELECT 1").await.unwrap();
    b.batch_execute("BEGIN; SELECT 1").await.unwrap();

    let started = Instant::now();
    let err = c
        .simple_query("SELECT 1")
        .await
        .expect_err("both connections are held");
    let waited = started.elapsed();
    assert_eq!(sqlstate(&err), "53300");
    let msg = err.as_db_error().unwrap().message().to_owned();
    assert!(msg.starts_with("sidepool:"), "{msg}");
    assert!(
        msg.contains("\"test\"") && msg.contains("2/2 in use"),
        "message must name pool and counts: {msg}"
    );
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "failed after {waited:?}, wait_timeout is 1s"
    );

    // The client stays usable: once a transaction ends its query goes through.
    a.batch_execute("COMMIT").await.unwrap();
    let row = must_one(&c, "SELECT 41 + 1").await;
    assert_eq!(row.get::<_, i32>(0), 42);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_waiting_fails_at_once() {
    let pg = must_start_pg(PgAuth::Scram);
    let spec =
        PoolSpec::transaction("max_open = 1\nmax_idle = 1\nwait_timeout = \"5s\"\nmax_waiting = 1");
    let proxy = Proxy::must_start(&pg, &spec).await;
    let holder = proxy.must_connect().await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();

    let waiter = proxy.must_connect().await;
    let waiting = tokio::spawn(async move { waiter.simple_query("SELECT 1").await.map(drop) });
    must_eventually(
        Duration::from_secs(5),
        "the second client queues",
        || async { proxy.stats().waiting == 1 },
    )
    .await;

    let third = proxy.must_connect().await;
    let started = Instant::now();
    let err = third
        .simple_query("SELECT 1")
        .await
        .expect_err("max_waiting reached");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "rejection must be immediate, took {:?}",
        started.elapsed()
    );
    assert_eq!(sqlstate(&err), "53300");
    assert!(
        err.as_db_error().unwrap().message().contains("1 waiting"),
        "{err}"
    );

    holder.batch_execute("COMMIT").await.unwrap();
    waiting
        .await
        .unwrap()
        .expect("the queued client gets the connection");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_beyond_max_clients_are_refused_with_53300() {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(&pg, &PoolSpec::transaction("max_clients = 2")).await;
    let _a = proxy.must_connect().await;
    let _b = proxy.must_connect().await;
    let err = connect(&proxy.app_dsn())
        .await
        .expect_err("third client over max_clients");
    assert_eq!(sqlstate(&err), "53300");
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("max_clients 2"),
        "{err}"
    );
    drop(_a);
    must_eventually(
        Duration::from_secs(5),
        "a freed client slot is reusable",
        || async { connect(&proxy.app_dsn()).await.is_ok() },
    )
    .await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_select_200_clients_through_max_open_10_stays_within_limit() {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(
        &pg,
        &PoolSpec::transaction("max_open = 10\nmax_idle = 10\nwait_timeout = \"30s\""),
    )
    .await;
    must_pgbench_init(&pg).await;
    let sampler = PeakSampler::start(must_connect_direct(&pg).await);
    let run = pg_tool(&pg, "pgbench", proxy.addr.port())
        .args(["-S", "-c", "200", "-j", "2", "-T", "5", "-n"])
        .output()
        .await
        .unwrap();
    let peak = sampler.peak().await;
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "pgbench failed: {out}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        out.contains("number of failed transactions: 0"),
        "pgbench reported failures:\n{out}"
    );
    assert!(
        (1..=10).contains(&peak),
        "server saw {peak} connections; max_open is 10"
    );
    proxy.shutdown().await;
}
