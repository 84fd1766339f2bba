//! MySQL transaction pooling against a real MariaDB 10.11: limits hold under load, errors pass
//! through, checkout failures are error 1040, and killed clients leave nothing behind.

use std::time::{Duration, Instant};

use crate::support::mysql::{MyProxy, must_start_mariadb};
use mysql_async::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_reports_1146_and_the_session_goes_on() {
    let db = must_start_mariadb();
    let proxy = MyProxy::must_start(&db, "max_open = 2").await;
    let mut conn = proxy.must_connect().await;
    let err = conn
        .query_drop("SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    match err {
        mysql_async::Error::Server(e) => {
            assert_eq!(e.code, 1146, "{e:?}");
            assert_eq!(e.state, "42S02");
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    let err = conn
        .exec_drop("SELECT * FROM no_such_table WHERE id = ?", (1,))
        .await
        .unwrap_err();
    assert!(
        matches!(err, mysql_async::Error::Server(ref e) if e.code == 1146),
        "{err:?}"
    );
    let one: Option<i64> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_connection_and_wait_timeout_give_1040_after_about_a_second() {
    let db = must_start_mariadb();
    let proxy = MyProxy::must_start(&db, "max_open = 1\nwait_timeout = \"1s\"").await;
    let mut holder = proxy.must_connect().await;
    let mut other = proxy.must_connect().await;
    holder.query_drop("BEGIN").await.unwrap();
    holder.query_drop("SELECT 1").await.unwrap();
    let started = Instant::now();
    let err = other.query_drop("SELECT 1").await.unwrap_err();
    let waited = started.elapsed();
    match err {
        mysql_async::Error::Server(e) => {
            assert_eq!(e.code, 1040, "{e:?}");
            assert!(
                e.message
                    .contains("sidepool: pool \"test\" had no free server connection within 1s"),
                "{}",
                e.message
            );
            assert!(
                e.message.contains("(1/1 in use, 0 waiting)"),
                "{}",
                e.message
            );
        }
        other => panic!("expected error 1040, got {other:?}"),
    }
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "waited {waited:?}"
    );
    holder.query_drop("COMMIT").await.unwrap();
    let one: Option<i64> = other.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the client stays usable after 1040");
}

/// Issue 16 for MySQL: a `SET` prepared with COM_STMT_PREPARE changes the session each time it
/// is executed (mysql_async's `exec_drop`), so it is read back and follows the client like a
/// `SET` in COM_QUERY (here also inside a multi-statement string), and reaches no other client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_or_multi_statement_set_follows_the_client_and_leaks_to_no_other() {
    let db = must_start_mariadb();
    let proxy = MyProxy::must_start(&db, "max_open = 2").await;
    let mut setter = proxy.must_connect().await;
    let mut other = proxy.must_connect().await;
    let zone = "SELECT @@session.time_zone";
    for (value, prepared) in [("+09:00", true), ("+01:00", true), ("+02:00", false)] {
        if prepared {
            setter
                .exec_drop("SET time_zone = ?", (value,))
                .await
                .unwrap();
        } else {
            // Inside a multi-statement COM_QUERY.
            let sql = format!("SELECT 1; SET time_zone = '{value}'; SELECT 2");
            setter.query_drop(sql).await.unwrap();
        }
        // `other` takes the most recently used connection, the one the SET ran on, and keeps
        // it: whichever connection each gets, one of them would see a lost or leaked setting.
        other.query_drop("BEGIN").await.unwrap();
        let theirs: Option<String> = other.query_first(zone).await.unwrap();
        let mine: Option<String> = setter.query_first(zone).await.unwrap();
        other.query_drop("COMMIT").await.unwrap();
        assert_eq!(mine.as_deref(), Some(value), "the setter's own setting");
        assert_eq!(
            theirs.as_deref(),
            Some("SYSTEM"),
            "another client's setting leaked"
        );
    }
}
