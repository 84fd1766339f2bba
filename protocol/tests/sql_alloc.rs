//! The classifier makes no heap allocation per call (docs/design.md §6 runs it on every statement).
//! A counting global allocator (allocation-counter) sees every allocation of this thread.

use sidepool_protocol::sql::{Dialect, Lexer, WriteFunctions, classify};

const STATEMENTS: &[(&str, Dialect)] = &[
    ("SELECT c FROM sbtest1 WHERE id=?", Dialect::MySql),
    ("/* sidepool:replica */ SELECT 1", Dialect::Postgres),
    (
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        Dialect::Postgres,
    ),
    (
        "SELECT 'a\\'', nextval(''s'') -- '; SELECT $q$ x $q$",
        Dialect::Postgres,
    ),
    ("SELECT 'it\\'s' AS s, @@session.x, `t`", Dialect::MySql),
    (
        "/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;",
        Dialect::MySql,
    ),
    (
        "EXPLAIN (ANALYZE, BUFFERS) SELECT public.audit_log(1) FROM t FOR UPDATE",
        Dialect::Postgres,
    ),
    (
        "BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY",
        Dialect::Postgres,
    ),
    ("SET SESSION TRANSACTION READ ONLY", Dialect::MySql),
    ("SELECT 'unterminated", Dialect::Postgres),
];

#[test]
fn classify_allocates_nothing_per_statement() {
    let extra = WriteFunctions::new(["audit_log", "billing.charge", "tmp_*"]);
    let info = allocation_counter::measure(|| {
        for _ in 0..100 {
            for &(sql, dialect) in STATEMENTS {
                std::hint::black_box(classify(sql.as_bytes(), dialect, &extra));
            }
        }
    });
    assert_eq!(info.count_total, 0, "classify allocated: {info:?}");
}

#[test]
fn lexing_allocates_nothing() {
    let info = allocation_counter::measure(|| {
        for &(sql, dialect) in STATEMENTS {
            std::hint::black_box(Lexer::new(sql.as_bytes(), dialect).count());
        }
    });
    assert_eq!(info.count_total, 0, "the lexer allocated: {info:?}");
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the two tests above against a counter that counts nothing.
    let info = allocation_counter::measure(|| {
        std::hint::black_box(String::from("x").repeat(10));
    });
    assert!(info.count_total > 0);
}
