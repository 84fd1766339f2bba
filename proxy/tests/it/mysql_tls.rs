//! TLS on both sides of a MySQL pool against a real MariaDB 10.11 started with TLS by the
//! testbed, with real clients: mysql_async and the `mariadb` command-line client verify
//! sidepool's certificate, sidepool verifies MariaDB's, plaintext clients are refused under
//! `client_mode = "require"`, and caching_sha2_password full authentication over TLS takes the
//! cleartext password. The tests make their own CA with rcgen.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::support::pki::{Pki, toml_path};
use bytes::BytesMut;
use mysql_async::prelude::*;
use mysql_async::{Opts, OptsBuilder, SslOpts};
use sidepool::Server;
use sidepool_loadtest::testbed::{MariaDbOptions, MariaDbServer};
use sidepool_protocol::mysql::handshake::{self, HandshakeResponse41};
use sidepool_protocol::mysql::{CapabilityFlags, auth, packet};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const USER: &str = "app";
const PASSWORD: &str = "app-secret";
const DB: &str = "app";

/// MariaDB with user `app` and database `app`; with TLS when `pki` is given. Blocking.
fn must_start_mariadb(pki: Option<&Pki>) -> MariaDbServer {
    let mut opts = MariaDbOptions::default();
    if let Some(pki) = pki {
        opts = opts.with_tls(&pki.path("server.crt"), &pki.path("server.key"));
    }
    let db = MariaDbServer::must_start(&opts);
    db.create_user(USER, PASSWORD).unwrap();
    db.create_database(DB, USER).unwrap();
    db
}

/// sidepool with one MySQL pool in front of `primary` and `[pools.tls]` made of `tls`.
async fn must_start_proxy(primary: &str, tls: &str) -> (Server, SocketAddr) {
    let text = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[pools]]
name = "test"
protocol = "mysql"
listen = "127.0.0.1:0"
primary = "{primary}"
client_auth = "password"

[pools.limits]
max_open = 2

[pools.tls]
{tls}

[[pools.users]]
name = "{USER}"
password = "{PASSWORD}"
"#
    );
    let config = sidepool_config::parse(&text, "test.toml", &|_| None)
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{text}"));
    let server = Server::start(&config).await.expect("sidepool starts");
    let addr = server.local_addr("test").expect("pool bound");
    (server, addr)
}

/// `[pools.tls]` lines: the test certificate offered in `client_mode`, the server checked in
/// `server_mode` against the CA file `ca`.
fn tls_lines(pki: &Pki, client_mode: &str, server_mode: &str, ca: &str) -> String {
    format!(
        "client_cert = {}\nclient_key = {}\nclient_mode = \"{client_mode}\"\nserver_mode = \"{server_mode}\"\nserver_ca = {}",
        toml_path(&pki.path("server.crt")),
        toml_path(&pki.path("server.key")),
        toml_path(&pki.path(ca)),
    )
}

/// mysql_async options to sidepool at `host`:`port`, over TLS verified with `ca` when given.
fn client_opts(host: &str, port: u16, ca: Option<PathBuf>) -> Opts {
    let ssl = ca.map(|ca| {
        SslOpts::default()
            .with_root_certs(vec![ca.into()])
            .with_disable_built_in_roots(true)
    });
    OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some(USER))
        .pass(Some(PASSWORD))
        .db_name(Some(DB))
        .prefer_socket(false)
        .ssl_opts(ssl)
        .into()
}

