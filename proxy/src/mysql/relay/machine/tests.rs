//! The command side: what each command asks for, client statement ids mapped to server ids,
//! holds, and the release decision.

use bytes::Bytes;
use sidepool_protocol::mysql::response::PrepareOk;

use super::*;

const AUTOCOMMIT: StatusFlags = StatusFlags::SERVER_STATUS_AUTOCOMMIT;
const IN_TRANS: StatusFlags = StatusFlags::SERVER_STATUS_IN_TRANS;

#[test]
fn each_command_gets_its_action() {
    assert_eq!(action(com::QUIT, b"", true), Action::Quit);
    assert_eq!(action(com::PING, b"", false), Action::Pong);
    assert_eq!(
        action(com::PING, b"", true),
        Action::Exchange(Expect::Ok, Vec::new()),
        "a ping with a server attached goes to the server"
    );
    assert_eq!(action(com::STMT_CLOSE, b"", true), Action::CloseStatement);
    assert_eq!(
        action(com::RESET_CONNECTION, b"", false),
        Action::ResetConnection
    );
    assert_eq!(action(com::CHANGE_USER, b"", false), Action::ChangeUser);
    assert_eq!(
        action(com::STMT_PREPARE, b"SELECT ?", false),
        Action::Prepare
    );
    for code in [
        com::STMT_EXECUTE,
        com::STMT_SEND_LONG_DATA,
        com::STMT_RESET,
        com::STMT_FETCH,
    ] {
        assert_eq!(action(code, b"", false), Action::Statement);
    }
    assert_eq!(
        action(com::QUERY, b"SET @x = 1", false),
        Action::Exchange(Expect::ResultSets, vec![Effect::Pin("user variable")])
    );
    assert_eq!(
        action(com::QUERY, b"SELECT 1", false),
        Action::Exchange(Expect::ResultSets, Vec::new())
    );
    assert_eq!(
        action(com::INIT_DB, b"db2", false),
        Action::Exchange(Expect::Ok, vec![Effect::Schema])
    );
    assert_eq!(
        action(com::FIELD_LIST, b"t\0", false),
        Action::Exchange(Expect::FieldList, Vec::new())
    );
    assert_eq!(
        action(com::STATISTICS, b"", false),
        Action::Exchange(Expect::OnePacket, Vec::new())
    );
    assert_eq!(
        action(com::SET_OPTION, b"\0\0", false),
        Action::Exchange(Expect::Ok, vec![Effect::Pin("COM_SET_OPTION")])
    );
}

/// COM_STMT_EXECUTE of statement `id` with one parameter; `types`: the new-params-bound
/// flag set and the type given.
fn execute(id: u32, flags: u8, types: Option<[u8; 2]>) -> Vec<u8> {
    let mut p = vec![com::STMT_EXECUTE];
    p.extend_from_slice(&id.to_le_bytes());
    p.push(flags);
    p.extend_from_slice(&1u32.to_le_bytes());
    p.push(0); // NULL bitmap
    match types {
        Some(t) => {
            p.push(1);
            p.extend_from_slice(&t);
        }
        None => p.push(0),
    }
    p.extend_from_slice(&[3, 0, 0, 0]); // the value, a LONG
    p
}

#[test]
fn client_ids_count_from_one_and_map_to_the_server_id() {
    let mut s = Statements::default();
    assert_eq!(s.next_id(), 1);
    s.add(
        Bytes::from_static(b"SELECT ?"),
        1,
        (true, false),
        Vec::new(),
    );
    s.add(
        Bytes::from_static(b"INSERT INTO t VALUES (?)"),
        1,
        (false, true),
        Vec::new(),
    );
    assert_eq!(s.next_id(), 3);
    let second = s.get(&2).expect("prepared");
    assert_eq!((second.read, second.writes), (false, true));

    let exec = execute(1, 0, Some([3, 0]));
    let stmt = s.lookup(&exec).expect("known");
    assert_eq!(stmt.sql, Bytes::from_static(b"SELECT ?"));
    let sent = for_server(&exec, 0x99, &stmt);
    assert_eq!(com::statement_id(&sent), Some(0x99));
    assert_eq!(sent[5..], exec[5..], "only the id changes");
}

#[test]
fn an_execute_without_types_gets_those_of_the_clients_last_execute() {
    let mut s = Statements::default();
    s.add(
        Bytes::from_static(b"SELECT ?"),
        1,
        (false, false),
        Vec::new(),
    );
    // The first execute carries types: the statement as it was (no types) is returned, and
    // the types are kept for later executes.
    let first = s.lookup(&execute(1, 0, Some([8, 0]))).unwrap();
    assert_eq!(first.types, None);
    assert_eq!(s.get(&1).unwrap().types.as_deref(), Some(&[8, 0][..]));
    // A later execute with the flag 0, on a connection that never saw the types.
    let later = execute(1, 0, None);
    let stmt = s.lookup(&later).unwrap();
    let sent = for_server(&later, 5, &stmt);
    assert_eq!(sent, execute(5, 0, Some([8, 0])));
    // Other statement commands only get the id rewritten.
    let reset = [com::STMT_RESET, 1, 0, 0, 0];
    assert_eq!(for_server(&reset, 5, &stmt), [com::STMT_RESET, 5, 0, 0, 0]);
}

