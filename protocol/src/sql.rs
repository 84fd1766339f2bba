//! Statement classification for read/write splitting (docs/design.md §6): may this SQL text run
//! on a replica?
//!
//! # Why hand-written
//!
//! A proxy asks one narrow question of every statement, on the hot path, and a wrong "yes" sends
//! a write to a read-only server or loses a client's session state. Full SQL parsers answer a
//! different question: they build an AST (allocations per statement), cover one dialect's
//! grammar only partly (PostgreSQL dollar quoting, `E''` strings, MySQL executable comments and
//! user variables are where they disagree with the servers), and fail on any syntax they do not
//! know, which a router must then treat as "unknown" anyway. PgCat's parser-based splitter sent
//! `nextval` and writable CTEs to replicas. What routing needs is a lexer that is exactly right
//! about what hides text (comments, strings, quoted identifiers, dollar quotes) and a short list
//! of conservative rules: anything not provably a read goes to the primary.
//!
//! # Rules
//!
//! A statement is a replica read ([`Route::Replica`]) only when it starts with `SELECT`,
//! `VALUES`, `TABLE`, `WITH`, `SHOW`, `EXPLAIN`/`DESCRIBE` without `ANALYZE`, or `(` followed by
//! one of the first four, and its body has none of:
//! - `INSERT`/`UPDATE`/`DELETE`/`MERGE`/`REPLACE` (writable CTEs; `INSERT(`/`REPLACE(` are
//!   MySQL string functions and allowed);
//! - `INTO` (`SELECT INTO` creates a table in PostgreSQL; MySQL `INTO @v`/`OUTFILE`);
//! - locking clauses: `FOR UPDATE`, `FOR NO KEY UPDATE`, `FOR SHARE`, `FOR KEY SHARE`,
//!   `LOCK IN SHARE MODE`;
//! - a call of a built-in write function (sequences, advisory and named locks, `set_config`,
//!   `LAST_INSERT_ID`, `FOUND_ROWS`, …, see `functions.rs`) or of a configured one
//!   ([`WriteFunctions`]); MariaDB `NEXT VALUE FOR`/`PREVIOUS VALUE FOR`; `SQL_CALC_FOUND_ROWS`;
//! - a MySQL user variable (`@x`, read or assigned: it lives on one connection).
//!
//! MySQL `SHOW` forms that describe one connection or server (`WARNINGS`, `ERRORS`, `STATUS`,
//! `PROCESSLIST`, replication status, …) stay on the primary. Several statements in one text are
//! a read only if each is. Unterminated strings, comments or identifiers, and anything not
//! recognised, go to the primary. Keywords are matched only as whole words outside strings,
//! comments and quoted identifiers; MySQL `/*! ... */` content counts as code.
//!
//! A backslash inside a plain string means different things depending on server settings
//! (`standard_conforming_strings`, `NO_BACKSLASH_ESCAPES`, `ANSI_QUOTES`). When one appears and
//! the text looks like a read, it is classified again under the other setting, and it goes to
//! a replica only if that reading is a read too, or does not parse at all (then the server would
//! reject it in that mode).
//!
//! Hints: a comment before the first token, `/* sidepool:primary */` or
//! `/* sidepool:replica */` (also as `--` or MySQL `#` comments; case-insensitive). A primary
//! hint always wins. A replica hint is honoured for reads and for statements of kind
//! [`StatementKind::Other`] that parsed, never for a known write, a transaction-control or a
//! `SET` statement (see docs/decisions.md, "Read/write split"). A hint comment anywhere else is
//! an ordinary comment.
//!
//! Transaction state is not decided here: the caller sends everything inside an explicit
//! transaction to the primary (or to a replica for one begun `READ ONLY`) using [`StatementKind`].

mod functions;
pub mod lexer;
mod statement;

#[cfg(test)]
mod tests;

pub use functions::WriteFunctions;
pub use lexer::{Lexer, Token, TokenKind};

use statement::{Cursor, End, Rules};

/// The SQL dialect of the server behind a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// MySQL, MariaDB and TiDB.
    MySql,
}

/// Where a statement may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The primary: anything that writes, locks, or is not provably a read.
    Primary,
    /// Any healthy replica.
    Replica,
}

