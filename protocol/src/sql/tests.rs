use super::*;

fn pg(sql: &str) -> Classified {
    classify(sql.as_bytes(), Dialect::Postgres, &WriteFunctions::none())
}

fn my(sql: &str) -> Classified {
    classify(sql.as_bytes(), Dialect::MySql, &WriteFunctions::none())
}

fn kinds(sql: &str, dialect: Dialect) -> Vec<(TokenKind, String)> {
    Lexer::new(sql.as_bytes(), dialect)
        .map(|t| (t.kind, String::from_utf8_lossy(t.text).into_owned()))
        .collect()
}

use TokenKind::{
    Comment, Number, Param, Punct, QuotedIdent, SystemVar, Unterminated, UserVar, Word,
};

#[test]
fn lexer_keeps_postgres_strings_identifiers_and_dollar_quotes_whole() {
    let toks = kinds(
        r#"SELECT 'a''b', E'c\'d', "x""y", $$ ' ; $$, $t$ $$ $t$, $1, a$b"#,
        Dialect::Postgres,
    );
    let texts: Vec<_> = toks.iter().filter(|(k, _)| *k != Punct).collect();
    assert_eq!(
        texts,
        [
            &(Word, "SELECT".into()),
            &(TokenKind::String, "'a''b'".into()),
            &(TokenKind::String, r"E'c\'d'".into()),
            &(QuotedIdent, r#""x""y""#.into()),
            &(TokenKind::String, "$$ ' ; $$".into()),
            &(TokenKind::String, "$t$ $$ $t$".into()),
            &(Param, "$1".into()),
            &(Word, "a$b".into()),
        ]
    );
}

#[test]
fn lexer_nests_postgres_block_comments_but_not_mysql_ones() {
    let pg_toks = kinds("/* a /* b */ c */ x", Dialect::Postgres);
    assert_eq!(pg_toks[0], (Comment, "/* a /* b */ c */".into()));
    assert_eq!(pg_toks[1], (Word, "x".into()));
    let my_toks = kinds("/* a /* b */ c */ x", Dialect::MySql);
    assert_eq!(my_toks[0], (Comment, "/* a /* b */".into()));
    assert_eq!(my_toks[1], (Word, "c".into()));
}

#[test]
fn lexer_reads_mysql_comments_variables_and_backticks() {
    let toks = kinds(
        "# c\nSELECT @a, @@session.x, @'q r', `t``u` -- d\n, 1--1",
        Dialect::MySql,
    );
    let expected = [
        (Comment, "# c".into()),
        (Word, "SELECT".into()),
        (UserVar, "@a".into()),
        (Punct, ",".into()),
        (SystemVar, "@@session.x".into()),
        (Punct, ",".into()),
        (UserVar, "@'q r'".into()),
        (Punct, ",".into()),
        (QuotedIdent, "`t``u`".into()),
        (Comment, "-- d".into()),
        (Punct, ",".into()),
        (Number, "1".into()),
        (Punct, "-".into()),
        (Punct, "-".into()),
        (Number, "1".into()),
    ];
    assert_eq!(toks, expected);
}

#[test]
fn lexer_treats_mysql_executable_comment_content_as_code() {
    let toks = kinds(
        "/*!40101 SET x=1 */ /*M!100100 y */ /* z */",
        Dialect::MySql,
    );
    let words: Vec<_> = toks.iter().filter(|(k, _)| *k == Word).collect();
    assert_eq!(
        words,
        [
            &(Word, "SET".into()),
            &(Word, "x".into()),
            &(Word, "y".into())
        ]
    );
    assert_eq!(toks.last(), Some(&(Comment, "/* z */".into())));
    // In PostgreSQL the same text is a comment.
    assert_eq!(
        kinds("/*! x */", Dialect::Postgres),
        [(Comment, "/*! x */".into())]
    );
}

#[test]
fn lexer_tracks_parenthesis_depth() {
    let depths: Vec<_> = Lexer::new(b"a(b(c)d)e", Dialect::Postgres)
        .map(|t| (t.text[0], t.depth))
        .collect();
    let expected = [
        (b'a', 0),
        (b'(', 0),
        (b'b', 1),
        (b'(', 1),
        (b'c', 2),
        (b')', 1),
        (b'd', 1),
        (b')', 0),
        (b'e', 0),
    ];
    assert_eq!(depths, expected);
    // Unbalanced closers do not underflow.
    assert!(Lexer::new(b")))(", Dialect::Postgres).all(|t| t.depth == 0));
}

#[test]
fn lexer_ends_with_one_unterminated_token_for_every_unclosed_form() {
    let cases: &[(&str, Dialect)] = &[
        ("SELECT 'abc", Dialect::Postgres),
        ("SELECT E'abc\\'", Dialect::Postgres),
        ("SELECT \"abc", Dialect::Postgres),
        ("SELECT $$abc", Dialect::Postgres),
        ("SELECT $t$abc$t", Dialect::Postgres),
        ("SELECT /* a /* b */", Dialect::Postgres),
        ("SELECT 'abc\\'", Dialect::MySql),
        ("SELECT `abc", Dialect::MySql),
        ("SELECT @'abc", Dialect::MySql),
        ("SELECT /*! abc", Dialect::MySql),
        ("SELECT /* abc", Dialect::MySql),
    ];
    for &(sql, dialect) in cases {
        let toks: Vec<_> = Lexer::new(sql.as_bytes(), dialect).collect();
        assert_eq!(
            toks.last().map(|t| t.kind),
            Some(Unterminated),
            "{sql:?} in {dialect:?}"
        );
        assert_eq!(
            classify(sql.as_bytes(), dialect, &WriteFunctions::none()).route,
            Route::Primary
        );
    }
}

#[test]
fn classify_survives_arbitrary_bytes() {
    let inputs: &[&[u8]] = &[
        b"",
        b"\0\0\0",
        b"\xff\xfe SELECT \xc3",
        b"$",
        b"$$",
        b"$a",
        b"@",
        b"@@",
        b"E'",
        b"e",
        b"--",
        b"/*",
        b"/*!",
        b"*/",
        b"#",
        b"((((((((((",
        b"))))",
        b"EXPLAIN EXPLAIN EXPLAIN SELECT 1",
        b"EXPLAIN (",
        b"EXPLAIN FORMAT",
        b"SET SESSION",
        b"SELECT nextval(",
        b".(",
        b"SELECT a.\"",
    ];
    for &sql in inputs {
        for dialect in [Dialect::Postgres, Dialect::MySql] {
            let _ = classify(sql, dialect, &WriteFunctions::none());
        }
    }
    // Every prefix of a statement full of edge cases.
    let all = "/* sidepool:replica */ WITH a AS (SELECT E'x\\'' || $q$ y $q$ || \"z\" \
               FROM t /* c /* d */ */ WHERE `b` = @v AND @@s.x = 1 -- e\n) \
               SELECT nextval('s') FROM a FOR UPDATE; /*!4 SELECT 1 */ # f";
    for end in 0..=all.len() {
        for dialect in [Dialect::Postgres, Dialect::MySql] {
            let _ = classify(&all.as_bytes()[..end], dialect, &WriteFunctions::none());
        }
    }
}

#[test]
fn reads_go_to_replicas_and_everything_else_to_the_primary() {
    assert_eq!(pg("SELECT 1").kind, StatementKind::Read);
    assert_eq!(pg("SELECT 1").route, Route::Replica);
    assert_eq!(
        pg("  (( SELECT 1 )) UNION (SELECT 2)").route,
        Route::Replica
    );
    assert_eq!(pg("TABLE t").route, Route::Replica);
    assert_eq!(pg("VALUES (1), (2)").route, Route::Replica);
    assert_eq!(pg("SHOW search_path").route, Route::Replica);
    assert_eq!(pg("INSERT INTO t VALUES (1)").kind, StatementKind::Write);
    assert_eq!(pg("FOO BAR").kind, StatementKind::Other);
    assert_eq!(pg("FOO BAR").route, Route::Primary);
    assert_eq!(pg("42").route, Route::Primary);
}

#[test]
fn comments_and_newlines_do_not_hide_or_invent_keywords() {
    assert_eq!(pg("-- DELETE FROM t\nSELECT 1").route, Route::Replica);
    assert_eq!(pg("SELECT 1 -- x\n FOR UPDATE").route, Route::Primary);
    assert_eq!(my("# x\nSELECT 1").route, Route::Replica);
    assert_eq!(my("SELECT 1 # x\n, GET_LOCK('a', 1)").route, Route::Primary);
    // `#` is an operator in PostgreSQL, not a comment.
    assert_eq!(pg("SELECT 1 # 2, nextval('s')").route, Route::Primary);
}

#[test]
fn locking_clauses_route_to_the_primary() {
    for sql in [
        "SELECT * FROM t FOR UPDATE",
        "SELECT * FROM t FOR NO KEY UPDATE",
        "SELECT * FROM t FOR SHARE",
        "SELECT * FROM t FOR KEY SHARE",
        "SELECT * FROM t for update of t skip locked",
    ] {
        assert_eq!(pg(sql).kind, StatementKind::Write, "{sql}");
    }
    assert_eq!(
        my("SELECT * FROM t LOCK IN SHARE MODE").kind,
        StatementKind::Write
    );
    assert_eq!(
        pg("SELECT substring('abc' FROM 1 FOR 2)").route,
        Route::Replica
    );
}

#[test]
fn explain_routes_by_its_statement_and_analyze() {
    assert_eq!(pg("EXPLAIN SELECT 1").kind, StatementKind::Read);
    assert_eq!(pg("EXPLAIN (ANALYZE) SELECT 1").kind, StatementKind::Other);
    assert_eq!(
        pg("EXPLAIN ANALYZE DELETE FROM t").kind,
        StatementKind::Write
    );
    assert_eq!(pg("EXPLAIN DELETE FROM t").kind, StatementKind::Other);
    assert_eq!(pg("EXPLAIN t").route, Route::Primary);
    assert_eq!(my("EXPLAIN t").route, Route::Replica);
    assert_eq!(my("DESCRIBE t c").route, Route::Replica);
    assert_eq!(my("EXPLAIN FORMAT = TREE SELECT 1").route, Route::Replica);
    assert_eq!(pg("EXPLAIN EXPLAIN SELECT 1").route, Route::Primary);
}

#[test]
fn transaction_control_is_recognised_with_its_access_mode() {
    let begin = |read_only| StatementKind::Begin { read_only };
    assert_eq!(pg("BEGIN").kind, begin(false));
    assert_eq!(pg("begin work").kind, begin(false));
    assert_eq!(pg("BEGIN READ ONLY").kind, begin(true));
    assert_eq!(
        pg("BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE").kind,
        begin(true)
    );
    assert_eq!(
        pg("BEGIN ISOLATION LEVEL READ COMMITTED").kind,
        begin(false)
    );
    assert_eq!(pg("START TRANSACTION READ ONLY").kind, begin(true));
    assert_eq!(
        pg("START TRANSACTION READ ONLY, READ WRITE").kind,
        begin(false)
    );
    assert_eq!(
        my("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY").kind,
        begin(true)
    );
    assert_eq!(
        my("BEGIN NOT ATOMIC SELECT 1 END").kind,
        StatementKind::Other
    );
    assert_eq!(pg("BEGIN READ ONLY").route, Route::Primary);
    assert_eq!(my("START SLAVE").kind, StatementKind::Write);

    assert_eq!(pg("COMMIT").kind, StatementKind::Commit);
    assert_eq!(pg("END TRANSACTION").kind, StatementKind::Commit);
    assert_eq!(pg("COMMIT AND NO CHAIN").kind, StatementKind::Commit);
    assert_eq!(pg("COMMIT PREPARED 'x'").kind, StatementKind::Other);
    assert_eq!(pg("ROLLBACK").kind, StatementKind::Rollback);
    assert_eq!(pg("ABORT").kind, StatementKind::Rollback);
    assert_eq!(my("ROLLBACK WORK RELEASE").kind, StatementKind::Rollback);
    assert_eq!(pg("ROLLBACK TO SAVEPOINT a").kind, StatementKind::Other);
}

#[test]
fn set_statements_are_settings_transaction_characteristics_or_server_writes() {
    let set_tx = |read_only, session| StatementKind::SetTransaction { read_only, session };
    assert_eq!(
        pg("SET TRANSACTION READ ONLY").kind,
        set_tx(Some(true), false)
    );
    assert_eq!(
        pg("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY").kind,
        set_tx(Some(true), true)
    );
    assert_eq!(
        pg("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").kind,
        set_tx(None, false)
    );
    assert_eq!(
        my("SET SESSION TRANSACTION READ WRITE").kind,
        set_tx(Some(false), true)
    );
    assert_eq!(
        my("SET /* c */ SESSION TRANSACTION READ ONLY").kind,
        set_tx(Some(true), true)
    );
    assert_eq!(pg("SET search_path TO app").kind, StatementKind::Set);
    assert_eq!(
        pg("SET SESSION search_path TO app").kind,
        StatementKind::Set
    );
    assert_eq!(pg("RESET ALL").kind, StatementKind::Set);
    assert_eq!(my("RESET MASTER").kind, StatementKind::Write);
    assert_eq!(my("USE app").kind, StatementKind::Set);
    assert_eq!(my("SET NAMES utf8mb4").kind, StatementKind::Set);
    assert_eq!(my("SET GLOBAL read_only = 1").kind, StatementKind::Write);
    assert_eq!(my("SET @@GLOBAL.read_only = 1").kind, StatementKind::Write);
    assert_eq!(my("SET @a = 1, @@persist.x = 2").kind, StatementKind::Write);
    assert_eq!(my("SET PASSWORD = 'x'").kind, StatementKind::Write);
}

#[test]
fn several_statements_are_a_read_only_if_each_is() {
    assert_eq!(pg("SELECT 1; SELECT 2").kind, StatementKind::Read);
    assert_eq!(pg("SELECT 1;;  ; -- x").kind, StatementKind::Read);
    assert_eq!(
        pg("SELECT 1; UPDATE t SET a = 1").kind,
        StatementKind::Multiple
    );
    assert_eq!(pg("BEGIN; SELECT 1; COMMIT").kind, StatementKind::Multiple);
    assert_eq!(pg("BEGIN; SELECT 1; COMMIT").route, Route::Primary);
    assert_eq!(pg("SELECT ';'; SELECT $$;$$").kind, StatementKind::Read);
}

#[test]
fn hints_count_only_in_leading_comments_and_never_move_a_write() {
    let replica = Some(Route::Replica);
    let primary = Some(Route::Primary);
    let c = pg("/* sidepool:primary */ SELECT 1");
    assert_eq!((c.route, c.hint), (Route::Primary, primary));
    let c = pg("/*sidepool:PRIMARY*/SELECT 1");
    assert_eq!((c.route, c.hint), (Route::Primary, primary));
    let c = pg("-- sidepool:primary\nSELECT 1");
    assert_eq!((c.route, c.hint), (Route::Primary, primary));
    let c = my("# sidepool:primary\nSELECT 1");
    assert_eq!((c.route, c.hint), (Route::Primary, primary));
    let c = pg("/* app:web */ /* sidepool:primary */ SELECT 1");
    assert_eq!((c.route, c.hint), (Route::Primary, primary));
    let c = pg("SELECT /* sidepool:primary */ 1");
    assert_eq!((c.route, c.hint), (Route::Replica, None));
    let c = pg("/* sidepool:primary, app:web */ SELECT 1");
    assert_eq!((c.route, c.hint), (Route::Replica, None));

    let c = pg("/* sidepool:replica */ COPY (SELECT 1) TO STDOUT");
    assert_eq!(
        (c.route, c.kind, c.hint),
        (Route::Replica, StatementKind::Other, replica)
    );
    for sql in [
        "/* sidepool:replica */ SELECT nextval('s')",
        "/* sidepool:replica */ SELECT * FROM t FOR UPDATE",
        "/* sidepool:replica */ INSERT INTO t VALUES (1)",
        "/* sidepool:replica */ BEGIN READ ONLY",
        "/* sidepool:replica */ SET x = 1",
        "/* sidepool:replica */ SELECT 1; DELETE FROM t",
        "/* sidepool:replica */ SELECT 'unterminated",
    ] {
        let c = pg(sql);
        assert_eq!((c.route, c.hint), (Route::Primary, replica), "{sql}");
    }
}

#[test]
fn write_functions_match_case_insensitively_with_or_without_schema() {
    assert_eq!(pg("SELECT NextVal('s')").route, Route::Primary);
    assert_eq!(pg("SELECT pg_catalog.nextval ('s')").route, Route::Primary);
    assert_eq!(
        pg("SELECT pg_advisory_lock_shared(1)").route,
        Route::Primary
    );
    assert_eq!(pg("SELECT nextval FROM t").route, Route::Replica);
    assert_eq!(my("SELECT get_lock('a', 1)").route, Route::Primary);
    assert_eq!(my("SELECT `get_lock`('a', 1)").route, Route::Primary);

    let extra = WriteFunctions::new([" Audit_Log ", "billing.charge", "tmp_*", "", "*"]);
    let c = |sql: &str| classify(sql.as_bytes(), Dialect::Postgres, &extra).route;
    assert_eq!(c("SELECT audit_log(1)"), Route::Primary);
    assert_eq!(c("SELECT public.AUDIT_LOG(1)"), Route::Primary);
    assert_eq!(c("SELECT billing.charge(1)"), Route::Primary);
    assert_eq!(c("SELECT \"billing\".\"charge\"(1)"), Route::Primary);
    assert_eq!(c("SELECT charge(1)"), Route::Replica);
    assert_eq!(c("SELECT other.charge(1)"), Route::Replica);
    assert_eq!(c("SELECT tmp_make(1)"), Route::Primary);
    assert_eq!(c("SELECT tm(1)"), Route::Replica);
    assert_eq!(c("SELECT nextval('s')"), Route::Primary);
    assert!(!extra.is_empty());
    assert!(WriteFunctions::new([" ", "*"]).is_empty());
}

#[test]
fn a_backslash_reading_that_hides_a_write_sends_the_statement_to_the_primary() {
    // standard_conforming_strings = on: one string. Off: a string, then nextval(...).
    assert_eq!(
        pg(r"SELECT 'a\'', nextval(''s'') -- '").route,
        Route::Primary
    );
    // NO_BACKSLASH_ESCAPES off: one string. On: a string, then GET_LOCK(...).
    assert_eq!(
        my(r"SELECT 'a\', GET_LOCK(1, 2) -- '").route,
        Route::Primary
    );
    // The other reading does not parse: the server would reject it, so the read stands.
    assert_eq!(my(r"SELECT 'it\'s' AS s").route, Route::Replica);
    assert_eq!(pg(r"SELECT 'C:\dir\' AS p").route, Route::Replica);
}

#[test]
fn mysql_user_variables_and_per_connection_results_stay_on_the_primary() {
    assert_eq!(my("SELECT @x").route, Route::Primary);
    assert_eq!(my("SELECT @@x").route, Route::Replica);
    assert_eq!(
        my("SELECT SQL_CALC_FOUND_ROWS a FROM t").route,
        Route::Primary
    );
    assert_eq!(my("SHOW WARNINGS LIMIT 1").route, Route::Primary);
    assert_eq!(my("SHOW GLOBAL VARIABLES").route, Route::Replica);
    // In PostgreSQL `@` is the absolute-value operator.
    assert_eq!(pg("SELECT @ -5").route, Route::Replica);
}

#[test]
fn copy_from_is_a_write_and_copy_to_is_other() {
    assert_eq!(pg("COPY t FROM STDIN").kind, StatementKind::Write);
    assert_eq!(
        pg("COPY (SELECT a FROM t) TO STDOUT").kind,
        StatementKind::Other
    );
}
