//! mysql_async prepared statements and transactions from 64 tasks over `max_open = 4`, against
//! a real MariaDB.
//!
//! Quarantined: about one run in three, two client tasks never get an answer while their two
//! server connections stay checked out (pool: in_use 2, waiting 0). That is a bug in the MySQL
//! relay, not in the test; issue 4 stays open until it is found. Run it with
//! `cargo test -p sidepool --test mysql_prepared_load -- --ignored`.

#[path = "support/mysql.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use mysql_async::prelude::*;
use support::{MyProxy, must_count_connections, must_start_mariadb};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "intermittent hang in the MySQL relay under concurrent prepared statements (issue 4)"]
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
            .unwrap_or_else(|_| panic!("a client task hung; pool: {:?}", proxy.stats()));
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
