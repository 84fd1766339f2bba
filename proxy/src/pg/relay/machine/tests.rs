//! The relay's protocol logic on byte fixtures: a [`Session`] plays the driver's part (attach
//! on demand, release when [`Machine::releasable`]) with no socket.

mod effects;
mod fixtures;

use std::sync::Arc;

use bytes::BytesMut;
use sidepool_protocol::pg::TransactionStatus;
use sidepool_protocol::pg::backend as be;
use sidepool_protocol::pg::frontend as fe;

use self::fixtures::*;
use super::*;
use crate::pg::relay::responses::Pending;

#[test]
fn a_query_split_across_reads_goes_to_the_server_once_whole() {
    let mut s = Session::new(true);
    let q = query("SELECT 1");
    s.client(&q[..2]); // inside the header
    s.client(&q[2..7]);
    assert_eq!(s.checkouts, 0, "no checkout before the message is whole");
    assert!(s.to_server.is_empty());
    s.client(&q[7..]);
    assert_eq!(s.checkouts, 1);
    assert_eq!(s.take_server(), q);
    s.server(&cat(&[&no_columns(), &row(), &complete("SELECT 1")]));
    assert_eq!(s.releases, 0, "the ReadyForQuery is still owed");
    s.server(&idle());
    assert_eq!(
        s.take_client(),
        cat(&[&no_columns(), &row(), &complete("SELECT 1"), &idle()])
    );
    assert_eq!((s.releases, s.done), (1, 1));
}

#[test]
fn session_mode_streams_a_split_query_as_it_arrives() {
    let mut s = Session::new(false);
    let q = query("SELECT 1");
    s.client(&q[..3]);
    assert!(s.to_server.is_empty(), "nothing before the header is whole");
    s.client(&q[3..9]);
    assert_eq!(s.checkouts, 1, "the message's start needs the server");
    s.client(&q[9..]);
    assert_eq!(s.take_server(), q);
    s.server(&cat(&[&complete("SELECT 1"), &idle()]));
    assert_eq!(s.releases, 0, "session mode keeps its connection");
    assert!(s.attached().between_transactions(true));
}

#[test]
fn pipelined_cycles_rename_statements_and_prepare_once() {
    let mut s = Session::new(true);
    let read = cat(&[
        &parse("s1", "SELECT 1"),
        &bind("s1"),
        &describe_portal(),
        &execute(),
        &sync(),
        &bind("s1"),
        &execute(),
        &sync(),
        &parse("s2", "SELECT 2"),
        &bind("s2"),
        &statement(b'D', "s2"),
        &execute(),
        &sync(),
    ]);
    s.client(&read);
    assert_eq!(s.checkouts, 1);
    assert_eq!(
        s.take_server(),
        cat(&[
            &server_parse("sidepool_1", "SELECT 1"),
            &bind("sidepool_1"),
            &describe_portal(),
            &execute(),
            &sync(),
            &bind("sidepool_1"),
            &execute(),
            &sync(),
            &server_parse("sidepool_2", "SELECT 2"),
            &bind("sidepool_2"),
            &statement(b'D', "sidepool_2"),
            &execute(),
            &sync(),
        ])
    );
    assert_eq!(s.attached().owed, 3);
    let cycle1 = cat(&[
        &parse_complete(),
        &bind_complete(),
        &no_columns(),
        &row(),
        &complete("SELECT 1"),
        &idle(),
    ]);
    let cycle2 = cat(&[&bind_complete(), &row(), &complete("SELECT 1"), &idle()]);
    let cycle3 = cat(&[
        &parse_complete(),
        &bind_complete(),
        &msg(b't', b"\0\0"),
        &no_columns(),
        &row(),
        &complete("SELECT 1"),
        &idle(),
    ]);
    s.server(&cycle1);
    s.server(&cycle2);
    assert_eq!(s.releases, 0, "a cycle is still owed");
    s.server(&cycle3);
    assert_eq!(s.take_client(), cat(&[&cycle1, &cycle2, &cycle3]));
    assert_eq!((s.releases, s.done), (1, 1));
    assert!(s.conn.prepared.touch("sidepool_1") && s.conn.prepared.touch("sidepool_2"));
}

