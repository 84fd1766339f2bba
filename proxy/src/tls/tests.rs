//! TLS setup and handshakes over loopback TCP (and in-memory pipes), with certificates made
//! by rcgen; `tests/postgres.rs` runs [`ServerTls`] against a real PostgreSQL.

mod postgres;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sidepool_config::{ClientTlsMode, ServerTlsMode, Tls};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::*;
use crate::io::write_reading;

/// Real network waits: generous, only reached when something is broken.
const WAIT: Duration = Duration::from_secs(10);

/// A test CA, a server certificate it signed for `localhost` and `127.0.0.1`, and an unrelated
/// CA, written as PEM files into a temp dir.
pub(super) struct Pki {
    pub(super) server_cert_pem: String,
    pub(super) server_key_pem: String,
    dir: TempDir,
}

impl Pki {
    pub(super) fn must_generate() -> Pki {
        let (ca, ca_key) = must_make_ca("sidepool test CA");
        let (other_ca, _) = must_make_ca("unrelated CA");
        let server_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let server = params.signed_by(&server_key, &ca, &ca_key).unwrap();
        let pki = Pki {
            server_cert_pem: server.pem(),
            server_key_pem: server_key.serialize_pem(),
            dir: tempfile::tempdir().unwrap(),
        };
        pki.write("ca.crt", &ca.pem());
        pki.write("other-ca.crt", &other_ca.pem());
        pki.write("server.crt", &pki.server_cert_pem);
        pki.write("server.key", &pki.server_key_pem);
        pki
    }

    /// A file in the PKI's temp dir (`ca.crt`, `other-ca.crt`, `server.crt`, `server.key`).
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(super) fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).unwrap();
    }

    /// `[pools.tls]` offering the server certificate to clients in `client_mode`.
    fn client_side(&self, client_mode: ClientTlsMode) -> Tls {
        Tls {
            client_cert: Some(self.path("server.crt")),
            client_key: Some(self.path("server.key")),
            client_mode,
            ..Tls::default()
        }
    }

    /// A rustls client configuration trusting the CA file `ca` (by name in the temp dir).
    fn app_config(&self, ca: &str) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.path(ca)).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        config
    }

    /// A rustls server configuration serving the server certificate.
    fn server_config(&self) -> rustls::ServerConfig {
        let chain = vec![CertificateDer::from_pem_slice(self.server_cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).unwrap();
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap()
    }
}

fn must_make_ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (params.self_signed(&key).unwrap(), key)
}

/// `[pools.tls]` with `server_mode` and the CA file `ca` (by name in `pki`'s temp dir).
pub(super) fn server_side(pki: &Pki, server_mode: ServerTlsMode, ca: Option<&str>) -> Tls {
    Tls {
        server_mode,
        server_ca: ca.map(|name| pki.path(name)),
        ..Tls::default()
    }
}

