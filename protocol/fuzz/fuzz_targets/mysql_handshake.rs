//! MySQL connection-phase and command decoders: the server greeting, the client's
//! HandshakeResponse41 and SSLRequest, AuthSwitchRequest, COM_CHANGE_USER, and the COM_STMT_*
//! field readers.
//! What decodes re-encodes to bytes that decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidepool_protocol::mysql::{CapabilityFlags, auth, command, handshake};

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = handshake::parse_greeting(data) {
        let again = handshake::greeting(&g);
        let g2 = handshake::parse_greeting(&again)
            .unwrap_or_else(|e| panic!("re-encoded greeting {g:?} failed to decode: {e}"));
        assert_eq!(g2.server_version, g.server_version);
        assert_eq!(g2.connection_id, g.connection_id);
    }
    if let Ok(r) = handshake::parse_handshake_response(data) {
        let again = handshake::handshake_response(&r);
        let r2 = handshake::parse_handshake_response(&again)
            .unwrap_or_else(|e| panic!("re-encoded response {r:?} failed to decode: {e}"));
        assert_eq!(r2.user, r.user);
        assert_eq!(r2.database, r.database);
    }
    let _ = handshake::parse_ssl_request(data);
    // COM_CHANGE_USER under the capabilities a client may have negotiated.
    for caps in [
        CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_SECURE_CONNECTION,
        CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_CONNECT_ATTRS
            | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
    ] {
        let _ = handshake::parse_change_user(data, caps);
    }
    let _ = auth::parse_auth_switch(data);

    let _ = command::statement_id(data);
    let _ = command::execute_flags(data);
    let params = data.first().map_or(0, |&b| u16::from(b));
    if let Ok(Some(types)) = command::execute_param_types(data, params) {
        assert_eq!(types.len(), usize::from(params) * 2);
        let _ = command::execute_with_types(data, params, types);
    }
});
