//! Authentication: password scrambles for `mysql_native_password`, `caching_sha2_password` and
//! MariaDB's `client_ed25519`, verified as a server (sidepool knows the cleartext password
//! from `[[pools.users]]`) and computed as a client; AuthSwitchRequest and AuthMoreData.

use mysql_common::auth::plugins::caching_sha2_password::scramble_sha256;
use mysql_common::auth::plugins::mysql_native_password::scramble_native;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use super::handshake::NONCE_LEN;
use crate::error::{ProtocolError, Result};

/// `mysql_native_password`: SHA-1 scramble.
pub const NATIVE: &str = "mysql_native_password";
/// `caching_sha2_password`: SHA-256 scramble, then a fast path or full authentication.
pub const CACHING_SHA2: &str = "caching_sha2_password";
/// `sha256_password`, MySQL's older RSA/TLS plugin; answered like caching_sha2's full path.
pub const SHA256: &str = "sha256_password";
/// MariaDB's `client_ed25519` (plugin `ed25519` on the server).
pub const ED25519: &str = "client_ed25519";
/// `mysql_clear_password`: the password in clear (only over TLS).
pub const CLEAR: &str = "mysql_clear_password";

/// First byte of AuthSwitchRequest.
pub const AUTH_SWITCH: u8 = 0xFE;
/// First byte of AuthMoreData.
pub const AUTH_MORE_DATA: u8 = 0x01;
/// caching_sha2_password: the client asks for the server's RSA public key.
pub const REQUEST_PUBLIC_KEY: u8 = 0x02;
/// caching_sha2_password: the scramble matched the cache.
pub const FAST_AUTH_SUCCESS: u8 = 0x03;
/// caching_sha2_password: send the password (over TLS, or RSA-encrypted).
pub const PERFORM_FULL_AUTHENTICATION: u8 = 0x04;

/// A fresh nonce of printable ASCII without NUL or `$` (what MySQL servers send).
pub fn new_nonce() -> [u8; NONCE_LEN] {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#%&()*+,-./:;<=>?@[]^_{|}~";
    let mut rng = rand::thread_rng();
    let mut out = [0u8; NONCE_LEN];
    for b in &mut out {
        *b = ALPHABET[rng.gen_range(0..ALPHABET.len())];
    }
    out
}

fn nonce20(nonce: &[u8]) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    for (d, s) in n.iter_mut().zip(nonce) {
        *d = *s;
    }
    n
}

/// The client's answer to `nonce` for `plugin`: native or caching_sha2 scramble, ed25519
/// signature, or the password itself for `mysql_clear_password`. Empty for an empty password
/// (except ed25519, which signs anyway). `None` for an unknown plugin.
pub fn scramble(plugin: &str, nonce: &[u8], password: &[u8]) -> Option<Vec<u8>> {
    match plugin {
        NATIVE => Some(
            scramble_native(nonce, password)
                .map(|s| s.to_vec())
                .unwrap_or_default(),
        ),
        CACHING_SHA2 => Some(
            scramble_sha256(&nonce20(nonce), password)
                .map(|s| s.to_vec())
                .unwrap_or_default(),
        ),
        ED25519 => Some(ed25519_signature(nonce, password).to_vec()),
        CLEAR => {
            let mut p = password.to_vec();
            p.push(0);
            Some(p)
        }
        _ => None,
    }
}

/// Checks a client's scramble for `plugin` (native or caching_sha2) against the cleartext
/// password, in constant time. An empty password expects an empty response.
pub fn verify(plugin: &str, nonce: &[u8], password: &[u8], response: &[u8]) -> bool {
    let Some(expected) = scramble(plugin, nonce, password) else {
        return false;
    };
    if plugin == ED25519 || plugin == CLEAR {
        return false; // sidepool does not offer these to clients
    }
    expected.len() == response.len() && bool::from(expected.ct_eq(response))
}

/// Compares a password a client sent in clear (caching_sha2 full authentication over TLS,
/// NUL already removed) with the configured one, in constant time.
pub fn verify_cleartext(password: &[u8], sent: &[u8]) -> bool {
    password.len() == sent.len() && bool::from(password.ct_eq(sent))
}