#[test]
fn a_statement_parsed_without_a_server_is_prepared_where_it_is_bound() {
    let mut s = Session::new(true);
    s.client(&cat(&[&parse("s1", "SELECT 1"), &sync()]));
    assert_eq!(s.checkouts, 0, "Parse and Sync answered without a server");
    assert_eq!(s.take_client(), cat(&[&parse_complete(), &idle()]));
    s.client(&cat(&[&bind("s1"), &execute(), &sync()]));
    assert_eq!(
        s.take_server(),
        cat(&[
            &server_parse("sidepool_1", "SELECT 1"),
            &bind("sidepool_1"),
            &execute(),
            &sync()
        ])
    );
    s.server(&cat(&[
        &parse_complete(),
        &bind_complete(),
        &complete("SELECT 1"),
        &idle(),
    ]));
    assert_eq!(
        s.take_client(),
        cat(&[&bind_complete(), &complete("SELECT 1"), &idle()]),
        "the ParseComplete of sidepool's own Parse is swallowed"
    );
    assert_eq!(s.releases, 1);
    // The same connection has it now: a new Parse of the same text is answered by sidepool.
    s.client(&cat(&[
        &parse("s2", "SELECT 1"),
        &bind("s2"),
        &execute(),
        &sync(),
    ]));
    assert_eq!(
        s.take_server(),
        cat(&[&bind("sidepool_1"), &execute(), &sync()])
    );
    s.server(&cat(&[&bind_complete(), &complete("SELECT 1"), &idle()]));
    assert_eq!(
        s.take_client(),
        cat(&[
            &parse_complete(),
            &bind_complete(),
            &complete("SELECT 1"),
            &idle()
        ])
    );
}

#[test]
fn an_error_mid_pipeline_skips_to_sync_and_the_connection_is_released_after() {
    let mut s = Session::new(true);
    s.client(&cat(&[
        &parse("s1", "SELECT nope"),
        &bind("s1"),
        &execute(),
        &sync(),
        &query("SELECT 1"),
    ]));
    let err = server_error("42703", "column \"nope\" does not exist");
    s.server(&cat(&[&err, &idle()]));
    // The Parse came with no server attached and was answered then; the Parse sidepool sent
    // before the Bind failed, and its error goes to the client.
    assert_eq!(s.take_client(), cat(&[&parse_complete(), &err, &idle()]));
    assert!(
        !s.conn.prepared.touch("sidepool_1"),
        "the failed Parse is not prepared there"
    );
    let link = s.attached();
    assert_eq!(link.owed, 1, "the Query behind the Sync is still owed");
    assert_eq!(
        link.responses.front(),
        Some(&Pending::Forward(Expect::Ready))
    );
    assert_eq!(s.releases, 0);
    s.server(&cat(&[&complete("SELECT 1"), &idle()]));
    assert_eq!(s.take_client(), cat(&[&complete("SELECT 1"), &idle()]));
    assert_eq!(s.releases, 1);
    assert!(s.link.is_none());
}

#[test]
fn copy_from_stdin_continues_the_cycle_and_holds_the_connection() {
    let mut s = Session::new(true);
    s.client(&query("COPY t FROM STDIN"));
    s.take_server();
    let copy_in = msg(b'G', b"\0\0\0");
    s.server(&copy_in);
    assert_eq!(s.take_client(), copy_in);
    let data = cat(&[&msg(b'd', b"1\n"), &msg(b'd', b"2\n"), &msg(b'c', b"")]);
    s.client(&data[..5]);
    s.client(&data[5..]);
    assert_eq!(s.take_server(), data, "copy data passes through unchanged");
    let link = s.attached();
    assert!(
        !link.pending && link.owed == 1,
        "copy data continues the cycle"
    );
    assert_eq!((s.checkouts, s.releases), (1, 0));
    s.server(&complete("COPY 2"));
    assert_eq!(s.releases, 0);
    s.server(&idle());
    assert_eq!(s.take_client(), cat(&[&complete("COPY 2"), &idle()]));
    assert_eq!(s.releases, 1);
}

#[test]
fn copy_to_stdout_is_forwarded_and_released_at_ready() {
    let mut s = Session::new(true);
    s.client(&query("COPY t TO STDOUT"));
    let out = cat(&[
        &msg(b'H', b"\0\0\0"),
        &msg(b'd', b"1\n"),
        &msg(b'd', b"2\n"),
        &msg(b'c', b""),
        &complete("COPY 2"),
        &idle(),
    ]);
    s.server(&out[..12]); // inside the first CopyData
    assert_eq!(s.releases, 0);
    s.server(&out[12..]);
    assert_eq!(s.take_client(), out);
    assert_eq!(s.releases, 1);
}

