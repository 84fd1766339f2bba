//! Leak detection against a real PostgreSQL: a client idle inside a transaction is reported
//! once by name, counted, and with `action = "terminate"` gets SQLSTATE 25P03 while its
//! transaction is rolled back and its row locks released.

use std::time::Duration;

use crate::support::harness::*;
use sidepool_loadtest::testbed::PgAuth;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_in_transaction_client_is_reported_once_by_name() {
    let logs = logs();
    let pg = must_start_pg(PgAuth::Scram);
    let spec = PoolSpec::transaction("max_open = 2").leaks("threshold = \"1s\"\naction = \"warn\"");
    let proxy = Proxy::must_start(&pg, &spec).await;
    let leaky = must_connect(&format!("{} application_name=leaky-app", proxy.app_dsn())).await;
    leaky
        .batch_execute("BEGIN; SELECT 'the leaky statement'")
        .await
        .unwrap();
    must_eventually(Duration::from_secs(10), "the leak is counted", || async {
        proxy.leaks().1 == 1
    })
    .await;
    // Still idle: reported once, not once per scan.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(proxy.leaks().0, 1, "one leak now");
    assert_eq!(proxy.leaks().1, 1, "reported once");
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    // The log capture is the whole test binary's: keep this test's server's lines.
    let backend = format!("backend={}:{}", pg.host(), pg.port());
    let line = text
        .lines()
        .find(|l| l.contains("suspected connection leak") && l.contains(&backend))
        .unwrap_or_else(|| panic!("no warning in:\n{text}"));
    for needle in [
        "leaky-app",
        "held_for",
        "the leaky statement",
        "pool=test",
        "user=app",
    ] {
        assert!(line.contains(needle), "warning lacks {needle}: {line}");
    }
    // Ending the transaction ends the leak.
    leaky.batch_execute("COMMIT").await.unwrap();
    must_eventually(Duration::from_secs(5), "the gauge drops", || async {
        proxy.leaks().0 == 0
    })
    .await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_sends_25p03_rolls_back_and_releases_row_locks() {
    let pg = must_start_pg(PgAuth::Scram);
    let direct = must_connect_direct(&pg).await;
    direct
        .batch_execute(
            "CREATE TABLE acct (id int PRIMARY KEY, v int); INSERT INTO acct VALUES (1, 0)",
        )
        .await
        .unwrap();
    let spec = PoolSpec::transaction("max_open = 2")
        .leaks("threshold = \"1s\"\naction = \"terminate\"\nterminate_after = \"2s\"");
    let proxy = Proxy::must_start(&pg, &spec).await;

    let (leaky, conn) = tokio_postgres::connect(&proxy.app_dsn(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let ended = tokio::spawn(conn);
    leaky
        .batch_execute("BEGIN; UPDATE acct SET v = 42 WHERE id = 1")
        .await
        .unwrap();

    let closed = tokio::time::timeout(Duration::from_secs(15), ended)
        .await
        .expect("session ended")
        .unwrap();
    let err = closed.expect_err("the connection ends with an error");
    assert_eq!(sqlstate(&err), "25P03", "{err:?}");
    assert!(
        db_message(&err).contains("terminate_after"),
        "{}",
        db_message(&err)
    );

    // The row lock is gone and the update rolled back.
    let other = proxy.must_connect().await;
    other
        .batch_execute("SET lock_timeout = '2s'")
        .await
        .unwrap();
    let v: i32 = must_one(&other, "SELECT v FROM acct WHERE id = 1 FOR UPDATE")
        .await
        .get(0);
    assert_eq!(v, 0);
    must_eventually(
        Duration::from_secs(5),
        "the leak gauge drops after the termination",
        || async { proxy.leaks() == (0, 1) },
    )
    .await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_gone_mid_transaction_are_counted() {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(&pg, &PoolSpec::transaction("max_open = 2")).await;
    let (client, conn) = tokio_postgres::connect(&proxy.app_dsn(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    client.batch_execute("BEGIN; SELECT 1").await.unwrap();
    task.abort();
    drop(client);
    must_eventually(
        Duration::from_secs(5),
        "the abandoned transaction is counted",
        || async { proxy.leaks_all().2 == 1 },
    )
    .await;
    proxy.shutdown().await;
}