#[test]
fn closed_and_unknown_statements_are_refused_with_their_id() {
    let mut s = Statements::default();
    s.add(
        Bytes::from_static(b"SELECT 1"),
        0,
        (true, false),
        Vec::new(),
    );
    s.close(&[com::STMT_CLOSE, 1, 0, 0, 0]);
    assert_eq!(s.lookup(&execute(1, 0, None)), Err(Unknown(1)));
    assert_eq!(s.lookup(&[com::STMT_RESET, 9, 0, 0, 0]), Err(Unknown(9)));
    assert_eq!(s.next_id(), 2, "closing does not reuse ids");
    s.add(
        Bytes::from_static(b"SELECT 2"),
        0,
        (true, false),
        Vec::new(),
    );
    s.clear();
    assert!(s.get(&2).is_none());
}

#[test]
fn a_read_only_cursor_is_seen_on_executes_only() {
    assert!(opens_cursor(&execute(1, com::CURSOR_TYPE_READ_ONLY, None)));
    assert!(!opens_cursor(&execute(1, 0, None)));
    assert!(!opens_cursor(&[com::STMT_FETCH, 1, 0, 0, 0, 1]));
}

#[test]
fn an_insert_id_hold_lapses_unless_the_next_statement_reads_it() {
    let mut hold = Some(Hold::InsertId);
    assert!(!lapse_hold(
        &mut hold,
        com::QUERY,
        b"SELECT LAST_INSERT_ID()"
    ));
    assert_eq!(hold, None, "a hold lasts one command");
    let mut hold = Some(Hold::InsertId);
    assert!(lapse_hold(&mut hold, com::QUERY, b"SELECT 1"));
    let mut hold = Some(Hold::InsertId);
    assert!(lapse_hold(&mut hold, com::PING, b""));
    let mut hold = Some(Hold::NextStatement);
    assert!(!lapse_hold(&mut hold, com::QUERY, b"SELECT 1"));
    assert_eq!(hold, None);
    assert!(!lapse_hold(&mut None, com::QUERY, b"SELECT 1"));
}

#[test]
fn a_generated_id_holds_the_connection_unless_held_already() {
    let generated = Outcome {
        last_insert_id: 7,
        ..Outcome::default()
    };
    assert_eq!(hold_after(None, &generated), Some(Hold::InsertId));
    assert_eq!(
        hold_after(Some(Hold::NextStatement), &generated),
        Some(Hold::NextStatement)
    );
    assert_eq!(hold_after(None, &Outcome::default()), None);
}

fn free(status: StatusFlags) -> Ties {
    Ties {
        session_mode: false,
        pinned: false,
        hold: false,
        long_data: false,
        status,
    }
}

#[test]
fn the_release_decision_flips_at_a_transaction_boundary() {
    // BEGIN's OK carries IN_TRANS; COMMIT's does not.
    assert!(!free(AUTOCOMMIT | IN_TRANS).allow_release());
    assert!(free(AUTOCOMMIT).allow_release());
}

#[test]
fn pins_holds_long_data_and_session_mode_each_keep_the_connection() {
    let f = free(AUTOCOMMIT);
    for tied in [
        Ties {
            session_mode: true,
            ..f
        },
        Ties { pinned: true, ..f },
        Ties { hold: true, ..f },
        Ties {
            long_data: true,
            ..f
        },
    ] {
        assert!(!tied.allow_release(), "{tied:?}");
    }
}

#[test]
fn an_error_with_autocommit_off_keeps_the_connection() {
    let off = free(StatusFlags::empty());
    assert!(off.allow_release(), "no transaction begun yet");
    assert!(!off.allow_release_after(true), "an ERR may have begun one");
    assert!(off.allow_release_after(false));
    assert!(free(AUTOCOMMIT).allow_release_after(true));
    assert!(!free(AUTOCOMMIT | IN_TRANS).allow_release_after(false));
}

#[test]
fn a_prepare_outcome_registers_the_statement_under_the_client_id() {
    // The driver's order: the id is read before the prepare is relayed, the statement is
    // added under it once the outcome shows a COM_STMT_PREPARE_OK.
    let mut s = Statements::default();
    let id = s.next_id();
    let outcome = Outcome {
        prepared: Some(PrepareOk {
            statement_id: 40,
            columns: 1,
            params: 2,
        }),
        ..Outcome::default()
    };
    let ok = outcome.prepared.unwrap();
    s.add(
        Bytes::from_static(b"SELECT ?, ?"),
        ok.params,
        (true, false),
        Vec::new(),
    );
    assert_eq!(s.get(&id).map(|st| st.params), Some(2));
}
