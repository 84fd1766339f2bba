use super::*;
use crate::pg::frame;

#[test]
fn ready_for_query_bytes() {
    assert_eq!(
        &ready_for_query(TransactionStatus::Idle)[..],
        b"Z\0\0\0\x05I"
    );
    assert_eq!(
        parse_ready_for_query(b"Z\0\0\0\x05T"),
        Ok(TransactionStatus::InTransaction)
    );
    assert!(parse_ready_for_query(b"Z\0\0\0\x05X").is_err());
    assert!(parse_ready_for_query(b"Z\0\0\0\x04").is_err());
}

#[test]
fn error_response_round_trips_through_parser() {
    let mut f = ErrorFields::new(Severity::Error, "53300", "sidepool: pool \"app\" timed out");
    f.hint = Some("raise max_open");
    let m = error_response(&f);
    assert_eq!(
        frame::check(&m, 1 << 16).unwrap().unwrap().total_len,
        m.len()
    );
    let e = parse_error(&m).unwrap();
    assert_eq!((e.severity.as_str(), e.code.as_str()), ("ERROR", "53300"));
    assert_eq!(e.message, "sidepool: pool \"app\" timed out");
}

#[test]
fn authentication_messages_decode() {
    assert_eq!(
        parse_authentication(&authentication_ok()),
        Ok(Authentication::Ok)
    );
    assert_eq!(
        parse_authentication(&authentication_md5([1, 2, 3, 4])),
        Ok(Authentication::Md5 { salt: [1, 2, 3, 4] })
    );
    assert_eq!(
        parse_authentication(&authentication_sasl("SCRAM-SHA-256")),
        Ok(Authentication::Sasl {
            mechanisms: vec!["SCRAM-SHA-256".into()]
        })
    );
    assert_eq!(
        parse_authentication(&authentication_sasl_continue(b"r=abc")),
        Ok(Authentication::SaslContinue(Bytes::from_static(b"r=abc")))
    );
    assert_eq!(
        parse_authentication(b"R\0\0\0\x08\0\0\0\x07"),
        Ok(Authentication::Unsupported(7))
    );
    assert!(parse_authentication(b"R\0\0\0\x06\0\0").is_err());
    assert!(
        parse_authentication(b"R\0\0\0\x0a\0\0\0\x05\x01\x02").is_err(),
        "short md5 salt"
    );
}

#[test]
fn parameter_status_and_key_data_decode() {
    let m = parameter_status("TimeZone", "UTC");
    assert_eq!(
        parse_parameter_status(&m),
        Ok(("TimeZone".into(), "UTC".into()))
    );
    let k = backend_key_data(7, -2);
    assert_eq!(
        parse_backend_key_data(&k),
        Ok((7, Bytes::copy_from_slice(&(-2i32).to_be_bytes())))
    );
    assert!(parse_parameter_status(b"S\0\0\0\x06ab").is_err());
}

#[test]
fn parsers_survive_random_bytes() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for _ in 0..20_000 {
        let len = rng.gen_range(0..40);
        let b: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
        let _ = parse_authentication(&b);
        let _ = parse_error(&b);
        let _ = parse_parameter_status(&b);
        let _ = parse_backend_key_data(&b);
        let _ = parse_ready_for_query(&b);
    }
}

#[test]
fn data_row_decodes_values_and_nulls() {
    let row = b"D\0\0\0\x11\0\x02\0\0\0\x03abc\xff\xff\xff\xff";
    assert_eq!(parse_data_row(row), Ok(vec![Some(&b"abc"[..]), None]));
    assert!(parse_data_row(b"D\0\0\0\x0a\0\x01\0\0\0\x09ab").is_err());
    assert!(
        parse_data_row(b"D\0\0\0\x06\xff\xff").is_err(),
        "count larger than the body"
    );
}

#[test]
fn data_row_round_trips_through_the_parser() {
    let row = data_row(&[Some("pool"), None, Some("")]);
    assert_eq!(row[0], tag::DATA_ROW);
    let values = parse_data_row(&row).expect("parses");
    assert_eq!(values, vec![Some(&b"pool"[..]), None, Some(&b""[..])]);
}

#[test]
fn row_description_lists_names_and_type_oids() {
    let msg = row_description(&[("name", ColumnType::Text), ("n", ColumnType::Int8)]);
    assert_eq!(msg[0], tag::ROW_DESCRIPTION);
    let len = u32::from_be_bytes([msg[1], msg[2], msg[3], msg[4]]) as usize;
    assert_eq!(len + 1, msg.len());
    assert_eq!(&msg[5..7], &[0, 2]);
    assert_eq!(&msg[7..12], b"name\0");
    // After the name: table OID (4 bytes), column number (2), then the type OID.
    assert_eq!(&msg[18..22], &25u32.to_be_bytes());
    assert_eq!(&msg[30..32], b"n\0");
    assert_eq!(&msg[38..42], &20u32.to_be_bytes());
}
