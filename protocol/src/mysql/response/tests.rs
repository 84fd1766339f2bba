use super::*;

const IN_TRANS: StatusFlags = StatusFlags::SERVER_STATUS_IN_TRANS;
const AUTOCOMMIT: StatusFlags = StatusFlags::SERVER_STATUS_AUTOCOMMIT;
const MORE: StatusFlags = StatusFlags::SERVER_MORE_RESULTS_EXISTS;

fn done(status: StatusFlags) -> Event {
    Event::Done {
        status: Some(status),
        error: false,
    }
}

#[test]
fn ok_and_err_round_trip() {
    let ok = ok_packet(3, 300, IN_TRANS | AUTOCOMMIT, 1);
    assert_eq!(
        parse_ok(&ok),
        Ok(OkPacket {
            affected_rows: 3,
            last_insert_id: 300,
            status: IN_TRANS | AUTOCOMMIT,
            warnings: 1
        })
    );
    let err = err_packet(1146, "42S02", "Table 'app.nope' doesn't exist");
    let e = parse_err(&err).unwrap();
    assert_eq!((e.code, e.state.as_str()), (1146, "42S02"));
    assert_eq!(e.message, "Table 'app.nope' doesn't exist");
    // Without the SQLSTATE marker.
    assert_eq!(parse_err(&[0xFF, 0x10, 0x04, b'x']).unwrap().state, "HY000");
    assert_eq!(parse_eof(&eof_packet(AUTOCOMMIT, 0)), Ok(AUTOCOMMIT));
    assert!(parse_ok(&[0x00, 1]).is_err());
    assert!(parse_err(&[0xFF, 1]).is_err());
}

#[test]
fn simple_commands_end_at_ok_or_err() {
    assert_eq!(
        track(Expect::Ok, false, &[&ok_packet(0, 0, IN_TRANS, 0)]),
        Ok(done(IN_TRANS))
    );
    assert_eq!(
        track(
            Expect::Ok,
            false,
            &[&err_packet(1049, "42000", "Unknown database")]
        ),
        Ok(Event::Done {
            status: None,
            error: true
        })
    );
}

#[test]
fn text_result_set_with_and_without_deprecate_eof() {
    let col: &[u8] =
        b"\x03def\x00\x00\x00\x01a\x00\x0c\x21\x00\x01\x00\x00\x00\xfd\x00\x00\x00\x00\x00";
    let row: &[u8] = b"\x011";
    let eof = eof_packet(AUTOCOMMIT, 0);
    let eof_ok = {
        let mut p = ok_packet(0, 0, AUTOCOMMIT, 0);
        p[0] = EOF;
        p
    };
    assert_eq!(
        track(
            Expect::ResultSets,
            false,
            &[&[1], col, &eof, row, row, &eof]
        ),
        Ok(done(AUTOCOMMIT))
    );
    assert_eq!(
        track(Expect::ResultSets, true, &[&[1], col, row, &eof_ok]),
        Ok(done(AUTOCOMMIT))
    );
    // A row that starts with 0x00 (empty string) is a row, not an OK.
    assert_eq!(
        track(Expect::ResultSets, true, &[&[1], col, &[0x00], &eof_ok]),
        Ok(done(AUTOCOMMIT))
    );
    // An error in the middle of rows ends it.
    assert_eq!(
        track(
            Expect::ResultSets,
            true,
            &[&[1], col, row, &err_packet(1317, "70100", "interrupted")]
        ),
        Ok(Event::Done {
            status: None,
            error: true
        })
    );
}

#[test]
fn multiple_result_sets_continue_while_more_results_exists() {
    let col: &[u8] =
        b"\x03def\x00\x00\x00\x01a\x00\x0c\x21\x00\x01\x00\x00\x00\xfd\x00\x00\x00\x00\x00";
    let mut t = Tracker::new(Expect::ResultSets, false);
    for p in [&[1u8][..], col, &eof_packet(AUTOCOMMIT, 0), b"\x011"] {
        assert_eq!(t.on_packet(p, p.len(), false), Ok(Event::More));
    }
    let more = eof_packet(AUTOCOMMIT | MORE, 0);
    assert_eq!(t.on_packet(&more, more.len(), false), Ok(Event::More));
    let last = ok_packet(1, 0, AUTOCOMMIT, 0);
    assert_eq!(t.on_packet(&last, last.len(), false), Ok(done(AUTOCOMMIT)));
    assert!(t.is_done());
}

#[test]
fn prepare_ok_counts_params_and_columns() {
    let prep = |params: u16, cols: u16| {
        let mut p = vec![0, 7, 0, 0, 0];
        p.extend_from_slice(&cols.to_le_bytes());
        p.extend_from_slice(&params.to_le_bytes());
        p.extend_from_slice(&[0, 0, 0]);
        p
    };
    let def: &[u8] =
        b"\x03def\x00\x00\x00\x01?\x00\x0c\x3f\x00\x00\x00\x00\x00\xfd\x80\x00\x00\x00\x00";
    let eof = eof_packet(AUTOCOMMIT, 0);
    let p = prep(2, 1);
    assert_eq!(
        parse_prepare_ok(&p).unwrap(),
        PrepareOk {
            statement_id: 7,
            columns: 1,
            params: 2
        }
    );
    let finished = Event::Done {
        status: None,
        error: false,
    };
    assert_eq!(
        track(Expect::Prepare, false, &[&p, def, def, &eof, def, &eof]),
        Ok(finished)
    );
    assert_eq!(
        track(Expect::Prepare, true, &[&p, def, def, def]),
        Ok(finished)
    );
    assert_eq!(track(Expect::Prepare, false, &[&prep(0, 0)]), Ok(finished));
    assert_eq!(
        track(Expect::Prepare, false, &[&prep(0, 1), def, &eof]),
        Ok(finished)
    );
    assert_eq!(
        track(Expect::Prepare, false, &[&prep(1, 0), def, &eof]),
        Ok(finished)
    );
    assert_eq!(
        track(Expect::Prepare, false, &[&prep(1, 0), def]),
        Ok(Event::More)
    );
}

#[test]
fn local_infile_request_is_reported() {
    let mut t = Tracker::new(Expect::ResultSets, true);
    assert_eq!(
        t.on_packet(b"\xfb/tmp/x.csv", 11, false),
        Ok(Event::LocalInfile)
    );
    let ok = ok_packet(2, 0, AUTOCOMMIT, 0);
    assert_eq!(t.on_packet(&ok, ok.len(), false), Ok(done(AUTOCOMMIT)));
}

#[test]
fn hostile_bytes_are_errors_not_panics() {
    for expect in [
        Expect::Ok,
        Expect::ResultSets,
        Expect::Prepare,
        Expect::FieldList,
        Expect::Rows,
        Expect::OnePacket,
    ] {
        for deprecate in [false, true] {
            for bytes in [
                &[][..],
                &[0],
                &[0xFE],
                &[0xFF],
                &[0xFC, 1],
                &[0xFB],
                &[0x00, 0xFE, 1, 2],
                &[5, 0xFE, 0xFE],
            ] {
                let _ = track(expect, deprecate, &[bytes, bytes, bytes]);
            }
        }
    }
    assert!(
        track(Expect::ResultSets, false, &[&[0]]).is_err(),
        "OK without status"
    );
}