async fn must_listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// An application's TLS connection to `addr` trusting the CA file `ca`, checking `localhost`.
async fn app_connect(
    pki: &Pki,
    ca: &str,
    addr: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = TlsConnector::from(Arc::new(pki.app_config(ca)));
    let name = ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

/// An accepted application connection, TLS per `tls`, next to the application's side.
async fn must_accept_app(
    pki: &Pki,
    tls: &ClientTls,
) -> (Stream, tokio_rustls::client::TlsStream<TcpStream>) {
    let (listener, addr) = must_listen().await;
    let app = app_connect(pki, "ca.crt", addr);
    let ours = async {
        let (tcp, _) = listener.accept().await.unwrap();
        tls.accept(tcp).await
    };
    let (app, ours) = tokio::time::timeout(WAIT, async { tokio::join!(app, ours) })
        .await
        .expect("handshake hung");
    (ours.unwrap(), app.unwrap())
}

#[test]
fn no_tls_table_disables_both_directions() {
    let client = ClientTls::from_config(None).unwrap();
    assert_eq!(client.mode, ClientTlsMode::Disable);
    assert!(!client.offers_tls());
    assert!(!client.requires_tls());
    let server = ServerTls::from_config(None, "localhost").unwrap();
    assert_eq!(server.mode, ServerTlsMode::Disable);
    assert!(server.connector.is_none());
}

#[test]
fn client_modes_set_the_offer_and_require_flags() {
    let pki = Pki::must_generate();
    let flags = |mode| {
        let tls = ClientTls::from_config(Some(&pki.client_side(mode))).unwrap();
        (tls.offers_tls(), tls.requires_tls())
    };
    assert_eq!(flags(ClientTlsMode::Disable), (false, false));
    assert_eq!(flags(ClientTlsMode::Allow), (true, false));
    assert_eq!(flags(ClientTlsMode::Require), (true, true));
}

#[test]
fn client_mode_without_cert_names_the_missing_key() {
    let tls = Tls {
        client_mode: ClientTlsMode::Allow,
        ..Tls::default()
    };
    let err = ClientTls::from_config(Some(&tls)).unwrap_err();
    assert!(
        matches!(
            err,
            TlsError::Missing {
                what: "client_cert",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.kind(), TlsErrorKind::Config);
    assert_eq!(err.side(), Side::Proxy);
    assert_eq!(
        err.to_string(),
        "[pools.tls] client_cert is required by client_mode = \"allow\""
    );
}

#[test]
fn unreadable_cert_file_error_names_key_and_path() {
    let pki = Pki::must_generate();
    let mut tls = pki.client_side(ClientTlsMode::Allow);
    tls.client_cert = Some(pki.path("absent.crt"));
    let err = ClientTls::from_config(Some(&tls)).unwrap_err();
    assert!(
        matches!(
            err,
            TlsError::Config {
                what: "client_cert",
                ..
            }
        ),
        "{err:?}"
    );
    let shown = err.to_string();
    assert!(
        shown.contains("client_cert") && shown.contains("absent.crt"),
        "{shown}"
    );
}

#[test]
fn files_holding_the_wrong_pem_items_are_refused() {
    let pki = Pki::must_generate();
    let mut tls = pki.client_side(ClientTlsMode::Allow);
    tls.client_cert = Some(pki.path("server.key"));
    let err = ClientTls::from_config(Some(&tls)).unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");

    let mut tls = pki.client_side(ClientTlsMode::Allow);
    tls.client_key = Some(pki.path("server.crt"));
    let err = ClientTls::from_config(Some(&tls)).unwrap_err();
    assert!(matches!(err, TlsError::NoKey { .. }), "{err:?}");

    pki.write("broken.crt", "-----BEGIN CERTIFICATE-----\nnot base64!\n");
    tls.client_cert = Some(pki.path("broken.crt"));
    let err = ClientTls::from_config(Some(&tls)).unwrap_err();
    assert!(matches!(err, TlsError::Pem { .. }), "{err:?}");
}

#[test]
fn key_of_another_certificate_is_refused() {
    let pki = Pki::must_generate();
    pki.write("other.key", &KeyPair::generate().unwrap().serialize_pem());
    let mut tls = pki.client_side(ClientTlsMode::Require);
    tls.client_key = Some(pki.path("other.key"));
    let err = ClientTls::from_config(Some(&tls)).unwrap_err();
    assert!(matches!(err, TlsError::Rustls(_)), "{err:?}");
}

#[test]
fn verify_modes_need_server_ca() {
    let pki = Pki::must_generate();
    for mode in [ServerTlsMode::VerifyCa, ServerTlsMode::VerifyFull] {
        let err =
            ServerTls::from_config(Some(&server_side(&pki, mode, None)), "localhost").unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::Missing {
                    what: "server_ca",
                    ..
                }
            ),
            "{err:?}"
        );
    }
    for mode in [ServerTlsMode::Prefer, ServerTlsMode::Require] {
        let tls = ServerTls::from_config(Some(&server_side(&pki, mode, None)), "localhost");
        assert_eq!(tls.unwrap().mode, mode);
    }
}

#[test]
fn backend_host_must_be_a_valid_server_name_unless_disabled() {
    let pki = Pki::must_generate();
    let tls = server_side(&pki, ServerTlsMode::Require, None);
    let err = ServerTls::from_config(Some(&tls), "not a host!").unwrap_err();
    assert!(matches!(err, TlsError::InvalidHost { .. }), "{err:?}");
    let tls = server_side(&pki, ServerTlsMode::Disable, None);
    assert!(ServerTls::from_config(Some(&tls), "not a host!").is_ok());
    // IPv6 literals, as BackendAddr stores them (no brackets), are accepted.
    let tls = server_side(&pki, ServerTlsMode::VerifyFull, Some("ca.crt"));
    assert!(ServerTls::from_config(Some(&tls), "::1").is_ok());
}

#[tokio::test]
async fn accept_handshakes_with_an_app_trusting_the_ca_and_round_trips() {
    let pki = Pki::must_generate();
    let tls = ClientTls::from_config(Some(&pki.client_side(ClientTlsMode::Require))).unwrap();
    let (mut ours, mut app) = must_accept_app(&pki, &tls).await;
    assert!(ours.is_tls());
    assert_eq!(
        ours.tcp().peer_addr().unwrap(),
        app.get_ref().0.local_addr().unwrap()
    );
    let Stream::Tls(server) = &ours else {
        panic!("accept returned {ours:?}");
    };
    assert_eq!(server.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));

    app.write_all(b"ping").await.unwrap();
    app.flush().await.unwrap();
    let mut got = [0u8; 4];
    ours.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
    ours.write_all(b"pong").await.unwrap();
    ours.flush().await.unwrap();
    app.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"pong");
}

