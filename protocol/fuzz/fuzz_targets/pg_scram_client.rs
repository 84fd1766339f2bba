//! Client-side SCRAM-SHA-256 (sidepool logging in to a hostile PostgreSQL server): the
//! server-first-message and the server-final-message.
//!
//! Input: `server-first` 0xFF `server-final`. Byte 0 even: the server-first-message is prefixed
//! with `r=<our nonce>` so the fuzzer reaches the salt and iteration parsing behind the (random)
//! nonce check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidepool_protocol::pg::auth::ScramClient;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let (first, last) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let (mut client, client_first) = ScramClient::new(b"pencil");
    let server_first = if mode % 2 == 0 {
        let nonce = client_first
            .split(|&b| b == b',')
            .find_map(|a| a.strip_prefix(b"r="))
            .expect("client-first has r=");
        [b"r=".as_slice(), nonce, first].concat()
    } else {
        first.to_vec()
    };
    if client.server_first(&server_first).is_err() {
        // A dead exchange must refuse, not panic on, the final message too.
        assert!(client.server_final(last).is_err());
        return;
    }
    assert!(
        client.server_final(last).is_err(),
        "server signature accepted from a server that does not know the password"
    );
});
