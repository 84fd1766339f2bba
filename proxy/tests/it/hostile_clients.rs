//! Clients that hold sidepool's doors open: ones that never finish logging in (silent, stalled
//! in the password exchange, or trickling bytes) are closed at the login timeout under paused
//! time, and a connection flood far over `max_clients` is refused with 53300 while the clients
//! already admitted keep working against a real PostgreSQL.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::support::harness::*;
use sidepool::Server;
use sidepool_loadtest::testbed::PgAuth;
use sidepool_protocol::pg::startup;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// sidepool's login budget (`pg::client::LOGIN_TIMEOUT`, PgBouncer's `client_login_timeout`).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A sidepool whose primary nothing listens on: logging in needs no server connection (the
/// password is in the config), so these tests need no database and can pause time.
async fn start_without_database() -> (Server, SocketAddr) {
    let text = config_text("127.0.0.1:1", &PoolSpec::transaction("max_open = 2"));
    let config = sidepool_config::parse(&text, "test.toml", &|_| None).unwrap();
    let server = Server::start(&config).await.expect("sidepool starts");
    let addr = server.local_addr("test").unwrap();
    (server, addr)
}

fn startup_packet() -> Vec<u8> {
    startup::startup_message(&[("user", USER), ("database", DB)]).to_vec()
}

/// Reads until sidepool closes the connection; returns what it sent and when it closed.
async fn read_until_closed(s: &mut TcpStream) -> (Vec<u8>, Instant) {
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got).await;
    (got, Instant::now())
}

fn assert_closed_at_login_timeout(started: Instant, closed: Instant) {
    let after = closed - started;
    assert!(
        after >= LOGIN_TIMEOUT && after < LOGIN_TIMEOUT + Duration::from_secs(1),
        "closed after {after:?}, login timeout {LOGIN_TIMEOUT:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_sends_a_startup_packet_is_closed_at_the_login_timeout() {
    let (server, addr) = start_without_database().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let (got, closed) = read_until_closed(&mut s).await;
    assert!(
        got.is_empty(),
        "nothing to say before a startup packet: {got:?}"
    );
    assert_closed_at_login_timeout(started, closed);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_client_silent_in_the_password_exchange_gets_08p01_at_the_login_timeout() {
    let (server, addr) = start_without_database().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    s.write_all(&startup_packet()).await.unwrap();
    let (got, closed) = read_until_closed(&mut s).await;
    assert_eq!(
        got.first(),
        Some(&b'R'),
        "an authentication request first: {got:?}"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.contains("C08P01\0"),
        "a FATAL 08P01 at the end: {text:?}"
    );
    assert!(
        text.contains("sidepool: login not finished within 30s"),
        "{text:?}"
    );
    assert_closed_at_login_timeout(started, closed);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_client_trickling_its_startup_packet_is_closed_at_the_login_timeout_not_reset_by_bytes() {
    let (server, addr) = start_without_database().await;
    let s = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let (mut rd, mut wr) = s.into_split();
    // One byte every 5 s: each read succeeds, but the whole login has one deadline.
    let trickle = tokio::spawn(async move {
        for b in startup_packet() {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
    let mut got = Vec::new();
    let _ = rd.read_to_end(&mut got).await;
    assert!(got.is_empty(), "{got:?}");
    assert_closed_at_login_timeout(started, Instant::now());
    trickle.abort();
    server.shutdown().await;
}

/// What one flood connection saw: refused with 53300, admitted (asked for a password), or
/// neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Door {
    Refused,
    Admitted,
    Other,
}

/// One flood connection. An admitted one is returned open, so it keeps its slot.
async fn knock(addr: SocketAddr) -> (Door, Option<TcpStream>) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return (Door::Other, None);
    };
    if s.write_all(&startup_packet()).await.is_err() {
        return (Door::Other, None);
    }
    let mut got = vec![0u8; 512];
    let n = match tokio::time::timeout(Duration::from_secs(20), s.read(&mut got)).await {
        Ok(Ok(n)) => n,
        _ => return (Door::Other, None),
    };
    let got = &got[..n];
    if got.first() == Some(&b'E') && got.windows(7).any(|w| w == b"C53300\0") {
        (Door::Refused, None)
    } else if got.first() == Some(&b'R') {
        (Door::Admitted, Some(s))
    } else {
        (Door::Other, None)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_2000_connections_over_max_clients_is_refused_while_admitted_clients_work() {
    const MAX_CLIENTS: u64 = 50;
    const WORKERS: u64 = 8;
    const FLOOD: u64 = 2000;
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(
        &pg,
        &PoolSpec::transaction(&format!("max_open = 4\nmax_clients = {MAX_CLIENTS}")),
    )
    .await;

    // Admitted clients that keep querying through the flood.
    let flooding = Arc::new(AtomicBool::new(true));
    let queries = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let client = proxy.must_connect().await;
        let (flooding, queries) = (flooding.clone(), queries.clone());
        workers.push(tokio::spawn(async move {
            while flooding.load(Ordering::Relaxed) {
                client.simple_query("SELECT 1").await?;
                queries.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, tokio_postgres::Error>(())
        }));
    }

    // The flood: 2000 connections, 400 in flight at a time so the kernel's accept backlog is
    // not what refuses them.
    let gate = Arc::new(tokio::sync::Semaphore::new(400));
    let addr = proxy.addr;
    let mut knocks = Vec::new();
    for _ in 0..FLOOD {
        let permit = gate.clone().acquire_owned().await.unwrap();
        knocks.push(tokio::spawn(async move {
            let door = knock(addr).await;
            drop(permit);
            door
        }));
    }
    let (mut refused, mut admitted, mut other) = (0u64, 0u64, 0u64);
    let mut held = Vec::new();
    for k in knocks {
        let (door, open) = k.await.unwrap();
        match door {
            Door::Refused => refused += 1,
            Door::Admitted => admitted += 1,
            Door::Other => other += 1,
        }
        held.extend(open);
    }
    flooding.store(false, Ordering::Relaxed);
    for w in workers {
        w.await
            .unwrap()
            .expect("an admitted client's query failed during the flood");
    }

    assert_eq!(other, 0, "every flood connection got an answer");
    // Admitted flood connections stay open, so exactly the free slots were given out.
    assert_eq!(
        admitted,
        MAX_CLIENTS - WORKERS,
        "{admitted} admitted, {refused} refused: max_clients did not hold"
    );
    assert_eq!(refused, FLOOD - admitted);
    assert!(
        queries.load(Ordering::Relaxed) >= WORKERS,
        "the admitted clients made no progress"
    );
    let metrics = http_get(proxy.server().admin_addr(), "/metrics")
        .await
        .text();
    let counted = metrics
        .lines()
        .find(|l| {
            l.starts_with("sidepool_pool_rejected_total")
                && l.contains("pool=\"test\"")
                && l.contains("reason=\"max_clients\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert_eq!(counted as u64, refused, "rejections counted in /metrics");

    // The flood's slots are free again once its connections go.
    drop(held);
    must_eventually(Duration::from_secs(10), "a new client logs in", || async {
        connect(&proxy.app_dsn()).await.is_ok()
    })
    .await;
    proxy.shutdown().await;
}
