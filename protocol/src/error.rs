//! Errors of the wire codecs.

use thiserror::Error;

/// A result of decoding untrusted bytes.
pub type Result<T, E = ProtocolError> = std::result::Result<T, E>;

/// Why bytes from a peer could not be understood. Every variant is the peer's fault (the bytes
/// are hostile until parsed); the proxy answers with the protocol's own error and closes.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// A declared length is below the protocol minimum.
    #[error("invalid message length {len} for message type {tag:?}")]
    BadLength { tag: char, len: usize },
    /// A declared length is above what sidepool accepts for that message.
    #[error("message type {tag:?} of {len} bytes exceeds the limit of {max} bytes")]
    TooLong { tag: char, len: usize, max: usize },
    /// A message's body does not have the fields its type requires.
    #[error("malformed {what} message: {why}")]
    Malformed {
        what: &'static str,
        why: &'static str,
    },
    /// A startup packet asks for a protocol version sidepool does not speak.
    #[error("unsupported frontend protocol {major}.{minor}: sidepool speaks 3.0")]
    UnsupportedVersion { major: u16, minor: u16 },
}

/// Coarse classes of [`ProtocolError`], for metric labels and close decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Length fields out of bounds.
    Length,
    /// Bytes that do not follow the message grammar.
    Malformed,
    /// A protocol version or feature sidepool does not speak.
    Unsupported,
}

impl ProtocolError {
    /// The coarse class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::BadLength { .. } | Self::TooLong { .. } => ErrorKind::Length,
            Self::Malformed { .. } => ErrorKind::Malformed,
            Self::UnsupportedVersion { .. } => ErrorKind::Unsupported,
        }
    }
}