/// caching_sha2_password full authentication without TLS: the password (NUL-terminated) XOR
/// the nonce, RSA-OAEP encrypted with the server's PEM public key.
///
/// # Errors
/// The key cannot be parsed or the password is too long for it.
pub fn rsa_encrypt_password(
    password: &[u8],
    nonce: &[u8],
    public_key_pem: &[u8],
) -> Result<Vec<u8>> {
    let mut plain = password.to_vec();
    plain.push(0);
    if !nonce.is_empty() {
        for (i, b) in plain.iter_mut().enumerate() {
            *b ^= nonce[i % nonce.len()];
        }
    }
    mysql_common::crypto::encrypt(&plain, public_key_pem).map_err(|_| ProtocolError::Malformed {
        what: "RSA public key",
        why: "cannot encrypt the password with the key the server sent",
    })
}

/// MariaDB `client_ed25519`: an Ed25519 signature of `nonce` whose secret is derived from
/// SHA-512(password) (RFC 8032 §5.1.6 with the password in place of the seed).
pub fn ed25519_signature(nonce: &[u8], password: &[u8]) -> [u8; 64] {
    use curve25519_dalek::scalar::clamp_integer;
    use curve25519_dalek::{EdwardsPoint, Scalar};
    let hashed: [u8; 64] = Sha512::digest(password).into();
    let mut secret = [0u8; 32];
    secret.copy_from_slice(&hashed[..32]);
    let s = Scalar::from_bytes_mod_order(clamp_integer(secret));
    let public = EdwardsPoint::mul_base(&s).compress();
    let r_hash: [u8; 64] = Sha512::new()
        .chain_update(&hashed[32..])
        .chain_update(nonce)
        .finalize()
        .into();
    let r = Scalar::from_bytes_mod_order_wide(&r_hash);
    let big_r = EdwardsPoint::mul_base(&r).compress();
    let k_hash: [u8; 64] = Sha512::new()
        .chain_update(big_r.as_bytes())
        .chain_update(public.as_bytes())
        .chain_update(nonce)
        .finalize()
        .into();
    let k = Scalar::from_bytes_mod_order_wide(&k_hash);
    let big_s = k * s + r;
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(big_r.as_bytes());
    out[32..].copy_from_slice(big_s.as_bytes());
    out
}

/// Builds an AuthSwitchRequest payload: plugin name and its nonce.
pub fn auth_switch_request(plugin: &str, nonce: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + plugin.len() + nonce.len() + 1);
    out.push(AUTH_SWITCH);
    out.extend_from_slice(plugin.as_bytes());
    out.push(0);
    out.extend_from_slice(nonce);
    out.push(0);
    out
}

/// Decodes an AuthSwitchRequest: the plugin and its data. The scramble-based plugins end their
/// data with a NUL, which is removed; MariaDB's `client_ed25519` sends its 32-byte nonce bare, and
/// a last nonce byte of 0 (one nonce in 256) is data, kept.
///
/// # Errors
/// A wrong first byte or no NUL after the plugin name.
pub fn parse_auth_switch(payload: &[u8]) -> Result<(String, Vec<u8>)> {
    let bad = ProtocolError::Malformed {
        what: "AuthSwitchRequest",
        why: "missing plugin name",
    };
    let [AUTH_SWITCH, rest @ ..] = payload else {
        return Err(bad);
    };
    let nul = rest.iter().position(|b| *b == 0).ok_or(bad)?;
    let plugin = String::from_utf8_lossy(&rest[..nul]).into_owned();
    let mut data = rest[nul + 1..].to_vec();
    if plugin != ED25519 && data.last() == Some(&0) {
        data.pop();
    }
    Ok((plugin, data))
}

