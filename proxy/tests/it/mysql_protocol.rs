//! MySQL protocol features through a sidepool pool against a real MariaDB 10.11, each proved on
//! the server's side: multi-statements with several result sets, `LOAD DATA LOCAL INFILE`
//! through the `mariadb` client, a prepared statement whose parameter travels as
//! `COM_STMT_SEND_LONG_DATA` (over 16 MiB, so the packets split too), session mode's
//! `COM_RESET_CONNECTION` between two clients of one server connection, and sidepool logging
//! in to MariaDB as a user of the `ed25519` plugin.

use crate::support::mysql::{
    DB, MyProxy, PASSWORD, USER, config_text_with_users, must_start_mariadb, primary,
};
use mysql_async::prelude::*;
use sidepool_loadtest::testbed::{MariaDbOptions, MariaDbServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statements_return_every_result_set_then_free_the_connection() {
    let db = must_start_mariadb();
    let proxy = MyProxy::must_start(&db, "max_open = 1\nwait_timeout = \"5s\"").await;
    let mut a = proxy.must_connect().await;
    let mut result = a
        .query_iter("SELECT 1; SELECT 2, 'two'; DO 0; SELECT 3")
        .await
        .unwrap();
    let first: Vec<i64> = result.collect().await.unwrap();
    let second: Vec<(i64, String)> = result.collect().await.unwrap();
    // `DO` answers with an OK and no rows; the last SELECT's set follows it.
    let mut rest: Vec<Vec<i64>> = Vec::new();
    while !result.is_empty() {
        rest.push(result.collect().await.unwrap());
    }
    drop(result);
    assert_eq!(first, [1]);
    assert_eq!(second, [(2, "two".to_owned())]);
    assert_eq!(rest.concat(), [3]);
    // The one server connection went back to the pool after the last result set: another
    // client gets it within the wait timeout.
    let mut b = proxy.must_connect().await;
    let n: Option<i64> = b.query_first("SELECT 4").await.unwrap();
    assert_eq!(n, Some(4));
    assert_eq!(proxy.stats().open, 1);
    drop((a, b));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_data_local_infile_from_the_mariadb_client_loads_every_row() {
    let db = must_start_mariadb();
    let proxy = MyProxy::must_start(&db, "max_open = 2").await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("rows.csv");
    let rows: String = (1..=5000).map(|i| format!("{i},name-{i}\n")).collect();
    std::fs::write(&csv, rows).unwrap();
    let sql = format!(
        "CREATE TABLE loaded (id INT PRIMARY KEY, name VARCHAR(20));\n\
         LOAD DATA LOCAL INFILE '{}' INTO TABLE loaded FIELDS TERMINATED BY ',';\n\
         SELECT COUNT(*), SUM(id) FROM loaded;\n",
        csv.display()
    );
    let out = tokio::process::Command::new("mariadb")
        .args([
            "--no-defaults",
            "--local-infile=1",
            "-N",
            "-B",
            "-h",
            "127.0.0.1",
        ])
        .args(["-P", &proxy.addr.port().to_string()])
        .args(["-u", USER, &format!("-p{PASSWORD}"), DB])
        .args(["-e", &sql])
        .output()
        .await
        .expect("run the mariadb client (Debian: apt-get install mariadb-client)");
    assert!(
        out.status.success(),
        "mariadb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "5000\t12502500"
    );
    // The server holds the same rows (not only the client's view of them).
    assert_eq!(
        db.sql(&format!("SELECT COUNT(*) FROM {DB}.loaded"))
            .unwrap(),
        "5000"
    );
    // And the session after the upload is clean: the next statement works.
    let mut c = proxy.must_connect().await;
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM loaded").await.unwrap();
    assert_eq!(n, Some(5000));
    drop(c);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parameter_over_16_mib_travels_as_send_long_data_and_arrives_whole() {
    // The server must accept a 17 MiB value.
    let db = MariaDbServer::must_start(&MariaDbOptions {
        extra_conf: vec!["max_allowed_packet = 64M".to_owned()],
        ..MariaDbOptions::default()
    });
    db.create_user(USER, PASSWORD).unwrap();
    db.create_database(DB, USER).unwrap();
    let proxy = MyProxy::must_start(&db, "max_open = 1").await;
    let mut c = proxy.must_connect().await;
    c.query_drop("CREATE TABLE blobs (id INT PRIMARY KEY, b LONGBLOB)")
        .await
        .unwrap();
    // mysql_async sends a statement's bytes parameters as COM_STMT_SEND_LONG_DATA when the
    // execute packet would pass 16 MiB; each long-data chunk is itself a split packet.
    let big: Vec<u8> = (0..17 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    c.exec_drop("INSERT INTO blobs VALUES (?, ?)", (1, big.clone()))
        .await
        .unwrap();
    let (len, sum): (i64, String) = c
        .query_first("SELECT LENGTH(b), MD5(b) FROM blobs WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(len as usize, big.len());
    let expected = db
        .sql(&format!("SELECT MD5(b) FROM {DB}.blobs WHERE id = 1"))
        .unwrap();
    assert_eq!(sum, expected);
    // Read back through sidepool in one piece.
    let back: Option<Vec<u8>> = c
        .exec_first("SELECT b FROM blobs WHERE id = ?", (1,))
        .await
        .unwrap();
    assert!(
        back.as_deref() == Some(&big[..]),
        "the blob came back changed"
    );
    drop(c);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_resets_the_connection_before_the_next_client_gets_it() {
    let db = must_start_mariadb();
    let proxy = MyProxy::must_start_with(&db, "session", "password", "max_open = 1").await;
    let mut a = proxy.must_connect().await;
    a.query_drop("SET @left_behind = 42").await.unwrap();
    a.query_drop("CREATE TEMPORARY TABLE tmp_left (x INT)")
        .await
        .unwrap();
    a.query_drop("SET SESSION sql_mode = 'ANSI_QUOTES'")
        .await
        .unwrap();
    let first_id: Option<u64> = a.query_first("SELECT CONNECTION_ID()").await.unwrap();
    a.disconnect().await.unwrap();

    let mut b = proxy.must_connect().await;
    let second_id: Option<u64> = b.query_first("SELECT CONNECTION_ID()").await.unwrap();
    assert_eq!(first_id, second_id, "the one server connection was reused");
    let var: Option<Option<i64>> = b.query_first("SELECT @left_behind").await.unwrap();
    assert_eq!(var, Some(None), "user variable survived the reset");
    let mode: Option<String> = b.query_first("SELECT @@SESSION.sql_mode").await.unwrap();
    assert!(
        !mode.unwrap_or_default().contains("ANSI_QUOTES"),
        "session sql_mode survived the reset"
    );
    let err = b
        .query_drop("SELECT * FROM tmp_left")
        .await
        .expect_err("temporary table survived the reset");
    match err {
        mysql_async::Error::Server(e) => assert_eq!(e.code, 1146, "{e:?}"),
        other => panic!("unexpected error: {other:?}"),
    }
    drop(b);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidepool_logs_in_to_mariadb_with_client_ed25519() {
    let db = must_start_mariadb();
    db.sql(
        "INSTALL SONAME 'auth_ed25519';\n\
         CREATE USER edu@'%' IDENTIFIED VIA ed25519 USING PASSWORD('ed-secret');\n\
         GRANT ALL ON app.* TO edu@'%';",
    )
    .expect("the ed25519 plugin (Debian: mariadb-server ships auth_ed25519.so)");
    let text = config_text_with_users(
        &primary(&db),
        "transaction",
        "password",
        "max_open = 2",
        &[("edu", "ed-secret")],
    );
    let proxy = MyProxy::must_start_config(&text).await;
    // The client logs in to sidepool with caching_sha2; sidepool to MariaDB with ed25519.
    let url = format!(
        "mysql://edu:ed-secret@127.0.0.1:{}/{DB}?prefer_socket=false",
        proxy.addr.port()
    );
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    let user: Option<String> = c.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(user.as_deref(), Some("edu@%"));
    // The server authenticated that user by the ed25519 plugin, the only one it has.
    assert_eq!(
        db.sql("SELECT plugin FROM mysql.user WHERE user = 'edu'")
            .unwrap(),
        "ed25519"
    );
    drop(c);
    proxy.shutdown().await;
}
