//! Transaction pooling that drivers cannot tell from a direct connection: named prepared
//! statements follow the client to any server connection, session settings follow it, and
//! state that cannot move pins it — against a real PostgreSQL with real drivers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::harness::*;
use sidepool_loadtest::testbed::PgAuth;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_40_clients_over_max_open_4_runs_clean() {
    let pg = must_start_pg(PgAuth::Scram);
    must_pgbench_init(&pg).await;
    let proxy = Proxy::must_start(
        &pg,
        &PoolSpec::transaction("max_open = 4\nmax_idle = 4\nwait_timeout = \"30s\""),
    )
    .await;
    let run = tokio::time::timeout(
        Duration::from_secs(60),
        pg_tool(&pg, "pgbench", proxy.addr.port())
            .args(["-M", "prepared", "-c", "40", "-j", "2", "-T", "5", "-n"])
            .output(),
    )
    .await
    .expect("pgbench -M prepared stalled")
    .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "pgbench failed:\n{out}\n{err}");
    assert!(
        out.contains("number of failed transactions: 0"),
        "{out}\n{err}"
    );
    assert!(proxy.stats().opened <= 4);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_statements_follow_clients_across_server_connections() {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(
        &pg,
        &PoolSpec::transaction("max_open = 4\nmax_idle = 4\nwait_timeout = \"30s\""),
    )
    .await;
    let errors = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..40i32 {
        let (dsn, errors) = (proxy.app_dsn(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let c = must_connect(&dsn).await;
            // tokio-postgres prepares a named statement in one cycle and executes it in the next.
            let stmt = c.prepare("SELECT $1::int * 2, $2::text").await.unwrap();
            for j in 0..20i32 {
                let r = c.query_one(&stmt, &[&(i * j), &"x"]).await;
                match r {
                    Ok(row) => assert_eq!(row.get::<_, i32>(0), i * j * 2),
                    Err(e) => {
                        eprintln!("client {i}: {}", db_message(&e));
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // Ad-hoc statements, named by the driver each time.
                if let Err(e) = c.query("SELECT generate_series(1, $1)", &[&(j % 3)]).await {
                    eprintln!("client {i}: {}", db_message(&e));
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0);
    assert!(proxy.stats().opened <= 4);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_survive_eviction_from_a_full_server_connection() {
    let pg = must_start_pg(PgAuth::Scram);
    let limits = "max_open = 1\nmax_idle = 1\nprepared_statements_per_connection = 2";
    let proxy = Proxy::must_start(&pg, &PoolSpec::transaction(limits)).await;
    let c = proxy.must_connect().await;
    let stmts = [
        c.prepare("SELECT 1::int").await.unwrap(),
        c.prepare("SELECT 2::int").await.unwrap(),
        c.prepare("SELECT 3::int").await.unwrap(),
        c.prepare("SELECT 4::int").await.unwrap(),
    ];
    for round in 0..3 {
        for (i, s) in stmts.iter().enumerate() {
            let v: i32 = c
                .query_one(s, &[])
                .await
                .unwrap_or_else(|e| panic!("round {round}: {}", db_message(&e)))
                .get(0);
            assert_eq!(v, i as i32 + 1);
        }
    }
    let direct = must_connect_direct(&pg).await;
    let on_server: i64 = direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity a WHERE usename = 'app' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(on_server, 1);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_path_set_in_a_transaction_holds_for_later_statements() {
    let pg = must_start_pg(PgAuth::Scram);
    let direct = must_connect_direct(&pg).await;
    direct
        .batch_execute("CREATE SCHEMA s1; CREATE TABLE public.t (v text); CREATE TABLE s1.t (v text); INSERT INTO public.t VALUES ('public'); INSERT INTO s1.t VALUES ('s1')")
        .await
        .unwrap();
    let proxy = Proxy::must_start(
        &pg,
        &PoolSpec::transaction("max_open = 3\nmax_idle = 3\nwait_timeout = \"30s\""),
    )
    .await;
    let c = proxy.must_connect().await;
    c.batch_execute("BEGIN; SET search_path TO s1; COMMIT")
        .await
        .unwrap();

    // Other clients keep the other server connections busy in between.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut busy = Vec::new();
    for _ in 0..4 {
        let (dsn, stop) = (proxy.app_dsn(), stop.clone());
        busy.push(tokio::spawn(async move {
            let o = must_connect(&dsn).await;
            while !stop.load(Ordering::Relaxed) {
                let v: String = must_one(&o, "SELECT v FROM t").await.get(0);
                assert_eq!(v, "public", "another client must not inherit s1");
                o.batch_execute("SELECT pg_sleep(0.002)").await.unwrap();
            }
        }));
    }
    for i in 0..20 {
        let v: String = c.query_one("SELECT v FROM t", &[]).await.unwrap().get(0);
        assert_eq!(v, "s1", "statement {i} lost the search_path");
    }
    stop.store(true, Ordering::Relaxed);
    for b in busy {
        b.await.unwrap();
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_follow_their_client_and_no_other() {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(&pg, &PoolSpec::transaction("max_open = 1\nmax_idle = 1")).await;
    let a = proxy.must_connect().await;
    let b = proxy.must_connect().await;
    a.batch_execute("SET statement_timeout = '4321ms'")
        .await
        .unwrap();
    let seen_by_b: String = must_one(&b, "SHOW statement_timeout").await.get(0);
    assert_eq!(seen_by_b, "0");
    let seen_by_a: String = must_one(&a, "SHOW statement_timeout").await.get(0);
    assert_eq!(seen_by_a, "4321ms");
    a.batch_execute("RESET statement_timeout").await.unwrap();
    let after_reset: String = must_one(&a, "SHOW statement_timeout").await.get(0);
    assert_eq!(after_reset, "0");
    assert_eq!(
        proxy.stats().opened,
        1,
        "one server connection served both clients"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_table_pins_the_client_until_it_disconnects() {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(
        &pg,
        &PoolSpec::transaction("max_open = 2\nmax_idle = 2\nwait_timeout = \"1s\""),
    )
    .await;
    let a = proxy.must_connect().await;
    a.batch_execute("CREATE TEMP TABLE scratch (x int)")
        .await
        .unwrap();
    let others: Vec<_> = futures_util::future::join_all((0..3).map(|_| proxy.must_connect())).await;
    for round in 0..5 {
        a.batch_execute(&format!("INSERT INTO scratch VALUES ({round})"))
            .await
            .unwrap();
        for o in &others {
            must_one(o, "SELECT 1").await;
        }
    }
    let n: i64 = must_one(&a, "SELECT count(*) FROM scratch").await.get(0);
    assert_eq!(n, 5);
    assert_eq!(proxy.pinned(), (1, 1), "the pin is counted while it lasts");
    drop(a);
    // The pinned connection is reset and returned: the other clients can use both again, and
    // none of them sees the temp table.
    must_eventually(Duration::from_secs(5), "the pin ends", || async {
        proxy.stats().in_use == 0 && proxy.pinned() == (0, 1)
    })
    .await;
    for o in &others {
        let t: Option<String> = must_one(o, "SELECT to_regclass('pg_temp.scratch')::text")
            .await
            .get(0);
        assert_eq!(t, None);
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_prepared_before_alter_column_type_run_again_without_errors() {
    let pg = must_start_pg(PgAuth::Scram);
    must_pgbench_init(&pg).await;
    let proxy = Proxy::must_start(
        &pg,
        &PoolSpec::transaction("max_open = 2\nmax_idle = 2\nwait_timeout = \"30s\""),
    )
    .await;
    // pgbench -M prepared prepares once per client; the ALTER changes the result type of
    // "SELECT abalance ..." under it, which PostgreSQL reports as 0A000 at the next Bind.
    let bench = pg_tool(&pg, "pgbench", proxy.addr.port())
        .args([
            "-M", "prepared", "-S", "-c", "4", "-j", "2", "-T", "6", "-n",
        ])
        .spawn()
        .unwrap();
    let direct = must_connect_direct(&pg).await;
    must_eventually(Duration::from_secs(10), "pgbench is running", || async {
        let n: i64 = direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT abalance%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        n > 0
    })
    .await;
    direct
        .batch_execute("ALTER TABLE pgbench_accounts ALTER COLUMN abalance TYPE bigint")
        .await
        .unwrap();
    let out = bench.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pgbench failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "{stdout}\n{stderr}"
    );
    assert!(
        !stderr.contains("cached plan"),
        "the stale plan reached the client:\n{stderr}"
    );

    // A tokio-postgres client that prepared before another ALTER gets its rows too (text
    // result, so the changed type decodes).
    let c = proxy.must_connect().await;
    let stmt = c
        .prepare("SELECT abalance::text AS a, filler FROM pgbench_accounts WHERE aid = 1")
        .await
        .unwrap();
    c.query_one(&stmt, &[]).await.unwrap();
    direct
        .batch_execute("ALTER TABLE pgbench_accounts ALTER COLUMN filler TYPE text")
        .await
        .unwrap();
    let rows = c
        .query(&stmt, &[])
        .await
        .unwrap_or_else(|e| panic!("after ALTER: {}", db_message(&e)));
    assert_eq!(rows.len(), 1);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_options_follow_their_client() {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(&pg, &PoolSpec::transaction("max_open = 1\nmax_idle = 1")).await;
    let with = must_connect(&format!(
        "{} options='-c statement_timeout=4321 -c search_path=pg_catalog'",
        proxy.app_dsn()
    ))
    .await;
    let without = proxy.must_connect().await;
    for _ in 0..3 {
        let t: String = must_one(&with, "SHOW statement_timeout").await.get(0);
        assert_eq!(t, "4321ms");
        let p: String = must_one(&with, "SHOW search_path").await.get(0);
        assert_eq!(p, "pg_catalog");
        let t: String = must_one(&without, "SHOW statement_timeout").await.get(0);
        assert_eq!(t, "0", "another client must not inherit startup options");
    }
    assert_eq!(
        proxy.stats().opened,
        1,
        "both clients shared one server connection"
    );
    proxy.shutdown().await;
}
