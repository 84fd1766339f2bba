//! `AuthenticationMD5Password` and `AuthenticationCleartextPassword`: what a `PasswordMessage`
//! carries, and checking it in constant time.
//!
//! md5 is PostgreSQL's legacy scheme: `"md5" || hex(md5(hex(md5(password || user)) || salt))`.
//! The inner hash (`"md5" || hex(md5(password || user))`) is what `pg_authid` stores.

use md5::{Digest, Md5};
use rand::RngCore;
use subtle::ConstantTimeEq;

/// The md5 response a client sends in `PasswordMessage` for `AuthenticationMD5Password` with
/// `salt`: `"md5"` followed by 32 lowercase hex digits, without the trailing NUL.
pub fn md5_response(user: &str, password: &str, salt: [u8; 4]) -> String {
    let inner = md5_hex(&[password.as_bytes(), user.as_bytes()]);
    salted_response(&inner, salt)
}

/// Whether `response` (the `PasswordMessage` body; one trailing NUL is ignored) is the md5
/// response for `user`, `password` and `salt`. Compared in constant time.
pub fn md5_verify(user: &str, password: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let expected = md5_response(user, password, salt);
    ct_equal(expected.as_bytes(), strip_nul(response))
}

/// Like [`md5_verify`], but from a stored md5 hash (`pg_authid`'s `md5` + 32 hex digits, i.e.
/// `"md5" || hex(md5(password || user))`) instead of the password. `false` if `stored` is not in
/// that format.
pub fn md5_verify_stored(stored: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let Some(inner) = stored
        .strip_prefix("md5")
        .filter(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    else {
        return false;
    };
    let expected = salted_response(&inner.to_ascii_lowercase(), salt);
    ct_equal(expected.as_bytes(), strip_nul(response))
}

/// A fresh random salt for `AuthenticationMD5Password`.
pub fn random_md5_salt() -> [u8; 4] {
    let mut salt = [0u8; 4];
    rand::thread_rng().fill_bytes(&mut salt);
    salt
}

/// Whether a cleartext `PasswordMessage` body `given` (one trailing NUL is ignored) equals
/// `expected`. Compared in constant time (only the length can leak).
pub fn cleartext_matches(expected: &str, given: &[u8]) -> bool {
    ct_equal(expected.as_bytes(), strip_nul(given))
}

fn salted_response(inner_hex: &str, salt: [u8; 4]) -> String {
    format!("md5{}", md5_hex(&[inner_hex.as_bytes(), &salt]))
}

fn md5_hex(parts: &[&[u8]]) -> String {
    let mut md5 = Md5::new();
    for part in parts {
        md5.update(part);
    }
    md5.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn strip_nul(bytes: &[u8]) -> &[u8] {
    bytes.strip_suffix(b"\0").unwrap_or(bytes)
}

fn ct_equal(a: &[u8], b: &[u8]) -> bool {
    // `ct_eq` on slices of different lengths is false without looking at the contents.
    a.ct_eq(b).into()
}
