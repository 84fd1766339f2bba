//! TLS towards applications (`[pools.tls] client_mode`) and towards databases (`server_mode`),
//! with libpq's `sslmode` semantics, on rustls with the *ring* provider. PostgreSQL and MySQL
//! share the configurations; they differ in ALPN (PostgreSQL only) and in how TLS is asked for
//! ([`ServerTls::connect`] sends PostgreSQL's SSLRequest; the MySQL backend sends its own and
//! calls [`ServerTls::handshake`]).
//!
//! This module builds configurations and runs handshakes; it does not read startup packets or
//! decide when to offer TLS (the session code answers SSLRequest using [`ClientTls::offers_tls`]
//! and calls [`ClientTls::accept`]). Configurations are built once per pool or backend, from
//! blocking file reads: build them at startup or reload, not per connection.

pub mod error;
mod pem;
mod stream;
mod verify;

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use sidepool_config::{ClientTlsMode, ServerTlsMode, Tls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

pub use self::error::{TlsError, TlsErrorKind};
pub use self::stream::Stream;
use crate::error::side::Side;

/// PostgreSQL's SSLRequest: length 8, request code 80877103 (1234 << 16 | 5679).
pub const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// The ALPN protocol PostgreSQL 17 registers. Offered and accepted on both sides: older
/// servers ignore it, newer ones (and libpq 17 clients) expect it.
const ALPN_POSTGRESQL: &[u8] = b"postgresql";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// sidepool as TLS server to applications, per `client_mode`. Built once per pool.
pub struct ClientTls {
    /// The configured mode; `Disable` when the pool has no `[pools.tls]`.
    pub mode: ClientTlsMode,
    /// `Some` exactly when `mode` is not `Disable`.
    acceptor: Option<TlsAcceptor>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Reads `client_cert` (a PEM chain, leaf first) and `client_key` (PEM PKCS#8, RSA or EC)
    /// when `client_mode` is `allow` or `require`. `None` (no `[pools.tls]`) and `disable` read
    /// nothing and never offer TLS.
    ///
    /// # Errors
    /// A file is missing from the config, unreadable, not PEM, holds no certificate/key, or the
    /// key does not match the certificate.
    pub fn from_config(tls: Option<&Tls>) -> Result<ClientTls, TlsError> {
        Self::build(tls, Some(ALPN_POSTGRESQL))
    }

    /// As [`ClientTls::from_config`], for MySQL clients: no ALPN (MySQL registers none, and
    /// its drivers send none).
    ///
    /// # Errors
    /// As [`ClientTls::from_config`].
    pub fn for_mysql(tls: Option<&Tls>) -> Result<ClientTls, TlsError> {
        Self::build(tls, None)
    }

    fn build(tls: Option<&Tls>, alpn: Option<&[u8]>) -> Result<ClientTls, TlsError> {
        let Some(tls) = tls.filter(|t| t.client_mode != ClientTlsMode::Disable) else {
            return Ok(ClientTls {
                mode: ClientTlsMode::Disable,
                acceptor: None,
            });
        };
        let missing = |what| TlsError::Missing {
            what,
            mode: format!("client_mode = \"{}\"", tls.client_mode),
        };
        let cert_path = tls
            .client_cert
            .as_deref()
            .ok_or_else(|| missing("client_cert"))?;
        let key_path = tls
            .client_key
            .as_deref()
            .ok_or_else(|| missing("client_key"))?;
        let chain = pem::certificates("client_cert", cert_path)?;
        let key = pem::private_key("client_key", key_path)?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(TlsError::Rustls)?;
        config.alpn_protocols = alpn.map(<[u8]>::to_vec).into_iter().collect();
        Ok(ClientTls {
            mode: tls.client_mode,
            acceptor: Some(TlsAcceptor::from(Arc::new(config))),
        })
    }

    /// Whether to answer an SSLRequest with `S` (then call [`ClientTls::accept`]); otherwise
    /// answer `N`.
    pub fn offers_tls(&self) -> bool {
        self.acceptor.is_some()
    }

    /// Whether a client that starts up in plaintext must be refused (`client_mode = require`):
    /// FATAL 28000 "sidepool: pool requires TLS".
    pub fn requires_tls(&self) -> bool {
        self.mode == ClientTlsMode::Require
    }

    /// Runs the server side of the TLS handshake on `tcp`, right after sidepool wrote `S`.
    /// The caller must have checked that the client sent nothing after its SSLRequest (bytes
    /// read before the handshake would be plaintext injected into the session). No timeout of
    /// its own: the caller's login deadline covers it.
    ///
    /// # Errors
    /// [`TlsError::NotOffered`] when the pool does not offer TLS; [`TlsError::Handshake`]
    /// (side client) when the handshake fails.
    pub async fn accept(&self, tcp: TcpStream) -> Result<Stream, TlsError> {
        let acceptor = self.acceptor.as_ref().ok_or(TlsError::NotOffered)?;
        let tls = acceptor
            .accept(tcp)
            .await
            .map_err(|source| TlsError::Handshake {
                side: Side::Client,
                source,
            })?;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

/// sidepool as TLS client to PostgreSQL, per `server_mode` (libpq's `sslmode`). Built once
/// per backend, since `verify-full` checks the backend's host name.
pub struct ServerTls {
    /// The configured mode; `Disable` when the pool has no `[pools.tls]`.
    pub mode: ServerTlsMode,
    /// `Some` exactly when `mode` is not `Disable`.
    connector: Option<(TlsConnector, ServerName<'static>)>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("mode", &self.mode)
            .field(
                "server_name",
                &self.connector.as_ref().map(|(_, name)| name),
            )
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Builds the client configuration for `server_mode` towards `backend_host` (a DNS name, or
    /// an IP address checked against the certificate's IP SANs):
    ///
    /// - no `[pools.tls]` (`None`): `Disable`, never asks for TLS. Note this differs from a
    ///   `[pools.tls]` table without `server_mode`, whose default is `prefer`.
    /// - `disable`: plaintext, never asks.
    /// - `prefer`: TLS if the server offers it, plaintext if it answers `N`.
    /// - `require`: TLS or fail. As `prefer`, any certificate is accepted (the handshake
    ///   signatures are still checked): encryption without authentication. Unlike old libpq,
    ///   a configured `server_ca` does not turn `require` into `verify-ca`.
    /// - `verify-ca`: the certificate must chain to `server_ca`; its names are not checked.
    /// - `verify-full`: as `verify-ca`, and it must name `backend_host`.
    ///
    /// # Errors
    /// `server_ca` missing (verify modes), unreadable or without certificates; `backend_host`
    /// not usable as a TLS server name.
    pub fn from_config(tls: Option<&Tls>, backend_host: &str) -> Result<ServerTls, TlsError> {
        Self::build(tls, backend_host, Some(ALPN_POSTGRESQL))
    }

    /// As [`ServerTls::from_config`], for MySQL, MariaDB and TiDB servers: no ALPN. Use
    /// [`ServerTls::handshake`] after the MySQL SSLRequest.
    ///
    /// # Errors
    /// As [`ServerTls::from_config`].
    pub fn for_mysql(tls: Option<&Tls>, backend_host: &str) -> Result<ServerTls, TlsError> {
        Self::build(tls, backend_host, None)
    }

    fn build(
        tls: Option<&Tls>,
        backend_host: &str,
        alpn: Option<&[u8]>,
    ) -> Result<ServerTls, TlsError> {
        let Some(tls) = tls.filter(|t| t.server_mode != ServerTlsMode::Disable) else {
            return Ok(ServerTls {
                mode: ServerTlsMode::Disable,
                connector: None,
            });
        };
        let provider = provider();
        let verifier: Arc<dyn ServerCertVerifier> = match tls.server_mode {
            ServerTlsMode::Disable | ServerTlsMode::Prefer | ServerTlsMode::Require => {
                Arc::new(verify::AnyCertificate {
                    algorithms: provider.signature_verification_algorithms,
                })
            }
            ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull => {
                let path = tls.server_ca.as_deref().ok_or_else(|| TlsError::Missing {
                    what: "server_ca",
                    mode: format!("server_mode = \"{}\"", tls.server_mode),
                })?;
                let roots = pem::roots("server_ca", path)?;
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(TlsError::Verifier)?;
                if tls.server_mode == ServerTlsMode::VerifyCa {
                    Arc::new(verify::ChainOnly { inner: webpki })
                } else {
                    webpki
                }
            }
        };
        let server_name =
            ServerName::try_from(backend_host.to_owned()).map_err(|_| TlsError::InvalidHost {
                host: backend_host.to_owned(),
            })?;
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = alpn.map(<[u8]>::to_vec).into_iter().collect();
        Ok(ServerTls {
            mode: tls.server_mode,
            connector: Some((TlsConnector::from(Arc::new(config)), server_name)),
        })
    }

    /// Negotiates encryption on a fresh connection, before the StartupMessage. `disable`
    /// returns [`Stream::Plain`] without sending anything. Otherwise sends SSLRequest and reads
    /// exactly one byte: `S` starts the TLS handshake; `N` gives plaintext under `prefer` and
    /// [`TlsError::Refused`] otherwise. Since only that byte is read, anything a
    /// man-in-the-middle sends after it goes into the handshake and fails it, never into the
    /// session (CVE-2021-23222). A failed handshake is an error in every mode: unlike libpq,
    /// `prefer` does not reconnect in plaintext. No timeout of its own: the caller's
    /// `connect_timeout` covers it.
    ///
    /// # Errors
    /// [`TlsError::Io`] or [`TlsError::Handshake`] (side server), [`TlsError::Refused`],
    /// [`TlsError::UnexpectedAnswer`] (e.g. an ErrorResponse from a server that does not
    /// understand SSLRequest).
    pub async fn connect(&self, mut tcp: TcpStream) -> Result<Stream, TlsError> {
        if self.connector.is_none() {
            return Ok(Stream::Plain(tcp));
        }
        let io = |source| TlsError::Io {
            side: Side::Server,
            source,
        };
        tcp.write_all(&SSL_REQUEST).await.map_err(io)?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.map_err(io)?;
        match answer[0] {
            b'S' => self.handshake(tcp).await,
            b'N' if self.mode == ServerTlsMode::Prefer => Ok(Stream::Plain(tcp)),
            b'N' => Err(TlsError::Refused),
            byte => Err(TlsError::UnexpectedAnswer { byte }),
        }
    }

    /// Runs the client side of the TLS handshake on `tcp` at once, verifying the server per
    /// `server_mode`. For protocols that negotiate TLS in their own packets (MySQL: the caller
    /// has sent its SSLRequest and must not have read anything the server sent after its
    /// greeting). No timeout of its own.
    ///
    /// # Errors
    /// [`TlsError::Refused`] when `server_mode` is `disable` (the caller should not have
    /// asked); [`TlsError::Handshake`] (side server) when the handshake fails.
    pub async fn handshake(&self, tcp: TcpStream) -> Result<Stream, TlsError> {
        let Some((connector, server_name)) = &self.connector else {
            return Err(TlsError::Refused);
        };
        let tls = connector
            .connect(server_name.clone(), tcp)
            .await
            .map_err(|source| TlsError::Handshake {
                side: Side::Server,
                source,
            })?;
        Ok(Stream::TlsClient(Box::new(tls)))
    }

    /// Whether the server may refuse TLS and the connection go on in plaintext (`prefer`).
    pub fn allows_plaintext(&self) -> bool {
        matches!(self.mode, ServerTlsMode::Disable | ServerTlsMode::Prefer)
    }

    /// Whether to ask for TLS at all (every mode but `disable`).
    pub fn wants_tls(&self) -> bool {
        self.connector.is_some()
    }
}

#[cfg(test)]
mod tests;