#[tokio::test]
async fn accept_on_a_disabled_pool_is_not_offered() {
    let tls = ClientTls::from_config(None).unwrap();
    let (listener, addr) = must_listen().await;
    let _app = TcpStream::connect(addr).await.unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let err = tls.accept(tcp).await.unwrap_err();
    assert!(matches!(err, TlsError::NotOffered), "{err:?}");
}

#[tokio::test]
async fn accept_reports_an_app_that_rejects_the_certificate_as_a_client_fault() {
    let pki = Pki::must_generate();
    let tls = ClientTls::from_config(Some(&pki.client_side(ClientTlsMode::Allow))).unwrap();
    let (listener, addr) = must_listen().await;
    let app = app_connect(&pki, "other-ca.crt", addr);
    let ours = async {
        let (tcp, _) = listener.accept().await.unwrap();
        tls.accept(tcp).await
    };
    let (app, ours) = tokio::time::timeout(WAIT, async { tokio::join!(app, ours) })
        .await
        .expect("handshake hung");
    let app_err = app.unwrap_err().to_string();
    assert!(app_err.contains("UnknownIssuer"), "{app_err}");
    let err = ours.unwrap_err();
    assert_eq!(err.kind(), TlsErrorKind::Handshake);
    assert_eq!(err.side(), Side::Client);
    assert!(
        err.to_string()
            .starts_with("TLS handshake with the client failed"),
        "{err}"
    );
}

#[tokio::test]
async fn is_dead_is_false_while_idle_and_true_after_the_app_closes() {
    let pki = Pki::must_generate();
    let tls = ClientTls::from_config(Some(&pki.client_side(ClientTlsMode::Allow))).unwrap();
    let (mut ours, mut app) = must_accept_app(&pki, &tls).await;
    app.write_all(b"x").await.unwrap();
    app.flush().await.unwrap();
    let mut got = [0u8; 1];
    ours.read_exact(&mut got).await.unwrap();
    assert!(!ours.is_dead(), "idle TLS connection reported dead");
    app.shutdown().await.unwrap(); // close_notify, then FIN
    drop(app);
    tokio::time::timeout(WAIT, ours.tcp().readable())
        .await
        .expect("close never arrived")
        .unwrap();
    assert!(ours.is_dead(), "closed TLS connection reported alive");
}

