//! Protocol fidelity through sidepool against a real PostgreSQL with real clients: pgbench in
//! simple and extended mode, COPY both ways through psql, cancel, and clients that vanish
//! inside a transaction.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::harness::*;
use sidepool_loadtest::testbed::{PgAuth, PgServer};
use tokio_postgres::types::Type;

/// Runs TPC-B through the proxy and returns pgbench's report; panics unless it ran clean.
async fn must_pgbench_tpcb(pg: &PgServer, proxy: &Proxy, protocol: &str) -> String {
    let out = pg_tool(pg, "pgbench", proxy.addr.port())
        .args(["-M", protocol, "-c", "8", "-j", "2", "-T", "4", "-n"])
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pgbench -M {protocol} failed:\n{report}\n{stderr}"
    );
    assert!(
        report.contains("number of failed transactions: 0"),
        "pgbench -M {protocol}:\n{report}\n{stderr}"
    );
    let processed = report
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.split('/').next()?.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(processed > 0, "pgbench processed nothing:\n{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_tpcb_simple_and_extended_in_transaction_mode() {
    let pg = must_start_pg(PgAuth::Scram);
    must_pgbench_init(&pg).await;
    let proxy = Proxy::must_start(
        &pg,
        &PoolSpec::transaction("max_open = 4\nmax_idle = 4\nwait_timeout = \"30s\""),
    )
    .await;
    must_pgbench_tpcb(&pg, &proxy, "simple").await;
    must_pgbench_tpcb(&pg, &proxy, "extended").await;
    let stats = proxy.stats();
    assert!(stats.opened <= 4 && stats.open <= 4, "{stats:?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_tpcb_simple_and_extended_in_session_mode() {
    let pg = must_start_pg(PgAuth::Scram);
    must_pgbench_init(&pg).await;
    let proxy = Proxy::must_start(&pg, &PoolSpec::session("max_open = 8\nmax_idle = 8")).await;
    must_pgbench_tpcb(&pg, &proxy, "simple").await;
    must_pgbench_tpcb(&pg, &proxy, "extended").await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_100k_rows_in_and_out_through_psql_matches_direct() {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(&pg, &PoolSpec::transaction("max_open = 2")).await;
    must_psql(
        &pg,
        pg.port(),
        "CREATE TABLE src (id int, name text, note text); CREATE TABLE dst (LIKE src)",
        b"",
    )
    .await;
    must_psql(&pg, pg.port(), "INSERT INTO src SELECT g, md5(g::text), repeat(E'tab\\there ', g % 7) FROM generate_series(1, 100000) g", b"").await;
    let direct_out = must_psql(
        &pg,
        pg.port(),
        "COPY (SELECT * FROM src ORDER BY id) TO STDOUT",
        b"",
    )
    .await;
    let proxied_out = must_psql(
        &pg,
        proxy.addr.port(),
        "COPY (SELECT * FROM src ORDER BY id) TO STDOUT",
        b"",
    )
    .await;
    assert_eq!(direct_out.iter().filter(|&&b| b == b'\n').count(), 100_000);
    assert!(
        direct_out == proxied_out,
        "COPY TO STDOUT through sidepool differs from direct"
    );

    must_psql(&pg, proxy.addr.port(), "COPY dst FROM STDIN", &proxied_out).await;
    let copied_back = must_psql(
        &pg,
        pg.port(),
        "COPY (SELECT * FROM dst ORDER BY id) TO STDOUT",
        b"",
    )
    .await;
    assert!(
        copied_back == direct_out,
        "COPY FROM STDIN through sidepool lost or changed rows"
    );
    // The connection that ran COPY serves the next statement normally.
    let c = proxy.must_connect().await;
    let n: i64 = must_one(&c, "SELECT count(*) FROM dst").await.get(0);
    assert_eq!(n, 100_000);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_token_stops_pg_sleep_and_the_connection_serves_the_next_client() {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(&pg, &PoolSpec::transaction("max_open = 1\nmax_idle = 1")).await;
    let client = proxy.must_connect().await;
    let token = client.cancel_token();
    let started = Instant::now();
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    let direct = must_connect_direct(&pg).await;
    must_see_active(&direct, "SELECT pg_sleep(30)").await;
    let cancelled_at = Instant::now();
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel request accepted");
    let err = sleeper.await.unwrap().expect_err("query was cancelled");
    assert_eq!(sqlstate(&err), "57014", "query_canceled");
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(1),
        "cancel took {:?}",
        cancelled_at.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(15));

    let next = proxy.must_connect().await;
    let row = must_one(&next, "SELECT 'clean'::text").await;
    assert_eq!(row.get::<_, &str>(0), "clean");
    assert_eq!(
        proxy.stats().opened,
        1,
        "the cancelled connection was reused, not replaced"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_ctrl_c_cancels_pg_sleep_within_a_second() {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(&pg, &PoolSpec::session("max_open = 2")).await;
    let child = pg_tool(&pg, "psql", proxy.addr.port())
        .args(["-X", "-c", "SELECT pg_sleep(30)"])
        .spawn()
        .unwrap();
    let direct = must_connect_direct(&pg).await;
    must_see_active(&direct, "SELECT pg_sleep(30)").await;
    let pid = child.id().unwrap();
    let interrupted = Instant::now();
    // What Ctrl-C does: SIGINT to psql, which sends a CancelRequest.
    assert!(
        Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out = tokio::time::timeout(Duration::from_secs(5), child.wait_with_output())
        .await
        .expect("psql exits")
        .unwrap();
    assert!(
        interrupted.elapsed() < Duration::from_secs(1),
        "psql took {:?} to stop",
        interrupted.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("canceling statement due to user request"),
        "{stderr}"
    );
    proxy.shutdown().await;
}

async fn killed_client_leaves_nothing(spec: PoolSpec) {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(&pg, &spec).await;
    let setup = proxy.must_connect().await;
    setup
        .batch_execute("CREATE TABLE ledger (id int)")
        .await
        .unwrap();
    drop(setup);

    // A raw client: log in with tokio-postgres' connection, then abort its task mid-transaction
    // so the socket closes without Terminate, as when a process is killed.
    let (client, conn) = tokio_postgres::connect(&proxy.app_dsn(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn_task = tokio::spawn(conn);
    client
        .batch_execute("BEGIN; INSERT INTO ledger VALUES (1); SET LOCAL statement_timeout = '1234s'; CREATE TEMP TABLE scratch (x int)")
        .await
        .unwrap();
    conn_task.abort();
    drop(client);

    let direct = must_connect_direct(&pg).await;
    must_eventually(Duration::from_secs(5), "the abandoned transaction is gone from the server", || async {
        let n: i64 = direct
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND state LIKE 'idle in transaction%'", &[])
            .await
            .unwrap()
            .get(0);
        n == 0
    })
    .await;

    let next = proxy.must_connect().await;
    let rows: i64 = must_one(&next, "SELECT count(*) FROM ledger").await.get(0);
    assert_eq!(rows, 0, "the killed client's insert must be rolled back");
    let timeout: String = must_one(&next, "SHOW statement_timeout").await.get(0);
    assert_eq!(timeout, "0", "the next client starts with clean settings");
    let temp = must_one(&next, "SELECT to_regclass('pg_temp.scratch')::text").await;
    assert_eq!(
        temp.get::<_, Option<String>>(0),
        None,
        "no temp table left behind"
    );
    // A new transaction starts normally (no "already a transaction in progress").
    next.batch_execute("BEGIN; INSERT INTO ledger VALUES (2); COMMIT")
        .await
        .unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_killed_inside_a_transaction_leaves_no_trace_in_transaction_mode() {
    killed_client_leaves_nothing(PoolSpec::transaction("max_open = 1\nmax_idle = 1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_killed_inside_a_transaction_leaves_no_trace_in_session_mode() {
    killed_client_leaves_nothing(PoolSpec::session("max_open = 1\nmax_idle = 1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_resets_session_state_with_discard_all() {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(&pg, &PoolSpec::session("max_open = 1\nmax_idle = 1")).await;
    let first = proxy.must_connect().await;
    first
        .batch_execute("SET work_mem = '77MB'; PREPARE p AS SELECT 1; CREATE TEMP TABLE t (x int)")
        .await
        .unwrap();
    drop(first);
    let second = proxy.must_connect().await;
    let wm: String = must_one(&second, "SHOW work_mem").await.get(0);
    assert_ne!(wm, "77MB");
    let prepared: i64 = must_one(&second, "SELECT count(*) FROM pg_prepared_statements")
        .await
        .get(0);
    assert_eq!(prepared, 0);
    assert_eq!(
        proxy.stats().opened,
        1,
        "the same server connection served both clients"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_errors_and_pipelines_keep_the_stream_in_sync() {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(&pg, &PoolSpec::transaction("max_open = 1\nmax_idle = 1")).await;
    let c = proxy.must_connect().await;
    let err = one(&c, "SELECT 1 / $1::int", &[(&0i32, Type::INT4)])
        .await
        .expect_err("division by zero");
    assert_eq!(sqlstate(&err), "22012");
    // Pipelined queries on one client (tokio-postgres pipelines concurrent futures).
    let nums: Vec<i32> = (0..50).collect();
    let params: Vec<[(&(dyn tokio_postgres::types::ToSql + Sync), Type); 1]> =
        nums.iter().map(|i| [(i as _, Type::INT4)]).collect();
    let futures: Vec<_> = params
        .iter()
        .map(|p| one(&c, "SELECT $1::int * 2", p))
        .collect();
    let rows = futures_util::future::join_all(futures).await;
    for (i, r) in rows.into_iter().enumerate() {
        assert_eq!(r.unwrap().get::<_, i32>(0), i as i32 * 2);
    }
    proxy.shutdown().await;
}
