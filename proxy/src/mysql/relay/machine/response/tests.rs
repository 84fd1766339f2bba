//! Byte fixtures: server responses fed to [`ResponseRelay`] whole, byte by byte and split at
//! every point, checking what the client gets and what the relay learnt.

use bytes::BytesMut;
use sidepool_protocol::mysql::packet::{self, MAX_PAYLOAD, encode};
use sidepool_protocol::mysql::response::{
    LOCAL_INFILE, PrepareOk, eof_packet, err_packet, ok_packet,
};
use sidepool_protocol::mysql::{StatusFlags, put_lenenc_int};

use super::*;

const AUTOCOMMIT: StatusFlags = StatusFlags::SERVER_STATUS_AUTOCOMMIT;
const MORE: StatusFlags = StatusFlags::SERVER_MORE_RESULTS_EXISTS;
const IN_TRANS: StatusFlags = StatusFlags::SERVER_STATUS_IN_TRANS;

/// Physical packets for `payloads`, sequence ids from 1 (the answer to a command sent with 0).
fn packets(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut seq = 1u8;
    for p in payloads {
        seq = packet::write(&mut out, seq, p);
    }
    out
}

fn lenenc_str(out: &mut Vec<u8>, s: &[u8]) {
    put_lenenc_int(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// A protocol-41 column definition (VARCHAR, utf8mb4).
fn column(name: &str) -> Vec<u8> {
    let mut c = Vec::new();
    for part in [
        &b"def"[..],
        b"db",
        b"t",
        b"t",
        name.as_bytes(),
        name.as_bytes(),
    ] {
        lenenc_str(&mut c, part);
    }
    c.push(0x0C);
    c.extend_from_slice(&[45, 0, 0, 1, 0, 0, 0xFD, 0, 0, 0, 0, 0]);
    c
}

/// A text-protocol row.
fn row(values: &[&str]) -> Vec<u8> {
    let mut r = Vec::new();
    for v in values {
        lenenc_str(&mut r, v.as_bytes());
    }
    r
}

fn count(n: u64) -> Vec<u8> {
    let mut c = Vec::new();
    put_lenenc_int(&mut c, n);
    c
}

/// The OK packet that ends rows under CLIENT_DEPRECATE_EOF (first byte 0xFE).
fn eof_ok(status: StatusFlags) -> Vec<u8> {
    let mut ok = ok_packet(0, 0, status, 0);
    ok[0] = 0xFE;
    ok
}

fn relay(expect: Expect, deprecate_eof: bool) -> ResponseRelay {
    ResponseRelay::new(expect, deprecate_eof, None)
}

/// Feeds `bytes` in reads of `chunk` bytes; every read but the last must leave the response
/// open. Returns what the client got and the final progress.
fn feed_in(r: &mut ResponseRelay, bytes: &[u8], chunk: usize) -> (Vec<u8>, Progress) {
    let mut input = BytesMut::new();
    let mut out = Vec::new();
    let mut last = Progress::NeedMore;
    let reads: Vec<&[u8]> = bytes.chunks(chunk).collect();
    for (i, read) in reads.iter().enumerate() {
        input.extend_from_slice(read);
        last = r.feed(&mut input, &mut out).expect("valid response");
        if i + 1 < reads.len() {
            assert_eq!(last, Progress::NeedMore, "ended early, at read {i}");
        }
    }
    assert!(input.is_empty(), "every byte consumed");
    (out, last)
}

/// The response relayed in one read, byte by byte, and in two reads split at every point
/// gives the client `bytes` unchanged and ends with `outcome`.
fn assert_relayed_unchanged(expect: Expect, deprecate_eof: bool, bytes: &[u8], outcome: Outcome) {
    for chunk in [bytes.len(), 1] {
        let (out, end) = feed_in(&mut relay(expect, deprecate_eof), bytes, chunk);
        assert_eq!(out, bytes, "reads of {chunk}");
        assert_eq!(end, Progress::Done(outcome), "reads of {chunk}");
    }
    for split in 1..bytes.len() {
        let mut r = relay(expect, deprecate_eof);
        let mut input = BytesMut::from(&bytes[..split]);
        let mut out = Vec::new();
        assert_eq!(
            r.feed(&mut input, &mut out),
            Ok(Progress::NeedMore),
            "split {split}"
        );
        input.extend_from_slice(&bytes[split..]);
        assert_eq!(r.feed(&mut input, &mut out), Ok(Progress::Done(outcome)));
        assert_eq!(out, bytes, "split at {split}");
    }
}

fn done(status: StatusFlags) -> Outcome {
    Outcome {
        status: Some(status),
        ..Outcome::default()
    }
}

#[test]
fn an_ok_split_across_reads_header_included_is_relayed_once_whole() {
    let bytes = packets(&[ok_packet(3, 0, AUTOCOMMIT, 1)]);
    let mut r = relay(Expect::Ok, true);
    let mut input = BytesMut::new();
    let mut out = Vec::new();
    for (i, b) in bytes.iter().enumerate() {
        input.extend_from_slice(&[*b]);
        let p = r.feed(&mut input, &mut out).unwrap();
        if i + 1 < bytes.len() {
            assert_eq!(p, Progress::NeedMore);
            assert!(out.is_empty(), "the first packet is held until whole");
        } else {
            assert_eq!(p, Progress::Done(done(AUTOCOMMIT)));
        }
    }
    assert_eq!(out, bytes);
    assert_relayed_unchanged(Expect::Ok, true, &bytes, done(AUTOCOMMIT));
}

#[test]
fn a_text_result_set_with_eof_packets_is_relayed_in_any_reads() {
    let bytes = packets(&[
        count(2),
        column("id"),
        column("name"),
        eof_packet(AUTOCOMMIT, 0),
        row(&["1", "ada"]),
        row(&["2", "grace"]),
        eof_packet(AUTOCOMMIT, 0),
    ]);
    assert_relayed_unchanged(Expect::ResultSets, false, &bytes, done(AUTOCOMMIT));
}

#[test]
fn a_text_result_set_under_deprecate_eof_ends_with_its_ok() {
    let bytes = packets(&[
        count(1),
        column("id"),
        row(&["1"]),
        row(&[""]),
        eof_ok(AUTOCOMMIT),
    ]);
    assert_relayed_unchanged(Expect::ResultSets, true, &bytes, done(AUTOCOMMIT));
    // Without CLIENT_DEPRECATE_EOF the same bytes break the protocol: the first row comes
    // where the column definitions' EOF belongs.
    let mut r = relay(Expect::ResultSets, false);
    let mut input = BytesMut::from(&bytes[..]);
    assert!(r.feed(&mut input, &mut Vec::new()).is_err());
}

#[test]
fn an_err_in_the_middle_of_a_multi_statement_ends_the_response() {
    let bytes = packets(&[
        ok_packet(1, 0, AUTOCOMMIT | MORE, 0),
        count(1),
        column("x"),
        row(&["7"]),
        eof_ok(AUTOCOMMIT | MORE),
        err_packet(1146, "42S02", "Table 'db.nope' doesn't exist"),
    ]);
    let outcome = Outcome {
        status: Some(AUTOCOMMIT | MORE),
        error: true,
        ..Outcome::default()
    };
    assert_relayed_unchanged(Expect::ResultSets, true, &bytes, outcome);
    // Bytes after the end stay for later.
    let mut input = BytesMut::from(&bytes[..]);
    input.extend_from_slice(b"late");
    let mut out = Vec::new();
    let p = relay(Expect::ResultSets, true).feed(&mut input, &mut out);
    assert_eq!(p, Ok(Progress::Done(outcome)));
    assert_eq!(&input[..], b"late");
}

#[test]
fn an_err_answer_carries_no_status() {
    let bytes = packets(&[err_packet(1064, "42000", "syntax")]);
    let outcome = Outcome {
        error: true,
        ..Outcome::default()
    };
    assert_relayed_unchanged(Expect::Ok, true, &bytes, outcome);
    assert_relayed_unchanged(Expect::Prepare, true, &bytes, outcome);
}

fn prepare_ok(id: u32, columns: u16, params: u16) -> Vec<u8> {
    let mut p = vec![0];
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(&columns.to_le_bytes());
    p.extend_from_slice(&params.to_le_bytes());
    p.extend_from_slice(&[0, 0, 0]);
    p
}

#[test]
fn prepare_ok_gets_the_client_id_and_ends_on_a_streamed_definition() {
    let server = packets(&[
        prepare_ok(0x2A, 2, 1),
        column("?"),
        column("a"),
        column("b"),
    ]);
    let mut client = server.clone();
    client[5..9].copy_from_slice(&7u32.to_le_bytes());
    let outcome = Outcome {
        prepared: Some(PrepareOk {
            statement_id: 0x2A,
            columns: 2,
            params: 1,
        }),
        ..Outcome::default()
    };
    // The last column definition is streamed, its tail in a later read.
    let tail = 6;
    let mut r = ResponseRelay::new(Expect::Prepare, true, Some(7));
    let mut input = BytesMut::from(&server[..server.len() - tail]);
    let mut out = Vec::new();
    assert_eq!(r.feed(&mut input, &mut out), Ok(Progress::NeedMore));
    assert_eq!(
        out,
        client[..client.len() - tail],
        "streamed up to the tail"
    );
    input.extend_from_slice(&server[server.len() - tail..]);
    assert_eq!(r.feed(&mut input, &mut out), Ok(Progress::Done(outcome)));
    assert_eq!(out, client);
    for chunk in [1, 5, server.len()] {
        let mut r = ResponseRelay::new(Expect::Prepare, true, Some(7));
        let (out, end) = feed_in(&mut r, &server, chunk);
        assert_eq!((out, end), (client.clone(), Progress::Done(outcome)));
    }
}

#[test]
fn prepare_ok_with_eof_packets_ends_after_the_column_eof() {
    let bytes = packets(&[
        prepare_ok(3, 1, 2),
        column("?"),
        column("?"),
        eof_packet(AUTOCOMMIT, 0),
        column("a"),
        eof_packet(AUTOCOMMIT, 0),
    ]);
    let prepared = Some(PrepareOk {
        statement_id: 3,
        columns: 1,
        params: 2,
    });
    let outcome = Outcome {
        prepared,
        ..Outcome::default()
    };
    assert_relayed_unchanged(Expect::Prepare, false, &bytes, outcome);
}

#[test]
fn a_transaction_boundary_inside_one_read_leaves_the_last_status() {
    // `INSERT ...; COMMIT` as one multi-statement: the first OK is inside the transaction,
    // the second is not.
    let bytes = packets(&[
        ok_packet(1, 0, IN_TRANS | MORE, 0),
        ok_packet(0, 0, AUTOCOMMIT, 0),
    ]);
    assert_relayed_unchanged(Expect::ResultSets, true, &bytes, done(AUTOCOMMIT));
    let began = packets(&[ok_packet(0, 0, AUTOCOMMIT | IN_TRANS, 0)]);
    assert_relayed_unchanged(
        Expect::ResultSets,
        true,
        &began,
        done(AUTOCOMMIT | IN_TRANS),
    );
}

#[test]
fn a_local_infile_request_pauses_the_response_until_the_file_is_sent() {
    let mut request = vec![LOCAL_INFILE];
    request.extend_from_slice(b"/tmp/data.csv");
    let ask = packets(&[request]);
    let mut r = relay(Expect::ResultSets, true);
    let mut input = BytesMut::from(&ask[..ask.len() - 1]);
    let mut out = Vec::new();
    assert_eq!(r.feed(&mut input, &mut out), Ok(Progress::NeedMore));
    input.extend_from_slice(&ask[ask.len() - 1..]);
    assert_eq!(r.feed(&mut input, &mut out), Ok(Progress::LocalInfile));
    assert_eq!(out, ask);
    r.infile_sent();
    // The server's answer after the file (sequence ids go on; the relay does not check them).
    let answer = encode(4, &ok_packet(3, 0, AUTOCOMMIT, 0));
    let (more, end) = feed_in(&mut r, &answer, 2);
    assert_eq!(more, answer);
    assert_eq!(end, Progress::Done(done(AUTOCOMMIT)));
}

#[test]
fn last_insert_id_is_taken_from_the_first_ok_and_later_ones() {
    let bytes = packets(&[ok_packet(1, 42, AUTOCOMMIT, 0)]);
    let outcome = Outcome {
        last_insert_id: 42,
        ..done(AUTOCOMMIT)
    };
    assert_relayed_unchanged(Expect::ResultSets, true, &bytes, outcome);
    let multi = packets(&[
        ok_packet(1, 5, AUTOCOMMIT | MORE, 0),
        ok_packet(1, 6, AUTOCOMMIT, 0),
    ]);
    let outcome = Outcome {
        last_insert_id: 6,
        ..done(AUTOCOMMIT)
    };
    assert_relayed_unchanged(Expect::ResultSets, true, &multi, outcome);
}

#[test]
fn a_row_over_16_mib_streams_as_continuation_packets() {
    // The row's payload is MAX_PAYLOAD + 5 bytes: a full packet, then a 5-byte continuation
    // that starts with 0xFE and would read as an EOF if it were taken for a packet of its own.
    let mut big = vec![0xFE];
    big.extend_from_slice(&((MAX_PAYLOAD + 5 - 9) as u64).to_le_bytes());
    big.resize(MAX_PAYLOAD, b'x');
    big.extend_from_slice(&[0xFE, 0, 0, 2, 0]);
    let bytes = packets(&[count(1), column("blob"), big, eof_ok(AUTOCOMMIT)]);
    assert!(bytes.len() > MAX_PAYLOAD + 2 * packet::HEADER_LEN);
    for chunk in [bytes.len(), 1 << 20, 65_537] {
        let mut r = relay(Expect::ResultSets, true);
        let (out, end) = feed_in(&mut r, &bytes, chunk);
        assert!(out == bytes, "relayed unchanged in reads of {chunk}");
        assert_eq!(end, Progress::Done(done(AUTOCOMMIT)));
    }
}

#[test]
fn a_command_expecting_nothing_needs_no_response() {
    assert!(relay(Expect::Nothing, true).expects_nothing());
    assert!(!relay(Expect::Ok, true).expects_nothing());
}
