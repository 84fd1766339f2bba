//! Server-side SCRAM-SHA-256 (sidepool authenticating an application): the client-first-message,
//! the client-final-message, and PostgreSQL verifier strings from configuration.
//!
//! Input: a mode byte, then `client-first` 0xFF `client-final`. Mode even: the client-final is
//! prefixed with `c=biws,r=<the combined nonce the server just issued>`, so the fuzzer reaches the
//! extensions and the proof instead of stopping at the (random) nonce.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use sidepool_protocol::pg::auth::{AuthError, ScramSecret, ScramServer};

/// One PBKDF2 iteration keeps each run cheap; the parsers do not depend on the count.
static SECRET: LazyLock<ScramSecret> =
    LazyLock::new(|| ScramSecret::from_password_with("pencil", b"salt", 1));

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(secret) = ScramSecret::parse(text)
    {
        let again = ScramSecret::parse(&secret.to_verifier()).expect("verifier round trip");
        assert_eq!(again, secret);
    }
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let (first, last) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok((server, server_first)) = ScramServer::start(&SECRET, first) else {
        return;
    };
    let final_msg = if mode % 2 == 0 {
        // The server-first-message is "r=<combined nonce>,s=...,i=1".
        let nonce = server_first
            .split(|&b| b == b',')
            .next()
            .and_then(|r| r.strip_prefix(b"r="))
            .expect("server-first starts with r=");
        [b"c=biws,r=".as_slice(), nonce, last].concat()
    } else {
        last.to_vec()
    };
    match server.finish(&final_msg) {
        // Nobody knows the proof for "pencil" with this salt except by computing it, which the
        // fuzzer cannot: success would mean the proof check is broken.
        Ok(_) => panic!("proof accepted without the password"),
        Err(AuthError::WrongPassword | AuthError::Malformed { .. } | AuthError::TooLong { .. }) => {
        }
        Err(AuthError::ChannelBindingMismatch | AuthError::NonceMismatch) => {}
        Err(other) => panic!("unexpected error from finish: {other:?}"),
    }
});
