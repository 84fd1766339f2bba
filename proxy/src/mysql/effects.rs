//! What a MySQL statement does to session state, found by a keyword scan (no SQL parser):
//! session variables it sets, schema changes, and state that cannot move to another server
//! connection and so pins the client (ProxySQL's and MySQL Router's lists). Quoted strings,
//! identifiers and comments are skipped; `/*! … */` version comments are read as SQL. The scan
//! errs on the side of pinning.

/// One effect of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// State that cannot be replayed: keep the client on its server connection.
    Pin(&'static str),
    /// A session variable changed (lower case name; `transaction_isolation` stands for the
    /// isolation level however the server names it).
    Var(String),
    /// `USE db`.
    Schema,
    /// `SET TRANSACTION …` without SESSION: applies to the next transaction on this
    /// connection, so keep it until the next statement.
    HoldNext,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    /// `@name` (a user variable).
    UserVar,
    /// `@@`.
    SysVar,
    Punct(char),
    Literal,
}

fn tokens(sql: &str) -> Vec<Token> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let word_char = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' | b'"' | b'`' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    if b[i] == b'\\' && c != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push(if c == b'`' {
                    Token::Word(String::new())
                } else {
                    Token::Literal
                });
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-')
                && b.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()) =>
            {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => i = skip_comment_open(b, i),
            b'*' if b.get(i + 1) == Some(&b'/') => i += 2,
            b'@' => {
                if b.get(i + 1) == Some(&b'@') {
                    out.push(Token::SysVar);
                    i += 2;
                } else {
                    i += 1;
                    if b.get(i)
                        .is_some_and(|c| word_char(*c) || matches!(c, b'`' | b'\'' | b'"'))
                        && !out.is_empty_literal_before()
                    {
                        out.push(Token::UserVar);
                    }
                }
            }
            c if word_char(c) => {
                let start = i;
                while i < b.len() && word_char(b[i]) {
                    i += 1;
                }
                out.push(Token::Word(sql[start..i].to_ascii_uppercase()));
            }
            c if c.is_ascii_whitespace() => i += 1,
            c => {
                out.push(Token::Punct(c as char));
                i += 1;
            }
        }
    }
    out
}

/// Where reading goes on after the `/*` at `i`: inside an executable comment (`/*!50700 …`,
/// whose body MySQL runs), or past the end of a plain comment.
fn skip_comment_open(b: &[u8], mut i: usize) -> usize {
    if b.get(i + 2) == Some(&b'!') {
        i += 3;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        return i;
    }
    i += 2;
    while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
        i += 1;
    }
    i + 2
}

trait LastIsLiteral {
    fn is_empty_literal_before(&self) -> bool;
}

impl LastIsLiteral for Vec<Token> {
    /// `'user'@'host'` in account names: an `@` right after a string is not a variable.
    fn is_empty_literal_before(&self) -> bool {
        matches!(self.last(), Some(Token::Literal))
    }
}

fn is_word(t: Option<&Token>, w: &str) -> bool {
    matches!(t, Some(Token::Word(x)) if x == w)
}

/// Pins found anywhere in a statement.
const PIN_WORDS: &[(&str, &str)] = &[
    ("GET_LOCK", "GET_LOCK"),
    ("SQL_CALC_FOUND_ROWS", "SQL_CALC_FOUND_ROWS"),
    ("FOUND_ROWS", "FOUND_ROWS()"),
];

/// The effects of the statements in `sql`.
pub fn effects(sql: &str) -> Vec<Effect> {
    let toks = tokens(sql);
    let mut out = Vec::new();
    for stmt in toks.split(|t| *t == Token::Punct(';')) {
        statement_effects(stmt, &mut out);
    }
    out.dedup();
    out
}

