//! What can go wrong setting up TLS or negotiating it on a connection.

use std::io;
use std::path::PathBuf;

use rustls::pki_types::pem;
use thiserror::Error;

use crate::error::side::Side;

/// Failure to load `[pools.tls]` material or to negotiate TLS with a peer. `Display` is written
/// to be shown to an operator or, for handshakes, relayed to the client as is.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A configured file could not be read.
    #[error("cannot read [pools.tls] {what} {}: {source}", .path.display())]
    Config {
        /// The config key (`client_cert`, `client_key`, `server_ca`).
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A configured file is not valid PEM.
    #[error("[pools.tls] {what} {} is not valid PEM: {source}", .path.display())]
    Pem {
        /// The config key.
        what: &'static str,
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    /// A file that must hold certificates holds none.
    #[error("{} holds no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)", .path.display())]
    NoCertificate { path: PathBuf },
    /// The key file holds no private key.
    #[error(
        "{} holds no private key (expected an unencrypted PEM PKCS#8, RSA or EC private key)",
        .path.display()
    )]
    NoKey { path: PathBuf },
    /// A setting the chosen mode needs is not given.
    #[error("[pools.tls] {what} is required by {mode}")]
    Missing {
        /// The missing config key.
        what: &'static str,
        /// The setting that needs it (`client_mode = "allow"`).
        mode: String,
    },
    /// The backend host cannot be a TLS server name.
    #[error("backend host {host:?} is not a valid DNS name or IP address for TLS")]
    InvalidHost { host: String },
    /// A certificate in `path` was rejected (bad encoding, not a CA, ...).
    #[error("[pools.tls] {what} {}: {source}", .path.display())]
    BadCertificate {
        /// The config key.
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    /// The `server_ca` trust store cannot make a verifier (e.g. no usable trust anchor).
    #[error("[pools.tls] server_ca cannot verify servers: {0}")]
    Verifier(#[source] rustls::client::VerifierBuilderError),
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[source] rustls::Error),
    /// The TLS handshake failed: certificate verification, protocol mismatch or I/O.
    #[error("TLS handshake with the {} failed: {source}", side_name(*.side))]
    Handshake {
        /// The peer: [`Side::Client`] for [`ClientTls`](super::ClientTls), [`Side::Server`]
        /// for [`ServerTls`](super::ServerTls).
        side: Side,
        #[source]
        source: io::Error,
    },
    /// The server answered SSLRequest with `N` and `server_mode` does not allow plaintext.
    #[error("server does not support TLS, and [pools.tls] server_mode requires it")]
    Refused,
    /// The server answered SSLRequest with neither `S` nor `N`.
    #[error("server answered SSLRequest with byte {byte:#04x}, expected 'S' or 'N'")]
    UnexpectedAnswer { byte: u8 },
    /// [`ClientTls::accept`](super::ClientTls::accept) on a pool whose `client_mode` is
    /// `disable`: the caller should have answered SSLRequest with `N`.
    #[error("TLS towards clients is disabled for this pool")]
    NotOffered,
    /// Reading or writing the peer failed before the handshake started.
    #[error("I/O with the {} failed while negotiating TLS: {source}", side_name(*.side))]
    Io {
        side: Side,
        #[source]
        source: io::Error,
    },
}

/// Coarse classes of [`TlsError`], for metrics and close/retry decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsErrorKind {
    /// `[pools.tls]` material is missing or unusable: an operator must act.
    Config,
    /// The handshake failed (verification, protocol, or the peer vanished during it).
    Handshake,
    /// The server does not offer TLS and the mode requires it.
    Refused,
    /// The peer broke the negotiation protocol.
    Protocol,
    /// Network failure before the handshake.
    Io,
}

impl TlsError {
    /// The coarse class of this error.
    pub fn kind(&self) -> TlsErrorKind {
        match self {
            Self::Config { .. }
            | Self::Pem { .. }
            | Self::NoCertificate { .. }
            | Self::NoKey { .. }
            | Self::Missing { .. }
            | Self::InvalidHost { .. }
            | Self::BadCertificate { .. }
            | Self::Verifier(_)
            | Self::Rustls(_)
            | Self::NotOffered => TlsErrorKind::Config,
            Self::Handshake { .. } => TlsErrorKind::Handshake,
            Self::Refused => TlsErrorKind::Refused,
            Self::UnexpectedAnswer { .. } => TlsErrorKind::Protocol,
            Self::Io { .. } => TlsErrorKind::Io,
        }
    }

    /// Which side is at fault: the proxy for configuration problems, otherwise the peer.
    pub fn side(&self) -> Side {
        match self {
            Self::Handshake { side, .. } | Self::Io { side, .. } => *side,
            Self::Refused | Self::UnexpectedAnswer { .. } => Side::Server,
            _ => Side::Proxy,
        }
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Client => "client",
        Side::Server => "server",
        Side::Proxy => "proxy",
    }
}