/// A PostgreSQL stand-in on `listener`: checks for an SSLRequest, answers `answer`, and on
/// `S` runs `tls`'s handshake; then writes what `send` delivers (one message) and holds the
/// connection until the test ends. Returns the bytes received before answering.
async fn fake_server(
    listener: TcpListener,
    answer: u8,
    tls: ClientTls,
    send: oneshot::Receiver<Vec<u8>>,
) -> Vec<u8> {
    let (mut tcp, _) = listener.accept().await.unwrap();
    let mut request = vec![0u8; SSL_REQUEST.len()];
    tcp.read_exact(&mut request).await.unwrap();
    tcp.write_all(&[answer]).await.unwrap();
    let mut stream = if answer == b'S' {
        tls.accept(tcp).await.unwrap()
    } else {
        Stream::Plain(tcp)
    };
    if let Ok(bytes) = send.await {
        stream.write_all(&bytes).await.unwrap();
        stream.flush().await.unwrap();
    }
    // Hold the connection open until the peer closes it.
    let _ = stream.read(&mut [0u8; 1]).await;
    request
}

#[tokio::test]
async fn server_tls_sends_ssl_request_and_is_dead_ignores_session_tickets() {
    let pki = Pki::must_generate();
    let acceptor = ClientTls::from_config(Some(&pki.client_side(ClientTlsMode::Allow))).unwrap();
    let (listener, addr) = must_listen().await;
    let (send, sent) = oneshot::channel();
    let server = tokio::spawn(fake_server(listener, b'S', acceptor, sent));
    let tls = server_side(&pki, ServerTlsMode::VerifyFull, Some("ca.crt"));
    let tls = ServerTls::from_config(Some(&tls), "localhost").unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut stream = tokio::time::timeout(WAIT, tls.connect(tcp))
        .await
        .expect("connect hung")
        .unwrap();
    assert!(matches!(stream, Stream::TlsClient(_)), "{stream:?}");

    // rustls servers send TLS 1.3 session tickets right after the handshake: records arrive
    // that carry no data, and must not make the connection look dead.
    tokio::time::timeout(WAIT, stream.tcp().readable())
        .await
        .expect("no session tickets arrived")
        .unwrap();
    assert!(!stream.is_dead(), "post-handshake messages counted as data");

    send.send(b"E".to_vec()).unwrap();
    tokio::time::timeout(WAIT, stream.tcp().readable())
        .await
        .expect("unsolicited byte never arrived")
        .unwrap();
    assert!(stream.is_dead(), "unsolicited byte not noticed");
    drop(stream);
    assert_eq!(server.await.unwrap(), SSL_REQUEST);
}

#[tokio::test]
async fn server_tls_rejects_an_answer_other_than_s_or_n() {
    let (listener, addr) = must_listen().await;
    let (_send, sent) = oneshot::channel();
    let server = tokio::spawn(fake_server(
        listener,
        b'E',
        ClientTls::from_config(None).unwrap(),
        sent,
    ));
    let pki = Pki::must_generate();
    let tls = ServerTls::from_config(
        Some(&server_side(&pki, ServerTlsMode::Prefer, None)),
        "127.0.0.1",
    )
    .unwrap();
    let err = tls
        .connect(TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, TlsError::UnexpectedAnswer { byte: b'E' }),
        "{err:?}"
    );
    assert_eq!(err.kind(), TlsErrorKind::Protocol);
    assert_eq!(err.side(), Side::Server);
    server.abort();
}

#[tokio::test]
async fn server_tls_disable_sends_nothing_before_the_caller() {
    let (listener, addr) = must_listen().await;
    let tls = ServerTls::from_config(None, "127.0.0.1").unwrap();
    let mut stream = tls
        .connect(TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    assert!(!stream.is_tls());
    stream.write_all(b"startup").await.unwrap();
    drop(stream);
    let (mut tcp, _) = listener.accept().await.unwrap();
    let mut got = Vec::new();
    tcp.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"startup");
}

