//! Contract tests of `protocol = "dameng"` pools against a fake DM server.
//!
//! No DM8 server can run here (docs/design.md §8), so `FakeDm` below answers with the framing the
//! public DM drivers use (`sidepool_protocol::dm` cites them): 64-byte little-endian headers,
//! XOR checksum at byte 19, transaction status at offset 60 of execute replies. These tests
//! prove sidepool's behaviour against that reading of the protocol, not against DM8 itself.
//!
//! Real sockets are involved, so time is real: limits are a few hundred milliseconds and every
//! wait is a poll with a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use sidepool::Server;
use sidepool_protocol::dm::{self, FrameRules, Header, command};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Transaction status values: open, and finished (DM's `setTrxFinish` reading).
const TRX_OPEN: u8 = 0x01;
const TRX_NONE: u8 = 0x00;

/// What the fake saw and did, for assertions.
#[derive(Default)]
struct Seen {
    /// Every byte each connection received, in order.
    received: Mutex<Vec<Vec<u8>>>,
    /// Every byte each connection sent.
    sent: Mutex<Vec<Vec<u8>>>,
    /// Connections open now, and the most ever open at once.
    open: AtomicUsize,
    most_open: AtomicUsize,
}

/// A DM server stand-in: answers each request with one reply; `EXECUTE2` bodies starting with
/// `update` open a transaction, COMMIT/ROLLBACK end it, `bad-reply` gets a reply whose header
/// checksum is wrong.
struct FakeDm {
    addr: SocketAddr,
    seen: Arc<Seen>,
}

impl FakeDm {
    async fn start() -> FakeDm {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake DM");
        let addr = listener.local_addr().expect("fake DM address");
        let seen = Arc::new(Seen::default());
        let s = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_fake(stream, s.clone()));
            }
        });
        FakeDm { addr, seen }
    }

    fn open(&self) -> usize {
        self.seen.open.load(Ordering::SeqCst)
    }
}

async fn serve_fake(mut stream: TcpStream, seen: Arc<Seen>) {
    let now = seen.open.fetch_add(1, Ordering::SeqCst) + 1;
    seen.most_open.fetch_max(now, Ordering::SeqCst);
    let index = {
        let mut r = seen.received.lock();
        r.push(Vec::new());
        seen.sent.lock().push(Vec::new());
        r.len() - 1
    };
    let mut buf = Vec::new();
    let mut in_trx = false;
    'conn: loop {
        let mut chunk = [0u8; 4096];
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        seen.received.lock()[index].extend_from_slice(&chunk[..n]);
        while let Ok(Some(len)) = dm::check_frame(&buf, &FrameRules::default()) {
            let frame: Vec<u8> = buf.drain(..len).collect();
            let h = dm::parse_header(&frame, &FrameRules::default())
                .expect("fake DM got a valid header")
                .expect("whole frame");
            let body = &frame[dm::HEADER_LEN..];
            let mut reply = match h.command {
                command::STARTUP => reply(h.statement, b"startup-ok: 8.1.3.62", &[]),
                command::LOGIN => reply(h.statement, b"login-ok", &[]),
                command::EXECUTE2 => {
                    if body.starts_with(b"update") {
                        in_trx = true;
                    }
                    let status = if in_trx { TRX_OPEN } else { TRX_NONE };
                    reply(
                        h.statement,
                        b"exec-result-rows",
                        &[(dm::EXEC_TRX_STATUS_OFFSET, status)],
                    )
                }
                command::COMMIT | command::ROLLBACK => {
                    in_trx = false;
                    reply(h.statement, b"", &[])
                }
                _ => reply(h.statement, b"ok", &[]),
            };
            if body == b"bad-reply" {
                reply[19] ^= 0xFF;
            }
            seen.sent.lock()[index].extend_from_slice(&reply);
            if stream.write_all(&reply).await.is_err() {
                break 'conn;
            }
        }
    }
    seen.open.fetch_sub(1, Ordering::SeqCst);
}

/// A message: header (with `specific` bytes 20..64) and body.
fn message(command: u16, statement: i32, body: &[u8], specific: &[(usize, u8)]) -> Vec<u8> {
    let h = Header {
        statement,
        command,
        body_len: body.len() as u32,
        ..Header::default()
    };
    let mut m = h.encode(&dm::specific(specific)).to_vec();
    m.extend_from_slice(body);
    m
}

fn reply(statement: i32, body: &[u8], specific: &[(usize, u8)]) -> Vec<u8> {
    message(0, statement, body, specific)
}