/// What a statement is, as far as routing and transaction tracking care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// A read that may run on a replica.
    Read,
    /// Changes data, schema, locks or server state (DML, DDL, locking reads, write functions,
    /// `SELECT INTO`, writable CTEs, `CALL`, `DO`, `COPY FROM`, `EXPLAIN ANALYZE` of a write, …).
    Write,
    /// `BEGIN` / `START TRANSACTION`; `read_only` when begun `READ ONLY`.
    Begin {
        /// The transaction was started `READ ONLY`.
        read_only: bool,
    },
    /// `COMMIT` / `END` (including `AND CHAIN`, which opens a new transaction at once).
    Commit,
    /// `ROLLBACK` / `ABORT` (not `ROLLBACK TO SAVEPOINT`).
    Rollback,
    /// `SET TRANSACTION ...` (the current or, in MySQL, the next transaction) or, with
    /// `session`, `SET SESSION CHARACTERISTICS AS TRANSACTION` / MySQL
    /// `SET SESSION TRANSACTION`.
    SetTransaction {
        /// `Some(true)` for `READ ONLY`, `Some(false)` for `READ WRITE`, `None` if not given.
        read_only: Option<bool>,
        /// The setting is the session default rather than one transaction's.
        session: bool,
    },
    /// Another session setting: `SET`, PostgreSQL `RESET`, MySQL `USE`.
    Set,
    /// Several statements in one text, not all reads.
    Multiple,
    /// Anything else: utility statements (`PREPARE`, `EXECUTE`, `SAVEPOINT`, `LISTEN`,
    /// `COPY TO`, `EXPLAIN` of a write, connection-bound `SHOW`), empty, unrecognised or
    /// unterminated text. Routed to the primary; callers should assume it may write.
    Other,
}

/// The answer for one SQL text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    /// Where to run it, hints applied.
    pub route: Route,
    /// What it is.
    pub kind: StatementKind,
    /// The hint given in a leading comment, whether or not it was honoured.
    pub hint: Option<Route>,
}

/// Classifies `sql` (one Query / `COM_QUERY` / Parse text) for routing. Pure, allocation-free,
/// never panics; `extra` adds configured write functions to the built-in list.
pub fn classify(sql: &[u8], dialect: Dialect, extra: &WriteFunctions) -> Classified {
    let hint = leading_hint(sql, dialect);
    let rules = Rules {
        dialect,
        functions: extra,
    };
    let default_escapes = dialect == Dialect::MySql;
    let (mut kind, broken, ambiguous) = classify_text(sql, &rules, default_escapes);
    if kind == StatementKind::Read && ambiguous {
        // The other reading counts only if it parses: unterminated there, the server in that
        // mode would reject the text before running any of it.
        let (other, other_broken, _) = classify_text(sql, &rules, !default_escapes);
        if other != StatementKind::Read && !other_broken {
            kind = other;
        }
    }
    Classified {
        route: route(kind, broken, hint),
        kind,
        hint,
    }
}

fn route(kind: StatementKind, broken: bool, hint: Option<Route>) -> Route {
    match (hint, kind) {
        (Some(Route::Primary), _) => Route::Primary,
        (_, StatementKind::Read) => Route::Replica,
        (Some(Route::Replica), StatementKind::Other) if !broken => Route::Replica,
        _ => Route::Primary,
    }
}

/// Returns the kind over every statement, whether the text was broken (unterminated), and
/// whether a mode-dependent backslash was seen.
fn classify_text(sql: &[u8], rules: &Rules<'_>, escapes: bool) -> (StatementKind, bool, bool) {
    let mut cur = Cursor::new(Lexer::with_backslash_escapes(sql, rules.dialect, escapes));
    let mut first = None;
    let mut count = 0usize;
    let mut all_read = true;
    loop {
        if let Some(kind) = rules.statement(&mut cur) {
            count += 1;
            all_read &= kind == StatementKind::Read;
            first.get_or_insert(kind);
        }
        if cur.end != End::Semicolon {
            break;
        }
        cur.resume();
    }
    let ambiguous = cur.lexer().saw_mode_dependent_backslash();
    let broken = cur.end == End::Broken;
    let kind = match (broken, count, first) {
        (true, _, _) | (_, 0, _) => StatementKind::Other,
        (_, 1, Some(kind)) => kind,
        _ if all_read => StatementKind::Read,
        _ => StatementKind::Multiple,
    };
    (kind, broken, ambiguous)
}

/// The hint in the comments before the first token, if any (the last one wins).
fn leading_hint(sql: &[u8], dialect: Dialect) -> Option<Route> {
    let mut hint = None;
    for tok in Lexer::new(sql, dialect) {
        if tok.kind != TokenKind::Comment {
            break;
        }
        hint = parse_hint(tok.text).or(hint);
    }
    hint
}

fn parse_hint(comment: &[u8]) -> Option<Route> {
    let body = comment
        .strip_prefix(b"/*")
        .and_then(|c| c.strip_suffix(b"*/"))
        .or_else(|| comment.strip_prefix(b"--"))
        .or_else(|| comment.strip_prefix(b"#"))?;
    let body = body.trim_ascii();
    if body.eq_ignore_ascii_case(b"sidepool:primary") {
        Some(Route::Primary)
    } else if body.eq_ignore_ascii_case(b"sidepool:replica") {
        Some(Route::Replica)
    } else {
        None
    }
}
