//! Untagged pre-authentication packets: `startup::check` then `startup::parse`, as the proxy reads
//! a new client. A decoded StartupMessage re-encodes to a packet that decodes to the same
//! parameters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidepool_protocol::pg::startup::{self, MAX_STARTUP_LEN, StartupPacket};

fuzz_target!(|data: &[u8]| {
    // Unframed, as `parse` may be handed any slice.
    let _ = startup::parse(data);
    let Ok(Some(len)) = startup::check(data) else {
        return;
    };
    assert!((8..=MAX_STARTUP_LEN).contains(&len) && len <= data.len());
    let Ok(StartupPacket::Startup { params, .. }) = startup::parse(&data[..len]) else {
        return;
    };
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let again = startup::startup_message(&pairs);
    match startup::parse(&again) {
        Ok(StartupPacket::Startup { params: p2, minor }) => {
            assert_eq!(minor, 0);
            assert_eq!(p2, params);
        }
        other => panic!("re-encoded startup packet decoded as {other:?}"),
    }
});