/// A client speaking DM framing through sidepool.
struct Client {
    stream: TcpStream,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect to sidepool");
        Client { stream }
    }

    /// Connects and completes STARTUP and LOGIN.
    async fn must_login(addr: SocketAddr) -> Client {
        let mut c = Client::connect(addr).await;
        c.must_call(&message(
            command::STARTUP,
            0,
            b"\x07\0\0\x007.6.0.0\0",
            &[(34, 1)],
        ))
        .await;
        c.must_call(&message(command::LOGIN, 0, b"SYSDBA-encrypted", &[]))
            .await;
        c
    }

    async fn send(&mut self, msg: &[u8]) {
        self.stream.write_all(msg).await.expect("send to sidepool");
    }

    /// One reply, or `None` if sidepool closed the connection.
    async fn reply(&mut self) -> Option<Vec<u8>> {
        let mut header = [0u8; dm::HEADER_LEN];
        self.stream.read_exact(&mut header).await.ok()?;
        let h = dm::parse_header(&header, &FrameRules::default())
            .expect("reply header valid")
            .expect("whole header");
        let mut frame = header.to_vec();
        frame.resize(h.frame_len(), 0);
        self.stream
            .read_exact(&mut frame[dm::HEADER_LEN..])
            .await
            .ok()?;
        Some(frame)
    }

    async fn must_call(&mut self, msg: &[u8]) -> Vec<u8> {
        self.send(msg).await;
        self.reply().await.expect("a reply through sidepool")
    }

    async fn must_exec(&mut self, sql: &[u8]) -> Vec<u8> {
        self.must_call(&message(command::EXECUTE2, 1, sql, &[]))
            .await
    }

    /// Whether sidepool has closed the connection (EOF within `wait`).
    async fn closed_within(&mut self, wait: Duration) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(wait, self.stream.read(&mut b)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

fn config(primary: SocketAddr, limits: &str, leaks: &str) -> sidepool_config::Config {
    let text = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[pools]]
name = "dm"
protocol = "dameng"
listen = "127.0.0.1:0"
primary = "{primary}"

[pools.limits]
{limits}

[pools.leaks]
{leaks}
"#
    );
    sidepool_config::parse(&text, "dameng.toml", &|_| None)
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{text}"))
}

async fn must_start(fake: &FakeDm, limits: &str, leaks: &str) -> (Server, SocketAddr) {
    let server = Server::start(&config(fake.addr, limits, leaks))
        .await
        .expect("sidepool starts");
    let addr = server.local_addr("dm").expect("pool bound");
    (server, addr)
}