fn statement_effects(stmt: &[Token], out: &mut Vec<Effect>) {
    if stmt.contains(&Token::UserVar) {
        out.push(Effect::Pin("user variable"));
    }
    for (word, reason) in PIN_WORDS {
        if stmt
            .iter()
            .any(|t| matches!(t, Token::Word(w) if w == word))
        {
            out.push(Effect::Pin(reason));
        }
    }
    let first = stmt.first();
    let second = stmt.get(1);
    let word = |w: &str| is_word(first, w);
    if word("CREATE") && stmt.iter().take(4).any(|t| is_word(Some(t), "TEMPORARY")) {
        out.push(Effect::Pin("temporary table"));
    } else if word("LOCK") && (is_word(second, "TABLES") || is_word(second, "TABLE")) {
        out.push(Effect::Pin("LOCK TABLES"));
    } else if word("FLUSH") && stmt.iter().any(|t| is_word(Some(t), "LOCK")) {
        out.push(Effect::Pin("FLUSH … WITH READ LOCK"));
    } else if word("PREPARE") {
        out.push(Effect::Pin("SQL PREPARE"));
    } else if word("HANDLER") {
        out.push(Effect::Pin("HANDLER"));
    } else if word("XA") {
        out.push(Effect::Pin("XA transaction"));
    } else if word("USE") {
        out.push(Effect::Schema);
    } else if word("SET") {
        set_effects(&stmt[1..], out);
    }
}

