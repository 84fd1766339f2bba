//! The rules: what one statement is, from its first keywords and a scan of its body.

use super::functions::WriteFunctions;
use super::lexer::{Lexer, Token, TokenKind};
use super::{Dialect, StatementKind};

/// Why a statement's token stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// Not yet.
    Open,
    /// At a `;`: another statement may follow.
    Semicolon,
    /// At the end of the input.
    Eof,
    /// At an unterminated string, identifier or comment.
    Broken,
}

/// The tokens of one statement at a time, comments skipped, with one token of lookahead.
#[derive(Debug)]
pub(super) struct Cursor<'a> {
    lex: Lexer<'a>,
    peeked: Option<Token<'a>>,
    pub(super) end: End,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(lex: Lexer<'a>) -> Self {
        Self {
            lex,
            peeked: None,
            end: End::Open,
        }
    }

    pub(super) fn lexer(&self) -> &Lexer<'a> {
        &self.lex
    }

    fn pull(&mut self) -> Option<Token<'a>> {
        if self.end != End::Open {
            return None;
        }
        for tok in self.lex.by_ref() {
            match tok.kind {
                TokenKind::Comment => {}
                TokenKind::Unterminated => {
                    self.end = End::Broken;
                    return None;
                }
                TokenKind::Punct if tok.text == b";" => {
                    self.end = End::Semicolon;
                    return None;
                }
                _ => return Some(tok),
            }
        }
        self.end = End::Eof;
        None
    }

    pub(super) fn next(&mut self) -> Option<Token<'a>> {
        self.peeked.take().or_else(|| self.pull())
    }

    pub(super) fn peek(&mut self) -> Option<Token<'a>> {
        if self.peeked.is_none() {
            self.peeked = self.pull();
        }
        self.peeked
    }

    /// Skips the rest of the current statement.
    pub(super) fn drain(&mut self) {
        while self.next().is_some() {}
    }

    /// Moves past a `;` to the next statement.
    pub(super) fn resume(&mut self) {
        if self.end == End::Semicolon {
            self.end = End::Open;
        }
    }

    fn next_is(&mut self, keyword: &str) -> bool {
        self.peek().is_some_and(|t| t.is(keyword))
    }
}

/// What the rules need besides the tokens.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rules<'f> {
    pub(super) dialect: Dialect,
    pub(super) functions: &'f WriteFunctions,
}

/// Statements that change data, schema, locks or server state, by first keyword.
const WRITE_STATEMENTS: &[&str] = &[
    "insert",
    "update",
    "delete",
    "merge",
    "upsert",
    "replace",
    "create",
    "alter",
    "drop",
    "truncate",
    "rename",
    "grant",
    "revoke",
    "comment",
    "vacuum",
    "analyze",
    "analyse",
    "cluster",
    "reindex",
    "refresh",
    "lock",
    "unlock",
    "call",
    "do",
    "notify",
    "checkpoint",
    "import",
    "security",
    "reassign",
    "load",
    "optimize",
    "repair",
    "flush",
    "purge",
    "kill",
    "install",
    "uninstall",
    "change",
    "handler",
    "xa",
    "binlog",
    "cache",
    "backup",
    "restore",
    "split",
    "flashback",
    "recover",
    "admin",
];

/// MySQL `SHOW` forms whose answer belongs to one connection or one server (the previous
/// statement's warnings, replication coordinates, this session's counters): primary.
const SHOW_ON_PRIMARY: &[&str] = &[
    "warnings",
    "errors",
    "count",
    "profile",
    "profiles",
    "master",
    "slave",
    "replica",
    "replicas",
    "binary",
    "binlog",
    "relaylog",
    "processlist",
    "status",
    "engine",
    "open",
];

