//! Client side of SCRAM-SHA-256 (sidepool logging in to PostgreSQL), a thin wrapper over
//! `postgres-protocol`'s `ScramSha256` that adds length caps and typed errors.

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use super::{AuthError, MAX_SCRAM_MESSAGE_LEN, ScramMessage};

/// One client-side SCRAM-SHA-256 exchange with a PostgreSQL server, without channel binding
/// (gs2 header `n,,`).
pub struct ScramClient {
    inner: ScramSha256,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient").finish_non_exhaustive()
    }
}

impl ScramClient {
    /// Starts an exchange. Returns the client-first-message, the data of the
    /// `SASLInitialResponse` (mechanism [`super::SCRAM_SHA_256`]).
    pub fn new(password: &[u8]) -> (ScramClient, Vec<u8>) {
        let inner = ScramSha256::new(password, ChannelBinding::unsupported());
        let first = inner.message().to_vec();
        (ScramClient { inner }, first)
    }

    /// Takes the server-first-message (`AuthenticationSASLContinue` data) and returns the
    /// client-final-message to send in `SASLResponse`.
    ///
    /// # Errors
    ///
    /// [`AuthError::TooLong`]; [`AuthError::Upstream`] if the message is malformed, its nonce
    /// does not extend ours, its iteration count exceeds postgres-protocol's cap (100 000), or
    /// this is not the first call. After an error the exchange is dead: drop it.
    pub fn server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        check_len(ScramMessage::ServerFirst, data)?;
        self.inner
            .update(data)
            .map_err(|source| AuthError::Upstream {
                what: ScramMessage::ServerFirst,
                source,
            })?;
        // `message()` only panics once the exchange is done; `update` just succeeded, so it is
        // waiting for the server-final-message.
        Ok(self.inner.message().to_vec())
    }

    /// Takes the server-final-message (`AuthenticationSASLFinal` data) and verifies the server's
    /// signature; only `Ok` proves the server knew the password.
    ///
    /// # Errors
    ///
    /// [`AuthError::ServerError`] for an `e=` message; [`AuthError::TooLong`];
    /// [`AuthError::Upstream`] if the message is malformed, the signature is wrong, or
    /// [`ScramClient::server_first`] did not succeed first.
    pub fn server_final(self, data: &[u8]) -> Result<(), AuthError> {
        check_len(ScramMessage::ServerFinal, data)?;
        if let Some(message) = data.strip_prefix(b"e=") {
            return Err(AuthError::ServerError {
                message: String::from_utf8_lossy(message).into_owned(),
            });
        }
        let mut inner = self.inner;
        inner.finish(data).map_err(|source| AuthError::Upstream {
            what: ScramMessage::ServerFinal,
            source,
        })
    }
}

fn check_len(what: ScramMessage, data: &[u8]) -> Result<(), AuthError> {
    if data.len() > MAX_SCRAM_MESSAGE_LEN {
        return Err(AuthError::TooLong {
            what,
            len: data.len(),
            max: MAX_SCRAM_MESSAGE_LEN,
        });
    }
    Ok(())
}
