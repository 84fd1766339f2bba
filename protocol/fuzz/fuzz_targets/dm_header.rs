//! Dameng DM8 message framing: header parse and frame check under both checksum rules and a
//! small body cap, the execute-reply transaction status and the STARTUP reply reader.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidepool_protocol::dm::{self, FrameRules, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, bytes)) = data.split_first() else {
        return;
    };
    let rules = FrameRules {
        max_body: u32::from(knobs) * 256,
        xor_checksum: knobs & 1 == 1,
    };
    match dm::parse_header(bytes, &rules) {
        Ok(Some(h)) => {
            assert!(bytes.len() >= HEADER_LEN);
            assert!(h.body_len <= rules.max_body);
        }
        Ok(None) => assert!(bytes.len() < HEADER_LEN),
        Err(_) => {}
    }
    if let Ok(Some(len)) = dm::check_frame(bytes, &rules) {
        assert!(len <= bytes.len() && len >= HEADER_LEN);
        let frame = &bytes[..len];
        let _ = dm::expects_exec_reply(frame);
        let _ = dm::exec_reply_trx_status(frame);
        let _ = dm::parse_startup_reply(frame);
    }
    let _ = dm::exec_reply_trx_status(bytes);
    let _ = dm::parse_startup_reply(bytes);
});