impl Rules<'_> {
    /// Classifies the statement at the cursor and leaves the cursor at its end. `None` for an
    /// empty statement (only comments, or nothing, before `;` or the end).
    pub(super) fn statement(&self, cur: &mut Cursor<'_>) -> Option<StatementKind> {
        let first = cur.next()?;
        let kind = self.statement_from(first, cur, false);
        cur.drain();
        Some(kind)
    }

    fn statement_from(
        &self,
        first: Token<'_>,
        cur: &mut Cursor<'_>,
        explained: bool,
    ) -> StatementKind {
        if first.is_punct(b'(') {
            return self.parenthesized_query(cur);
        }
        if first.kind != TokenKind::Word {
            return StatementKind::Other;
        }
        let word = first.text;
        let is = |k: &str| word.eq_ignore_ascii_case(k.as_bytes());
        if is("select") || is("values") || is("table") || is("with") {
            return self.read_body(cur);
        }
        if is("show") {
            return self.show(cur);
        }
        if is("explain") || is("describe") || is("desc") {
            return if explained {
                StatementKind::Other
            } else {
                self.explain(cur)
            };
        }
        if is("begin") || (is("start") && cur.next_is("transaction")) {
            return begin(cur);
        }
        if is("commit") || is("end") {
            return end_of_transaction(cur, StatementKind::Commit);
        }
        if is("rollback") || is("abort") {
            return end_of_transaction(cur, StatementKind::Rollback);
        }
        if is("set") {
            return set(cur);
        }
        if is("use") || (is("reset") && self.dialect == Dialect::Postgres) {
            return StatementKind::Set;
        }
        if is("copy") {
            return copy(cur);
        }
        if WRITE_STATEMENTS.iter().any(|k| is(k)) || is("reset") || is("start") {
            return StatementKind::Write;
        }
        StatementKind::Other
    }

    /// `(SELECT ...) UNION (SELECT ...)`: a query that opens with parentheses.
    fn parenthesized_query(&self, cur: &mut Cursor<'_>) -> StatementKind {
        while cur.peek().is_some_and(|t| t.is_punct(b'(')) {
            cur.next();
        }
        match cur.next() {
            Some(t) if t.is("select") || t.is("values") || t.is("table") || t.is("with") => {
                self.read_body(cur)
            }
            _ => StatementKind::Other,
        }
    }

    /// The body of a query (after its first keyword): a read unless something in it writes,
    /// locks, or depends on session state held by the primary.
    fn read_body(&self, cur: &mut Cursor<'_>) -> StatementKind {
        let mut back: [Option<Token<'_>>; 3] = [None; 3];
        while let Some(tok) = cur.next() {
            if self.writes(tok, back, cur) {
                return StatementKind::Write;
            }
            back = [Some(tok), back[0], back[1]];
        }
        StatementKind::Read
    }

    /// Whether `tok` (preceded by `back`, newest first) makes the query a write.
    fn writes(&self, tok: Token<'_>, back: [Option<Token<'_>>; 3], cur: &mut Cursor<'_>) -> bool {
        let prev_is = |k: &str| back[0].is_some_and(|t| t.is(k));
        let call = cur.peek().is_some_and(|t| t.is_punct(b'('));
        match tok.kind {
            TokenKind::UserVar => return true,
            TokenKind::Word => {
                let is = |k: &str| tok.is(k);
                // Writable CTEs and DML anywhere; `FOR UPDATE` lands here too.
                if is("update") || is("delete") || is("merge") || is("into") {
                    return true;
                }
                // `INSERT(...)`, `REPLACE(...)` are MySQL string functions.
                if (is("insert") || is("replace") || is("upsert")) && !call {
                    return true;
                }
                // Locking clauses: FOR SHARE, FOR NO KEY UPDATE, FOR KEY SHARE, LOCK IN SHARE MODE.
                if prev_is("for") && (is("share") || is("no") || is("key")) {
                    return true;
                }
                if prev_is("lock") && is("in") {
                    return true;
                }
                // MariaDB sequences: NEXT VALUE FOR s, PREVIOUS VALUE FOR s.
                if prev_is("value") && is("for") {
                    return true;
                }
                if is("sql_calc_found_rows") {
                    return true;
                }
            }
            TokenKind::QuotedIdent => {}
            _ => return false,
        }
        if !call {
            return false;
        }
        let Some(name) = tok.ident() else {
            return false;
        };
        let schema = match back {
            [Some(dot), Some(schema), _] if dot.is_punct(b'.') => schema.ident(),
            _ => None,
        };
        self.functions.is_write_call(schema, name)
    }

    fn show(&self, cur: &mut Cursor<'_>) -> StatementKind {
        if cur.next_is("full")
            || cur.next_is("global")
            || cur.next_is("session")
            || cur.next_is("local")
        {
            cur.next();
        }
        let on_primary = cur
            .peek()
            .is_some_and(|t| SHOW_ON_PRIMARY.iter().any(|k| t.is(k)));
        if on_primary {
            return StatementKind::Other;
        }
        self.read_body(cur)
    }

    /// `EXPLAIN [options] statement`, `DESCRIBE table`. `ANALYZE` executes the statement.
    fn explain(&self, cur: &mut Cursor<'_>) -> StatementKind {
        let mut analyze = false;
        while let Some(tok) = cur.peek() {
            if tok.is_punct(b'(') && tok.depth == 0 {
                // PostgreSQL option list: (ANALYZE, BUFFERS, FORMAT JSON).
                cur.next();
                while let Some(opt) = cur.next() {
                    if opt.depth == 0 && opt.is_punct(b')') {
                        break;
                    }
                    analyze |= opt.is("analyze") || opt.is("analyse");
                }
            } else if tok.is("analyze") || tok.is("analyse") {
                analyze = true;
                cur.next();
            } else if tok.is("verbose") || tok.is("extended") || tok.is("partitions") {
                cur.next();
            } else if tok.is("format") {
                cur.next();
                if cur.peek().is_some_and(|t| t.is_punct(b'=')) {
                    cur.next();
                }
                cur.next();
            } else {
                break;
            }
        }
        let Some(first) = cur.next() else {
            return StatementKind::Other;
        };
        let inner = if is_statement_keyword(first) || first.is_punct(b'(') {
            self.statement_from(first, cur, true)
        } else if self.dialect == Dialect::MySql && first.ident().is_some() && !first.is("for") {
            // MySQL `DESCRIBE t [column]`, `EXPLAIN t`: SHOW COLUMNS.
            StatementKind::Read
        } else {
            StatementKind::Other
        };
        match (analyze, inner) {
            (true, StatementKind::Write) => StatementKind::Write,
            (false, StatementKind::Read) => StatementKind::Read,
            _ => StatementKind::Other,
        }
    }
}

