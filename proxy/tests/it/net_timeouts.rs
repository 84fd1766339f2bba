//! When the network lies, first part (issue #17): the `[pools.tcp]` options on the sockets a
//! real pool opens and accepts, and `query_timeout` against real servers (a PostgreSQL and a
//! MariaDB that take longer than the bound to answer).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sidepool_config::TcpOptions;
use socket2::{SockRef, Socket};

use crate::support::harness::*;
use crate::support::mysql::{MyProxy, config_text, must_start_mariadb, primary};
use sidepool_loadtest::testbed::PgAuth;
use sidepool_protocol::pg::backend as be;
use sidepool_protocol::pg::{TransactionStatus, frontend as fe, startup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Server and client options unlike every default, so that a match proves they were set.
const TCP: &str = "[pools.tcp]
server_keepalive_idle = \"21s\"
server_keepalive_interval = \"3s\"
server_keepalive_count = 4
server_user_timeout = \"25s\"
client_keepalive_idle = \"41s\"
client_keepalive_interval = \"7s\"
client_keepalive_count = 5
client_user_timeout = \"50s\"
";

fn options(idle: u64, interval: u64, count: u32, user_timeout: u64) -> TcpOptions {
    TcpOptions {
        keepalive_idle: Some(Duration::from_secs(idle)),
        keepalive_interval: Duration::from_secs(interval),
        keepalive_count: count,
        user_timeout: Some(Duration::from_secs(user_timeout)),
    }
}

/// One TCP socket of this process: its addresses and options as the kernel reports them.
#[derive(Debug)]
struct OpenSocket {
    local: SocketAddr,
    peer: SocketAddr,
    options: TcpOptions,
}

/// Every connected TCP socket this process holds, read through a duplicate of its descriptor
/// (`pidfd_getfd` on our own pid: no `unsafe`, and the original is untouched).
fn open_tcp_sockets() -> Vec<OpenSocket> {
    use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};
    let me = pidfd_open(getpid(), PidfdFlags::empty()).expect("pidfd_open of this process");
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        let fd = entry.file_name().to_str().and_then(|n| n.parse().ok());
        let Some(fd) = fd.filter(|_| is_socket) else {
            continue;
        };
        // Sockets closed meanwhile, UDP and listeners are skipped.
        let Ok(dup) = pidfd_getfd(&me, fd, PidfdGetfdFlags::empty()) else {
            continue;
        };
        let socket = Socket::from(dup);
        let (Ok(local), Ok(peer)) = (socket.local_addr(), socket.peer_addr()) else {
            continue;
        };
        let (Some(local), Some(peer)) = (local.as_socket(), peer.as_socket()) else {
            continue;
        };
        let Ok(options) = sidepool::net::options_of(SockRef::from(&socket)) else {
            continue;
        };
        out.push(OpenSocket {
            local,
            peer,
            options,
        });
    }
    out
}

/// Asserts that the pool's `open` server connections (at least one) to `server_port` carry
/// `want`: as many sockets to that port with exactly these options. Other sockets to the
/// server, such as the testbed's, may exist with the kernel's defaults. Returns every socket.
fn must_see_server_sockets_with(server_port: u16, open: u32, want: TcpOptions) -> Vec<OpenSocket> {
    let sockets = open_tcp_sockets();
    let configured = sockets
        .iter()
        .filter(|s| s.peer.port() == server_port && s.options == want)
        .count();
    assert!(
        open >= 1 && configured == open as usize,
        "{open} open, {sockets:?}"
    );
    sockets
}

