use super::*;

#[test]
fn startup_message_round_trips() {
    let m = startup_message(&[
        ("user", "app"),
        ("database", "shop"),
        ("application_name", "x"),
    ]);
    assert_eq!(check(&m), Ok(Some(m.len())));
    let StartupPacket::Startup { minor, params } = parse(&m).unwrap() else {
        panic!()
    };
    assert_eq!(minor, 0);
    assert_eq!(StartupPacket::param(&params, "database"), Some("shop"));
    assert_eq!(params.len(), 3);
}

#[test]
fn decodes_ssl_gss_and_cancel_requests() {
    assert_eq!(parse(&ssl_request()), Ok(StartupPacket::SslRequest));
    assert_eq!(
        parse(&[0, 0, 0, 8, 4, 210, 22, 48]),
        Ok(StartupPacket::GssEncRequest)
    );
    let c = cancel_request(42, &[1, 2, 3, 4]);
    assert_eq!(
        parse(&c),
        Ok(StartupPacket::Cancel {
            pid: 42,
            secret: Bytes::from_static(&[1, 2, 3, 4])
        })
    );
}

#[test]
fn byte_literal_startup_from_psql() {
    // user=postgres database=postgres, as psql sends it.
    let raw = b"\0\0\0\x29\0\x03\0\0user\0postgres\0database\0postgres\0\0";
    assert_eq!(check(raw), Ok(Some(41)));
    let StartupPacket::Startup { params, .. } = parse(raw).unwrap() else {
        panic!()
    };
    assert_eq!(
        params,
        vec![
            ("user".into(), "postgres".into()),
            ("database".into(), "postgres".into())
        ]
    );
}

#[test]
fn rejects_hostile_packets() {
    assert!(check(&[0, 0, 0, 4]).is_err());
    assert!(check(&[0, 0, 0x27, 0x11]).is_err(), "over 10000 bytes");
    assert!(matches!(
        parse(&[0, 0, 0, 8, 0, 2, 0, 0]),
        Err(ProtocolError::UnsupportedVersion { major: 2, .. })
    ));
    assert!(
        parse(b"\0\0\0\x0d\0\x03\0\0user").is_err(),
        "unterminated name"
    );
    assert!(
        parse(b"\0\0\0\x0e\0\x03\0\0user\0").is_err(),
        "missing value"
    );
    assert!(
        parse(&[0, 0, 0, 12, 4, 210, 22, 46, 0, 0, 0, 1]).is_err(),
        "cancel without secret"
    );
    assert!(
        parse(b"\0\0\0\x0c\0\x03\0\0\xff\0a\0\0").is_err(),
        "not UTF-8"
    );
}

#[test]
fn random_bytes_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..20_000 {
        let len = rng.gen_range(0..64);
        let mut b: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
        if b.len() >= 8 && rng.gen_bool(0.5) {
            let n = b.len() as u32;
            b[..4].copy_from_slice(&n.to_be_bytes());
            b[4..8].copy_from_slice(&(3u32 << 16).to_be_bytes());
        }
        if let Ok(Some(n)) = check(&b) {
            let _ = parse(&b[..n]);
        }
    }
}
