//! PostgreSQL authentication codecs: SCRAM-SHA-256 (RFC 5802 + RFC 7677, as PostgreSQL implements
//! it), md5 and cleartext passwords. Sans-IO: the proxy moves the bytes of `AuthenticationSASL*`,
//! `SASLInitialResponse`, `SASLResponse` and `PasswordMessage` and calls these functions on their
//! payloads.
//!
//! Two directions, two implementations:
//!
//! - **Client side** ([`ScramClient`], sidepool logging in to PostgreSQL) wraps
//!   `postgres_protocol::authentication::sasl::ScramSha256`, the code `tokio-postgres` uses against
//!   every PostgreSQL release. Reusing it means one less SCRAM client to get subtly wrong (SASLprep,
//!   nonce checks, the iteration cap against a hostile server); we only add length caps and typed
//!   errors around it.
//! - **Server side** ([`ScramServer`], sidepool authenticating an application) is hand-written
//!   because `postgres-protocol` has no server side. It follows PostgreSQL's `auth-scram.c`: the
//!   user name inside the SCRAM message is ignored (the startup packet's user counts), channel
//!   binding is not offered (so `n,,` and `y,,` are accepted and `p=…` is refused), `a=` authzid
//!   and `m=` extensions are refused, and the proof is checked in constant time.
//!
//! Every function that takes a peer's bytes takes `&[u8]`, caps the length first and never panics
//! on any input, so each is a ready fuzz target.

mod password;
mod scram_client;
mod scram_secret;
mod scram_server;

#[cfg(test)]
mod tests;

use thiserror::Error;

pub use password::{
    cleartext_matches, md5_response, md5_verify, md5_verify_stored, random_md5_salt,
};
pub use scram_client::ScramClient;
pub use scram_secret::ScramSecret;
pub use scram_server::ScramServer;

/// The SASL mechanism name sidepool offers in `AuthenticationSASL` and expects in
/// `SASLInitialResponse`.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// The longest SCRAM message (either direction) or verifier string sidepool accepts, in bytes.
/// Real messages are about 100 bytes; anything near this cap is hostile.
pub const MAX_SCRAM_MESSAGE_LEN: usize = 1024;

/// Which SCRAM message or input an [`AuthError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramMessage {
    /// `client-first-message` (the `SASLInitialResponse` data).
    ClientFirst,
    /// `client-final-message` (the `SASLResponse` data).
    ClientFinal,
    /// `server-first-message` (the `AuthenticationSASLContinue` data).
    ServerFirst,
    /// `server-final-message` (the `AuthenticationSASLFinal` data).
    ServerFinal,
}

impl std::fmt::Display for ScramMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ClientFirst => "SCRAM client-first-message",
            Self::ClientFinal => "SCRAM client-final-message",
            Self::ServerFirst => "SCRAM server-first-message",
            Self::ServerFinal => "SCRAM server-final-message",
        })
    }
}

/// Why an authentication exchange failed.
///
/// In a [`ScramServer`] exchange every variant is the application client's fault; in a
/// [`ScramClient`] exchange it is the PostgreSQL server's ([`AuthError::Upstream`],
/// [`AuthError::ServerError`]); [`AuthError::BadVerifier`] is the operator's (configuration).
#[derive(Debug, Error)]
pub enum AuthError {
    /// A message is longer than [`MAX_SCRAM_MESSAGE_LEN`].
    #[error("{what} of {len} bytes exceeds the limit of {max} bytes")]
    TooLong {
        what: ScramMessage,
        len: usize,
        max: usize,
    },
    /// A message does not follow the SCRAM grammar.
    #[error("malformed {what}: {why}")]
    Malformed {
        what: ScramMessage,
        why: &'static str,
    },
    /// The client asked for channel binding (`p=` gs2 header); sidepool does not offer
    /// SCRAM-SHA-256-PLUS.
    #[error(
        "client requires SCRAM channel binding (SCRAM-SHA-256-PLUS), which sidepool does not offer; \
         connect with channel_binding=prefer or disable"
    )]
    ChannelBindingUnsupported,
    /// The `c=` attribute of the client-final-message does not match the gs2 header the client
    /// sent first.
    #[error("SCRAM channel-binding attribute does not match the client-first-message's gs2 header")]
    ChannelBindingMismatch,
    /// The client sent an authorization identity (`a=`), which PostgreSQL does not support either.
    #[error("SCRAM authorization identity (a=) is not supported")]
    AuthzidUnsupported,
    /// The client requires a SCRAM extension (`m=`).
    #[error("client requires an unsupported SCRAM extension (m=)")]
    ExtensionUnsupported,
    /// The nonce in the client-final-message is not the combined nonce of this exchange.
    #[error("SCRAM nonce in the client-final-message does not match this exchange")]
    NonceMismatch,
    /// The client's proof is wrong: wrong password (or unknown user, see
    /// [`ScramSecret::mock`]).
    #[error("password authentication failed")]
    WrongPassword,
    /// A SCRAM verifier string (configuration) is not in PostgreSQL's format.
    #[error(
        "invalid SCRAM verifier ({why}); expected \
         SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"
    )]
    BadVerifier { why: &'static str },
    /// The PostgreSQL server ended the exchange with a SCRAM `e=` error.
    #[error("PostgreSQL rejected SCRAM authentication: {message}")]
    ServerError { message: String },
    /// The PostgreSQL server's SCRAM message was invalid, or its signature did not verify.
    #[error("SCRAM exchange with PostgreSQL failed at the {what}")]
    Upstream {
        what: ScramMessage,
        #[source]
        source: std::io::Error,
    },
}

/// Coarse classes of [`AuthError`], for metric labels and close decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthErrorKind {
    /// A message over the length cap.
    Length,
    /// Bytes that do not follow the SCRAM grammar, or contradict earlier messages.
    Malformed,
    /// A SCRAM feature sidepool does not speak (channel binding, authzid, extensions).
    Unsupported,
    /// The credentials are wrong.
    WrongPassword,
    /// A configured verifier is unusable.
    Config,
    /// The upstream PostgreSQL server failed or refused the exchange.
    Upstream,
}

impl AuthError {
    /// The coarse class of this error.
    pub fn kind(&self) -> AuthErrorKind {
        match self {
            Self::TooLong { .. } => AuthErrorKind::Length,
            Self::Malformed { .. } | Self::ChannelBindingMismatch | Self::NonceMismatch => {
                AuthErrorKind::Malformed
            }
            Self::ChannelBindingUnsupported
            | Self::AuthzidUnsupported
            | Self::ExtensionUnsupported => AuthErrorKind::Unsupported,
            Self::WrongPassword => AuthErrorKind::WrongPassword,
            Self::BadVerifier { .. } => AuthErrorKind::Config,
            Self::ServerError { .. } | Self::Upstream { .. } => AuthErrorKind::Upstream,
        }
    }
}

/// Checks a message against [`MAX_SCRAM_MESSAGE_LEN`] and that it is UTF-8 (RFC 5802 §7).
fn scram_str(what: ScramMessage, data: &[u8]) -> Result<&str, AuthError> {
    if data.len() > MAX_SCRAM_MESSAGE_LEN {
        return Err(AuthError::TooLong {
            what,
            len: data.len(),
            max: MAX_SCRAM_MESSAGE_LEN,
        });
    }
    std::str::from_utf8(data).map_err(|_| AuthError::Malformed {
        what,
        why: "not UTF-8",
    })
}