#[tokio::test(start_paused = true)]
async fn write_reading_over_tls_does_not_deadlock_with_a_peer_that_writes_first() {
    const LEN: usize = 256 * 1024;
    let pki = Pki::must_generate();
    let (ours, theirs) = tokio::io::duplex(4096);
    let acceptor = TlsAcceptor::from(Arc::new(pki.server_config()));
    let connector = TlsConnector::from(Arc::new(pki.app_config("ca.crt")));
    let name = ServerName::try_from("localhost").unwrap();
    let (ours, theirs) = tokio::join!(acceptor.accept(ours), connector.connect(name, theirs));
    let (mut ours, mut theirs) = (ours.unwrap(), theirs.unwrap());

    let their_data: Vec<u8> = (0..LEN).map(|i| (i % 253) as u8).collect();
    let our_data: Vec<u8> = (0..LEN).map(|i| (i % 241) as u8).collect();
    let sent = their_data.clone();
    let peer = tokio::spawn(async move {
        theirs.write_all(&sent).await?;
        theirs.flush().await?;
        let mut got = vec![0u8; LEN];
        theirs.read_exact(&mut got).await.map(|_| got)
    });
    let mut inbox = BytesMut::new();
    let read = tokio::time::timeout(
        Duration::from_secs(60),
        write_reading(&mut ours, &our_data, &mut inbox, 4 * LEN),
    )
    .await
    .expect("write_reading over TLS deadlocked")
    .unwrap();
    assert!(read);
    // Only arrives if write_reading flushed the TLS records it buffered.
    let got = tokio::time::timeout(Duration::from_secs(60), peer)
        .await
        .expect("peer never received everything")
        .unwrap()
        .unwrap();
    assert_eq!(got, our_data);
    while inbox.len() < LEN {
        assert_ne!(ours.read_buf(&mut inbox).await.unwrap(), 0, "early EOF");
    }
    assert_eq!(&inbox[..], &their_data[..]);
}

#[tokio::test]
async fn mysql_configs_handshake_directly_without_alpn() {
    let pki = Pki::must_generate();
    let ours = ClientTls::for_mysql(Some(&pki.client_side(ClientTlsMode::Require))).unwrap();
    let theirs = ServerTls::for_mysql(
        Some(&server_side(
            &pki,
            ServerTlsMode::VerifyFull,
            Some("ca.crt"),
        )),
        "localhost",
    )
    .unwrap();
    assert!(theirs.wants_tls() && !theirs.allows_plaintext());
    let (listener, addr) = must_listen().await;
    let accept = async {
        let (tcp, _) = listener.accept().await.unwrap();
        ours.accept(tcp).await
    };
    let connect = async {
        theirs
            .handshake(TcpStream::connect(addr).await.unwrap())
            .await
    };
    let (accepted, connected) = tokio::time::timeout(WAIT, async { tokio::join!(accept, connect) })
        .await
        .expect("handshake hung");
    let (Stream::Tls(mut server), Stream::TlsClient(mut client)) =
        (accepted.unwrap(), connected.unwrap())
    else {
        panic!("both sides must be TLS");
    };
    assert_eq!(server.get_ref().1.alpn_protocol(), None);
    assert_eq!(client.get_ref().1.alpn_protocol(), None);
    client.write_all(b"ping").await.unwrap();
    client.flush().await.unwrap();
    let mut got = [0u8; 4];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
}

#[tokio::test]
async fn mysql_server_modes_say_whether_to_ask_and_whether_plaintext_may_follow() {
    let pki = Pki::must_generate();
    let mode = |m| ServerTls::for_mysql(Some(&server_side(&pki, m, Some("ca.crt"))), "localhost");
    let disable = mode(ServerTlsMode::Disable).unwrap();
    assert!(!disable.wants_tls() && disable.allows_plaintext());
    let (_listener, addr) = must_listen().await;
    let refused = disable
        .handshake(TcpStream::connect(addr).await.unwrap())
        .await;
    assert!(matches!(refused, Err(TlsError::Refused)));
    let prefer = mode(ServerTlsMode::Prefer).unwrap();
    assert!(prefer.wants_tls() && prefer.allows_plaintext());
    for m in [ServerTlsMode::Require, ServerTlsMode::VerifyCa] {
        let t = mode(m).unwrap();
        assert!(t.wants_tls() && !t.allows_plaintext(), "{m:?}");
    }
}
