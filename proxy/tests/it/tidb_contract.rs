//! Contract tests for `protocol = "tidb"`. No TiDB server can run here, so these run against a
//! small TiDB-flavoured fake written below, which follows what TiDB's public sources and docs
//! say about the parts sidepool depends on:
//!
//! - the greeting's version string is `8.0.11-TiDB-v<version>`;
//! - `caching_sha2_password` keeps no cache: every login takes full authentication, and the
//!   fake (like a TiDB without RSA keys) accepts the password only in clear over TLS;
//! - the status HTTP server (default port 10080) answers `/status` with 200, and with 500 once
//!   the server is being taken out of service (graceful shutdown);
//! - `tidb_replica_read` (default `leader`) and `tidb_read_staleness` (default 0) are session
//!   variables, set with `SET [SESSION]` and cleared by COM_RESET_CONNECTION; the fake keeps
//!   each connection's session variables and answers `SELECT @@name` from them.
//!
//! Everything that is not TiDB-specific is tested against real MariaDB elsewhere.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mysql_async::prelude::Queryable;
use rcgen::{CertificateParams, KeyPair};
use sidepool::Server;
use sidepool_protocol::mysql::handshake::{self, Greeting};
use sidepool_protocol::mysql::response::{eof_packet, err_packet, ok_packet};
use sidepool_protocol::mysql::{CapabilityFlags, StatusFlags, auth, command, packet};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const USER: &str = "app";
const PASSWORD: &str = "tidb-secret";
const VERSION: &str = "8.0.11-TiDB-v7.5.0";

/// What the fake saw.
#[derive(Default)]
struct Seen {
    /// Logins that completed.
    logins: AtomicUsize,
    /// Connections open now, and the most at once.
    live: AtomicUsize,
    peak: AtomicUsize,
    /// A password arrived in clear on a plaintext connection (must never happen).
    cleartext_without_tls: AtomicBool,
    /// Every COM_QUERY and COM_RESET_CONNECTION, in order, with its connection's session.
    ran: Mutex<Vec<Ran>>,
    /// Ids of the connections that ended.
    closed: Mutex<Vec<u32>>,
}

/// One command the fake ran.
#[derive(Debug, Clone)]
struct Ran {
    /// The server connection's id.
    conn: u32,
    /// The statement (`COM_RESET_CONNECTION` for that command).
    sql: String,
    /// `tidb_replica_read` of the session when it ran, if the session set it.
    replica_read: Option<String>,
    /// `tidb_read_staleness` likewise.
    staleness: Option<String>,
}

impl Seen {
    fn ran(&self) -> Vec<Ran> {
        self.ran.lock().unwrap().clone()
    }

    /// The statements that ran with `sql` in their text.
    fn ran_like(&self, sql: &str) -> Vec<Ran> {
        self.ran()
            .into_iter()
            .filter(|r| r.sql.contains(sql))
            .collect()
    }
}

/// A TiDB-flavoured fake server: MySQL protocol on one port, the status HTTP server on another.
struct FakeTidb {
    addr: SocketAddr,
    status_port: u16,
    /// The HTTP status `/status` answers.
    status: Arc<AtomicU16>,
    seen: Arc<Seen>,
}

impl FakeTidb {
    async fn must_start() -> FakeTidb {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let seen = Arc::new(Seen::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let s = seen.clone();
        tokio::spawn(async move {
            let mut next_id = 1;
            while let Ok((tcp, _)) = listener.accept().await {
                next_id += 1;
                tokio::spawn(serve_mysql(tcp, acceptor.clone(), s.clone(), next_id));
            }
        });
        let status = Arc::new(AtomicU16::new(200));
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let status_port = http.local_addr().unwrap().port();
        let code = status.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = http.accept().await {
                tokio::spawn(serve_status(tcp, code.clone()));
            }
        });
        FakeTidb {
            addr,
            status_port,
            status,
            seen,
        }
    }
}

/// `/status` answers with the current code, like TiDB's status server.
async fn serve_status(mut tcp: TcpStream, code: Arc<AtomicU16>) {
    let mut req = Vec::new();
    let mut chunk = [0u8; 512];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&chunk[..n]),
        }
    }
    let code = if req.starts_with(b"GET /status ") {
        code.load(Ordering::SeqCst)
    } else {
        404
    };
    let body = r#"{"connections":0,"version":"8.0.11-TiDB-v7.5.0","git_hash":"fake"}"#;
    let response = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.write_all(response.as_bytes()).await;
}