/// Whether `tok` opens a statement (so `EXPLAIN tok ...` explains a statement, not a table).
fn is_statement_keyword(tok: Token<'_>) -> bool {
    const OTHERS: &[&str] = &[
        "select", "values", "table", "with", "execute", "declare", "explain", "describe", "desc",
        "show", "set",
    ];
    OTHERS.iter().chain(WRITE_STATEMENTS).any(|k| tok.is(k))
}

/// `BEGIN` / `START TRANSACTION` with their modes. Anything outside the transaction-mode
/// grammar (MariaDB `BEGIN NOT ATOMIC ... END` is a compound statement) is not a `BEGIN`.
fn begin(cur: &mut Cursor<'_>) -> StatementKind {
    const MODES: &[&str] = &[
        "work",
        "transaction",
        "isolation",
        "level",
        "serializable",
        "repeatable",
        "read",
        "committed",
        "uncommitted",
        "write",
        "only",
        "not",
        "deferrable",
        "with",
        "consistent",
        "snapshot",
    ];
    match transaction_modes(cur, MODES) {
        Some(read_only) => StatementKind::Begin {
            read_only: read_only == Some(true),
        },
        None => StatementKind::Other,
    }
}

/// Walks transaction modes; `None` if a token outside `allowed` appears, else the access mode
/// given (`Some(true)` for `READ ONLY`, `Some(false)` for `READ WRITE`).
fn transaction_modes(cur: &mut Cursor<'_>, allowed: &[&str]) -> Option<Option<bool>> {
    let mut access = None;
    let mut after_read = false;
    while let Some(tok) = cur.next() {
        if tok.is_punct(b',') {
            after_read = false;
            continue;
        }
        if !allowed.iter().any(|k| tok.is(k)) {
            return None;
        }
        if after_read && tok.is("only") && access.is_none() {
            access = Some(true);
        } else if after_read && tok.is("write") {
            // READ ONLY and READ WRITE together: the server refuses it; assume read-write.
            access = Some(false);
        }
        after_read = tok.is("read");
    }
    Some(access)
}

/// `COMMIT`/`END`/`ROLLBACK`/`ABORT` ending the transaction; `ROLLBACK TO SAVEPOINT`,
/// `COMMIT PREPARED` and the like are something else.
fn end_of_transaction(cur: &mut Cursor<'_>, kind: StatementKind) -> StatementKind {
    const ALLOWED: &[&str] = &["work", "transaction", "and", "no", "chain", "release"];
    while let Some(tok) = cur.next() {
        if !ALLOWED.iter().any(|k| tok.is(k)) {
            return StatementKind::Other;
        }
    }
    kind
}

/// `SET`: session settings, transaction characteristics, or server-wide changes (writes).
fn set(cur: &mut Cursor<'_>) -> StatementKind {
    const MODES: &[&str] = &[
        "transaction",
        "isolation",
        "level",
        "serializable",
        "repeatable",
        "read",
        "committed",
        "uncommitted",
        "write",
        "only",
        "not",
        "deferrable",
        "session",
        "local",
        "characteristics",
        "as",
        "snapshot",
    ];
    let Some(second) = cur.peek() else {
        return StatementKind::Other;
    };
    let server_wide = ["global", "persist", "persist_only", "password", "default"];
    if server_wide.iter().any(|k| second.is(k)) {
        return StatementKind::Write;
    }
    let session = second.is("session") || second.is("local");
    let mut probe = cur.lexer().clone();
    let third_is_transaction = session
        && probe
            .by_ref()
            .find(|t| t.kind != TokenKind::Comment)
            .is_some_and(|t| t.is("transaction") || t.is("characteristics"));
    if second.is("transaction") || third_is_transaction {
        return match transaction_modes(cur, MODES) {
            Some(read_only) => StatementKind::SetTransaction { read_only, session },
            None => StatementKind::Other,
        };
    }
    while let Some(tok) = cur.next() {
        let global = tok.kind == TokenKind::SystemVar
            && (starts_with_ignore_case(tok.text, b"@@global.")
                || starts_with_ignore_case(tok.text, b"@@persist"));
        if global || tok.is("global") || tok.is("persist") {
            return StatementKind::Write;
        }
    }
    StatementKind::Set
}

/// `COPY t FROM ...` writes; `COPY t TO ...` / `COPY (query) TO ...` reads, but the COPY
/// sub-protocol stays on the primary.
fn copy(cur: &mut Cursor<'_>) -> StatementKind {
    while let Some(tok) = cur.next() {
        if tok.depth == 0 && tok.is("from") {
            return StatementKind::Write;
        }
    }
    StatementKind::Other
}

fn starts_with_ignore_case(text: &[u8], prefix: &[u8]) -> bool {
    text.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}