/// The value of a status variable as the server connection serving `conn` sees it.
async fn must_status(conn: &mut mysql_async::Conn, name: &str) -> String {
    let row: Option<(String, String)> = conn
        .query_first(format!("SHOW SESSION STATUS LIKE '{name}'"))
        .await
        .unwrap();
    row.map(|(_, v)| v).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_async_verifies_sidepool_and_sidepool_verifies_mariadb_over_tls() {
    let pki = Pki::must_generate();
    let db = must_start_mariadb(Some(&pki));
    // Through "localhost", so MariaDB's certificate name is checked too.
    let (server, addr) = must_start_proxy(
        &format!("localhost:{}", db.port()),
        &tls_lines(&pki, "require", "verify-full", "ca.crt"),
    )
    .await;

    let opts = client_opts("localhost", addr.port(), Some(pki.path("ca.crt")));
    let mut conn = mysql_async::Conn::new(opts).await.expect("TLS login");
    let cipher = must_status(&mut conn, "Ssl_cipher").await;
    assert!(
        !cipher.is_empty(),
        "sidepool's server connection must use TLS"
    );
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let mut tx = conn
        .start_transaction(mysql_async::TxOpts::default())
        .await
        .unwrap();
    tx.exec_drop("INSERT INTO t VALUES (?)", (7,))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let n: Option<i64> = conn.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(1));
    conn.disconnect().await.unwrap();

    // client_mode = require: a plaintext client is refused with ER_SECURE_TRANSPORT_REQUIRED.
    let plain = mysql_async::Conn::new(client_opts("127.0.0.1", addr.port(), None))
        .await
        .expect_err("plaintext must be refused");
    match plain {
        mysql_async::Error::Server(e) => {
            assert_eq!(e.code, 3159, "{e:?}");
            assert!(
                e.message.starts_with("sidepool:") && e.message.contains("only TLS"),
                "{e:?}"
            );
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mariadb_cli_connects_with_ssl_verify_server_cert() {
    let pki = Pki::must_generate();
    let db = must_start_mariadb(Some(&pki));
    let (server, addr) = must_start_proxy(
        &format!("127.0.0.1:{}", db.port()),
        &tls_lines(&pki, "require", "require", "ca.crt"),
    )
    .await;
    let ca = pki.path("ca.crt");
    let out = tokio::process::Command::new(db.bin("mariadb"))
        .arg("--no-defaults")
        .args(["--protocol=TCP", "-h", "127.0.0.1"])
        .args(["-P", &addr.port().to_string()])
        .args(["-u", USER, &format!("-p{PASSWORD}"), DB])
        .arg("--ssl")
        .arg(format!("--ssl-ca={}", ca.display()))
        .arg("--ssl-verify-server-cert")
        .args(["-e", "status; SELECT CONCAT('answer=', 6 * 7);"])
        .output()
        .await
        .expect("mariadb client installed (apt-get install mariadb-client)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("Cipher in use"),
        "the client's own status must show TLS: {stdout}"
    );
    assert!(stdout.contains("answer=42"), "{stdout}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_mode_require_refuses_a_plaintext_server_and_prefer_falls_back() {
    let pki = Pki::must_generate();
    let db = must_start_mariadb(None);
    let primary = format!("127.0.0.1:{}", db.port());

    let (server, addr) =
        must_start_proxy(&primary, &tls_lines(&pki, "allow", "require", "ca.crt")).await;
    let err = mysql_async::Conn::new(client_opts("127.0.0.1", addr.port(), None))
        .await
        .expect_err("the server offers no TLS");
    let text = err.to_string();
    assert!(
        text.contains("2003") || text.contains("Can't connect"),
        "expected the 2003-style error: {text}"
    );
    assert!(text.contains("TLS"), "the error must say why: {text}");
    server.shutdown().await;

    let (server, addr) =
        must_start_proxy(&primary, &tls_lines(&pki, "allow", "prefer", "ca.crt")).await;
    let mut conn = mysql_async::Conn::new(client_opts("127.0.0.1", addr.port(), None))
        .await
        .expect("prefer falls back to plaintext");
    assert_eq!(must_status(&mut conn, "Ssl_cipher").await, "");
    conn.disconnect().await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_certificate_from_another_ca_is_refused_under_verify_full() {
    let pki = Pki::must_generate();
    let db = must_start_mariadb(Some(&pki));
    let (server, addr) = must_start_proxy(
        &format!("localhost:{}", db.port()),
        &tls_lines(&pki, "allow", "verify-full", "other-ca.crt"),
    )
    .await;
    let err = mysql_async::Conn::new(client_opts("127.0.0.1", addr.port(), None))
        .await
        .expect_err("MariaDB's certificate is not trusted");
    let text = err.to_string();
    assert!(
        text.contains("sidepool:") && text.contains("TLS"),
        "the error must name the TLS failure: {text}"
    );
    server.shutdown().await;
}

/// One MySQL packet from `s`: (sequence id, payload).
async fn must_read_packet<S: AsyncRead + Unpin>(s: &mut S, buf: &mut BytesMut) -> (u8, Vec<u8>) {
    loop {
        if let Some(l) = packet::read_logical(buf, 1 << 20).unwrap() {
            let _ = buf.split_to(l.consumed);
            return (l.last_seq, l.payload);
        }
        assert!(s.read_buf(buf).await.unwrap() > 0, "connection closed");
    }
}

/// Logs in over TLS with a caching_sha2 scramble that cannot match, so sidepool asks for full
/// authentication, then sends `clear` as the password. Returns the packet that ends the login.
async fn full_auth_over_tls(addr: SocketAddr, ca: &Path, clear: &str) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut buf = BytesMut::new();
    let (_, hello) = must_read_packet(&mut tcp, &mut buf).await;
    let greeting = handshake::parse_greeting(&hello).unwrap();
    assert!(
        greeting.capabilities.contains(CapabilityFlags::CLIENT_SSL),
        "CLIENT_SSL must be offered"
    );
    assert_eq!(greeting.auth_plugin, auth::CACHING_SHA2);
    let caps = CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CapabilityFlags::CLIENT_TRANSACTIONS
        | CapabilityFlags::CLIENT_SSL;
    tcp.write_all(&packet::encode(1, &handshake::ssl_request(caps, 45)))
        .await
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let response = HandshakeResponse41 {
        capabilities: caps,
        max_packet_size: handshake::MAX_PACKET_SIZE,
        collation: 45,
        user: USER.into(),
        auth_response: vec![0x55; 32],
        database: Some(DB.into()),
        auth_plugin: Some(auth::CACHING_SHA2.into()),
        attributes: Vec::new(),
    };
    tls.write_all(&packet::encode(
        2,
        &handshake::handshake_response(&response),
    ))
    .await
    .unwrap();
    let (seq, more) = must_read_packet(&mut tls, &mut buf).await;
    assert_eq!(
        more,
        [auth::AUTH_MORE_DATA, auth::PERFORM_FULL_AUTHENTICATION],
        "a scramble that does not match asks for full authentication over TLS"
    );
    let mut password = clear.as_bytes().to_vec();
    password.push(0);
    tls.write_all(&packet::encode(seq.wrapping_add(1), &password))
        .await
        .unwrap();
    must_read_packet(&mut tls, &mut buf).await.1
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caching_sha2_full_authentication_over_tls_takes_the_cleartext_password() {
    let pki = Pki::must_generate();
    let db = must_start_mariadb(None);
    let (server, addr) = must_start_proxy(
        &format!("127.0.0.1:{}", db.port()),
        &tls_lines(&pki, "require", "disable", "ca.crt"),
    )
    .await;
    let ok = full_auth_over_tls(addr, &pki.path("ca.crt"), PASSWORD).await;
    assert_eq!(
        ok.get(..1),
        Some(&[0x00][..]),
        "OK after the right password: {ok:?}"
    );
    let denied = full_auth_over_tls(addr, &pki.path("ca.crt"), "wrong").await;
    assert_eq!(
        denied.get(..1),
        Some(&[0xFF][..]),
        "ERR after a wrong password"
    );
    let code = u16::from_le_bytes([denied[1], denied[2]]);
    assert_eq!(code, 1045, "{}", String::from_utf8_lossy(&denied));
    server.shutdown().await;
}
