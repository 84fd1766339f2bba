//! Session state whichever message carries it (issue 16): a `SET` or `set_config` is read back
//! wherever it runs, and a client's `DEALLOCATE ALL` / `DISCARD ALL` acts on its own view only.

use sidepool_protocol::pg::TransactionStatus;

use super::fixtures::*;

/// A named statement executed in a cycle of its own: Bind, Execute, Sync.
fn run(name: &str) -> Vec<u8> {
    cat(&[&bind(name), &execute(), &sync()])
}

/// The server's answer to `run` (after a hidden Parse when `parsed`).
fn ran(parsed: bool, tag: &str) -> Vec<u8> {
    let parse = if parsed { parse_complete() } else { vec![] };
    cat(&[&parse, &bind_complete(), &complete(tag), &idle()])
}

#[test]
fn a_set_parsed_without_a_server_is_read_back_wherever_it_is_executed() {
    let mut s = Session::new(true);
    s.client(&cat(&[&parse("_pg3_0", "SET search_path TO s1"), &sync()]));
    assert_eq!(s.checkouts, 0, "the Parse is answered without a server");
    assert_eq!(s.take_client(), cat(&[&parse_complete(), &idle()]));
    s.client(&run("_pg3_0"));
    assert_eq!(
        s.take_server(),
        cat(&[
            &server_parse("sidepool_1", "SET search_path TO s1"),
            &run("sidepool_1")
        ])
    );
    s.server(&ran(true, "SET"));
    assert_eq!(
        s.take_client(),
        cat(&[&bind_complete(), &complete("SET"), &idle()])
    );
    assert_eq!(
        (s.releases, s.read_back.clone()),
        (1, vec!["search_path".to_owned()])
    );
    // Executed again later (here on the same connection, which has it prepared): read back again.
    s.client(&run("_pg3_0"));
    assert_eq!(s.take_server(), run("sidepool_1"));
    s.server(&ran(false, "SET"));
    assert_eq!(s.read_back, ["search_path", "search_path"]);
}

#[test]
fn a_set_in_an_unnamed_statement_is_read_back() {
    let mut s = Session::new(true);
    s.client(&cat(&[&parse("", "SET TIME ZONE 'UTC'"), &run("")]));
    s.server(&cat(&[&parse_complete(), &ran(false, "SET")]));
    assert_eq!(s.read_back, ["TimeZone"]);
}

#[test]
fn set_config_in_a_select_is_read_back_on_every_path() {
    let sql = "SELECT pg_catalog.set_config('search_path', 's1', false)";
    let answer = cat(&[&no_columns(), &row(), &complete("SELECT 1"), &idle()]);
    let mut s = Session::new(true);
    s.client(&query(sql));
    s.server(&answer);
    s.client(&cat(&[&parse("", sql), &run("")]));
    s.server(&cat(&[&parse_complete(), &bind_complete(), &answer]));
    s.client(&cat(&[&parse("q", sql), &run("q")]));
    s.server(&cat(&[&parse_complete(), &bind_complete(), &answer]));
    assert_eq!(s.releases, 3);
    assert_eq!(s.read_back, ["search_path"; 3]);
    assert_eq!(s.m.pinned, None);
}

#[test]
fn set_config_of_a_name_that_is_not_a_literal_pins() {
    let mut s = Session::new(true);
    s.client(&cat(&[
        &parse("q", "SELECT set_config($1, $2, false)"),
        &sync(),
    ]));
    assert_eq!(
        s.checkouts, 1,
        "a Parse that pins needs its server connection"
    );
    assert_eq!(
        s.m.pinned,
        Some("set_config with a name that is not a literal")
    );
    assert_eq!(s.env.pins.get(), 1);
}

/// A session whose statement `s1` (`SELECT 1`, `sidepool_1` on the server) was prepared on the
/// connection, which is released again.
fn with_a_prepared_statement() -> Session {
    let mut s = Session::new(true);
    s.client(&cat(&[&parse("s1", "SELECT 1"), &run("s1")]));
    s.server(&cat(&[&parse_complete(), &ran(false, "SELECT 1")]));
    s.take_server();
    s.take_client();
    assert!(s.conn.prepared.touch("sidepool_1") && s.releases == 1);
    s
}

#[test]
fn a_lone_deallocate_all_is_answered_and_the_servers_statements_stay() {
    let mut s = with_a_prepared_statement();
    s.client(&query("DEALLOCATE ALL"));
    assert!(s.take_server().is_empty(), "the server never sees it");
    assert_eq!(
        s.take_client(),
        cat(&[&complete("DEALLOCATE ALL"), &idle()])
    );
    assert!(
        s.m.statements.is_empty(),
        "the client's statements are gone"
    );
    assert!(s.conn.prepared.touch("sidepool_1"), "the connection's stay");
    assert_eq!(s.releases, 2);
}

/// [`with_a_prepared_statement`], then in a transaction block that failed.
fn in_a_failed_transaction() -> Session {
    let mut s = failing_in_a_transaction();
    s.server(&ready(TransactionStatus::Failed));
    s.take_client();
    s
}

/// [`with_a_prepared_statement`], then a statement in a transaction block whose
/// ErrorResponse has reached the client but whose ReadyForQuery 'E' has not reached sidepool.
fn failing_in_a_transaction() -> Session {
    let mut s = with_a_prepared_statement();
    s.client(&query("BEGIN"));
    s.server(&cat(&[
        &complete("BEGIN"),
        &ready(TransactionStatus::InTransaction),
    ]));
    s.client(&query("SELECT 1/0"));
    s.server(&server_error("22012", "division by zero"));
    s.take_server();
    s.take_client();
    s
}

