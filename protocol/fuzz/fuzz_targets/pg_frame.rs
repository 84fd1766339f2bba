//! PostgreSQL message framing: `frame::check` and the relay's `frame::Scanner`, fed the input in
//! pieces the way a socket delivers it.
//!
//! Input: byte 0 picks the caps and which tags are wanted whole, byte 1 the read size; the rest
//! is the stream. Besides "no panic", checks the Scanner's contract: every step consumes what is
//! buffered and no more, makes progress unless it asks for more bytes, and streamed plus whole
//! messages add up to the lengths their headers declared.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidepool_protocol::pg::frame::{self, HEADER_LEN, Scanner, Step};

fuzz_target!(|data: &[u8]| {
    let [knobs, chunk, stream @ ..] = data else {
        return;
    };
    let max_len = 64 << (knobs & 0x0f);
    let max_whole = 16 << (knobs >> 4);
    let chunk = usize::from(*chunk).max(1);
    // Tags below the knob byte are "interesting" to the caller (read whole).
    let wants_whole = |tag: u8| tag < *knobs;

    if let Ok(Some(h)) = frame::check(stream, max_len) {
        assert!(h.total_len >= HEADER_LEN && h.total_len <= max_len);
        assert!(h.total_len <= stream.len());
    }

    let mut scanner = Scanner::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    // Bytes still owed to the message the scanner last started.
    let mut owed = 0usize;
    loop {
        match scanner.step(&buf, max_len, max_whole, wants_whole) {
            Err(_) => return,
            Ok(Step::NeedMore) => {
                if fed == stream.len() {
                    return;
                }
                let end = (fed + chunk).min(stream.len());
                buf.extend_from_slice(&stream[fed..end]);
                fed = end;
            }
            Ok(Step::Forward(n)) => {
                assert!(
                    n > 0 && n <= buf.len() && n <= owed,
                    "forward {n} of {owed}"
                );
                owed -= n;
                buf.drain(..n);
            }
            Ok(Step::Started(h, n)) => {
                assert_eq!(owed, 0, "started a message inside another");
                assert!(!wants_whole(h.tag));
                assert!(n >= HEADER_LEN && n <= buf.len() && n <= h.total_len);
                assert!(h.total_len <= max_len);
                owed = h.total_len - n;
                buf.drain(..n);
            }
            Ok(Step::Message(h)) => {
                assert_eq!(owed, 0, "whole message inside another");
                assert!(wants_whole(h.tag));
                assert!(h.total_len <= max_whole && h.total_len <= buf.len());
                assert_eq!(buf.first(), Some(&h.tag));
                buf.drain(..h.total_len);
            }
        }
        assert_eq!(scanner.at_boundary(), owed == 0);
    }
});