async fn read_packet<S: AsyncRead + Unpin>(s: &mut S, buf: &mut BytesMut) -> Option<(u8, Vec<u8>)> {
    loop {
        if let Some(l) = packet::read_logical(buf, 1 << 20).ok()? {
            let _ = buf.split_to(l.consumed);
            return Some((l.last_seq, l.payload));
        }
        if s.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

const NONCE: &[u8; 20] = b"0123456789abcdefghij";

/// Greeting, optional TLS, caching_sha2 full authentication, then commands.
async fn serve_mysql(
    mut tcp: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    seen: Arc<Seen>,
    id: u32,
) {
    let caps = CapabilityFlags::CLIENT_LONG_PASSWORD
        | CapabilityFlags::CLIENT_LONG_FLAG
        | CapabilityFlags::CLIENT_CONNECT_WITH_DB
        | CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_TRANSACTIONS
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CapabilityFlags::CLIENT_CONNECT_ATTRS
        | CapabilityFlags::CLIENT_SSL;
    let greeting = Greeting {
        server_version: VERSION.into(),
        connection_id: id,
        capabilities: caps,
        collation: 46,
        status: StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        nonce: NONCE.to_vec(),
        auth_plugin: auth::CACHING_SHA2.into(),
    };
    if tcp
        .write_all(&packet::encode(0, &handshake::greeting(&greeting)))
        .await
        .is_err()
    {
        return;
    }
    // The SSLRequest is read exactly, so the ClientHello after it stays in the socket.
    let mut header = [0u8; 4];
    if tcp.read_exact(&mut header).await.is_err() {
        return;
    }
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    let mut first = vec![0u8; len.min(1 << 16)];
    if tcp.read_exact(&mut first).await.is_err() {
        return;
    }
    seen.live.fetch_add(1, Ordering::SeqCst);
    seen.peak
        .fetch_max(seen.live.load(Ordering::SeqCst), Ordering::SeqCst);
    if handshake::parse_ssl_request(&first).is_some() {
        if let Ok(tls) = acceptor.accept(tcp).await {
            session(tls, true, None, &seen, id).await;
        }
    } else {
        session(tcp, false, Some((header[3], first)), &seen, id).await;
    }
    seen.live.fetch_sub(1, Ordering::SeqCst);
    seen.closed.lock().unwrap().push(id);
}

/// Authenticates (HandshakeResponse41 already read unless `hello` is `None`) and serves
/// commands until COM_QUIT or EOF.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    tls: bool,
    hello: Option<(u8, Vec<u8>)>,
    seen: &Seen,
    id: u32,
) {
    let mut buf = BytesMut::new();
    let hello = match hello {
        Some(h) => Some(h),
        None => read_packet(&mut s, &mut buf).await,
    };
    let Some((seq, hello)) = hello else { return };
    let Ok(response) = handshake::parse_handshake_response(&hello) else {
        return;
    };
    let mut seq = seq.wrapping_add(1);
    // TiDB's caching_sha2_password has no cache: always full authentication.
    let more = auth::auth_more_data(&[auth::PERFORM_FULL_AUTHENTICATION]);
    if s.write_all(&packet::encode(seq, &more)).await.is_err() {
        return;
    }
    let Some((last, answer)) = read_packet(&mut s, &mut buf).await else {
        return;
    };
    seq = last.wrapping_add(1);
    let reply = if answer == [auth::REQUEST_PUBLIC_KEY] {
        err_packet(
            1045,
            "28000",
            "fake TiDB: caching_sha2_password full authentication needs TLS (no RSA key)",
        )
    } else {
        if !tls {
            seen.cleartext_without_tls.store(true, Ordering::SeqCst);
        }
        let clear = answer.strip_suffix(&[0]).unwrap_or(&answer);
        if tls && response.user == USER && clear == PASSWORD.as_bytes() {
            seen.logins.fetch_add(1, Ordering::SeqCst);
            ok_packet(0, 0, StatusFlags::SERVER_STATUS_AUTOCOMMIT, 0)
        } else {
            err_packet(1045, "28000", "fake TiDB: Access denied")
        }
    };
    let denied = reply.first() == Some(&0xFF);
    if s.write_all(&packet::encode(seq, &reply)).await.is_err() || denied {
        return;
    }
    let mut in_trans = false;
    let mut vars = HashMap::new();
    while let Some((_, cmd)) = read_packet(&mut s, &mut buf).await {
        let sql = match cmd.first().copied() {
            Some(command::QUERY) => Some(String::from_utf8_lossy(&cmd[1..]).into_owned()),
            Some(command::RESET_CONNECTION) => Some("COM_RESET_CONNECTION".to_owned()),
            _ => None,
        };
        if let Some(sql) = sql {
            seen.ran.lock().unwrap().push(Ran {
                conn: id,
                sql,
                replica_read: vars.get("tidb_replica_read").cloned(),
                staleness: vars.get("tidb_read_staleness").cloned(),
            });
        }
        let out = match cmd.first().copied() {
            Some(command::QUIT) | None => return,
            Some(command::QUERY) => query(
                &String::from_utf8_lossy(&cmd[1..]),
                &mut in_trans,
                &mut vars,
            ),
            Some(command::RESET_CONNECTION) => {
                vars.clear();
                in_trans = false;
                vec![ok_packet(0, 0, status(in_trans), 0)]
            }
            Some(command::PING | command::INIT_DB) => vec![ok_packet(0, 0, status(in_trans), 0)],
            Some(_) => vec![err_packet(1047, "08S01", "fake TiDB: unknown command")],
        };
        let mut bytes = Vec::new();
        for (i, p) in out.iter().enumerate() {
            packet::write(&mut bytes, (i + 1) as u8, p);
        }
        if s.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

fn status(in_trans: bool) -> StatusFlags {
    let mut s = StatusFlags::SERVER_STATUS_AUTOCOMMIT;
    s.set(StatusFlags::SERVER_STATUS_IN_TRANS, in_trans);
    s
}

/// The packets answering `sql`: transaction control and `SET` get OK (`SET` stores session
/// variables); `SELECT a, b, …` gets one row whose values are the session's for `@@name`
/// (`tidb_replica_read` and `tidb_read_staleness` with TiDB's defaults), the server's for
/// `@@version`/`@@max_allowed_packet`/`@@wait_timeout`/`tidb_version()`/`DATABASE()`, and the
/// expression's text otherwise.
fn query(sql: &str, in_trans: &mut bool, vars: &mut HashMap<String, String>) -> Vec<Vec<u8>> {
    let upper = sql.trim().to_ascii_uppercase();
    if upper.starts_with("BEGIN") || upper.starts_with("START TRANSACTION") {
        *in_trans = true;
    } else if upper.starts_with("COMMIT") || upper.starts_with("ROLLBACK") {
        *in_trans = false;
    } else if let Some(list) = sql.trim().get(4..).filter(|_| upper.starts_with("SET ")) {
        set_vars(list, vars);
    }
    let Some(list) = upper.strip_prefix("SELECT ") else {
        return vec![ok_packet(0, 0, status(*in_trans), 0)];
    };
    let exprs: Vec<&str> = list.split(',').map(str::trim).collect();
    let mut packets = Vec::new();
    let mut count = Vec::new();
    sidepool_protocol::mysql::put_lenenc_int(&mut count, exprs.len() as u64);
    packets.push(count);
    for e in &exprs {
        packets.push(column(e));
    }
    packets.push(eof_packet(status(*in_trans), 0));
    let mut row = Vec::new();
    for e in &exprs {
        let name = e
            .strip_prefix("@@SESSION.")
            .or_else(|| e.strip_prefix("@@"))
            .map(str::to_ascii_lowercase);
        let session = name.as_deref().and_then(|n| match (vars.get(n), n) {
            (Some(v), _) => Some(v.clone()),
            (None, "tidb_replica_read") => Some("leader".to_owned()),
            (None, "tidb_read_staleness") => Some("0".to_owned()),
            _ => None,
        });
        let value = if let Some(v) = session {
            v
        } else if *e == "DATABASE()" {
            "test".to_owned()
        } else if e.contains("VERSION()") && e.contains("TIDB") {
            "Release Version: v7.5.0\nEdition: Community".to_owned()
        } else if e.contains("VERSION") {
            VERSION.to_owned()
        } else if e.contains("MAX_ALLOWED_PACKET") {
            "67108864".to_owned()
        } else if e.contains("WAIT_TIMEOUT") {
            "28800".to_owned()
        } else {
            e.to_string()
        };
        sidepool_protocol::mysql::put_lenenc_int(&mut row, value.len() as u64);
        row.extend_from_slice(value.as_bytes());
    }
    packets.push(row);
    packets.push(eof_packet(status(*in_trans), 0));
    packets
}

/// Stores the assignments of a `SET` (after the keyword): `[SESSION] name = value` or
/// `@@[session.]name = value`, comma-separated; quotes around values are dropped.
fn set_vars(list: &str, vars: &mut HashMap<String, String>) {
    for part in list.split(',') {
        let Some((name, value)) = part.split_once('=') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let name = name
            .strip_prefix("session ")
            .or_else(|| name.strip_prefix("@@session."))
            .or_else(|| name.strip_prefix("@@"))
            .unwrap_or(&name)
            .trim();
        let value = value.trim().trim_matches('\'');
        vars.insert(name.to_owned(), value.to_owned());
    }
}

/// A protocol-41 column definition of a VARCHAR named `name`.
fn column(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for text in ["def", "", "", "", name, ""] {
        sidepool_protocol::mysql::put_lenenc_int(&mut out, text.len() as u64);
        out.extend_from_slice(text.as_bytes());
    }
    out.push(0x0c);
    out.extend_from_slice(&33u16.to_le_bytes());
    out.extend_from_slice(&1024u32.to_le_bytes());
    out.push(0xFD);
    out.extend_from_slice(&0u16.to_le_bytes());
    out.push(0);
    out.extend_from_slice(&[0, 0]);
    out
}

/// sidepool with one tidb pool in front of `fake`; `pool_lines` go at the pool's top level.
async fn must_start_proxy(fake: &FakeTidb, server_mode: &str, pool_lines: &str) -> Server {
    Server::start(&must_config(fake, server_mode, pool_lines))
        .await
        .expect("sidepool starts")
}

/// The config of [`must_start_proxy`].
fn must_config(fake: &FakeTidb, server_mode: &str, pool_lines: &str) -> sidepool_config::Config {
    let text = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[pools]]
name = "tidb"
protocol = "tidb"
listen = "127.0.0.1:0"
primary = "{}"
client_auth = "password"
{pool_lines}

[pools.limits]
max_open = 2
wait_timeout = "1s"

[pools.tls]
server_mode = "{server_mode}"

[[pools.users]]
name = "{USER}"
password = "{PASSWORD}"
"#,
        fake.addr
    );
    sidepool_config::parse(&text, "test.toml", &|_| None)
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{text}"))
}

fn client_opts(server: &Server) -> mysql_async::Opts {
    let addr = server.local_addr("tidb").unwrap();
    mysql_async::OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .user(Some(USER))
        .pass(Some(PASSWORD))
        .db_name(Some("test"))
        .prefer_socket(false)
        .into()
}

/// Polls `check` until it holds, failing after `within`.
async fn must_eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tidb_contract_connections_are_pooled_over_tls_and_the_version_passes_through() {
    let fake = FakeTidb::must_start().await;
    let server = must_start_proxy(&fake, "require", "").await;

    let mut raw = TcpStream::connect(server.local_addr("tidb").unwrap())
        .await
        .unwrap();
    let (_, hello) = read_packet(&mut raw, &mut BytesMut::new()).await.unwrap();
    let greeting = handshake::parse_greeting(&hello).unwrap();
    assert_eq!(greeting.server_version, VERSION);
    assert!(greeting.is_tidb());
    drop(raw);

    let opts = client_opts(&server);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let opts = opts.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = mysql_async::Conn::new(opts).await.unwrap();
            assert_eq!(conn.server_version(), (8, 0, 11));
            for _ in 0..5 {
                let v: Option<String> = conn.query_first("SELECT 'pooled'").await.unwrap();
                assert_eq!(v.as_deref(), Some("'POOLED'"));
            }
            conn.disconnect().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let logins = fake.seen.logins.load(Ordering::SeqCst);
    assert!(
        fake.seen.peak.load(Ordering::SeqCst) <= 2,
        "max_open = 2 is a hard limit"
    );
    assert!(
        logins < 8,
        "8 clients must share pooled server connections, saw {logins} logins"
    );
    assert!(!fake.seen.cleartext_without_tls.load(Ordering::SeqCst));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tidb_contract_caching_sha2_full_auth_is_never_sent_in_clear() {
    let fake = FakeTidb::must_start().await;
    let server = must_start_proxy(&fake, "disable", "").await;
    let err = mysql_async::Conn::new(client_opts(&server))
        .await
        .expect_err("without TLS the fake refuses full authentication");
    match err {
        mysql_async::Error::Server(e) => {
            assert_eq!(e.code, 1045, "{e:?}");
            assert!(e.message.contains("needs TLS"), "{e:?}");
        }
        other => panic!("expected the server's ERR, got {other:?}"),
    }
    assert!(
        !fake.seen.cleartext_without_tls.load(Ordering::SeqCst),
        "sidepool must ask for the RSA key, never send the password in clear"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tidb_contract_status_500_stops_checkouts_until_200() {
    let fake = FakeTidb::must_start().await;
    let server = must_start_proxy(
        &fake,
        "require",
        &format!("tidb_status_port = {}", fake.status_port),
    )
    .await;
    let opts = client_opts(&server);
    // A holds a server connection in an open transaction; B leaves one idle.
    let mut a = mysql_async::Conn::new(opts.clone()).await.unwrap();
    a.query_drop("BEGIN").await.unwrap();
    a.query_drop("SELECT 'a'").await.unwrap();
    let mut b = mysql_async::Conn::new(opts.clone()).await.unwrap();
    b.query_drop("SELECT 'b'").await.unwrap();
    // B's connection goes back to the pool just after B has its answer.
    must_eventually(Duration::from_secs(10), "one in use, one idle", || async {
        let stats = server.pool_stats("tidb").unwrap();
        (stats.in_use, stats.idle) == (1, 1)
    })
    .await;

    fake.status.store(500, Ordering::SeqCst);
    let live = &fake.seen.live;
    must_eventually(
        Duration::from_secs(10),
        "the idle connection closed",
        || async {
            server.pool_stats("tidb").unwrap().idle == 0 && live.load(Ordering::SeqCst) == 1
        },
    )
    .await;
    let err = b
        .query_drop("SELECT 'b again'")
        .await
        .expect_err("no checkout while TiDB is going out of service");
    let text = err.to_string();
    assert!(
        text.contains("2003")
            && text.contains("sidepool: Can't connect to MySQL server")
            && text.contains("going out of service")
            && text.contains(&fake.status_port.to_string()),
        "{text}"
    );

    // The open transaction finishes; its connection then closes instead of going idle.
    let v: Option<String> = a.query_first("SELECT 'still'").await.unwrap();
    assert_eq!(v.as_deref(), Some("'STILL'"));
    a.query_drop("COMMIT").await.unwrap();
    must_eventually(Duration::from_secs(10), "A's connection closed", || async {
        live.load(Ordering::SeqCst) == 0
    })
    .await;

    fake.status.store(200, Ordering::SeqCst);
    let b = tokio::sync::Mutex::new(b);
    must_eventually(
        Duration::from_secs(10),
        "checkouts again after 200",
        || async { b.lock().await.query_drop("SELECT 'back'").await.is_ok() },
    )
    .await;
    server.shutdown().await;
}

/// `[pools.routing]` of a split tidb pool without replicas; `read_your_writes` off so that
/// reads after a write may still go to a replica-read connection.
fn split_routing(replica_read: &str, staleness: &str) -> String {
    format!(
        "replicas = []\n[pools.routing]\nsplit = true\nread_your_writes = \"0s\"\n\
         tidb_replica_read = \"{replica_read}\"\ntidb_read_staleness = \"{staleness}\"\n"
    )
}

const SESSION_QUERY: &str = "SELECT @@tidb_replica_read, @@tidb_read_staleness";

/// `tidb_replica_read` and `tidb_read_staleness` of the session that runs the query.
async fn must_read_session(conn: &mut mysql_async::Conn) -> (String, String) {
    conn.query_first(SESSION_QUERY).await.unwrap().unwrap()
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_owned(), b.to_owned())
}

/// The `SET` statements that touched a `tidb_*` variable.
fn tidb_sets(seen: &Seen) -> Vec<Ran> {
    seen.ran()
        .into_iter()
        .filter(|r| {
            let upper = r.sql.to_ascii_uppercase();
            upper.starts_with("SET ") && upper.contains("TIDB_")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tidb_contract_split_runs_autocommit_reads_on_replica_read_connections_and_the_rest_without()
 {
    let fake = FakeTidb::must_start().await;
    let server = must_start_proxy(&fake, "require", &split_routing("follower", "5s")).await;
    let mut c = mysql_async::Conn::new(client_opts(&server)).await.unwrap();

    assert_eq!(
        must_read_session(&mut c).await,
        pair("follower", "-5"),
        "an autocommit read runs where the session set both variables"
    );
    c.query_drop("BEGIN").await.unwrap();
    assert_eq!(
        must_read_session(&mut c).await,
        pair("leader", "0"),
        "a read inside BEGIN runs on a plain connection"
    );
    c.query_drop("COMMIT").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    c.query_drop("UPDATE t SET a = 2").await.unwrap();
    c.disconnect().await.unwrap();

    let reads = fake.seen.ran_like(SESSION_QUERY);
    assert_eq!(reads.len(), 2, "{reads:?}");
    let replica_conn = reads[0].conn;
    let sets = tidb_sets(&fake.seen);
    assert_eq!(
        sets.iter()
            .map(|r| (r.conn, r.sql.as_str()))
            .collect::<Vec<_>>(),
        [(
            replica_conn,
            "SET SESSION tidb_replica_read = 'follower', tidb_read_staleness = -5"
        )],
        "one SET, on the replica-read connection only"
    );
    let first_on_replica = fake.seen.ran().into_iter().find(|r| r.conn == replica_conn);
    assert_eq!(
        first_on_replica.map(|r| r.sql),
        Some(sets[0].sql.clone()),
        "the SET runs right after login, before the connection serves anything"
    );
    for w in fake
        .seen
        .ran_like("INSERT INTO t")
        .into_iter()
        .chain(fake.seen.ran_like("UPDATE t"))
        .chain(fake.seen.ran_like("BEGIN"))
    {
        assert_ne!(w.conn, replica_conn, "{w:?}");
        assert_eq!((w.replica_read, w.staleness), (None, None), "{}", w.sql);
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tidb_contract_without_split_no_connection_sets_tidb_replica_read() {
    let fake = FakeTidb::must_start().await;
    let routing = "[pools.routing]\ntidb_replica_read = \"follower\"\ntidb_read_staleness = \"5s\"";
    let server = must_start_proxy(&fake, "require", routing).await;
    let mut c = mysql_async::Conn::new(client_opts(&server)).await.unwrap();
    assert_eq!(must_read_session(&mut c).await, pair("leader", "0"));
    c.query_drop("BEGIN").await.unwrap();
    assert_eq!(must_read_session(&mut c).await, pair("leader", "0"));
    c.query_drop("COMMIT").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    c.disconnect().await.unwrap();
    assert!(fake.seen.ran_like(SESSION_QUERY).len() == 2);
    assert_eq!(tidb_sets(&fake.seen).len(), 0, "{:?}", fake.seen.ran());
    server.shutdown().await;
}

/// (in use, idle) connections of the pool's replica-read backend, and its label.
fn replica_stats(server: &Server) -> (u32, u32, String) {
    let svc = server.pool("tidb").unwrap();
    let replicas = &svc.core().replicas;
    assert_eq!(replicas.len(), 1, "one replica-read backend: the primary's");
    let stats = replicas[0].backend.stats();
    (stats.in_use, stats.idle, replicas[0].addr.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tidb_contract_a_reload_of_tidb_replica_read_reopens_replica_read_connections() {
    let fake = FakeTidb::must_start().await;
    let server = must_start_proxy(&fake, "require", &split_routing("follower", "5s")).await;
    let mut c = mysql_async::Conn::new(client_opts(&server)).await.unwrap();
    assert_eq!(must_read_session(&mut c).await, pair("follower", "-5"));
    let first = fake.seen.ran_like(SESSION_QUERY)[0].conn;
    must_eventually(
        Duration::from_secs(10),
        "the read's connection idle",
        || async {
            let (in_use, idle, _) = replica_stats(&server);
            (in_use, idle) == (0, 1)
        },
    )
    .await;
    assert_eq!(
        replica_stats(&server).2,
        format!("{} (replica read)", fake.addr)
    );

    // Idle at the reload: closed at once.
    let summary = server
        .apply(must_config(
            &fake,
            "require",
            &split_routing("learner", "0s"),
        ))
        .await
        .unwrap();
    assert!(summary.contains("routing"), "{summary}");
    let closed = &fake.seen.closed;
    must_eventually(
        Duration::from_secs(10),
        "the idle replica-read connection closed",
        || async { closed.lock().unwrap().contains(&first) },
    )
    .await;
    assert_eq!(
        must_read_session(&mut c).await,
        pair("learner", "0"),
        "new replica-read connections use the reloaded settings, staleness off"
    );
    let second = fake.seen.ran_like(SESSION_QUERY)[1].conn;
    assert_ne!(second, first);
    assert_eq!(
        tidb_sets(&fake.seen).pop().map(|r| r.sql).as_deref(),
        Some("SET SESSION tidb_replica_read = 'learner'")
    );

    // In use at the reload (a READ ONLY transaction runs on a replica): never reused.
    c.query_drop("START TRANSACTION READ ONLY").await.unwrap();
    assert_eq!(must_read_session(&mut c).await, pair("learner", "0"));
    server
        .apply(must_config(
            &fake,
            "require",
            &split_routing("follower", "2s"),
        ))
        .await
        .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    assert_eq!(must_read_session(&mut c).await, pair("follower", "-2"));
    let reads = fake.seen.ran_like(SESSION_QUERY);
    assert_eq!(reads[2].conn, second, "the transaction kept its connection");
    assert_ne!(reads[3].conn, second);
    must_eventually(
        Duration::from_secs(10),
        "the connection in use at the reload closed",
        || async { closed.lock().unwrap().contains(&second) },
    )
    .await;
    c.disconnect().await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tidb_contract_replica_read_settings_are_set_again_after_a_connection_reset() {
    let fake = FakeTidb::must_start().await;
    let server = must_start_proxy(&fake, "require", &split_routing("follower", "5s")).await;
    // A changes a session variable, so the replica-read connection it reads on carries it.
    let mut a = mysql_async::Conn::new(client_opts(&server)).await.unwrap();
    a.query_drop("SET SESSION sql_mode = 'ANSI'").await.unwrap();
    assert_eq!(must_read_session(&mut a).await, pair("follower", "-5"));
    let replica_conn = fake.seen.ran_like(SESSION_QUERY)[0].conn;
    assert!(
        fake.seen
            .ran_like("sql_mode = 'ANSI'")
            .iter()
            .any(|r| r.conn == replica_conn),
        "A's variable followed it to the replica-read connection: {:?}",
        fake.seen.ran()
    );
    a.disconnect().await.unwrap();
    must_eventually(Duration::from_secs(10), "A's connection idle", || async {
        let (in_use, idle, _) = replica_stats(&server);
        (in_use, idle) == (0, 1)
    })
    .await;

    // B has no such variable: the connection is reset before B uses it.
    let mut b = mysql_async::Conn::new(client_opts(&server)).await.unwrap();
    assert_eq!(must_read_session(&mut b).await, pair("follower", "-5"));
    let reads = fake.seen.ran_like(SESSION_QUERY);
    assert_eq!(reads[1].conn, replica_conn, "B reused the idle connection");
    let resets = fake.seen.ran_like("COM_RESET_CONNECTION");
    assert!(
        resets.iter().any(|r| r.conn == replica_conn),
        "{:?}",
        fake.seen.ran()
    );
    b.disconnect().await.unwrap();
    server.shutdown().await;
}
