//! MySQL pools at the edges of their life, against a real MariaDB with mysql_async: a drain
//! (SIGTERM's `Server::drain`) ends an idle client with 1053 at once and lets a client inside a
//! transaction commit before it is ended; a backend that is down when the client comes gets
//! error 2003 at once, naming the address, and is used once it is back.

use std::time::{Duration, Instant};

use crate::support::harness::{http_get, must_eventually};
use crate::support::mysql::{MyProxy, must_count_connections, must_start_mariadb, primary};
use mysql_async::prelude::*;

fn server_error(e: &mysql_async::Error) -> (u16, String) {
    match e {
        mysql_async::Error::Server(s) => (s.code, s.message.clone()),
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_ends_idle_clients_with_1053_and_lets_open_transactions_commit() {
    let db = std::sync::Arc::new(must_start_mariadb());
    let mut proxy = MyProxy::must_start(&db, "max_open = 4").await;
    let mut setup = proxy.must_connect().await;
    setup
        .query_drop("CREATE TABLE drained (id INT) ENGINE=InnoDB")
        .await
        .unwrap();
    setup.disconnect().await.unwrap();
    let mut idle = proxy.must_connect().await;
    idle.query_drop("SELECT 1").await.unwrap();
    let mut busy = proxy.must_connect().await;
    busy.query_drop("BEGIN").await.unwrap();
    busy.query_drop("INSERT INTO drained VALUES (1)")
        .await
        .unwrap();
    let pool = proxy.pool();
    let clients = || pool.core().sessions.len();
    must_eventually(Duration::from_secs(5), "two clients logged in", || async {
        clients() == 2
    })
    .await;
    let admin = proxy.admin_addr();
    let listen = proxy.addr;

    let drain = tokio::spawn(proxy.take_server().drain(Duration::from_secs(20)));
    must_eventually(
        Duration::from_secs(5),
        "the idle client is ended at once",
        || async { clients() == 1 },
    )
    .await;
    let err = idle
        .query_drop("SELECT 1")
        .await
        .expect_err("the idle session was ended");
    let (code, message) = server_error(&err);
    assert_eq!(code, 1053, "{message}");
    assert!(message.starts_with("sidepool:"), "{message}");
    assert_eq!(http_get(admin, "/readyz").await.status, 503);
    assert!(
        tokio::net::TcpStream::connect(listen).await.is_err(),
        "no new clients while draining"
    );

    // The open transaction finishes its work and commits; then its session is ended too.
    busy.query_drop("INSERT INTO drained VALUES (2)")
        .await
        .expect("the open transaction goes on during the drain");
    busy.query_drop("COMMIT")
        .await
        .expect("the open transaction commits during the drain");
    must_eventually(
        Duration::from_secs(5),
        "the busy client is ended after its commit",
        || async { clients() == 0 },
    )
    .await;
    let err = busy
        .query_drop("SELECT 1")
        .await
        .expect_err("ended after its transaction");
    assert_eq!(server_error(&err).0, 1053);
    tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .expect("drain finishes once the clients are gone")
        .expect("drain task");
    let rows = db
        .sql("SELECT COUNT(*) FROM app.drained")
        .expect("count rows");
    assert_eq!(rows.trim(), "2", "both inserts committed");
    must_eventually(
        Duration::from_secs(5),
        "server connections closed",
        || async { must_count_connections(&db).await == 0 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_down_at_start_gets_2003_at_once_naming_it_then_recovers() {
    let mut db = must_start_mariadb();
    let backend = primary(&db);
    db.stop().expect("stop MariaDB");
    let proxy = MyProxy::must_start(&db, "max_open = 2").await;
    assert_eq!(http_get(proxy.admin_addr(), "/readyz").await.status, 503);

    let started = Instant::now();
    let opts = mysql_async::Opts::from_url(&proxy.url("prefer_socket=false")).expect("url");
    let err = mysql_async::Conn::new(opts.clone())
        .await
        .expect_err("nothing to connect to");
    let elapsed = started.elapsed();
    let (code, message) = server_error(&err);
    assert_eq!(code, 2003, "{message}");
    assert!(
        message.contains("Can't connect to MySQL server") && message.contains(&backend),
        "{message}"
    );
    assert!(message.starts_with("sidepool:"), "{message}");
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");

    db.start_again().expect("start MariaDB again");
    must_eventually(Duration::from_secs(10), "readyz turns 200", || async {
        http_get(proxy.admin_addr(), "/readyz").await.status == 200
    })
    .await;
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .expect("connects once the backend is back");
    let one: Option<i64> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    conn.disconnect().await.unwrap();
    proxy.shutdown().await;
}
