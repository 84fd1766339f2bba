//! Server side of one SCRAM-SHA-256 exchange (RFC 5802 §5, §7), following PostgreSQL's
//! `auth-scram.c`: no channel binding offered, user name in the message ignored, `a=` and `m=`
//! refused, extensions after the nonce ignored.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::scram_secret::hmac_sha256;
use super::{AuthError, ScramMessage, ScramSecret, scram_str};

/// Random bytes in the server's part of the nonce (PostgreSQL's `SCRAM_RAW_NONCE_LEN`).
const SERVER_NONCE_LEN: usize = 18;

/// The gs2 channel-binding flag the client sent (RFC 5802 §7 `gs2-cbind-flag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gs2Flag {
    /// `n`: the client does not support channel binding.
    No,
    /// `y`: the client supports it but thinks the server does not. Accepted because sidepool never
    /// offers SCRAM-SHA-256-PLUS; if it ever does, `y` becomes a downgrade and must be refused.
    Yes,
}

impl Gs2Flag {
    /// The `c=` value the client-final-message must carry: base64 of the gs2 header (`n,,` or
    /// `y,,`; no authzid, no channel-binding data).
    fn expected_cbind(self) -> &'static str {
        match self {
            Self::No => "biws",
            Self::Yes => "eSws",
        }
    }
}

/// One server-side SCRAM-SHA-256 exchange: created by [`ScramServer::start`] from the
/// client-first-message, consumed by [`ScramServer::finish`] with the client-final-message.
pub struct ScramServer {
    stored_key: [u8; 32],
    server_key: [u8; 32],
    doomed: bool,
    flag: Gs2Flag,
    combined_nonce: String,
    client_first_bare: String,
    server_first: String,
}

impl std::fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramServer")
            .field("flag", &self.flag)
            .field("combined_nonce", &self.combined_nonce)
            .finish_non_exhaustive()
    }
}

impl ScramServer {
    /// Starts an exchange. `client_first` is the `SASLInitialResponse` data; the returned bytes are
    /// the server-first-message to send in `AuthenticationSASLContinue`. The user name inside the
    /// message is ignored: the startup packet's user is the one being authenticated (PostgreSQL
    /// does the same; libpq sends an empty one).
    ///
    /// # Errors
    ///
    /// [`AuthError::TooLong`], [`AuthError::Malformed`] (not UTF-8, missing or bad attributes),
    /// [`AuthError::ChannelBindingUnsupported`] (`p=` header), [`AuthError::AuthzidUnsupported`],
    /// [`AuthError::ExtensionUnsupported`] (`m=`).
    pub fn start(
        secret: &ScramSecret,
        client_first: &[u8],
    ) -> Result<(ScramServer, Vec<u8>), AuthError> {
        let mut raw = [0u8; SERVER_NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut raw);
        Self::start_with_nonce(secret, client_first, &STANDARD.encode(raw))
    }

    /// [`ScramServer::start`] with a given server nonce part (appended to the client's nonce), for
    /// test vectors. Real exchanges must use a fresh random nonce.
    pub(crate) fn start_with_nonce(
        secret: &ScramSecret,
        client_first: &[u8],
        server_nonce: &str,
    ) -> Result<(ScramServer, Vec<u8>), AuthError> {
        let msg = scram_str(ScramMessage::ClientFirst, client_first)?;
        let parsed = parse_client_first(msg)?;
        let combined_nonce = format!("{}{server_nonce}", parsed.nonce);
        let server_first = format!(
            "r={combined_nonce},s={},i={}",
            STANDARD.encode(&secret.salt),
            secret.iterations
        );
        let reply = server_first.clone().into_bytes();
        let server = ScramServer {
            stored_key: secret.stored_key,
            server_key: secret.server_key,
            doomed: secret.doomed,
            flag: parsed.flag,
            combined_nonce,
            client_first_bare: parsed.bare.to_owned(),
            server_first,
        };
        Ok((server, reply))
    }

