//! MySQL packet framing as the relays use it: a `Scanner` walk over bytes that arrive in
//! arbitrary chunks, and `read_logical` joining continuation packets under a payload cap.
//! The walk must account for every byte exactly once and never step past the buffer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidepool_protocol::mysql::packet::{self, Scanner, Step};

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, bytes)) = data.split_first() else {
        return;
    };
    // Small caps so the fuzzer reaches the "too long" and streaming paths.
    let whole_cap = usize::from(knobs & 0x3f);
    let logical_cap = usize::from(knobs) * 64;
    let chunk = usize::from(knobs >> 4) + 1;

    if let Ok(Some(logical)) = packet::read_logical(bytes, logical_cap) {
        assert!(logical.consumed <= bytes.len());
        assert!(logical.payload.len() <= logical_cap);
    }
    if let Ok(Some(h)) = packet::check(bytes, logical_cap) {
        assert!(h.total_len() <= bytes.len());
    }

    // Feed `bytes` to the scanner `chunk` bytes at a time, as a socket would.
    let mut scanner = Scanner::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut consumed = 0;
    loop {
        let step = scanner.step(&buf, whole_cap, |p| p.first.is_some_and(|b| b & 1 == 0));
        let n = match step {
            Step::NeedMore => {
                if fed == bytes.len() {
                    break;
                }
                let end = (fed + chunk).min(bytes.len());
                buf.extend_from_slice(&bytes[fed..end]);
                fed = end;
                continue;
            }
            Step::Packet(p) => {
                assert!(p.header.len <= whole_cap);
                p.header.total_len()
            }
            Step::Started(_, n) | Step::Forward(n) => {
                assert!(n > 0, "a step that consumes nothing would spin");
                n
            }
        };
        assert!(n <= buf.len(), "step of {n} bytes past a buffer of {}", buf.len());
        buf.drain(..n);
        consumed += n;
    }
    assert_eq!(consumed + buf.len(), bytes.len());
});
