//! Faults a sidecar must survive, against a real PostgreSQL: the database restarting under load
//! (no acknowledged commit lost), a backend that is down when sidepool starts, one that accepts
//! connections and never answers, a server connection killed mid-transaction, and hostile bytes
//! from clients.

use std::time::{Duration, Instant};

use crate::support::harness::*;
use sidepool_loadtest::ledger::Ledger;
use sidepool_loadtest::testbed::{PgAuth, PgOptions, PgServer, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Waits until the ledger's acknowledged count passes `from`; returns how long that took.
async fn must_progress(ledger: &Ledger, from: usize, within: Duration, what: &str) -> Duration {
    let started = Instant::now();
    must_eventually(within, what, || async { ledger.acknowledged() > from }).await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_commit_is_lost_while_the_database_restarts_twice() {
    let mut pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(&pg, &PoolSpec::transaction("max_open = 4")).await;
    Ledger::create_table(&proxy.app_dsn())
        .await
        .expect("ledger table");
    let ledger = Ledger::start(&proxy.app_dsn(), 8);
    must_progress(&ledger, 50, Duration::from_secs(20), "ledger warms up").await;
    for round in 1..=2 {
        let before = ledger.acknowledged();
        pg.restart().expect("restart PostgreSQL");
        let took = must_progress(
            &ledger,
            before,
            Duration::from_secs(5),
            "new commits within 5 s of the restart",
        )
        .await;
        eprintln!("restart {round}: commits again after {took:?}");
        let now = ledger.acknowledged();
        must_progress(&ledger, now + 20, Duration::from_secs(10), "steady again").await;
    }
    let outcome = ledger.stop().await;
    let check = Ledger::verify(&pg.dsn(USER, PASSWORD, DB), &outcome)
        .await
        .expect("verify");
    eprintln!(
        "ledger: {} acknowledged, {} unknown, {} errors, e.g. {:?}",
        check.acknowledged,
        outcome.unknown.len(),
        outcome.errors,
        outcome.sample_errors.first()
    );
    assert!(check.lost.is_empty(), "lost commits: {:?}", check.lost);
    assert!(
        check.phantom.is_empty(),
        "rows nobody sent: {:?}",
        check.phantom
    );
    assert!(
        outcome.errors > 0,
        "the restarts should have failed some in-flight work"
    );
    must_eventually(
        Duration::from_secs(5),
        "no connection left in use",
        || async { proxy.stats().in_use == 0 },
    )
    .await;
    let stats = proxy.stats();
    assert!(stats.open <= 4, "{stats:?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_down_at_start_fails_fast_then_recovers_by_itself() {
    let port = free_port();
    let primary = format!("127.0.0.1:{port}");
    let proxy = Proxy::must_start_to(&primary, &PoolSpec::transaction("max_open = 2")).await;
    let admin = proxy.server().admin_addr();
    let ready = http_get(admin, "/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(ready.text().contains("unreachable"), "{}", ready.text());

    let started = Instant::now();
    let err = connect(&proxy.app_dsn())
        .await
        .expect_err("nothing to connect to");
    assert_eq!(sqlstate(&err), "08006", "{}", db_message(&err));
    assert!(db_message(&err).contains(&primary), "{}", db_message(&err));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );

    let pg = PgServer::start_on_port(&PgOptions::default(), port).expect("start on the port");
    pg.create_user(USER, PASSWORD, PgAuth::Scram)
        .expect("create user");
    pg.create_database(DB, USER).expect("create database");
    must_eventually(Duration::from_secs(5), "readyz turns 200", || async {
        http_get(admin, "/readyz").await.status == 200
    })
    .await;
    let c = proxy.must_connect().await;
    must_one(&c, "SELECT 1").await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_accepts_and_never_answers_fails_clients_after_connect_timeout() {
    // A black hole: TCP connects succeed, not one byte ever comes back.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let primary = hole.local_addr().unwrap().to_string();
    let swallower = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            held.push(s);
        }
    });
    let proxy = Proxy::must_start_to(
        &primary,
        &PoolSpec::transaction("max_open = 2\nconnect_timeout = \"1s\""),
    )
    .await;

    // Three clients at once over max_open = 2: each fails on its own connect attempt or its
    // wait, none hangs, and all within a few connect timeouts.
    let started = Instant::now();
    let attempts: Vec<_> = (0..3)
        .map(|_| {
            let dsn = proxy.app_dsn();
            tokio::spawn(async move { connect(&dsn).await })
        })
        .collect();
    for a in attempts {
        let err = tokio::time::timeout(Duration::from_secs(15), a)
            .await
            .expect("a client hung on a silent backend")
            .unwrap()
            .expect_err("the backend never answers");
        assert_eq!(sqlstate(&err), "08006", "{}", db_message(&err));
        let msg = db_message(&err);
        assert!(
            msg.starts_with("sidepool:") && msg.contains(&primary),
            "{msg}"
        );
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(8),
        "took {took:?} with connect_timeout 1s"
    );
    // Nothing is left half-open in the pool.
    must_eventually(
        Duration::from_secs(5),
        "no connection left opening",
        || async { proxy.stats().open == 0 },
    )
    .await;
    proxy.shutdown().await;
    swallower.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_connection_killed_mid_transaction_ends_only_that_client() {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(&pg, &PoolSpec::transaction("max_open = 2")).await;
    let direct = must_connect_direct(&pg).await;
    let (victim, ended) = connect_watched(&proxy.app_dsn()).await;
    victim
        .batch_execute("BEGIN; SELECT 1")
        .await
        .expect("begin");
    let bystander = proxy.must_connect().await;
    direct
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE usename = 'app' AND state = 'idle in transaction'",
        )
        .await
        .expect("terminate");
    let end = tokio::time::timeout(Duration::from_secs(5), ended)
        .await
        .expect("the victim's session ends")
        .expect("reported");
    let err = end.expect_err("the victim is told");
    assert_eq!(sqlstate(&err), "57P01", "{}", db_message(&err));
    must_one(&bystander, "SELECT 1").await;
    let again = proxy.must_connect().await;
    must_one(&again, "SELECT 2").await;
    must_eventually(Duration::from_secs(5), "pool counts settle", || async {
        let s = proxy.stats();
        s.in_use == 0 && s.open <= 2
    })
    .await;
    proxy.shutdown().await;
}

/// Reads whatever the proxy answers until it closes (bounded).
async fn answer_then_close(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the connection was not closed");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_packets_get_08p01_and_harm_nothing() {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(&pg, &PoolSpec::transaction("max_open = 2")).await;

    // A startup packet claiming 1 GiB.
    let mut s = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("tcp");
    s.write_all(&[0x40, 0, 0, 0, 0, 3, 0, 0])
        .await
        .expect("send");
    let answer = answer_then_close(&mut s).await;
    assert_eq!(answer.first(), Some(&b'E'), "{answer:?}");
    assert!(
        String::from_utf8_lossy(&answer).contains("08P01"),
        "{answer:?}"
    );

    // A startup packet that is garbage.
    let mut s = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("tcp");
    s.write_all(b"\x00\x00\x00\x10GET / HTTP/1.1\r\n")
        .await
        .expect("send");
    let answer = answer_then_close(&mut s).await;
    assert!(
        answer.is_empty() || answer.first() == Some(&b'E'),
        "{answer:?}"
    );

    // Nothing at all, then the client goes away.
    drop(
        tokio::net::TcpStream::connect(proxy.addr)
            .await
            .expect("tcp"),
    );

    // Still serving.
    let c = proxy.must_connect().await;
    must_one(&c, "SELECT 1").await;
    // The relay returns the connection right after forwarding the answer, so the client may
    // read it a moment before the pool counts the connection idle again.
    must_eventually(
        Duration::from_secs(5),
        "every connection back in the pool",
        || async { proxy.stats().in_use == 0 },
    )
    .await;
    proxy.shutdown().await;
}