/// Asserts that an answer that took `took` came at `bound`, at most `slack` late.
#[track_caller]
fn assert_answered_within(took: Duration, bound: Duration, slack: Duration) {
    assert!(
        took >= bound && took < bound + slack,
        "answered after {took:?}, bound {bound:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_server_and_client_sockets_carry_the_configured_tcp_options() {
    let pg = must_start_pg(PgAuth::Scram);
    let limits = format!("max_open = 2\n{TCP}");
    let proxy = Proxy::must_start(&pg, &PoolSpec::session(&limits)).await;
    let client = proxy.must_connect().await;
    client.simple_query("SELECT 1").await.unwrap();

    let sockets =
        must_see_server_sockets_with(pg.port(), proxy.stats().open, options(21, 3, 4, 25));
    let accepted: Vec<&OpenSocket> = sockets
        .iter()
        .filter(|s| s.local.port() == proxy.addr.port())
        .collect();
    assert_eq!(accepted.len(), 1, "the one client in {sockets:?}");
    assert_eq!(accepted[0].options, options(41, 7, 5, 50));
    drop(client);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_server_sockets_carry_the_default_tcp_options() {
    let db = must_start_mariadb();
    let proxy = MyProxy::must_start(&db, "max_open = 2").await;
    let mut client = proxy.must_connect().await;
    use mysql_async::prelude::Queryable;
    let one: Option<i64> = client.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));

    must_see_server_sockets_with(db.port(), proxy.stats().open, options(15, 5, 3, 30));
    drop(client);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_query_past_query_timeout_gets_57014_the_server_query_is_cancelled_and_the_slot_comes_back()
 {
    let pg = must_start_pg(PgAuth::Scram);
    let spec = PoolSpec::transaction("max_open = 1\nquery_timeout = \"1s\"");
    let proxy = Proxy::must_start(&pg, &spec).await;
    let client = proxy.must_connect().await;
    let started = Instant::now();
    let err = client
        .simple_query("SELECT pg_sleep(5)")
        .await
        .expect_err("the query outlives query_timeout");
    let took = started.elapsed();
    let db = err.as_db_error().unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(db.code().code(), "57014", "{db:?}");
    assert!(db.message().contains("query_timeout (1s)"), "{db:?}");
    assert!(db.message().contains("\"test\""), "names the pool: {db:?}");
    assert_answered_within(took, Duration::from_secs(1), Duration::from_millis(1500));
    assert!(
        client.simple_query("SELECT 1").await.is_err(),
        "session closed"
    );

    must_eventually(Duration::from_secs(5), "the slot comes back", || async {
        proxy.stats().in_use == 0
    })
    .await;
    let next = proxy.must_connect().await;
    let started = Instant::now();
    next.simple_query("SELECT 1").await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    // The CancelRequest stopped the sleep on the server, long before its 5 s.
    let direct = must_connect_direct(&pg).await;
    must_eventually(Duration::from_secs(2), "pg_sleep cancelled", || async {
        let row = direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(5)' \
                 AND state = 'active'",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0) == 0
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(3));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_query_past_query_timeout_gets_3024_and_the_slot_comes_back() {
    use mysql_async::prelude::Queryable;
    let db = must_start_mariadb();
    let text = config_text(
        &primary(&db),
        "transaction",
        "password",
        "max_open = 1\nquery_timeout = \"1s\"",
    );
    let proxy = MyProxy::must_start_config(&text).await;
    let mut client = proxy.must_connect().await;
    let started = Instant::now();
    let err = client
        .query_drop("SELECT SLEEP(5)")
        .await
        .expect_err("the query outlives query_timeout");
    let took = started.elapsed();
    let mysql_async::Error::Server(e) = &err else {
        panic!("a server error expected: {err:?}")
    };
    assert_eq!((e.code, e.state.as_str()), (3024, "HY000"), "{e:?}");
    assert!(e.message.contains("query_timeout (1s)"), "{e:?}");
    assert_answered_within(took, Duration::from_secs(1), Duration::from_millis(1500));
    must_eventually(Duration::from_secs(5), "the slot comes back", || async {
        proxy.stats().in_use == 0
    })
    .await;
    let mut next = proxy.must_connect().await;
    let started = Instant::now();
    let one: Option<i64> = next.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    assert!(started.elapsed() < Duration::from_secs(1));
    drop(client);
    proxy.shutdown().await;
}

/// The secret every connection of [`fake_pg`] hands out.
const FAKE_SECRET: i32 = 0x5eed;

/// What [`fake_pg`] reports: (process id, secret) of a CancelRequest, or the process id of the
/// connection that started an endless answer (secret 0).
type Reports = mpsc::UnboundedSender<(i32, i32)>;

/// A PostgreSQL stand-in: it logs anyone in (process ids from 101), answers a
/// Query for `SELECT rows…` with a RowDescription and then a DataRow every 200 ms, never
/// finishing, and any other Query at once.
async fn fake_pg(listener: tokio::net::TcpListener, reports: Reports) {
    let mut pid = 100;
    while let Ok((s, _)) = listener.accept().await {
        pid += 1;
        tokio::spawn(fake_pg_connection(s, pid, reports.clone()));
    }
}

async fn fake_pg_connection(mut s: TcpStream, pid: i32, reports: Reports) -> std::io::Result<()> {
    let len = s.read_i32().await?;
    let code = s.read_i32().await?;
    let mut rest = vec![0; usize::try_from(len - 8).unwrap_or(0)];
    s.read_exact(&mut rest).await?;
    if code == 80_877_102 {
        let word = |at: usize| i32::from_be_bytes(rest[at..at + 4].try_into().unwrap());
        let _ = reports.send((word(0), word(4)));
        return Ok(());
    }
    let mut hello = be::authentication_ok().to_vec();
    hello.extend_from_slice(&be::backend_key_data(pid, FAKE_SECRET));
    hello.extend_from_slice(&be::ready_for_query(TransactionStatus::Idle));
    s.write_all(&hello).await?;
    loop {
        let tag = s.read_u8().await?;
        let len = s.read_i32().await?;
        let mut body = vec![0; usize::try_from(len - 4).unwrap_or(0)];
        s.read_exact(&mut body).await?;
        match tag {
            b'Q' if body.starts_with(b"SELECT rows") => {
                let _ = reports.send((pid, 0));
                s.write_all(&be::row_description(&[("x", be::ColumnType::Text)]))
                    .await?;
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    s.write_all(&be::data_row(&[Some("x")])).await?;
                }
            }
            b'Q' => {
                let mut answer = be::command_complete("SELECT 0").to_vec();
                answer.extend_from_slice(&be::ready_for_query(TransactionStatus::Idle));
                s.write_all(&answer).await?;
            }
            b'X' => return Ok(()),
            _ => {}
        }
    }
}

/// A trust pool named `test` in front of `server_addr` with `limits` lines (which may open
/// further sections).
fn fake_config(server_addr: SocketAddr, limits: &str) -> sidepool_config::Config {
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[pools]]\nname = \"test\"\nprotocol = \"postgres\"\n\
         listen = \"127.0.0.1:0\"\nprimary = \"{server_addr}\"\nclient_auth = \"trust\"\n\
         [[pools.users]]\nname = \"{USER}\"\n[pools.limits]\n{limits}\n"
    );
    sidepool_config::parse(&text, "test.toml", &|_| None).unwrap()
}

