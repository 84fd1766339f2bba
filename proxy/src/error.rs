//! Errors of the proxy: of sessions and server connections, each knowing its kind and which side
//! is at fault; of starting ([`StartError`]) and reloading ([`ReloadError`]); and [`chain`], how
//! any error is shown on one line (logs, client errors, reload problems).

pub mod side;

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use sidepool_config::ConfigErrors;
use sidepool_protocol::ProtocolError;
use sidepool_protocol::pg::auth::AuthError;
use sidepool_protocol::pg::backend::{ServerError, parse_error};
use thiserror::Error;

pub use self::side::Side;

/// Failure to open, authenticate or use a server connection.
#[derive(Debug, Error)]
pub enum BackendError {
    /// Connecting, reading or writing failed.
    #[error("cannot reach backend {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The server closed the connection.
    #[error("backend {addr} closed the connection")]
    Closed { addr: String },
    /// The server answered with an ErrorResponse; `raw` is kept to forward as is.
    #[error("backend refused: {} {}", .fields.code, .fields.message)]
    Server { fields: ServerError, raw: Bytes },
    /// A MySQL server answered with an ERR packet; `payload` is kept to forward as is.
    #[error("backend refused: {code} {message}")]
    MySqlServer {
        code: u16,
        message: String,
        payload: Bytes,
    },
    /// The server sent bytes that break the protocol.
    #[error("backend sent a malformed message")]
    Protocol(#[from] ProtocolError),
    /// SCRAM with the server failed (including a server signature that does not verify).
    #[error("authentication with the backend failed")]
    Auth(#[from] AuthError),
    /// The server asks for a password and none is configured for the user.
    #[error("backend asks for a password for user \"{user}\" and [[pools.users]] has none")]
    NoPassword { user: String },
    /// TLS to the server failed or was refused.
    #[error("TLS with the backend failed")]
    Tls(#[from] crate::tls::error::TlsError),
    /// The server wants an auth method sidepool cannot answer.
    #[error("backend asks for an unsupported authentication method ({what})")]
    UnsupportedAuth { what: String },
    /// The login sequence ended without BackendKeyData.
    #[error("backend {addr} sent no BackendKeyData")]
    NoBackendKey { addr: String },
    /// Something arrived that has no place at that point of the exchange.
    #[error("backend {addr} sent an unexpected {what}")]
    Unexpected { addr: String, what: &'static str },
}

/// Coarse classes of [`BackendError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendErrorKind {
    /// Network-level failure: the backend is down or unreachable.
    Unreachable,
    /// The server refused (bad database, auth failure, too many connections).
    Refused,
    /// Protocol violation.
    Protocol,
    /// sidepool is configured so it cannot log in.
    Config,
}

impl BackendError {
    /// Wraps a server ErrorResponse.
    ///
    /// # Errors
    /// The ErrorResponse itself is malformed.
    pub fn server(raw: Bytes) -> Result<Self, ProtocolError> {
        Ok(Self::Server {
            fields: parse_error(&raw)?,
            raw,
        })
    }

    /// The coarse class of this error.
    pub fn kind(&self) -> BackendErrorKind {
        match self {
            Self::Io { .. } | Self::Closed { .. } => BackendErrorKind::Unreachable,
            Self::Server { .. } | Self::MySqlServer { .. } | Self::Auth(_) | Self::Tls(_) => {
                BackendErrorKind::Refused
            }
            Self::Protocol(_) | Self::NoBackendKey { .. } | Self::Unexpected { .. } => {
                BackendErrorKind::Protocol
            }
            Self::NoPassword { .. } | Self::UnsupportedAuth { .. } => BackendErrorKind::Config,
        }
    }

    /// Which side is at fault.
    pub fn side(&self) -> Side {
        match self.kind() {
            BackendErrorKind::Config => Side::Proxy,
            _ => Side::Server,
        }
    }
}

/// Why a client session ended early.
#[derive(Debug, Error)]
pub enum SessionError {
    /// The client's socket failed.
    #[error("client I/O failed")]
    ClientIo(#[source] std::io::Error),
    /// The client broke the protocol.
    #[error("client sent a malformed message")]
    ClientProtocol(#[source] ProtocolError),
    /// The server side failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The TLS handshake with the client failed.
    #[error("TLS with the client failed")]
    Tls(#[from] crate::tls::error::TlsError),
    /// The client did not finish logging in in time.
    #[error("client did not finish logging in within {0:?}")]
    LoginTimeout(std::time::Duration),
    /// The server did not finish answering a request within `[pools.limits] query_timeout`;
    /// its connection is closed.
    #[error("the server at {addr} did not finish answering within query_timeout ({after:?})")]
    QueryTimeout {
        /// `host:port` of the backend.
        addr: String,
        /// The `query_timeout` that passed.
        after: std::time::Duration,
    },
}

impl SessionError {
    /// Which side is at fault.
    pub fn side(&self) -> Side {
        match self {
            Self::ClientIo(_) | Self::ClientProtocol(_) | Self::LoginTimeout(_) | Self::Tls(_) => {
                Side::Client
            }
            Self::Backend(e) => e.side(),
            Self::QueryTimeout { .. } => Side::Server,
        }
    }
}

/// Why sidepool could not start serving.
#[derive(Debug, Error)]
pub enum StartError {
    /// A listener address could not be bound.
    #[error("pool \"{pool}\": cannot listen on {addr}")]
    Bind {
        pool: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The admin HTTP listener (`[admin] listen`) could not be bound.
    #[error("cannot listen on {addr} for the admin HTTP listener ([admin] listen)")]
    AdminBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// TLS files could not be loaded.
    #[error("pool \"{pool}\": TLS set-up failed")]
    Tls {
        pool: String,
        #[source]
        source: Box<crate::tls::error::TlsError>,
    },
}

impl StartError {
    /// The error for TLS files of pool `pool` that do not load.
    pub fn tls(pool: &str, source: crate::tls::error::TlsError) -> Self {
        StartError::Tls {
            pool: pool.to_owned(),
            source: Box::new(source),
        }
    }
}

/// Why a reload applied nothing; the running config stays in force. `Display` is the text the
/// console's `RELOAD` and the logs show.
#[derive(Debug, Error)]
pub enum ReloadError {
    /// The server was started from a `Config` value, not a file, so there is nothing to re-read.
    #[error("sidepool was not started from a config file")]
    NoConfigFile,
    /// The file does not load; every problem is listed, one per line.
    #[error("{} has {} problem(s):\n{source}", .path.display(), .source.problems.len())]
    Invalid {
        path: PathBuf,
        #[source]
        source: ConfigErrors,
    },
    /// Pools that were to be added or rebuilt could not be (a listener that does not bind, TLS
    /// files that do not load); each is shown with its causes, separated by "; ".
    #[error("{}", .0.iter().map(|e| chain(e)).collect::<Vec<_>>().join("; "))]
    Pools(Vec<StartError>),
    /// The server is shutting down and takes no more reload requests.
    #[error("sidepool is shutting down")]
    ShuttingDown,
    /// The server stopped while the reload was waiting for it.
    #[error("the reload was abandoned (shutting down)")]
    Abandoned,
}

/// An error and its causes on one line, each cause left out when the text so far already
/// shows it (an error's Display often repeats its source: "cannot reach backend …: {source}").
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_errors_read_as_the_strings_they_replace() {
        assert_eq!(
            ReloadError::NoConfigFile.to_string(),
            "sidepool was not started from a config file"
        );
        let bind = |port| StartError::Bind {
            pool: format!("p{port}"),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            source: std::io::Error::new(std::io::ErrorKind::AddrInUse, "in use"),
        };
        assert_eq!(
            ReloadError::Pools(vec![bind(1), bind(2)]).to_string(),
            "pool \"p1\": cannot listen on 127.0.0.1:1: in use; \
             pool \"p2\": cannot listen on 127.0.0.1:2: in use"
        );
    }

    #[test]
    fn chain_names_each_cause_once() {
        let e = BackendError::Io {
            addr: "127.0.0.1:1".into(),
            source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
        };
        assert_eq!(chain(&e), "cannot reach backend 127.0.0.1:1: refused");
        let wrapped = std::io::Error::other(e);
        assert_eq!(
            chain(&wrapped),
            "cannot reach backend 127.0.0.1:1: refused",
            "a wrapper whose text is its source's adds nothing"
        );
    }
}
