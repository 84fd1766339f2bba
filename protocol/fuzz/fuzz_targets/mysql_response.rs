//! MySQL response tracking as the relay runs it: a `Tracker` for one command's response fed
//! the packets a `Scanner` finds in server bytes, plus the OK/EOF/ERR/PREPARE_OK decoders on
//! raw payloads. Nothing may panic, and a finished tracker accepts no further packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidepool_protocol::mysql::packet::{Scanner, Step, HEADER_LEN};
use sidepool_protocol::mysql::response::{self, Event, Expect, Tracker};

const EXPECTS: [Expect; 7] = [
    Expect::Ok,
    Expect::ResultSets,
    Expect::Prepare,
    Expect::FieldList,
    Expect::Rows,
    Expect::OnePacket,
    Expect::Nothing,
];

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, bytes)) = data.split_first() else {
        return;
    };
    let _ = response::parse_ok(bytes);
    let _ = response::parse_eof(bytes);
    let _ = response::parse_err(bytes);
    let _ = response::parse_prepare_ok(bytes);
    let _ = response::eof_class_status(bytes, knobs & 0x80 != 0);

    let expect = EXPECTS[usize::from(knobs & 0x0f) % EXPECTS.len()];
    let mut tracker = Tracker::new(expect, knobs & 0x80 != 0);
    let mut scanner = Scanner::new();
    let mut at = 0;
    while at < bytes.len() && !tracker.is_done() {
        let rest = &bytes[at..];
        let (payload, len, continuation, n) = match scanner.step(rest, 1 << 16, |p| {
            tracker.wants_whole(p)
        }) {
            Step::NeedMore => break,
            Step::Packet(p) => {
                let end = p.header.total_len();
                (&rest[HEADER_LEN..end], p.header.len, p.continuation, end)
            }
            Step::Started(p, n) => {
                let first = rest.get(HEADER_LEN..(HEADER_LEN + 1).min(n)).unwrap_or_default();
                (first, p.header.len, p.continuation, n)
            }
            Step::Forward(n) => {
                at += n;
                continue;
            }
        };
        at += n;
        match tracker.on_packet(payload, len, continuation) {
            Ok(Event::More | Event::LocalInfile) => {}
            Ok(Event::Done { .. }) => assert!(tracker.is_done()),
            Err(_) => return,
        }
    }
    if tracker.is_done() {
        assert!(tracker.on_packet(&[0], 1, false).is_err());
    }
});