/// `SET a = 1, SESSION b = 2, @@session.c = 3, NAMES x, CHARACTER SET y, …`.
fn set_effects(toks: &[Token], out: &mut Vec<Effect>) {
    let charset = [
        "character_set_client",
        "character_set_connection",
        "character_set_results",
        "collation_connection",
    ];
    if is_word(toks.first(), "STATEMENT") {
        return; // MariaDB `SET STATEMENT … FOR`: per statement only
    }
    if is_word(toks.first(), "ROLE") {
        out.push(Effect::Pin("SET ROLE"));
        return;
    }
    if is_word(toks.first(), "PASSWORD") || is_word(toks.first(), "DEFAULT") {
        return;
    }
    let mut i = 0;
    let mut depth = 0i32;
    while i < toks.len() {
        // At the start of one assignment.
        let mut global = false;
        let mut session = false;
        if let Some(Token::Word(w)) = toks.get(i) {
            match w.as_str() {
                "SESSION" | "LOCAL" => {
                    session = true;
                    i += 1;
                }
                "GLOBAL" | "PERSIST" | "PERSIST_ONLY" => {
                    global = true;
                    i += 1;
                }
                _ => {}
            }
        }
        if toks.get(i) == Some(&Token::SysVar) {
            i += 1;
            if let (Some(Token::Word(scope)), Some(Token::Punct('.'))) =
                (toks.get(i), toks.get(i + 1))
            {
                global |= scope == "GLOBAL" || scope.starts_with("PERSIST");
                i += 2;
            }
        }
        match toks.get(i) {
            Some(Token::UserVar) => out.push(Effect::Pin("user variable")),
            Some(Token::Word(w)) if !global => match w.as_str() {
                "NAMES" | "CHARSET" => out.extend(charset.iter().map(|n| Effect::Var((*n).into()))),
                "CHARACTER" if is_word(toks.get(i + 1), "SET") => {
                    out.extend(charset.iter().map(|n| Effect::Var((*n).into())));
                }
                "TRANSACTION" if session => {
                    out.push(Effect::Var("transaction_isolation".into()));
                    out.push(Effect::Var("transaction_read_only".into()));
                }
                "TRANSACTION" => out.push(Effect::HoldNext),
                name if !name.is_empty() => out.push(Effect::Var(name.to_ascii_lowercase())),
                _ => {}
            },
            _ => {}
        }
        // Skip to the next assignment.
        while i < toks.len() {
            match toks[i] {
                Token::Punct('(') => depth += 1,
                Token::Punct(')') => depth -= 1,
                Token::Punct(',') if depth <= 0 => {
                    i += 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

/// True when `sql` reads the id the previous statement generated (`LAST_INSERT_ID()`,
/// `@@identity`, `@@last_insert_id`).
pub fn reads_last_insert_id(sql: &str) -> bool {
    tokens(sql)
        .iter()
        .any(|t| matches!(t, Token::Word(w) if w == "LAST_INSERT_ID" || w == "IDENTITY"))
}

#[cfg(test)]
mod tests {
    use super::Effect::*;
    use super::*;

    fn var(n: &str) -> Effect {
        Var(n.into())
    }

    #[test]
    fn session_sets_are_tracked_and_global_ones_are_not() {
        assert_eq!(effects("SET autocommit = 0"), vec![var("autocommit")]);
        assert_eq!(
            effects(
                "set session sql_mode='ANSI', @@time_zone = '+00:00', @@session.wait_timeout=5, GLOBAL max_connections=1"
            ),
            vec![var("sql_mode"), var("time_zone"), var("wait_timeout")]
        );
        assert_eq!(effects("SET @@global.sql_mode = ''"), vec![]);
        assert_eq!(effects("SET NAMES utf8mb4 COLLATE utf8mb4_bin").len(), 4);
        assert_eq!(effects("SET CHARACTER SET latin1").len(), 4);
        assert_eq!(
            effects("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"),
            vec![var("transaction_isolation"), var("transaction_read_only")]
        );
        assert_eq!(
            effects("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
            vec![HoldNext]
        );
        assert_eq!(
            effects("SET STATEMENT max_statement_time=1 FOR SELECT 1"),
            vec![]
        );
        assert_eq!(
            effects("SET sql_mode = CONCAT(@@sql_mode, ',ANSI'), x = 1"),
            vec![var("sql_mode"), var("x")]
        );
        assert_eq!(effects("use app; select 1"), vec![Schema]);
    }

    #[test]
    fn unmovable_state_pins() {
        for sql in [
            "SET @a = 1",
            "select @x := 5",
            "CREATE TEMPORARY TABLE t (id int)",
            "SELECT GET_LOCK('x', 10)",
            "LOCK TABLES t WRITE",
            "SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 1",
            "SELECT FOUND_ROWS()",
            "PREPARE s FROM 'select 1'",
            "HANDLER t OPEN",
            "XA START 'x'",
            "FLUSH TABLES WITH READ LOCK",
            "/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE */",
        ] {
            assert!(effects(sql).iter().any(|e| matches!(e, Pin(_))), "{sql}");
        }
    }

    #[test]
    fn quotes_comments_and_account_names_do_not_pin() {
        for sql in [
            "SELECT '@a', \"GET_LOCK\", `@x` FROM t",
            "SELECT 1 -- @a\n",
            "SELECT 1 # GET_LOCK(\n",
            "SELECT /* LOCK TABLES @a */ 1",
            "CREATE USER 'app'@'%' IDENTIFIED BY 'x'",
            "SELECT * FROM t FOR UPDATE",
            "SELECT * FROM t LOCK IN SHARE MODE",
            "SELECT @@session.autocommit",
        ] {
            assert!(effects(sql).iter().all(|e| !matches!(e, Pin(_))), "{sql}");
        }
    }

    #[test]
    fn last_insert_id_readers_are_recognised() {
        assert!(reads_last_insert_id("SELECT LAST_INSERT_ID()"));
        assert!(reads_last_insert_id("select @@identity"));
        assert!(!reads_last_insert_id("SELECT 'LAST_INSERT_ID()'"));
    }

    #[test]
    fn hostile_text_does_not_panic() {
        for sql in [
            "'",
            "\"\\",
            "/*",
            "/*!",
            "@",
            "SET",
            "SET SESSION",
            "SET @@",
            "SET @@session.",
            "--",
            "é@é",
            "SET (((,",
        ] {
            let _ = effects(sql);
        }
    }
}