/// Builds an AuthMoreData payload.
pub fn auth_more_data(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + data.len());
    out.push(AUTH_MORE_DATA);
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_scramble_verifies_and_rejects() {
        let nonce = new_nonce();
        assert!(!nonce.contains(&0));
        let r = scramble(NATIVE, &nonce, b"secret").unwrap();
        assert_eq!(r.len(), 20);
        assert!(verify(NATIVE, &nonce, b"secret", &r));
        assert!(!verify(NATIVE, &nonce, b"other", &r));
        assert!(!verify(NATIVE, &nonce, b"secret", &r[..19]));
        assert!(verify(NATIVE, &nonce, b"", &[]));
        assert!(!verify(NATIVE, &nonce, b"", &r));
    }

    #[test]
    fn caching_sha2_scramble_verifies_and_rejects() {
        let nonce = new_nonce();
        let r = scramble(CACHING_SHA2, &nonce, b"secret").unwrap();
        assert_eq!(r.len(), 32);
        assert!(verify(CACHING_SHA2, &nonce, b"secret", &r));
        assert!(!verify(CACHING_SHA2, &nonce, b"secreT", &r));
        assert!(!verify("unknown", &nonce, b"secret", &r));
    }

    #[test]
    fn ed25519_signature_matches_mariadb_reference() {
        // Sign/verify consistency with the public key derivation: verifying with ed25519
        // equations [S]B = R + [k]A.
        use curve25519_dalek::scalar::clamp_integer;
        use curve25519_dalek::{EdwardsPoint, Scalar, edwards::CompressedEdwardsY};
        let sig = ed25519_signature(b"0123456789abcdef0123456789abcdef", b"pw");
        let hashed: [u8; 64] = Sha512::digest(b"pw").into();
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&hashed[..32]);
        let a = EdwardsPoint::mul_base(&Scalar::from_bytes_mod_order(clamp_integer(secret)));
        let mut r_bytes = [0u8; 32];
        r_bytes.copy_from_slice(&sig[..32]);
        let r = CompressedEdwardsY(r_bytes).decompress().unwrap();
        let mut s_bytes = [0u8; 32];
        s_bytes.copy_from_slice(&sig[32..]);
        let s = Scalar::from_canonical_bytes(s_bytes).unwrap();
        let k: [u8; 64] = Sha512::new()
            .chain_update(r_bytes)
            .chain_update(a.compress().as_bytes())
            .chain_update(b"0123456789abcdef0123456789abcdef")
            .finalize()
            .into();
        let k = Scalar::from_bytes_mod_order_wide(&k);
        assert_eq!(EdwardsPoint::mul_base(&s), r + k * a);
    }

    #[test]
    fn cleartext_passwords_compare_whole() {
        assert!(verify_cleartext(b"secret", b"secret"));
        assert!(!verify_cleartext(b"secret", b"secre"));
        assert!(!verify_cleartext(b"secret", b"secret\0"));
        assert!(!verify_cleartext(b"", b"x"));
        assert!(verify_cleartext(b"", b""));
    }

    #[test]
    fn auth_switch_round_trips() {
        let p = auth_switch_request(NATIVE, b"abcdefghijklmnopqrst");
        assert_eq!(
            parse_auth_switch(&p),
            Ok((NATIVE.to_owned(), b"abcdefghijklmnopqrst".to_vec()))
        );
        assert!(parse_auth_switch(&[0xFE, b'x']).is_err());
        assert!(parse_auth_switch(&[]).is_err());
        assert_eq!(auth_more_data(&[FAST_AUTH_SUCCESS]), vec![1, 3]);
    }

    #[test]
    fn an_ed25519_nonce_ending_in_zero_is_kept_whole() {
        // Seen as an intermittent login failure to MariaDB: the trailing NUL strip cut the
        // last byte off one ed25519 nonce in 256, and the signature no longer verified.
        let mut nonce = [7u8; 32];
        nonce[31] = 0;
        let mut packet = vec![0xFE];
        packet.extend_from_slice(b"client_ed25519\0");
        packet.extend_from_slice(&nonce);
        let (plugin, data) = parse_auth_switch(&packet).unwrap();
        assert_eq!(plugin, ED25519);
        assert_eq!(data, nonce);
        // The scramble plugins' terminating NUL still goes.
        let switch = auth_switch_request(NATIVE, &[9u8; 20]);
        assert_eq!(parse_auth_switch(&switch).unwrap().1, [9u8; 20]);
    }
}
