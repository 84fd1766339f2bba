use super::*;

fn frame(command: u16, body: &[u8], specific_bytes: &[(usize, u8)]) -> Vec<u8> {
    let h = Header {
        command,
        body_len: body.len() as u32,
        ..Header::default()
    };
    let mut f = h.encode(&specific(specific_bytes)).to_vec();
    f.extend_from_slice(body);
    f
}

#[test]
fn header_fields_sit_at_the_drivers_offsets() {
    let h = Header {
        statement: 0x0102_0304,
        command: command::EXECUTE2,
        body_len: 0x10,
        return_code: -2,
        compressed: 1,
    };
    let b = h.encode(&specific(&[]));
    assert_eq!(&b[0..4], &[0x04, 0x03, 0x02, 0x01]);
    assert_eq!(&b[4..6], &[13, 0]);
    assert_eq!(&b[6..10], &[0x10, 0, 0, 0]);
    assert_eq!(&b[10..14], &(-2i32).to_le_bytes());
    assert_eq!(b[18], 1);
    assert_eq!(b[19], b[..19].iter().fold(0, |x, y| x ^ y));
    assert_eq!(parse_header(&b, &FrameRules::default()), Ok(Some(h)));
}

#[test]
fn fewer_than_64_bytes_need_more() {
    let f = frame(command::LOGIN, b"abc", &[]);
    for cut in 0..HEADER_LEN {
        assert_eq!(parse_header(&f[..cut], &FrameRules::default()), Ok(None));
    }
    for cut in 0..f.len() {
        assert_eq!(check_frame(&f[..cut], &FrameRules::default()), Ok(None));
    }
    assert_eq!(check_frame(&f, &FrameRules::default()), Ok(Some(67)));
}

#[test]
fn a_flipped_bit_fails_the_checksum_unless_crc_mode() {
    let mut f = frame(command::LOGIN, b"", &[]);
    f[5] ^= 0x40;
    assert!(matches!(
        parse_header(&f, &FrameRules::default()),
        Err(HeaderError::BadChecksum { .. })
    ));
    let crc = FrameRules {
        xor_checksum: false,
        ..FrameRules::default()
    };
    assert!(parse_header(&f, &crc).is_ok());
}

#[test]
fn lengths_are_capped_before_anything_is_buffered() {
    let mut h = Header {
        body_len: 1000,
        ..Header::default()
    }
    .encode(&specific(&[]));
    let rules = FrameRules {
        max_body: 999,
        xor_checksum: true,
    };
    assert_eq!(
        parse_header(&h, &rules),
        Err(HeaderError::TooLong {
            len: 1000,
            max: 999
        })
    );
    h[6..10].copy_from_slice(&(-1i32).to_le_bytes());
    h[19] = checksum(&h);
    assert_eq!(
        parse_header(&h, &rules),
        Err(HeaderError::NegativeLength(-1))
    );
}

#[test]
fn exec_replies_are_recognised_from_the_request() {
    assert!(expects_exec_reply(&frame(command::EXECUTE2, b"", &[])));
    assert!(expects_exec_reply(&frame(
        command::OPTIMIZED_EXECUTE,
        b"",
        &[]
    )));
    assert!(!expects_exec_reply(&frame(command::PREPARE, b"", &[])));
    assert!(expects_exec_reply(&frame(
        command::PREPARE,
        b"",
        &[(PREPARE_EXEC_DIRECT_OFFSET, 1)]
    )));
    assert!(!expects_exec_reply(&frame(command::COMMIT, b"", &[])));
    assert!(!expects_exec_reply(&[]));
}

#[test]
fn transaction_status_finished_values() {
    for done in [0x00, 0x20, 0x40, 0x1000, 0x1020] {
        assert!(!trx_open(done), "{done:#x}");
    }
    for open in [0x01, 0x02, 0x21, 0x80] {
        assert!(trx_open(open), "{open:#x}");
    }
    let reply = frame(0, b"", &[(EXEC_TRX_STATUS_OFFSET, 0x01)]);
    assert_eq!(exec_reply_trx_status(&reply), Some(1));
    assert_eq!(exec_reply_trx_status(&reply[..63]), None);
}

#[test]
fn startup_reply_announces_ssl_and_crc() {
    let plain = frame(command::STARTUP, b"", &[]);
    let r = parse_startup_reply(&plain).unwrap();
    assert!(!r.switches_to_ssl() && !r.crc32);
    let ssl = frame(
        command::STARTUP,
        b"",
        &[(STARTUP_SSL_OFFSET, 2), (STARTUP_CRC_OFFSET, 1)],
    );
    let r = parse_startup_reply(&ssl).unwrap();
    assert!(r.switches_to_ssl() && r.crc32);
    assert_eq!(parse_startup_reply(&ssl[..10]), None);
}

#[test]
fn no_input_makes_the_decoders_panic() {
    let rules = FrameRules::default();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for len in 0..200 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = parse_header(&bytes, &rules);
        let _ = check_frame(&bytes, &rules);
        let _ = expects_exec_reply(&bytes);
        let _ = exec_reply_trx_status(&bytes);
        let _ = parse_startup_reply(&bytes);
        let _ = checksum(&bytes);
    }
}
