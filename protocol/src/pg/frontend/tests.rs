use super::*;

#[test]
fn query_bytes_match_the_spec() {
    assert_eq!(&query("SELECT 1")[..], b"Q\0\0\0\x0dSELECT 1\0");
    assert_eq!(&sync()[..], b"S\0\0\0\x04");
    assert_eq!(&terminate()[..], b"X\0\0\0\x04");
}

#[test]
fn password_and_sasl_messages_round_trip() {
    assert_eq!(
        parse_password(&password_message(b"md5abc")),
        Ok(&b"md5abc"[..])
    );
    let m = sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=xyz");
    let (mech, data) = parse_sasl_initial_response(&m).unwrap();
    assert_eq!(
        (mech.as_str(), data),
        ("SCRAM-SHA-256", &b"n,,n=,r=xyz"[..])
    );
    assert_eq!(sasl_response_data(&sasl_response(b"c=biws")), b"c=biws");
}

#[test]
fn sasl_initial_response_rejects_lying_lengths() {
    let mut m = sasl_initial_response("SCRAM-SHA-256", b"abc").to_vec();
    let n = m.len();
    m[n - 4] = 9; // claims 9 data bytes; has 3 (length field sits before the data)
    assert!(parse_sasl_initial_response(&m).is_err());
    assert!(parse_sasl_initial_response(b"p\0\0\0\x06ab").is_err());
}

#[test]
fn statement_text_of_query_and_parse() {
    assert_eq!(
        statement_text(&query("SELECT 1")).as_deref(),
        Some("SELECT 1")
    );
    let parse = b"P\0\0\0\x13s1\0SELECT $1\0\0\0";
    assert_eq!(statement_text(parse).as_deref(), Some("SELECT $1"));
    assert_eq!(statement_text(&sync()), None);
    assert_eq!(statement_text(b"Q\0\0\0\x05x"), None, "unterminated");
}

#[test]
fn cycle_ending_messages() {
    for t in [b'Q', b'S', b'F'] {
        assert!(ends_cycle(t));
    }
    for t in [b'P', b'B', b'E', b'D', b'H', b'd', b'c', b'f', b'C'] {
        assert!(!ends_cycle(t));
    }
}

#[test]
fn parse_bind_describe_close_split_and_rebuild() {
    let parse = parse_message("s1", b"SELECT $1\0\0\x01\0\0\0\x17");
    let parts = parse_parse(&parse).unwrap();
    assert_eq!(parts.name, b"s1");
    assert_eq!(
        parse_parse(&parse_message("sp7", parts.rest)).unwrap().rest,
        parts.rest
    );

    let bind = b"B\0\0\0\x14p1\0s1\0\0\0\0\x01\0\0\0\0";
    let b = parse_bind(bind).unwrap();
    assert_eq!((b.portal, b.statement), (&b"p1"[..], &b"s1"[..]));
    let rebuilt = bind_message(&b, "sidepool_3");
    let again = parse_bind(&rebuilt).unwrap();
    assert_eq!(
        (again.portal, again.statement, again.rest),
        (&b"p1"[..], &b"sidepool_3"[..], b.rest)
    );
    assert_eq!(
        crate::pg::frame::check(&rebuilt, 1024)
            .unwrap()
            .unwrap()
            .total_len,
        rebuilt.len()
    );

    let d = statement_target(tag::DESCRIBE, "s1");
    assert_eq!(parse_target(&d), Ok(Target::Statement(b"s1")));
    assert_eq!(parse_target(b"C\0\0\0\x06P\0"), Ok(Target::Portal(b"")));
    assert!(parse_target(b"C\0\0\0\x06X\0").is_err());
    assert!(parse_bind(b"B\0\0\0\x06p1").is_err());
    assert!(parse_parse(b"P\0\0\0\x07s1\0").is_err(), "no query");
}