/// Polls `done` every 20 ms until it holds; false after `limit`.
async fn within(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

#[tokio::test]
async fn dameng_contract_login_and_query_pass_through_byte_for_byte() {
    let fake = FakeDm::start().await;
    let (server, addr) = must_start(&fake, "max_open = 2", "").await;
    let mut c = Client::connect(addr).await;
    let mut sent = Vec::new();
    let mut got = Vec::new();
    for msg in [
        message(
            command::STARTUP,
            0,
            b"\x07\0\0\x007.6.0.0\0",
            &[(34, 1), (35, 9)],
        ),
        message(
            command::LOGIN,
            0,
            b"\x06\0\0\0SYSDBA\x09\0\0\0encrypted",
            &[(20, 2)],
        ),
        message(
            command::EXECUTE2,
            0x0102_0304,
            b"select 1 from dual",
            &[(20, 1), (63, 7)],
        ),
        message(command::COMMIT, 0, b"", &[]),
    ] {
        got.extend(c.must_call(&msg).await);
        sent.extend(msg);
    }
    assert_eq!(fake.seen.received.lock()[0], sent, "server got other bytes");
    assert_eq!(fake.seen.sent.lock()[0], got, "client got other bytes");
    server.shutdown().await;
}

#[tokio::test]
async fn dameng_contract_second_client_waits_at_max_open_and_third_times_out() {
    let fake = FakeDm::start().await;
    let (server, addr) = must_start(&fake, "max_open = 1\nwait_timeout = \"2s\"", "").await;
    let first = Client::must_login(addr).await;

    let mut second = Client::connect(addr).await;
    second
        .send(&message(command::STARTUP, 0, b"second", &[]))
        .await;
    assert!(
        within(Duration::from_secs(5), || server
            .pool_stats("dm")
            .unwrap()
            .waiting
            == 1)
        .await,
        "the second client is not queued"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), second.reply())
            .await
            .is_err(),
        "the second client got an answer while max_open = 1 was in use"
    );
    drop(first.stream);
    let startup = tokio::time::timeout(Duration::from_secs(2), second.reply())
        .await
        .expect("the second client is served once the first leaves");
    assert!(startup.is_some());

    let mut third = Client::connect(addr).await;
    third
        .send(&message(command::STARTUP, 0, b"third", &[]))
        .await;
    let asked = Instant::now();
    assert!(
        third.closed_within(Duration::from_secs(5)).await,
        "the third client was not turned away"
    );
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_millis(1900),
        "gave up after {waited:?}, before wait_timeout"
    );
    let stats = server.pool_stats("dm").unwrap();
    assert_eq!(stats.wait_timeouts, 1);
    assert_eq!(
        fake.seen.most_open.load(Ordering::SeqCst),
        1,
        "max_open exceeded"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn dameng_contract_idle_in_transaction_is_a_leak_idle_outside_is_not() {
    let fake = FakeDm::start().await;
    let (server, addr) = must_start(&fake, "max_open = 4", "threshold = \"300ms\"").await;
    let mut in_trx = Client::must_login(addr).await;
    let mut outside = Client::must_login(addr).await;
    in_trx.must_exec(b"update t set x = 1").await;
    outside.must_exec(b"select 1").await;
    assert!(
        within(Duration::from_secs(5), || server.leaks("dm").unwrap().0
            == 1)
        .await,
        "the session idle in a transaction was not reported: {:?}",
        server.leaks("dm")
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        server.leaks("dm").unwrap().0,
        1,
        "a session idle outside a transaction counted as a leak"
    );
    in_trx
        .must_call(&message(command::COMMIT, 0, b"", &[]))
        .await;
    assert!(
        within(Duration::from_secs(5), || server.leaks("dm").unwrap().0
            == 0)
        .await,
        "the leak did not clear after COMMIT"
    );
    assert_eq!(server.leaks("dm").unwrap().1, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn dameng_contract_max_idle_time_ends_idle_sessions_but_not_open_transactions() {
    let fake = FakeDm::start().await;
    let (server, addr) = must_start(&fake, "max_open = 4\nmax_idle_time = \"500ms\"", "").await;
    let mut in_trx = Client::must_login(addr).await;
    let mut idle = Client::must_login(addr).await;
    in_trx.must_exec(b"update t set x = 1").await;
    idle.must_exec(b"select 1").await;
    assert!(
        idle.closed_within(Duration::from_secs(5)).await,
        "an idle session outside a transaction outlived max_idle_time"
    );
    assert!(
        !in_trx.closed_within(Duration::from_millis(1200)).await,
        "a session in a transaction was closed by max_idle_time"
    );
    let reply = in_trx
        .must_call(&message(command::COMMIT, 0, b"", &[]))
        .await;
    assert_eq!(
        dm::parse_header(&reply, &FrameRules::default())
            .unwrap()
            .unwrap()
            .return_code,
        0
    );
    assert!(
        in_trx.closed_within(Duration::from_secs(5)).await,
        "after COMMIT the idle session was not closed by max_idle_time"
    );
    assert!(within(Duration::from_secs(5), || fake.open() == 0).await);
    server.shutdown().await;
}

#[tokio::test]
async fn dameng_contract_malformed_client_headers_close_only_that_client() {
    let fake = FakeDm::start().await;
    let (server, addr) = must_start(&fake, "max_open = 2", "").await;

    let mut bad_sum = Client::must_login(addr).await;
    let mut msg = message(command::EXECUTE2, 1, b"select 1", &[]);
    msg[19] ^= 0x01;
    bad_sum.send(&msg).await;
    assert!(
        bad_sum.closed_within(Duration::from_secs(5)).await,
        "bad checksum accepted"
    );

    let mut too_long = Client::must_login(addr).await;
    let huge = Header {
        command: command::EXECUTE2,
        body_len: dm::DEFAULT_MAX_BODY + 1,
        ..Header::default()
    };
    too_long.send(&huge.encode(&dm::specific(&[]))).await;
    assert!(
        too_long.closed_within(Duration::from_secs(5)).await,
        "oversized length accepted"
    );

    assert!(
        within(Duration::from_secs(5), || fake.open() == 0).await,
        "the server connections of the refused clients stay open"
    );
    let mut fine = Client::must_login(addr).await;
    let reply = fine.must_exec(b"select 1").await;
    assert!(reply.ends_with(b"exec-result-rows"));
    assert_eq!(server.pool_stats("dm").unwrap().in_use, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn dameng_contract_malformed_server_header_closes_the_client_and_the_connection() {
    let fake = FakeDm::start().await;
    let (server, addr) = must_start(&fake, "max_open = 1", "").await;
    let mut c = Client::must_login(addr).await;
    c.send(&message(command::EXECUTE2, 1, b"bad-reply", &[]))
        .await;
    assert!(
        c.closed_within(Duration::from_secs(5)).await,
        "bad server header relayed"
    );
    assert!(
        within(Duration::from_secs(5), || server
            .pool_stats("dm")
            .unwrap()
            .broken_closed
            == 1)
        .await,
        "the server connection was not closed"
    );
    let mut next = Client::must_login(addr).await;
    assert!(
        next.must_exec(b"select 1")
            .await
            .ends_with(b"exec-result-rows")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn dameng_contract_readiness_probe_sends_only_startup() {
    let fake = FakeDm::start().await;
    let (server, _) = must_start(&fake, "max_open = 1", "").await;
    let mut http = TcpStream::connect(server.admin_addr()).await.unwrap();
    http.write_all(b"GET /readyz HTTP/1.1\r\nHost: sidepool\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    http.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(within(Duration::from_secs(5), || fake.open() == 0).await);
    let (count, first) = {
        let received = fake.seen.received.lock();
        (
            received.len(),
            received.first().cloned().unwrap_or_default(),
        )
    };
    assert_eq!(count, 1, "one probe connection");
    let h = dm::parse_header(&first, &FrameRules::default())
        .unwrap()
        .unwrap();
    assert_eq!(h.command, command::STARTUP);
    assert_eq!(
        first.len(),
        h.frame_len(),
        "the probe sent more than STARTUP"
    );
    server.shutdown().await;
}
