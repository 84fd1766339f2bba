//! The readiness probe of a DM backend: a STARTUP exchange, no LOGIN, no credentials.
//!
//! The STARTUP request is shaped like the Go driver's with encryption, compression and SSL off
//! (header offset 34 = 1, body = the client version string and one zero byte). Any reply whose
//! 64-byte header is well formed counts as "up", whatever its return code: it proves a DM
//! server answers on that address. Verified only against the contract tests' fake server.

use std::time::Duration;

use sidepool_protocol::dm::{self, FrameRules, Header, command};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Client version string the STARTUP carries (the Go driver's).
const CLIENT_VERSION: &[u8] = b"7.6.0.0";

/// Why a probe failed.
#[derive(Debug, Error)]
pub enum ProbeError {
    /// Connecting, writing or reading failed (includes the server closing the connection).
    #[error("DM server at {addr} did not answer STARTUP")]
    Io {
        /// The probed address.
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The answer is not a DM message header.
    #[error("DM server at {addr} answered STARTUP with a malformed header")]
    Malformed {
        /// The probed address.
        addr: String,
        #[source]
        source: dm::HeaderError,
    },
    /// No answer within the timeout.
    #[error("DM server at {addr} did not answer STARTUP within {timeout:?}")]
    Timeout {
        /// The probed address.
        addr: String,
        /// The probe's time limit.
        timeout: Duration,
    },
}

/// The STARTUP message the probe sends.
pub fn startup_request() -> Vec<u8> {
    let mut body = Vec::with_capacity(4 + CLIENT_VERSION.len() + 1);
    body.extend_from_slice(&(CLIENT_VERSION.len() as u32).to_le_bytes());
    body.extend_from_slice(CLIENT_VERSION);
    body.push(0);
    let header = Header {
        command: command::STARTUP,
        body_len: body.len() as u32,
        ..Header::default()
    };
    let mut msg = header.encode(&dm::specific(&[(34, 1)])).to_vec();
    msg.extend_from_slice(&body);
    msg
}

/// Sends STARTUP to `addr` and waits up to `timeout` for a well-formed reply header, then
/// closes the connection.
///
/// # Errors
/// See [`ProbeError`].
pub async fn startup(addr: &str, timeout: Duration) -> Result<(), ProbeError> {
    let io = |source| ProbeError::Io {
        addr: addr.to_owned(),
        source,
    };
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.map_err(io)?;
        s.write_all(&startup_request()).await.map_err(io)?;
        let mut header = [0u8; dm::HEADER_LEN];
        s.read_exact(&mut header).await.map_err(io)?;
        dm::parse_header(&header, &FrameRules::default())
            .map(|_| ())
            .map_err(|source| ProbeError::Malformed {
                addr: addr.to_owned(),
                source,
            })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ProbeError::Timeout {
            addr: addr.to_owned(),
            timeout,
        })?
}
