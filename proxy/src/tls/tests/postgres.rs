//! [`ServerTls`] against a real PostgreSQL from the testbed, with and without `ssl = on`.

use sidepool_loadtest::testbed::{PgAuth, PgOptions, PgServer};

use super::*;

/// A trust-auth server; with TLS serving `pki`'s `localhost`/`127.0.0.1` certificate.
fn must_start_pg(pki: Option<&Pki>) -> PgServer {
    let opts = PgOptions {
        auth: PgAuth::Trust,
        ..PgOptions::default()
    };
    let opts = match pki {
        Some(pki) => opts.with_tls(&pki.server_cert_pem, &pki.server_key_pem),
        None => opts,
    };
    PgServer::must_start(&opts)
}

/// `ServerTls` for `mode`, CA file `ca`, towards `host`, connected to `pg`.
async fn connect(
    pg: &PgServer,
    pki: &Pki,
    mode: ServerTlsMode,
    ca: Option<&str>,
    host: &str,
) -> Result<Stream, TlsError> {
    let tls = ServerTls::from_config(Some(&server_side(pki, mode, ca)), host).unwrap();
    let tcp = TcpStream::connect((pg.host(), pg.port())).await.unwrap();
    tokio::time::timeout(WAIT, tls.connect(tcp))
        .await
        .expect("connect hung")
}

/// Sends a StartupMessage for `postgres`/`postgres` by hand and reads to ReadyForQuery,
/// asserting AuthenticationOk (trust) on the way.
async fn must_log_in(stream: &mut Stream) {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
    for (key, value) in [("user", "postgres"), ("database", "postgres")] {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let len = u32::try_from(body.len() + 4).unwrap();
    stream.write_all(&len.to_be_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    stream.flush().await.unwrap();

    let mut authenticated = false;
    loop {
        let mut header = [0u8; 5];
        tokio::time::timeout(WAIT, stream.read_exact(&mut header))
            .await
            .expect("server went quiet during login")
            .unwrap();
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut payload = vec![0u8; len - 4];
        stream.read_exact(&mut payload).await.unwrap();
        match header[0] {
            b'R' => {
                assert_eq!(payload, [0, 0, 0, 0], "not AuthenticationOk");
                authenticated = true;
            }
            b'Z' => break,
            b'E' => panic!("server error: {}", String::from_utf8_lossy(&payload)),
            _ => {}
        }
    }
    assert!(authenticated, "ReadyForQuery without AuthenticationOk");
}

/// Whether the server sees the backend serving `stream` as encrypted (`t`/`f`).
fn server_sees_ssl(pg: &PgServer, stream: &Stream) -> String {
    let port = stream.tcp().local_addr().unwrap().port();
    pg.psql(
        "postgres",
        &format!(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.client_port = {port}"
        ),
    )
    .unwrap()
}

#[tokio::test]
async fn pg_verify_full_with_the_right_ca_logs_in_by_name_and_by_ip() {
    let pki = Pki::must_generate();
    let pg = must_start_pg(Some(&pki));
    for host in ["localhost", "127.0.0.1"] {
        let mut stream = connect(&pg, &pki, ServerTlsMode::VerifyFull, Some("ca.crt"), host)
            .await
            .unwrap_or_else(|e| panic!("verify-full towards {host}: {e}"));
        assert!(matches!(stream, Stream::TlsClient(_)), "{stream:?}");
        must_log_in(&mut stream).await;
        assert_eq!(server_sees_ssl(&pg, &stream), "t");
        assert!(!stream.is_dead(), "idle logged-in connection reported dead");
    }
}

#[tokio::test]
async fn pg_verify_full_with_the_wrong_ca_is_refused_for_an_unknown_issuer() {
    let pki = Pki::must_generate();
    let pg = must_start_pg(Some(&pki));
    let err = connect(
        &pg,
        &pki,
        ServerTlsMode::VerifyFull,
        Some("other-ca.crt"),
        "localhost",
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), TlsErrorKind::Handshake);
    assert_eq!(err.side(), Side::Server);
    let shown = err.to_string();
    assert!(
        shown.contains("invalid peer certificate") && shown.contains("UnknownIssuer"),
        "{shown}"
    );
}

#[tokio::test]
async fn pg_verify_full_refuses_a_wrong_host_name_and_verify_ca_accepts_it() {
    let pki = Pki::must_generate();
    let pg = must_start_pg(Some(&pki));
    let err = connect(
        &pg,
        &pki,
        ServerTlsMode::VerifyFull,
        Some("ca.crt"),
        "db.example.com",
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), TlsErrorKind::Handshake);
    let shown = err.to_string();
    assert!(shown.contains("not valid for name"), "{shown}");

    let mut stream = connect(
        &pg,
        &pki,
        ServerTlsMode::VerifyCa,
        Some("ca.crt"),
        "db.example.com",
    )
    .await
    .unwrap();
    must_log_in(&mut stream).await;
    assert_eq!(server_sees_ssl(&pg, &stream), "t");

    // verify-ca still checks the chain.
    let err = connect(
        &pg,
        &pki,
        ServerTlsMode::VerifyCa,
        Some("other-ca.crt"),
        "db.example.com",
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn pg_require_encrypts_without_verifying_the_certificate() {
    let pki = Pki::must_generate();
    let pg = must_start_pg(Some(&pki));
    // The server name matches nothing in the certificate and no CA is configured.
    let mut stream = connect(&pg, &pki, ServerTlsMode::Require, None, "db.example.com")
        .await
        .unwrap();
    assert!(stream.is_tls());
    must_log_in(&mut stream).await;
    assert_eq!(server_sees_ssl(&pg, &stream), "t");
}

#[tokio::test]
async fn pg_without_tls_prefer_falls_back_to_plaintext_and_require_is_refused() {
    let pki = Pki::must_generate();
    let pg = must_start_pg(None);
    let mut stream = connect(&pg, &pki, ServerTlsMode::Prefer, None, "127.0.0.1")
        .await
        .unwrap();
    assert!(matches!(stream, Stream::Plain(_)), "{stream:?}");
    must_log_in(&mut stream).await;
    assert_eq!(server_sees_ssl(&pg, &stream), "f");

    for (mode, ca) in [
        (ServerTlsMode::Require, None),
        (ServerTlsMode::VerifyFull, Some("ca.crt")),
    ] {
        let err = connect(&pg, &pki, mode, ca, "127.0.0.1").await.unwrap_err();
        assert!(matches!(err, TlsError::Refused), "{mode}: {err:?}");
        assert_eq!(err.kind(), TlsErrorKind::Refused);
        assert_eq!(
            err.to_string(),
            "server does not support TLS, and [pools.tls] server_mode requires it"
        );
    }
}
