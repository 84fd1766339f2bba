//! Backend (server → proxy) message decoders: Authentication, ErrorResponse/NoticeResponse,
//! ParameterStatus, BackendKeyData, ReadyForQuery and DataRow. The input is a stream of messages
//! split by `frame::check` as the proxy's server side does; every decoder is tried on every
//! message (they must reject, not panic on, another type's body).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidepool_protocol::pg::backend;
use sidepool_protocol::pg::frame;

/// The proxy's cap on a server message it reads whole.
const MAX_LEN: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    decode_all(data);
    let mut rest = data;
    while let Ok(Some(h)) = frame::check(rest, MAX_LEN) {
        let (msg, tail) = rest.split_at(h.total_len);
        decode_all(msg);
        rest = tail;
    }
});

fn decode_all(msg: &[u8]) {
    let _ = backend::parse_authentication(msg);
    let _ = backend::parse_error(msg);
    let _ = backend::parse_parameter_status(msg);
    let _ = backend::parse_backend_key_data(msg);
    let _ = backend::parse_ready_for_query(msg);
    if let Ok(values) = backend::parse_data_row(msg) {
        let bytes: usize = values.iter().flatten().map(|v| v.len()).sum();
        assert!(bytes <= msg.len());
    }
}
