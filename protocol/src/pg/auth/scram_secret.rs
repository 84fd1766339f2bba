//! What the server keeps about a SCRAM-SHA-256 password (RFC 5802 §3), and PostgreSQL's text form
//! of it (the `pg_authid.rolpassword` verifier).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{AuthError, MAX_SCRAM_MESSAGE_LEN, SCRAM_SHA_256};

/// PostgreSQL's default (`scram_iterations`) and the count [`ScramSecret::from_password`] uses.
pub(crate) const DEFAULT_ITERATIONS: u32 = 4096;
/// Salt length PostgreSQL and [`ScramSecret::from_password`] use, in bytes.
const SALT_LEN: usize = 16;

/// The server-side SCRAM-SHA-256 secret of one user: salt, iteration count, `StoredKey` and
/// `ServerKey`. It cannot recover the password, but it can impersonate the server to a client, so
/// `Debug` prints neither key.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    pub(super) iterations: u32,
    pub(super) salt: Vec<u8>,
    pub(super) stored_key: [u8; 32],
    pub(super) server_key: [u8; 32],
    /// A mock secret for an unknown user: every proof fails (PostgreSQL's "doomed" exchange).
    pub(super) doomed: bool,
}

impl std::fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .field("salt", &STANDARD.encode(&self.salt))
            .field("keys", &"<redacted>")
            .field("doomed", &self.doomed)
            .finish()
    }
}

impl ScramSecret {
    /// Derives a secret with a random 16-byte salt and 4096 iterations, as PostgreSQL's
    /// `password_encryption = scram-sha-256` does. Costs one PBKDF2 run: call it once per user at
    /// config load, not per login.
    pub fn from_password(password: &str) -> ScramSecret {
        let mut salt = [0u8; SALT_LEN];
        rand::thread_rng().fill_bytes(&mut salt);
        Self::from_password_with(password, &salt, DEFAULT_ITERATIONS)
    }

    /// Derives a secret from a given salt and iteration count. The password goes through SASLprep
    /// first when it can (RFC 4013), and is used as raw bytes when SASLprep rejects it, exactly as
    /// PostgreSQL and libpq do, so the same password logs in through any driver. An iteration
    /// count of 0 is taken as 1.
    pub fn from_password_with(password: &str, salt: &[u8], iterations: u32) -> ScramSecret {
        let prepared = match stringprep::saslprep(password) {
            Ok(p) => p.into_owned(),
            Err(_) => password.to_owned(),
        };
        let iterations = iterations.max(1);
        let salted = hi(prepared.as_bytes(), salt, iterations);
        let client_key = hmac_sha256(&salted, &[b"Client Key"]);
        ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac_sha256(&salted, &[b"Server Key"]),
            doomed: false,
        }
    }

    /// Parses PostgreSQL's verifier format
    /// `SCRAM-SHA-256$<iterations>:<salt base64>$<StoredKey base64>:<ServerKey base64>`, so a
    /// `pg_authid.rolpassword` value can be configured instead of a password.
    ///
    /// # Errors
    ///
    /// [`AuthError::BadVerifier`] naming the first part that is wrong.
    pub fn parse(verifier: &str) -> Result<ScramSecret, AuthError> {
        let bad = |why| AuthError::BadVerifier { why };
        if verifier.len() > MAX_SCRAM_MESSAGE_LEN {
            return Err(bad("longer than 1024 bytes"));
        }
        let (method, rest) = verifier.split_once('$').ok_or(bad("no '$'"))?;
        if method != SCRAM_SHA_256 {
            return Err(bad("method is not SCRAM-SHA-256"));
        }
        let (params, keys) = rest.split_once('$').ok_or(bad("no second '$'"))?;
        let (iterations, salt) = params
            .split_once(':')
            .ok_or(bad("no ':' after iterations"))?;
        let (stored_key, server_key) = keys.split_once(':').ok_or(bad("no ':' between keys"))?;
        let iterations: u32 = iterations
            .parse()
            .ok()
            .filter(|&i| i > 0 && i <= i32::MAX as u32)
            .ok_or(bad("iteration count is not a positive integer"))?;
        let salt = STANDARD
            .decode(salt)
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or(bad("salt is not base64"))?;
        Ok(ScramSecret {
            iterations,
            salt,
            stored_key: decode_key(stored_key).ok_or(bad("StoredKey is not 32 bytes of base64"))?,
            server_key: decode_key(server_key).ok_or(bad("ServerKey is not 32 bytes of base64"))?,
            doomed: false,
        })
    }

    /// A stand-in secret for a user sidepool does not know, so that the exchange looks the same as
    /// for a real user and ends in [`AuthError::WrongPassword`] only after the proof (PostgreSQL's
    /// mock authentication; no user enumeration). The salt is derived from `user` and `mock_key`
    /// (random bytes the proxy picks once at start), so repeated attempts see a stable salt.
    pub fn mock(user: &str, mock_key: &[u8]) -> ScramSecret {
        let digest: [u8; 32] = Sha256::new()
            .chain_update(mock_key)
            .chain_update(user.as_bytes())
            .finalize()
            .into();
        ScramSecret {
            iterations: DEFAULT_ITERATIONS,
            salt: digest.get(..SALT_LEN).unwrap_or(&digest).to_vec(),
            stored_key: [0; 32],
            server_key: [0; 32],
            doomed: true,
        }
    }

    /// PostgreSQL's verifier text for this secret (the inverse of [`ScramSecret::parse`]).
    pub fn to_verifier(&self) -> String {
        format!(
            "{SCRAM_SHA_256}${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }

    /// The PBKDF2 iteration count clients must run.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }
}

fn decode_key(b64: &str) -> Option<[u8; 32]> {
    STANDARD.decode(b64).ok()?.try_into().ok()
}

/// HMAC-SHA-256 of the concatenated `parts`.
pub(super) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length (long ones are hashed), so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// RFC 5802 `Hi()`: PBKDF2-HMAC-SHA-256 with one 32-byte output block.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    // Key the MAC once and clone it per round instead of re-hashing the password each time.
    let keyed = Hmac::<Sha256>::new_from_slice(password).expect("HMAC accepts any key length");
    let mut mac = keyed.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut prev: [u8; 32] = mac.finalize().into_bytes().into();
    let mut out = prev;
    for _ in 1..iterations {
        let mut mac = keyed.clone();
        mac.update(&prev);
        prev = mac.finalize().into_bytes().into();
        for (o, p) in out.iter_mut().zip(prev) {
            *o ^= p;
        }
    }
    out
}