#[test]
fn a_transaction_is_released_only_at_its_idle_ready_for_query() {
    let mut s = Session::new(true);
    s.client(&query("BEGIN"));
    s.server(&cat(&[
        &complete("BEGIN"),
        &ready(TransactionStatus::InTransaction),
    ]));
    assert_eq!(s.releases, 0, "inside a transaction block");
    s.client(&query("INSERT INTO t VALUES (1)"));
    s.server(&cat(&[
        &complete("INSERT 0 1"),
        &ready(TransactionStatus::InTransaction),
    ]));
    assert_eq!((s.checkouts, s.releases), (1, 0));
    s.client(&query("COMMIT"));
    s.server(&cat(&[&complete("COMMIT"), &idle()]));
    assert_eq!((s.checkouts, s.releases), (1, 1));
}

#[test]
fn an_idle_ready_for_query_with_a_query_still_owed_keeps_the_connection() {
    let mut s = Session::new(true);
    s.client(&cat(&[&query("COMMIT"), &query("SELECT 1")]));
    let second = complete("SELECT 1");
    // One read: the first cycle's end, and the start of the second's answer.
    s.server(&cat(&[&complete("COMMIT"), &idle(), &second[..3]]));
    assert_eq!(s.attached().owed, 1);
    assert_eq!(s.releases, 0);
    s.server(&cat(&[&second[3..], &idle()]));
    assert_eq!(s.releases, 1);
    assert_eq!(
        s.take_client(),
        cat(&[&complete("COMMIT"), &idle(), &second, &idle()])
    );
}

#[test]
fn terminate_forwards_what_came_before_and_ends_the_session() {
    let mut s = Session::new(false);
    s.client(&cat(&[&query("SELECT 1"), &fe::terminate()]));
    assert!(s.terminated);
    assert_eq!(s.take_server(), query("SELECT 1"));
    let mut s = Session::new(true);
    s.client(&fe::terminate());
    assert!(s.terminated && s.checkouts == 0);
}

#[test]
fn sync_parse_close_and_flush_are_answered_without_a_server() {
    let mut s = Session::new(true);
    s.client(&cat(&[
        &parse("s1", "SELECT 1"),
        &msg(b'H', b""),
        &statement(b'C', "s1"),
        &sync(),
    ]));
    assert_eq!(s.checkouts, 0);
    assert!(s.to_server.is_empty());
    assert_eq!(
        s.take_client(),
        cat(&[&parse_complete(), &close_complete(), &idle()])
    );
    assert!(s.m.statements.is_empty(), "the Close forgot the statement");
    // An unnamed Parse, or a Close of a statement sidepool does not know, needs the server.
    s.client(&statement(b'C', "other"));
    assert_eq!(s.checkouts, 1);
    assert_eq!(s.take_server(), statement(b'C', "other"));
}

#[test]
fn a_failed_checkout_drops_the_cycle_and_answers_its_sync() {
    let mut s = Session::new(true);
    let reply = server_error("08006", "no server");
    let (h, m) = match s
        .m
        .next_client(&mut BytesMut::from(&bind("")[..]), &mut s.to_server)
    {
        Ok(ClientStep::Message(h, m)) => (h, m),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        s.m.without_server(h.tag, &m, &s.env, &mut s.to_client)
            .unwrap(),
        Unattached::NeedServer
    );
    s.m.checkout_failed(h.tag, &reply, &mut s.to_client);
    s.client(&cat(&[&execute(), &sync()]));
    assert_eq!(s.checkouts, 0, "the rest of the cycle is dropped");
    assert_eq!(s.take_client(), cat(&[&reply, &idle()]));
    s.client(&query("SELECT 1"));
    assert_eq!(s.checkouts, 1, "the next cycle checks out again");
}

#[test]
fn parameter_status_follows_client_settings_and_the_connection() {
    let mut s = Session::new(true);
    s.client(&query("SET application_name = 'app'"));
    s.conn.synced = Some(Arc::default());
    let reported = cat(&[
        &be::parameter_status("application_name", "app"),
        &be::parameter_status("server_version", "15.4"),
    ]);
    s.server(&reported);
    assert_eq!(
        s.settings.get("application_name").map(String::as_str),
        Some("app")
    );
    assert!(
        !s.settings.contains_key("server_version"),
        "a server fact is not a client setting"
    );
    assert_eq!(
        s.conn.params.get("server_version").map(String::as_str),
        Some("15.4")
    );
    assert!(
        s.conn.synced.is_none(),
        "the connection's parameters changed"
    );
    assert_eq!(s.attached().dirty, vec!["application_name".to_string()]);
    s.server(&cat(&[&complete("SET"), &idle()]));
    assert_eq!(
        s.take_client(),
        cat(&[&reported, &complete("SET"), &idle()])
    );
}

