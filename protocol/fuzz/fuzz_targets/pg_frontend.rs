//! Frontend (client → proxy) message decoders: PasswordMessage, SASLInitialResponse,
//! SASLResponse, Parse, Bind, Describe/Close and the statement text of Query/Parse. Each input is
//! one whole message, tag and length included, as the session stages receive it. Parse and Bind
//! rebuilt by the proxy (statement renamed) split back into the same parts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidepool_protocol::pg::auth;
use sidepool_protocol::pg::frontend;

fuzz_target!(|msg: &[u8]| {
    if let Ok(password) = frontend::parse_password(msg) {
        let _ = auth::cleartext_matches("secret", password);
        let _ = auth::md5_verify("user", "secret", [1, 2, 3, 4], password);
        let _ = auth::md5_verify_stored(
            "md553f48b7c4b76a86ce72276c5755f217d",
            [1, 2, 3, 4],
            password,
        );
    }
    let _ = frontend::parse_sasl_initial_response(msg);
    let _ = frontend::sasl_response_data(msg);
    let _ = frontend::parse_target(msg);
    let _ = frontend::statement_text(msg);
    let _ = frontend::statement_bytes(msg);

    if let Ok(parts) = frontend::parse_parse(msg) {
        let rebuilt = frontend::parse_message("s1", parts.rest);
        let again = frontend::parse_parse(&rebuilt).expect("rebuilt Parse splits");
        assert_eq!(again.name, b"s1");
        assert_eq!(again.rest, parts.rest);
    }
    if let Ok(parts) = frontend::parse_bind(msg) {
        let rebuilt = frontend::bind_message(&parts, "s1");
        let again = frontend::parse_bind(&rebuilt).expect("rebuilt Bind splits");
        assert_eq!(again.portal, parts.portal);
        assert_eq!(again.statement, b"s1");
        assert_eq!(again.rest, parts.rest);
    }
});
