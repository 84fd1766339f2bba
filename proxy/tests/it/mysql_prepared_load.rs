//! mysql_async prepared statements and transactions through sidepool against a real MariaDB:
//! 64 tasks over `max_open = 4`, and responses that reach sidepool split at arbitrary points.
//!
//! The load test once hung about one run in three (issue 4): a COM_STMT_PREPARE response ends
//! with a parameter or column definition, which the relay streams rather than buffers; when the
//! tail of that last packet came in a later read, the relay forgot that the response was
//! complete and waited for the server forever, holding its connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::support::mysql::{MyProxy, Trickle, must_count_connections, must_start_mariadb};
use mysql_async::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prepared_statements_from_64_tasks_over_4_connections_have_no_errors() {
    let db = Arc::new(must_start_mariadb());
    let proxy = MyProxy::must_start(&db, "max_open = 4\nwait_timeout = \"30s\"").await;
    let mut setup = proxy.must_connect().await;
    setup
        .query_drop("CREATE TABLE items (id INT PRIMARY KEY, n INT)")
        .await
        .unwrap();
    drop(setup);

    let running = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (db, running, peak) = (db.clone(), running.clone(), peak.clone());
        tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                let n = must_count_connections(&db).await;
                peak.fetch_max(n, Ordering::Relaxed);
            }
        })
    };
    let mut tasks = Vec::new();
    for t in 0..64 {
        let url = proxy.url("prefer_socket=false");
        tasks.push(tokio::spawn(async move {
            let mut conn = mysql_async::Conn::from_url(url).await?;
            for i in 0..20 {
                let v: Option<i64> = conn.exec_first("SELECT ? + ?", (t, i)).await?;
                assert_eq!(v, Some(t + i));
                let mut tx = conn.start_transaction(Default::default()).await?;
                tx.exec_drop("INSERT INTO items (id, n) VALUES (?, ?)", (t * 100 + i, i))
                    .await?;
                let n: Option<i64> = tx
                    .exec_first("SELECT n FROM items WHERE id = ?", (t * 100 + i,))
                    .await?;
                assert_eq!(n, Some(i));
                tx.commit().await?;
            }
            conn.disconnect().await?;
            Ok::<_, mysql_async::Error>(())
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        let done = tokio::time::timeout(std::time::Duration::from_secs(60), t)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "a client task hung; pool: {:?}; server threads:\n{}",
                    proxy.stats(),
                    db.sql(
                        "SELECT id, command, time, state, info FROM information_schema.processlist"
                    )
                    .unwrap_or_default()
                )
            });
        if let Err(e) = done.expect("task") {
            errors.push(e.to_string());
        }
    }
    running.store(false, Ordering::Relaxed);
    tokio::time::timeout(std::time::Duration::from_secs(30), watcher)
        .await
        .expect("the processlist sampler hung")
        .expect("sampler");
    assert!(errors.is_empty(), "errors: {errors:?}");
    let mut check = proxy.must_connect().await;
    let rows: Option<i64> = check
        .query_first("SELECT COUNT(*) FROM items")
        .await
        .unwrap();
    assert_eq!(rows, Some(64 * 20));
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        peak <= 4,
        "processlist showed {peak} connections of app, max_open is 4"
    );
    assert!(proxy.stats().open <= 4);
}

/// Runs `op`, failing the test if sidepool leaves it without an answer.
async fn must_answer<T>(
    what: &str,
    op: impl std::future::Future<Output = mysql_async::Result<T>>,
) -> T {
    match tokio::time::timeout(std::time::Duration::from_secs(10), op).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("{what}: {e}"),
        Err(_) => panic!("{what}: no answer through sidepool within 10 s"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_split_at_every_point_reach_the_client_whole() {
    let db = must_start_mariadb();
    let trickle = Trickle::must_start(format!("{}:{}", db.host(), db.port())).await;
    let proxy = MyProxy::must_start_at(
        &trickle.addr.to_string(),
        "transaction",
        "password",
        "max_open = 2",
    )
    .await;
    let mut conn = proxy.must_connect().await;
    must_answer(
        "create table",
        conn.query_drop("CREATE TABLE split (id INT PRIMARY KEY, n INT, s VARCHAR(20))"),
    )
    .await;
    // Prepare responses ending with a parameter definition (INSERT, two parameters), with a
    // column definition (SELECT), and with the OK alone (no parameters, no columns), in and
    // outside a transaction, each prepared afresh on the server connection.
    for i in 0..6_i64 {
        let mut tx = must_answer("begin", conn.start_transaction(Default::default())).await;
        must_answer(
            "insert",
            tx.exec_drop(
                "INSERT INTO split (id, n, s) VALUES (?, ?, 'x')",
                (i, i * 2),
            ),
        )
        .await;
        let n: Option<i64> = must_answer(
            "select in tx",
            tx.exec_first("SELECT n FROM split WHERE id = ?", (i,)),
        )
        .await;
        assert_eq!(n, Some(i * 2));
        must_answer("commit", tx.commit()).await;
        let row: Option<(i64, i64, String)> = must_answer(
            "select outside tx",
            conn.exec_first("SELECT id, n, s FROM split WHERE id = ?", (i,)),
        )
        .await;
        assert_eq!(row, Some((i, i * 2, "x".to_owned())));
        let count: Option<i64> = must_answer(
            "no parameters",
            conn.exec_first("SELECT COUNT(*) FROM split", ()),
        )
        .await;
        assert_eq!(count, Some(i + 1));
        must_answer("no columns", conn.exec_drop("DO 1", ())).await;
        // Forget the statements so that the next round prepares them again.
        must_answer("reset", conn.reset()).await;
    }
    must_answer("quit", conn.disconnect()).await;
    proxy.shutdown().await;
}
