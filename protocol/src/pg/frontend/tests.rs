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