    /// Checks the client's proof. `client_final` is the `SASLResponse` data; on success the
    /// returned bytes are the server-final-message (`v=<ServerSignature>`) to send in
    /// `AuthenticationSASLFinal`, followed by `AuthenticationOk`.
    ///
    /// # Errors
    ///
    /// [`AuthError::WrongPassword`] when the proof does not verify (compared in constant time);
    /// [`AuthError::ChannelBindingMismatch`] when `c=` does not match the first message's gs2
    /// header; [`AuthError::NonceMismatch`]; [`AuthError::TooLong`] or [`AuthError::Malformed`]
    /// for bytes that are not a client-final-message.
    pub fn finish(self, client_final: &[u8]) -> Result<Vec<u8>, AuthError> {
        let msg = scram_str(ScramMessage::ClientFinal, client_final)?;
        let parsed = parse_client_final(msg)?;
        if parsed.cbind != self.flag.expected_cbind() {
            return Err(AuthError::ChannelBindingMismatch);
        }
        if parsed.nonce != self.combined_nonce {
            return Err(AuthError::NonceMismatch);
        }
        // RFC 5802 §3: AuthMessage = client-first-message-bare "," server-first-message ","
        // client-final-message-without-proof.
        let auth_message: [&[u8]; 5] = [
            self.client_first_bare.as_bytes(),
            b",",
            self.server_first.as_bytes(),
            b",",
            parsed.without_proof.as_bytes(),
        ];
        let client_signature = hmac_sha256(&self.stored_key, &auth_message);
        let mut client_key = parsed.proof;
        for (k, s) in client_key.iter_mut().zip(client_signature) {
            *k ^= s;
        }
        let computed: [u8; 32] = Sha256::digest(client_key).into();
        let valid = computed.ct_eq(&self.stored_key) & Choice::from(u8::from(!self.doomed));
        if !bool::from(valid) {
            return Err(AuthError::WrongPassword);
        }
        let server_signature = hmac_sha256(&self.server_key, &auth_message);
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }
}

struct ClientFirst<'a> {
    flag: Gs2Flag,
    bare: &'a str,
    nonce: &'a str,
}

/// `client-first-message = gs2-header client-first-message-bare` (RFC 5802 §7).
fn parse_client_first(msg: &str) -> Result<ClientFirst<'_>, AuthError> {
    let bad = |why| AuthError::Malformed {
        what: ScramMessage::ClientFirst,
        why,
    };
    let mut header = msg.splitn(3, ',');
    let flag = match header.next().unwrap_or_default() {
        "n" => Gs2Flag::No,
        "y" => Gs2Flag::Yes,
        f if f.starts_with("p=") => return Err(AuthError::ChannelBindingUnsupported),
        _ => return Err(bad("gs2 header does not start with n, y or p=")),
    };
    match header.next() {
        Some("") => {}
        Some(a) if a.starts_with("a=") => return Err(AuthError::AuthzidUnsupported),
        _ => {
            return Err(bad(
                "gs2 header is not followed by an empty authzid and ','",
            ));
        }
    }
    let bare = header
        .next()
        .ok_or(bad("gs2 header is not followed by ','"))?;
    let mut attrs = bare.split(',');
    let user = attrs.next().unwrap_or_default();
    if user.starts_with("m=") {
        return Err(AuthError::ExtensionUnsupported);
    }
    if !user.starts_with("n=") {
        return Err(bad("username attribute n= missing"));
    }
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(bad("nonce attribute r= missing"))?;
    if nonce.is_empty() || !nonce.bytes().all(is_printable) {
        return Err(bad("nonce is empty or not printable"));
    }
    check_extensions(attrs, ScramMessage::ClientFirst)?;
    Ok(ClientFirst { flag, bare, nonce })
}

struct ClientFinal<'a> {
    without_proof: &'a str,
    cbind: &'a str,
    nonce: &'a str,
    proof: [u8; 32],
}

/// `client-final-message = channel-binding "," nonce ["," extensions] "," proof` (RFC 5802 §7).
fn parse_client_final(msg: &str) -> Result<ClientFinal<'_>, AuthError> {
    let bad = |why| AuthError::Malformed {
        what: ScramMessage::ClientFinal,
        why,
    };
    let (without_proof, proof) = msg
        .rsplit_once(",p=")
        .ok_or(bad("proof attribute p= missing"))?;
    let mut attrs = without_proof.split(',');
    let cbind = attrs
        .next()
        .and_then(|a| a.strip_prefix("c="))
        .ok_or(bad("channel-binding attribute c= missing"))?;
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(bad("nonce attribute r= missing"))?;
    check_extensions(attrs, ScramMessage::ClientFinal)?;
    let proof = STANDARD
        .decode(proof)
        .ok()
        .and_then(|p| <[u8; 32]>::try_from(p).ok())
        .ok_or(bad("proof is not 32 bytes of base64"))?;
    Ok(ClientFinal {
        without_proof,
        cbind,
        nonce,
        proof,
    })
}

/// Optional extensions (`<letter>=<value>`) are ignored, as PostgreSQL does, but must be
/// well-formed.
fn check_extensions<'a>(
    attrs: impl Iterator<Item = &'a str>,
    what: ScramMessage,
) -> Result<(), AuthError> {
    for attr in attrs {
        let b = attr.as_bytes();
        if !matches!(b, [name, b'=', ..] if name.is_ascii_alphabetic()) {
            return Err(AuthError::Malformed {
                what,
                why: "attribute is not <letter>=<value>",
            });
        }
    }
    Ok(())
}

/// RFC 5802 `printable`: `%x21-2B / %x2D-7E` (visible ASCII except ',').
fn is_printable(b: u8) -> bool {
    matches!(b, 0x21..=0x2B | 0x2D..=0x7E)
}

#[cfg(test)]
mod tests;
