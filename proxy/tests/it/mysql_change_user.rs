//! COM_CHANGE_USER through a transaction-mode pool over a real MariaDB, with mysql_async's
//! `Conn::change_user` and two configured users: the new login is checked by sidepool,
//! the session is reset and served by the new user's server connections, and failures get
//! the server's error numbers.

use crate::support::mysql::{DB, MyProxy, config_text_with_users, must_start_mariadb};
use mysql_async::prelude::*;
use mysql_async::{ChangeUserOpts, Conn};

const OTHER: &str = "other";
const OTHER_PASSWORD: &str = "other-secret";

async fn must_start() -> (sidepool_loadtest::testbed::MariaDbServer, MyProxy) {
    let db = must_start_mariadb();
    db.create_user(OTHER, OTHER_PASSWORD)
        .expect("create user other");
    let primary = format!("{}:{}", db.host(), db.port());
    let text = config_text_with_users(
        &primary,
        "transaction",
        "password",
        "max_open = 2",
        &[(OTHER, OTHER_PASSWORD)],
    );
    let proxy = MyProxy::must_start_config(&text).await;
    (db, proxy)
}

fn as_other(password: &str, db: &str) -> ChangeUserOpts {
    ChangeUserOpts::default()
        .with_user(Some(OTHER.to_owned()))
        .with_pass(Some(password.to_owned()))
        .with_db_name(Some(db.to_owned()))
}

async fn must_current_user(conn: &mut Conn) -> String {
    conn.query_first::<String, _>("SELECT CURRENT_USER()")
        .await
        .expect("CURRENT_USER()")
        .expect("a row")
}

fn server_code(e: mysql_async::Error) -> u16 {
    match e {
        mysql_async::Error::Server(s) => s.code,
        other => panic!("expected a server error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_user_logs_in_as_the_other_user_and_resets_the_session() {
    let (_db, proxy) = must_start().await;
    let mut conn = proxy.must_connect().await;
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    // State the old login leaves behind: a user variable (pins), a tracked session variable,
    // a prepared statement and an open transaction with an uncommitted row.
    conn.query_drop("SET @v = 1").await.unwrap();
    conn.query_drop("SET SESSION sql_mode = 'ANSI_QUOTES'")
        .await
        .unwrap();
    let one: Option<i64> = conn.exec_first("SELECT ?", (1,)).await.unwrap();
    assert_eq!(one, Some(1));
    conn.query_drop("BEGIN").await.unwrap();
    conn.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    assert_eq!(
        proxy
            .pool()
            .core()
            .pinned
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(must_current_user(&mut conn).await, "app@%");

    conn.change_user(as_other(OTHER_PASSWORD, DB))
        .await
        .expect("change_user to other");
    let pool = proxy.pool();
    let core = pool.core();
    assert_eq!(
        core.pinned.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the pin ended"
    );
    assert_eq!(
        proxy.stats().in_use,
        0,
        "the old login's server connection was returned"
    );

    assert_eq!(must_current_user(&mut conn).await, "other@%");
    let (v, mode, schema): (Option<i64>, String, Option<String>) = conn
        .query_first("SELECT @v, @@sql_mode, DATABASE()")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, None, "user variables are gone");
    assert!(!mode.contains("ANSI_QUOTES"), "sql_mode was reset: {mode}");
    assert_eq!(schema.as_deref(), Some(DB));
    let rows: Option<i64> = conn.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(rows, Some(0), "the open transaction was rolled back");
    let two: Option<i64> = conn.exec_first("SELECT ? + 1", (1,)).await.unwrap();
    assert_eq!(two, Some(2), "statements prepare again under the new login");
    let users: Vec<String> = core
        .sessions
        .list()
        .iter()
        .map(|c| c.user.clone())
        .collect();
    assert_eq!(
        users,
        vec![OTHER.to_owned()],
        "the console and leak reports see the new user"
    );
    conn.disconnect().await.unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_user_with_a_wrong_password_gets_1045_and_keeps_the_old_login() {
    let (_db, proxy) = must_start().await;
    let mut conn = proxy.must_connect().await;
    let err = conn
        .change_user(as_other("wrong", DB))
        .await
        .expect_err("a wrong password is refused");
    assert_eq!(server_code(err), 1045);
    // mysql_async keeps the options it was given; the session itself is still app's.
    assert_eq!(must_current_user(&mut conn).await, "app@%");

    let err = conn
        .change_user(
            ChangeUserOpts::default()
                .with_user(Some("nobody".to_owned()))
                .with_pass(Some("x".to_owned())),
        )
        .await
        .expect_err("an unknown user is refused");
    assert_eq!(server_code(err), 1045);
    let err = conn
        .change_user(as_other("wrong again", DB))
        .await
        .expect_err("third failure");
    assert_eq!(server_code(err), 1045);
    let err = conn
        .change_user(as_other(OTHER_PASSWORD, DB))
        .await
        .expect_err("refused after three failures, even with the right password");
    assert_eq!(server_code(err), 1047);
    assert_eq!(must_current_user(&mut conn).await, "app@%");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_user_to_a_missing_database_gets_the_servers_1049() {
    let (_db, proxy) = must_start().await;
    let mut conn = proxy.must_connect().await;
    let err = conn
        .change_user(as_other(OTHER_PASSWORD, "no_such_db"))
        .await
        .expect_err("the database does not exist");
    assert_eq!(server_code(err), 1049);
    assert_eq!(must_current_user(&mut conn).await, "app@%");
    proxy.shutdown().await;
}
