use super::*;

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

#[test]
fn check_needs_whole_message() {
    let m = msg(b'Z', b"I");
    for cut in 0..m.len() {
        assert_eq!(check(&m[..cut], 1024), Ok(None), "cut at {cut}");
    }
    assert_eq!(
        check(&m, 1024),
        Ok(Some(Header {
            tag: b'Z',
            total_len: 6
        }))
    );
}

#[test]
fn check_rejects_short_and_oversized_lengths() {
    assert!(matches!(
        check(b"Q\0\0\0\x03", 1024),
        Err(ProtocolError::BadLength { len: 3, .. })
    ));
    let huge = [b'Q', 0x7f, 0xff, 0xff, 0xff];
    assert!(matches!(
        check(&huge, 1 << 20),
        Err(ProtocolError::TooLong { .. })
    ));
}

#[test]
fn scanner_streams_uninteresting_bodies_in_pieces() {
    let mut stream = msg(b'D', &[7u8; 100]);
    stream.extend(msg(b'Z', b"T"));
    let mut s = Scanner::new();
    let wants = |t: u8| t == b'Z';
    // The first 30 bytes arrive: the DataRow header starts streaming.
    assert_eq!(
        s.step(&stream[..30], 1 << 20, 64, wants),
        Ok(Step::Started(
            Header {
                tag: b'D',
                total_len: 105
            },
            30
        ))
    );
    assert!(!s.at_boundary());
    // The rest of the body and half of ReadyForQuery arrive.
    assert_eq!(
        s.step(&stream[30..108], 1 << 20, 64, wants),
        Ok(Step::Forward(75))
    );
    assert!(s.at_boundary());
    assert_eq!(
        s.step(&stream[105..108], 1 << 20, 64, wants),
        Ok(Step::NeedMore)
    );
    let z = &stream[105..];
    assert_eq!(
        s.step(z, 1 << 20, 64, wants),
        Ok(Step::Message(Header {
            tag: b'Z',
            total_len: 6
        }))
    );
}

#[test]
fn scanner_caps_messages_it_must_see_whole() {
    let m = msg(b'E', &[1u8; 200]);
    let mut s = Scanner::new();
    assert!(matches!(
        s.step(&m, 1 << 20, 64, |_| true),
        Err(ProtocolError::TooLong { max: 64, .. })
    ));
}

#[test]
fn scanner_byte_by_byte_equals_whole_walk() {
    let mut stream = Vec::new();
    for i in 0..20u8 {
        stream.extend(msg(
            if i % 3 == 0 { b'Z' } else { b'D' },
            &vec![i; i as usize * 7],
        ));
    }
    let walk = |chunk: usize| {
        let mut s = Scanner::new();
        let mut seen = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut forwarded = 0;
        loop {
            match s.step(&buf, 1 << 20, 1024, |t| t == b'Z').unwrap() {
                Step::NeedMore => {
                    if fed == stream.len() {
                        break;
                    }
                    let end = (fed + chunk).min(stream.len());
                    buf.extend_from_slice(&stream[fed..end]);
                    fed = end;
                }
                Step::Forward(n) => {
                    forwarded += n;
                    buf.drain(..n);
                }
                Step::Started(h, n) => {
                    seen.push(h.tag);
                    forwarded += n;
                    buf.drain(..n);
                }
                Step::Message(h) => {
                    seen.push(h.tag);
                    forwarded += h.total_len;
                    buf.drain(..h.total_len);
                }
            }
        }
        (seen, forwarded)
    };
    let whole = walk(stream.len());
    assert_eq!(whole.1, stream.len());
    for chunk in [1, 2, 3, 5, 17] {
        assert_eq!(walk(chunk), whole, "chunk size {chunk}");
    }
}
