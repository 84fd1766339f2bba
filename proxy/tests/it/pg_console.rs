//! The admin console (database `sidepool` on a PostgreSQL listener) against a real PostgreSQL:
//! what it shows while clients work, and what KILL, PAUSE/RESUME and RELOAD do.

use std::time::Duration;

use crate::support::harness::*;
use sidepool_loadtest::testbed::PgAuth;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_pools_clients_servers_and_leaks_of_a_client_idle_in_transaction() {
    let pg = must_start_pg(PgAuth::Scram);
    let spec = PoolSpec::transaction("max_open = 3").leaks("threshold = \"200ms\"");
    let proxy = Proxy::must_start(&pg, &spec).await;
    let dsn = format!("{} application_name=leaky-worker", proxy.app_dsn());
    let leaky = must_connect(&dsn).await;
    leaky
        .batch_execute("BEGIN; SELECT 42 AS forgotten")
        .await
        .expect("begin");
    let console = must_connect(&proxy.console_dsn()).await;

    let pools = must_console(&console, "SHOW POOLS").await;
    assert_eq!(pools.len(), 1, "{pools:?}");
    let p = &pools[0];
    assert_eq!(p["pool"].as_deref(), Some("test"));
    assert_eq!(p["mode"].as_deref(), Some("transaction"));
    assert_eq!(p["sv_in_use"].as_deref(), Some("1"), "{p:?}");
    assert_eq!(p["max_open"].as_deref(), Some("3"));
    assert_eq!(p["paused"].as_deref(), Some("f"));

    let clients = must_console(&console, "show clients;").await;
    let c = clients
        .iter()
        .find(|c| c["application_name"].as_deref() == Some("leaky-worker"))
        .unwrap_or_else(|| panic!("leaky client not listed: {clients:?}"));
    assert_eq!(c["state"].as_deref(), Some("active"));
    assert_eq!(c["user"].as_deref(), Some(USER));
    assert_eq!(c["database"].as_deref(), Some(DB));
    assert!(
        c["last_statement"]
            .as_deref()
            .is_some_and(|s| s.contains("forgotten")),
        "{c:?}"
    );
    let client_id = c["id"].clone().expect("client id");

    let servers = must_console(&console, "SHOW SERVERS").await;
    assert!(
        servers
            .iter()
            .any(|s| s["state"].as_deref() == Some("in_use")
                && s["client"] == Some(client_id.clone())),
        "{servers:?}"
    );

    must_eventually(
        Duration::from_secs(5),
        "SHOW LEAKS lists the client",
        || {
            let console = &console;
            let id = client_id.clone();
            async move {
                must_console(console, "SHOW LEAKS")
                    .await
                    .iter()
                    .any(|l| l["client"].as_deref() == Some(id.as_str()))
            }
        },
    )
    .await;
    let stats = must_console(&console, "SHOW STATS").await;
    assert_eq!(stats[0]["opened"].as_deref(), Some("1"), "{stats:?}");

    let config = must_console(&console, "SHOW CONFIG").await;
    assert!(
        config
            .iter()
            .any(|r| r["section"].as_deref() == Some("pools.test.limits")
                && r["key"].as_deref() == Some("max_open")
                && r["value"].as_deref() == Some("3")),
        "{config:?}"
    );
    assert!(
        !config
            .iter()
            .any(|r| r["value"].as_deref().is_some_and(|v| v.contains(PASSWORD))),
        "SHOW CONFIG must not show passwords"
    );
    let err = console
        .simple_query("SHOW NONSENSE")
        .await
        .expect_err("unknown command");
    assert_eq!(sqlstate(&err), "42601");
    assert!(
        db_message(&err).contains("SHOW POOLS"),
        "{}",
        db_message(&err)
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_renders_the_console_as_tables() {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(&pg, &PoolSpec::transaction("max_open = 2")).await;
    let out = must_run(
        pg_tool(&pg, "psql", proxy.addr.port())
            .env("PGDATABASE", "sidepool")
            .args([
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                "SHOW POOLS",
                "-c",
                "SHOW HELP",
            ]),
        b"",
    )
    .await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains(" pool "), "{out}");
    assert!(out.contains(" test "), "{out}");
    assert!(out.contains("(1 row)"), "{out}");
    assert!(out.contains("RELOAD"), "{out}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_kill_ends_the_named_client_and_rolls_its_transaction_back() {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(&pg, &PoolSpec::transaction("max_open = 2")).await;
    let setup = must_connect_direct(&pg).await;
    setup
        .batch_execute("CREATE TABLE killed (id int)")
        .await
        .expect("create");
    let (victim, ended) = connect_watched(&proxy.app_dsn()).await;
    victim
        .batch_execute("BEGIN; INSERT INTO killed VALUES (1)")
        .await
        .expect("insert");
    let console = must_connect(&proxy.console_dsn()).await;
    let clients = must_console(&console, "SHOW CLIENTS").await;
    let id = clients
        .iter()
        .find(|c| c["state"].as_deref() == Some("active"))
        .and_then(|c| c["id"].clone())
        .unwrap_or_else(|| panic!("no active client: {clients:?}"));
    must_console(&console, &format!("KILL {id}")).await;
    let end = tokio::time::timeout(Duration::from_secs(5), ended)
        .await
        .expect("killed client's connection ends")
        .expect("connection task reported");
    let err = end.expect_err("the client is told why");
    assert_eq!(sqlstate(&err), "25P03", "{}", db_message(&err));
    assert!(db_message(&err).contains("KILL"), "{}", db_message(&err));
    let n: i64 = setup
        .query_one("SELECT count(*) FROM killed", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0, "the killed client's insert was rolled back");
    must_eventually(
        Duration::from_secs(5),
        "connection back in the pool",
        || async { proxy.stats().in_use == 0 },
    )
    .await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_pause_holds_new_transactions_until_resume() {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(&pg, &PoolSpec::transaction("max_open = 2")).await;
    let app = must_connect(&proxy.app_dsn()).await;
    must_one(&app, "SELECT 1").await;
    let console = must_connect(&proxy.console_dsn()).await;
    must_console(&console, "PAUSE").await;
    let pools = must_console(&console, "SHOW POOLS").await;
    assert_eq!(pools[0]["paused"].as_deref(), Some("t"));
    let held = tokio::spawn(async move { must_one(&app, "SELECT 2").await.get::<_, i32>(0) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "a query ran while the pool was paused");
    must_console(&console, "RESUME").await;
    let v = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("runs after RESUME")
        .expect("task");
    assert_eq!(v, 2);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_reload_applies_the_edited_file_and_reports_a_broken_one() {
    let pg = must_start_pg(PgAuth::Scram);
    let dir = tempfile::tempdir().expect("tempdir");
    let primary = format!("{}:{}", pg.host(), pg.port());
    let proxy =
        Proxy::must_start_from_file(dir.path(), &primary, &PoolSpec::transaction("max_open = 2"))
            .await;
    let console = must_connect(&proxy.console_dsn()).await;
    let path = dir.path().join("sidepool.toml");
    std::fs::write(
        &path,
        config_text(&primary, &PoolSpec::transaction("max_open = 5")),
    )
    .expect("edit");
    must_console(&console, "RELOAD").await;
    assert_eq!(proxy.stats().max_open, 5);

    std::fs::write(&path, "[[pools]]\nname = 1\n").expect("break");
    let err = console
        .simple_query("RELOAD")
        .await
        .expect_err("a broken file is refused");
    assert_eq!(sqlstate(&err), "55000");
    assert!(
        db_message(&err).contains("sidepool.toml"),
        "{}",
        db_message(&err)
    );
    assert_eq!(proxy.stats().max_open, 5, "the running config stays");
    let app = must_connect(&proxy.app_dsn()).await;
    must_one(&app, "SELECT 1").await;
    proxy.shutdown().await;
}
