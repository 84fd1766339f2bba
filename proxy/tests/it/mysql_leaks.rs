//! Leak detection for MySQL against a real MariaDB: a mysql_async client idle inside a
//! transaction is reported once, by its `program_name` connection attribute, and counted in
//! `sidepool_pool_leaks_total`; with `action = "terminate"` it gets error 4031 while its
//! transaction is rolled back and its row lock released.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::harness::{http_get, logs, must_eventually};
use crate::support::mysql::{MyProxy, config_text, must_start_mariadb, primary};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder};

/// A transaction-mode pool with `[pools.leaks]` set to `leaks`, and a table `acct` with one
/// row (id 1, v 0).
async fn must_start(leaks: &str) -> (sidepool_loadtest::testbed::MariaDbServer, MyProxy) {
    let db = must_start_mariadb();
    let text = config_text(&primary(&db), "transaction", "password", "max_open = 2")
        + "\n[pools.leaks]\n"
        + leaks
        + "\n";
    let proxy = MyProxy::must_start_config(&text).await;
    let mut setup = proxy.must_connect().await;
    setup
        .query_drop("CREATE TABLE acct (id INT PRIMARY KEY, v INT) ENGINE=InnoDB")
        .await
        .expect("create table");
    setup
        .query_drop("INSERT INTO acct VALUES (1, 0)")
        .await
        .expect("insert");
    setup.disconnect().await.expect("disconnect");
    (db, proxy)
}

/// A mysql_async connection through sidepool that calls itself `leaky-app`.
async fn must_connect_as_leaky_app(proxy: &MyProxy) -> Conn {
    let opts = Opts::from_url(&proxy.url("prefer_socket=false")).expect("url");
    let opts = OptsBuilder::from_opts(opts).connect_attributes(HashMap::from([(
        "program_name".to_owned(),
        "leaky-app".to_owned(),
    )]));
    Conn::new(opts).await.expect("connect through sidepool")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_in_transaction_client_is_reported_once_by_program_name() {
    let logs = logs();
    let (db, proxy) = must_start("threshold = \"1s\"\naction = \"warn\"").await;
    let mut leaky = must_connect_as_leaky_app(&proxy).await;
    leaky.query_drop("BEGIN").await.unwrap();
    let v: Option<i64> = leaky
        .query_first("SELECT v FROM acct WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    assert_eq!(v, Some(0));
    must_eventually(Duration::from_secs(10), "the leak is counted", || async {
        proxy.leaks().1 == 1
    })
    .await;
    // Still idle: reported once, not once per scan (the watcher looks every 250 ms).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(proxy.leaks().0, 1, "one leak now");
    assert_eq!(proxy.leaks().1, 1, "reported once");
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    // Tests of this binary run at once, each with its own MariaDB: keep this one's lines.
    let backend = format!("backend={}", primary(&db));
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("suspected connection leak") && l.contains(&backend))
        .collect();
    assert_eq!(warnings.len(), 1, "exactly one warning:\n{text}");
    for needle in [
        "application_name=leaky-app",
        "held_for=",
        "FOR UPDATE",
        "pool=test",
        "user=app",
    ] {
        assert!(
            warnings[0].contains(needle),
            "warning lacks {needle}: {}",
            warnings[0]
        );
    }
    let metrics = http_get(proxy.admin_addr(), "/metrics").await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sidepool_pool_leaks_total{")
                && l.contains("pool=\"test\"")
                && l.ends_with(" 1")),
        "sidepool_pool_leaks_total is not 1:\n{metrics}"
    );
    // Ending the transaction ends the leak.
    leaky.query_drop("COMMIT").await.unwrap();
    must_eventually(Duration::from_secs(5), "the gauge drops", || async {
        proxy.leaks().0 == 0
    })
    .await;
    leaky.disconnect().await.unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_sends_4031_rolls_back_and_releases_the_row_lock() {
    let (_db, proxy) =
        must_start("threshold = \"1s\"\naction = \"terminate\"\nterminate_after = \"2s\"").await;
    let mut leaky = must_connect_as_leaky_app(&proxy).await;
    leaky.query_drop("BEGIN").await.unwrap();
    leaky
        .query_drop("UPDATE acct SET v = 42 WHERE id = 1")
        .await
        .unwrap();
    must_eventually(
        Duration::from_secs(15),
        "the leaky session is terminated",
        || async { proxy.leaks().0 == 0 && proxy.leaks().1 == 1 && proxy.stats().in_use == 0 },
    )
    .await;
    let err = leaky
        .query_drop("SELECT 1")
        .await
        .expect_err("the terminated session answers with an error");
    match &err {
        mysql_async::Error::Server(e) => {
            assert_eq!(e.code, 4031, "{err}");
            assert!(e.message.contains("terminate_after"), "{}", e.message);
        }
        other => panic!("expected error 4031, got {other:?}"),
    }

    // The row lock is gone and the update rolled back.
    let mut other = proxy.must_connect().await;
    other
        .query_drop("SET SESSION innodb_lock_wait_timeout = 2")
        .await
        .unwrap();
    other
        .query_drop("UPDATE acct SET v = v + 1 WHERE id = 1")
        .await
        .expect("the row is not locked any more");
    let v: Option<i64> = other
        .query_first("SELECT v FROM acct WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(v, Some(1), "the leaky update was rolled back");
    other.disconnect().await.unwrap();
    proxy.shutdown().await;
}