#[test]
fn a_deallocate_all_in_a_failed_transaction_gets_the_servers_error() {
    let mut s = in_a_failed_transaction();
    s.client(&query("DEALLOCATE ALL"));
    assert_eq!(s.take_server(), query("DEALLOCATE ALL"));
}

#[test]
fn a_deallocate_all_through_the_extended_protocol_closes_before_preparing_again() {
    let mut s = with_a_prepared_statement();
    // psycopg sends its own DEALLOCATE ALL (after a ROLLBACK) as an unnamed statement.
    let dealloc = cat(&[&parse("", "DEALLOCATE ALL"), &run("")]);
    s.client(&dealloc);
    assert_eq!(s.take_server(), dealloc);
    assert!(s.m.statements.is_empty());
    s.server(&cat(&[&parse_complete(), &ran(false, "DEALLOCATE ALL")]));
    s.take_client();
    // sidepool_1 is gone from the server, or still there if the DEALLOCATE failed: closing it
    // first makes the Parse right either way, and the client sees neither.
    s.client(&cat(&[&parse("s1", "SELECT 1"), &run("s1")]));
    assert_eq!(
        s.take_server(),
        cat(&[
            &statement(b'C', "sidepool_1"),
            &server_parse("sidepool_1", "SELECT 1"),
            &run("sidepool_1")
        ])
    );
    s.server(&cat(&[
        &close_complete(),
        &parse_complete(),
        &ran(false, "SELECT 1"),
    ]));
    assert_eq!(
        s.take_client(),
        cat(&[
            &parse_complete(),
            &bind_complete(),
            &complete("SELECT 1"),
            &idle()
        ])
    );
    // Once closed, it is known again: the next use goes straight to the Bind.
    s.client(&run("s1"));
    assert_eq!(s.take_server(), run("sidepool_1"));
}

#[test]
fn a_named_discard_all_resets_the_clients_settings_and_statements_when_it_runs() {
    let mut s = with_a_prepared_statement();
    s.client(&cat(&[&parse("_pg3_9", "DISCARD ALL"), &sync()]));
    assert_eq!(s.resets, 0, "parsed, not run");
    assert!(!s.m.statements.is_empty());
    s.take_client();
    s.client(&run("_pg3_9"));
    s.server(&ran(true, "DISCARD ALL"));
    assert_eq!(s.resets, 1);
    assert!(s.m.statements.is_empty());
    assert!(
        !s.conn.prepared.touch("sidepool_1"),
        "the server forgot every statement"
    );
}

#[test]
fn a_set_parsed_and_described_in_one_cycle_is_read_back_when_executed_in_the_next() {
    // tokio-postgres' prepare: Parse, Describe, Sync; then Bind, Execute, Sync.
    let mut s = Session::new(true);
    s.client(&cat(&[
        &parse("s0", "SET search_path TO s1"),
        &statement(b'D', "s0"),
        &sync(),
    ]));
    s.server(&cat(&[
        &parse_complete(),
        &msg(b't', b"\0\0"),
        &msg(b'n', b""),
        &idle(),
    ]));
    assert_eq!((s.releases, s.read_back.len()), (1, 0), "parsed, not run");
    s.client(&run("s0"));
    s.server(&ran(false, "SET"));
    assert_eq!(s.read_back, ["search_path"]);
}

#[test]
fn a_parse_of_a_prepared_statement_in_a_failed_transaction_gets_the_servers_answer() {
    let mut s = in_a_failed_transaction();
    // Found by pg_differential: sidepool answered ParseComplete where PostgreSQL says 25P02.
    s.client(&cat(&[&parse("s2", "SELECT 1"), &sync()]));
    assert_eq!(
        s.take_server(),
        cat(&[&server_parse("", "SELECT 1"), &sync()]),
        "an unnamed Parse: sidepool_1 stays as it is"
    );
    let aborted = server_error("25P02", "current transaction is aborted");
    s.server(&cat(&[&aborted, &ready(TransactionStatus::Failed)]));
    assert_eq!(
        s.take_client(),
        cat(&[&aborted, &ready(TransactionStatus::Failed)])
    );
    assert!(s.conn.prepared.touch("sidepool_1"), "still known prepared");
}

#[test]
fn a_parse_sent_before_the_failed_statements_ready_for_query_arrived_gets_the_servers_answer() {
    // tokio-postgres returns at the ErrorResponse and sends on: the status is not known yet.
    let mut s = failing_in_a_transaction();
    s.client(&cat(&[&parse("s2", "SELECT 1"), &sync()]));
    assert_eq!(
        s.take_server(),
        cat(&[&server_parse("", "SELECT 1"), &sync()]),
        "the server answers, not sidepool"
    );
    s.server(&ready(TransactionStatus::Failed));
    let aborted = server_error("25P02", "current transaction is aborted");
    s.server(&cat(&[&aborted, &ready(TransactionStatus::Failed)]));
    assert_eq!(
        s.take_client(),
        cat(&[
            &ready(TransactionStatus::Failed),
            &aborted,
            &ready(TransactionStatus::Failed)
        ])
    );
}