#[test]
fn a_stale_plan_retries_the_cycle_with_the_statement_prepared_again() {
    let mut s = Session::new(true);
    s.client(&cat(&[&parse("s1", "SELECT * FROM t"), &sync()]));
    s.take_client();
    s.client(&cat(&[&bind("s1"), &execute(), &sync()]));
    let first = cat(&[
        &server_parse("sidepool_1", "SELECT * FROM t"),
        &bind("sidepool_1"),
        &execute(),
        &sync(),
    ]);
    assert_eq!(s.take_server(), first);
    s.server(&cat(&[
        &parse_complete(),
        &bind_complete(),
        &complete("SELECT 0"),
        &idle(),
    ]));
    s.take_client();
    assert_eq!(s.releases, 1);
    // DDL changed the table; the same connection comes back for the next cycle.
    s.client(&cat(&[&bind("s1"), &execute(), &sync()]));
    assert_eq!(
        s.take_server(),
        cat(&[&bind("sidepool_1"), &execute(), &sync()])
    );
    let stale = server_error("0A000", "cached plan must not change result type");
    s.server(&cat(&[&stale, &idle()]));
    assert_eq!(s.retries, 1);
    assert!(
        s.to_client.is_empty(),
        "the client sees nothing of the failed try"
    );
    assert_eq!(
        s.take_server(),
        cat(&[
            &statement(b'C', "sidepool_1"),
            &server_parse("sidepool_1", "SELECT * FROM t"),
            &bind("sidepool_1"),
            &execute(),
            &sync(),
        ])
    );
    assert_eq!(s.releases, 1, "the retried cycle holds the connection");
    s.server(&cat(&[
        &close_complete(),
        &parse_complete(),
        &bind_complete(),
        &complete("SELECT 0"),
        &idle(),
    ]));
    assert_eq!(
        s.take_client(),
        cat(&[&bind_complete(), &complete("SELECT 0"), &idle()])
    );
    assert_eq!(s.releases, 2);
}

#[test]
fn a_pinning_statement_keeps_the_connection_after_the_transaction() {
    let mut s = Session::new(true);
    s.client(&query("LISTEN jobs"));
    s.server(&cat(&[&complete("LISTEN"), &idle()]));
    assert_eq!(s.m.pinned, Some("LISTEN"));
    assert_eq!(s.env.pins.get(), 1);
    assert_eq!(s.releases, 0, "a pinned client keeps its connection");
}

#[test]
fn an_execute_error_in_the_middle_cycle_skips_only_to_its_sync() {
    let mut s = Session::new(true);
    let cycle = |sql: &str| cat(&[&parse("", sql), &bind(""), &execute(), &sync()]);
    let pipeline = cat(&[&cycle("SELECT 1"), &cycle("SELECT 1/0"), &cycle("SELECT 2")]);
    s.client(&pipeline);
    assert_eq!(s.checkouts, 1);
    assert_eq!(s.take_server(), pipeline);
    let ok = cat(&[
        &parse_complete(),
        &bind_complete(),
        &row(),
        &complete("SELECT 1"),
        &idle(),
    ]);
    let err = server_error("22012", "division by zero");
    let failed = cat(&[&parse_complete(), &bind_complete(), &err, &idle()]);
    s.server(&cat(&[&ok, &failed]));
    let link = s.attached();
    assert_eq!(link.owed, 1);
    assert_eq!(
        link.responses.front(),
        Some(&Pending::Forward(Expect::Parse(None))),
        "the third cycle's answers are still expected, in order"
    );
    assert_eq!(s.releases, 0);
    s.server(&ok);
    assert_eq!(s.take_client(), cat(&[&ok, &failed, &ok]));
    assert_eq!((s.releases, s.done), (1, 1));
}

#[test]
fn a_lone_deallocate_of_a_mapped_statement_is_answered_in_its_place() {
    let mut s = Session::new(true);
    s.client(&cat(&[&parse("s1", "SELECT 1"), &sync()]));
    s.take_client();
    s.client(&cat(&[&query("SELECT 2"), &query("DEALLOCATE s1")]));
    assert_eq!(
        s.take_server(),
        query("SELECT 2"),
        "the server never sees it"
    );
    assert!(
        s.to_client.is_empty(),
        "the answer waits for the Query before it"
    );
    s.server(&cat(&[&complete("SELECT 1"), &idle()]));
    assert_eq!(
        s.take_client(),
        cat(&[
            &complete("SELECT 1"),
            &idle(),
            &complete("DEALLOCATE"),
            &idle()
        ])
    );
    assert_eq!(s.releases, 1);
    assert!(s.m.statements.is_empty());
}
