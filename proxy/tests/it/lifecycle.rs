//! A sidecar's life against a real PostgreSQL: hot reload (from the file, by watching it, with a
//! broken file, adding and removing pools) and drain on shutdown.

use std::time::Duration;

use crate::support::harness::*;
use sidepool_loadtest::testbed::PgAuth;

fn parse(text: &str) -> sidepool_config::Config {
    sidepool_config::parse(text, "new.toml", &|_| None)
        .unwrap_or_else(|e| panic!("config invalid:\n{e}\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowering_max_open_applies_live_without_breaking_an_open_transaction() {
    let pg = must_start_pg(PgAuth::Scram);
    let primary = format!("{}:{}", pg.host(), pg.port());
    let proxy = Proxy::must_start(&pg, &PoolSpec::transaction("max_open = 4")).await;
    let setup = must_connect_direct(&pg).await;
    setup
        .batch_execute("CREATE TABLE reload_tx (id int)")
        .await
        .expect("create");
    let (a, b) = (proxy.must_connect().await, proxy.must_connect().await);
    a.batch_execute("BEGIN; INSERT INTO reload_tx VALUES (1)")
        .await
        .expect("a begins");
    b.batch_execute("BEGIN; INSERT INTO reload_tx VALUES (2)")
        .await
        .expect("b begins");
    assert_eq!(proxy.stats().in_use, 2);

    let summary = proxy
        .server()
        .apply(parse(&config_text(
            &primary,
            &PoolSpec::transaction("max_open = 1"),
        )))
        .await
        .expect("reload applies");
    assert!(summary.contains("limits"), "{summary}");
    assert_eq!(proxy.stats().max_open, 1);
    // Both open transactions carry on and commit.
    a.batch_execute("INSERT INTO reload_tx VALUES (3); COMMIT")
        .await
        .expect("a commits after the reload");
    b.batch_execute("COMMIT").await.expect("b commits");
    let n: i64 = setup
        .query_one("SELECT count(*) FROM reload_tx", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 3);
    // From now on the server sees at most one connection of the pool.
    must_eventually(Duration::from_secs(5), "pool shrinks to 1", || async {
        server_connections(&setup).await <= 1
    })
    .await;
    must_one(&a, "SELECT 1").await;
    assert!(server_connections(&setup).await <= 1);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_keeps_the_running_config_and_counts_an_error() {
    let pg = must_start_pg(PgAuth::Scram);
    let dir = tempfile::tempdir().expect("tempdir");
    let primary = format!("{}:{}", pg.host(), pg.port());
    let proxy =
        Proxy::must_start_from_file(dir.path(), &primary, &PoolSpec::transaction("max_open = 2"))
            .await;
    std::fs::write(
        dir.path().join("sidepool.toml"),
        "[[pools]]\nname = \"test\"\nmode = \"sometimes\"\nbogus = 1\n",
    )
    .expect("break the file");
    let err = proxy
        .server()
        .reload()
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("sidepool.toml:3"),
        "every problem with its line: {err}"
    );
    assert!(err.contains("bogus"), "{err}");
    let metrics = http_get(proxy.server().admin_addr(), "/metrics")
        .await
        .text();
    assert!(
        metrics.contains("sidepool_config_reloads_total{result=\"error\"} 1"),
        "{metrics}"
    );
    let app = proxy.must_connect().await;
    must_one(&app, "SELECT 1").await;
    assert_eq!(proxy.stats().max_open, 2);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_style_symlink_swap_of_the_file_is_picked_up_without_a_signal() {
    let pg = must_start_pg(PgAuth::Scram);
    let dir = tempfile::tempdir().expect("tempdir");
    let primary = format!("{}:{}", pg.host(), pg.port());
    // ConfigMap layout: sidepool.toml -> ..data/sidepool.toml, ..data -> ..v1
    let (v1, v2) = (dir.path().join("..v1"), dir.path().join("..v2"));
    std::fs::create_dir(&v1).expect("v1");
    std::fs::create_dir(&v2).expect("v2");
    std::fs::write(
        v1.join("sidepool.toml"),
        config_text(&primary, &PoolSpec::transaction("max_open = 2")),
    )
    .expect("v1 file");
    std::os::unix::fs::symlink("..v1", dir.path().join("..data")).expect("..data");
    std::os::unix::fs::symlink("..data/sidepool.toml", dir.path().join("sidepool.toml"))
        .expect("link");
    let config = sidepool_config::load(&dir.path().join("sidepool.toml")).expect("valid");
    let server = sidepool::Server::start(&config).await.expect("starts");
    assert_eq!(server.pool_stats("test").expect("pool").max_open, 2);

    std::fs::write(
        v2.join("sidepool.toml"),
        config_text(&primary, &PoolSpec::transaction("max_open = 7")),
    )
    .expect("v2 file");
    // The kubelet's atomic swap: a new symlink renamed over ..data.
    std::os::unix::fs::symlink("..v2", dir.path().join("..data_tmp")).expect("tmp link");
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).expect("swap");
    must_eventually(
        Duration::from_secs(10),
        "max_open follows the file",
        || async { server.pool_stats("test").expect("pool").max_open == 7 },
    )
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_pools() {
    let pg = must_start_pg(PgAuth::Scram);
    let primary = format!("{}:{}", pg.host(), pg.port());
    let proxy = Proxy::must_start(&pg, &PoolSpec::transaction("max_open = 2")).await;
    let base = config_text(&primary, &PoolSpec::transaction("max_open = 2"));
    let second = format!(
        "{base}\n[[pools]]\nname = \"second\"\nprotocol = \"postgres\"\nlisten = \"127.0.0.1:0\"\nprimary = \"{primary}\"\nclient_auth = \"password\"\n\n[[pools.users]]\nname = \"{USER}\"\npassword = \"{PASSWORD}\"\n"
    );
    let summary = proxy.server().apply(parse(&second)).await.expect("add");
    assert!(summary.contains("\"second\" added"), "{summary}");
    let addr = proxy
        .server()
        .local_addr("second")
        .expect("second pool listens");
    let dsn = format!(
        "host=127.0.0.1 port={} user={USER} password={PASSWORD} dbname={DB}",
        addr.port()
    );
    let c = must_connect(&dsn).await;
    must_one(&c, "SELECT 1").await;
    // The first pool went on serving throughout.
    let first = proxy.must_connect().await;
    must_one(&first, "SELECT 1").await;

    let summary = proxy.server().apply(parse(&base)).await.expect("remove");
    assert!(summary.contains("\"second\" removed"), "{summary}");
    assert!(proxy.server().local_addr("second").is_none());
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the removed pool's listener is closed"
    );
    must_one(&first, "SELECT 1").await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_ends_idle_clients_with_57p01_and_lets_open_transactions_commit() {
    let pg = must_start_pg(PgAuth::Scram);
    let mut proxy = Proxy::must_start(&pg, &PoolSpec::transaction("max_open = 4")).await;
    let setup = must_connect_direct(&pg).await;
    setup
        .batch_execute("CREATE TABLE drained (id int)")
        .await
        .expect("create");
    let (idle, idle_end) = connect_watched(&proxy.app_dsn()).await;
    must_one(&idle, "SELECT 1").await;
    let (busy, busy_end) = connect_watched(&proxy.app_dsn()).await;
    busy.batch_execute("BEGIN; INSERT INTO drained VALUES (1)")
        .await
        .expect("begin");
    let admin = proxy.server().admin_addr();
    let listen = proxy.addr;

    let server = proxy.take_server();
    let drain = tokio::spawn(server.drain(Duration::from_secs(20)));
    let end = tokio::time::timeout(Duration::from_secs(5), idle_end)
        .await
        .expect("the idle client is ended at once")
        .expect("reported");
    let err = end.expect_err("told why");
    assert_eq!(sqlstate(&err), "57P01", "{}", db_message(&err));
    assert_eq!(http_get(admin, "/readyz").await.status, 503);
    assert!(
        tokio::net::TcpStream::connect(listen).await.is_err(),
        "no new clients while draining"
    );
    // The open transaction finishes its work and commits.
    busy.batch_execute("INSERT INTO drained VALUES (2); COMMIT")
        .await
        .expect("the open transaction commits during the drain");
    let end = tokio::time::timeout(Duration::from_secs(5), busy_end)
        .await
        .expect("ended after its transaction")
        .expect("reported");
    assert_eq!(sqlstate(&end.expect_err("told why")), "57P01");
    tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .expect("drain finishes once the clients are gone")
        .expect("drain task");
    let n: i64 = setup
        .query_one("SELECT count(*) FROM drained", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 2);
    must_eventually(
        Duration::from_secs(5),
        "server connections closed",
        || async { server_connections(&setup).await == 0 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_rolls_back_a_transaction_still_open_at_the_timeout() {
    let pg = must_start_pg(PgAuth::Scram);
    let mut proxy = Proxy::must_start(&pg, &PoolSpec::transaction("max_open = 2")).await;
    let setup = must_connect_direct(&pg).await;
    setup
        .batch_execute("CREATE TABLE drained_late (id int)")
        .await
        .expect("create");
    let (stuck, stuck_end) = connect_watched(&proxy.app_dsn()).await;
    stuck
        .batch_execute("BEGIN; INSERT INTO drained_late VALUES (1)")
        .await
        .expect("begin");
    let started = std::time::Instant::now();
    proxy.take_server().drain(Duration::from_millis(500)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drain took {:?}",
        started.elapsed()
    );
    let end = tokio::time::timeout(Duration::from_secs(5), stuck_end)
        .await
        .expect("ended")
        .expect("reported");
    assert_eq!(sqlstate(&end.expect_err("told why")), "25P03");
    let n: i64 = setup
        .query_one("SELECT count(*) FROM drained_late", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0, "the unfinished transaction was rolled back");
    must_eventually(
        Duration::from_secs(5),
        "no server connection left",
        || async { server_connections(&setup).await == 0 },
    )
    .await;
}