/// A [`fake_pg`] on a free port, the sidepool in front of it, and the channel of its reports.
async fn must_start_fake(
    limits: &str,
) -> (
    sidepool::Server,
    SocketAddr,
    mpsc::UnboundedReceiver<(i32, i32)>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = listener.local_addr().unwrap();
    let (reports_tx, reports) = mpsc::unbounded_channel();
    tokio::spawn(fake_pg(listener, reports_tx));
    let server = sidepool::Server::start(&fake_config(server_addr, limits))
        .await
        .unwrap();
    (server, server_addr, reports)
}

/// A raw client logged in to pool `test` (up to its first ReadyForQuery).
async fn must_log_in(server: &sidepool::Server) -> TcpStream {
    let mut client = TcpStream::connect(server.local_addr("test").unwrap())
        .await
        .unwrap();
    client
        .write_all(&startup::startup_message(&[
            ("user", USER),
            ("database", DB),
        ]))
        .await
        .unwrap();
    let mut got = Vec::new();
    while !got.ends_with(&be::ready_for_query(TransactionStatus::Idle)) {
        assert_ne!(client.read_buf(&mut got).await.unwrap(), 0, "{got:?}");
    }
    client
}

/// Sends `SELECT rows` (endless at [`fake_pg`]) and reads until sidepool closes: what came,
/// and after how long.
async fn endless_query(client: &mut TcpStream) -> (String, Duration) {
    let started = tokio::time::Instant::now();
    client.write_all(&fe::query("SELECT rows")).await.unwrap();
    let mut answer = Vec::new();
    let _ = client.read_to_end(&mut answer).await;
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

// Real time: under a paused clock the runtime jumps to the next timer while the rows are
// still on their way through the loopback, so they would arrive "after" the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_query_timeout_counts_from_the_request_not_from_the_last_row_and_cancels_on_the_server()
{
    let (server, _, mut reports) = must_start_fake("max_open = 1\nquery_timeout = \"1s\"").await;
    let mut client = must_log_in(&server).await;
    // A quick request first: its answer must not leave a clock running.
    client.write_all(&fe::query("SELECT 1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (text, took) = endless_query(&mut client).await;

    assert_answered_within(took, Duration::from_secs(1), Duration::from_millis(500));
    assert!(text.contains("SELECT 0"), "the quick answer: {text:?}");
    let row = be::data_row(&[Some("x")]);
    let rows = text.matches(&*String::from_utf8_lossy(&row)).count();
    assert!(
        rows >= 3,
        "rows kept coming, each under the bound: {text:?}"
    );
    assert!(
        text.contains("SFATAL\0") && text.contains("C57014\0"),
        "{text:?}"
    );
    assert!(
        text.contains("query_timeout (1s) of pool \"test\""),
        "{text:?}"
    );
    let (hung, _) = reports.recv().await.unwrap();
    let cancelled = reports.recv().await.unwrap();
    assert_eq!(
        cancelled,
        (hung, FAKE_SECRET),
        "the cancel names the connection"
    );
    assert_eq!(server.pool_stats("test").unwrap().in_use, 0);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_reload_times_later_requests_and_gives_later_connections_the_new_tcp_options() {
    let (server, server_addr, _reports) = must_start_fake("max_open = 2").await;
    let mut before = must_log_in(&server).await;
    let summary = server
        .apply(fake_config(
            server_addr,
            "max_open = 2\nquery_timeout = \"2s\"\n[pools.tcp]\nclient_keepalive_idle = \"33s\"",
        ))
        .await
        .unwrap();
    assert!(summary.contains("limits, tcp applied"), "{summary}");
    let after = must_log_in(&server).await;
    let accepted: Vec<OpenSocket> = open_tcp_sockets()
        .into_iter()
        .filter(|s| s.local.port() == server.local_addr("test").unwrap().port())
        .collect();
    let idle_of = |client: &TcpStream| {
        let port = client.local_addr().unwrap().port();
        let s = accepted.iter().find(|s| s.peer.port() == port).unwrap();
        s.options.keepalive_idle
    };
    assert_eq!(idle_of(&before), Some(Duration::from_secs(60)), "kept");
    assert_eq!(idle_of(&after), Some(Duration::from_secs(33)), "new");
    // The session that logged in before the reload is timed from its next request on.
    let (text, took) = endless_query(&mut before).await;
    assert!(text.contains("C57014\0"), "{text:?}");
    assert_answered_within(took, Duration::from_secs(2), Duration::from_millis(100));
    drop(after);
    server.shutdown().await;
}
