//! What a statement does to session state that must follow a client in transaction mode.
//!
//! A cheap keyword scan, not a parser: it looks only at the first words of each statement of a
//! Query (comments and quoted text skipped). A miss costs correctness only for state sidepool
//! cannot replay, so the scan errs on the side of pinning.

/// Session-level effect of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// `SET name ...` / `RESET name` / `set_config('name', …)`: the setting's value must be
    /// re-read and follow the client.
    Setting(String),
    /// `RESET ALL` / `DISCARD ALL`: every setting returns to its default.
    ResetAll,
    /// State that cannot move to another server connection: the client keeps this one.
    Pin(&'static str),
    /// `DEALLOCATE ALL` / `DISCARD ALL`: every prepared statement of the session is gone.
    DeallocateAll,
    /// `DEALLOCATE name`.
    Deallocate(String),
}

/// Words whose presence (anywhere, any case) makes [`effects`] worth running, by first letter:
/// every rule below starts with one of them, and the advisory-lock rule looks for the last.
fn triggers(first: u8) -> &'static [&'static [u8]] {
    match first {
        b's' => &[b"set"], // also RESET and set_config
        b'd' => &[b"discard", b"deallocate", b"declare"],
        b'c' => &[b"create"],
        b'l' => &[b"listen", b"load"],
        b'p' => &[b"prepare"],
        b'a' => &[b"advisory_lock"],
        _ => &[],
    }
}

/// False when `sql` certainly has no [`effects`]: none of the words the rules start with occurs
/// in it, in any case. A byte scan without allocation, so the common statement (a SELECT, an
/// INSERT) skips the word split.
pub fn may_have_effects(sql: &[u8]) -> bool {
    let mut rest = sql;
    while let Some((&first, tail)) = rest.split_first() {
        let found = triggers(first.to_ascii_lowercase()).iter().any(|t| {
            rest.get(..t.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(t))
        });
        if found {
            return true;
        }
        rest = tail;
    }
    false
}

/// The effects of every statement in `sql`, in order.
pub fn effects(sql: &str) -> Vec<Effect> {
    let mut out = Vec::new();
    for stmt in statements(sql) {
        if stmt.len() >= 2 && stmt[0] == "discard" && stmt[1] == "all" {
            out.push(Effect::DeallocateAll);
        }
        if let Some(e) = effect(&stmt) {
            out.push(e);
        }
    }
    let lower = sql.to_ascii_lowercase();
    if lower.contains("pg_advisory_lock") || lower.contains("pg_try_advisory_lock") {
        out.push(Effect::Pin("session advisory lock"));
    }
    set_config_calls(&lower, &mut out);
    out
}

/// The settings `set_config(name, value, is_local)` calls change (in any expression, any
/// statement; `pg_catalog.` or not). Reading a setting back is right whether the call was
/// local or not, so `is_local` is not looked at; a name that is not a literal (a parameter,
/// an expression) cannot be read back, and pins. `lower` is the lower-cased text: names of
/// settings are case-insensitive.
fn set_config_calls(lower: &str, out: &mut Vec<Effect>) {
    const CALL: &str = "set_config";
    let mut rest = lower;
    while let Some(at) = rest.find(CALL) {
        let before = rest[..at].bytes().next_back();
        rest = &rest[at + CALL.len()..];
        let Some(args) = rest.trim_start().strip_prefix('(') else {
            continue; // a word that only contains it
        };
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue; // another function, e.g. my_set_config(
        }
        let name = args
            .trim_start()
            .strip_prefix('\'')
            .and_then(|quoted| quoted.split_once('\''))
            .map(|(name, _)| name)
            .filter(|name| !name.is_empty());
        out.push(match name {
            Some(name) => Effect::Setting(canonical(name).to_owned()),
            None => Effect::Pin("set_config with a name that is not a literal"),
        });
    }
}

/// The spelling sidepool keeps a setting under when it is reported (ParameterStatus) in mixed
/// case, so that one setting has one key whatever case the client wrote.
fn canonical(lower: &str) -> &str {
    match lower {
        "timezone" => "TimeZone",
        "datestyle" => "DateStyle",
        "intervalstyle" => "IntervalStyle",
        other => other,
    }
}

fn effect(words: &[String]) -> Option<Effect> {
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    match w(0) {
        "set" => match (w(1), w(2)) {
            ("local", _) | ("transaction", _) | ("constraints", _) => None,
            ("role", _) | ("session", "authorization") | ("session", "role") => {
                Some(Effect::Pin("SET ROLE / SESSION AUTHORIZATION"))
            }
            ("session", "characteristics") => Some(Effect::Pin("SET SESSION CHARACTERISTICS")),
            ("session", name) => Some(Effect::Setting(setting_name(name, w(3)))),
            (name, next) if !name.is_empty() => Some(Effect::Setting(setting_name(name, next))),
            _ => None,
        },
        "reset" => match w(1) {
            "all" => Some(Effect::ResetAll),
            "role" | "session" => None,
            name if !name.is_empty() => Some(Effect::Setting(setting_name(name, w(2)))),
            _ => None,
        },
        "discard" if w(1) == "all" => Some(Effect::ResetAll),
        "deallocate" => match (w(1), w(2)) {
            ("all", _) | ("prepare", "all") => Some(Effect::DeallocateAll),
            ("prepare", name) | (name, _) if !name.is_empty() => {
                Some(Effect::Deallocate(name.trim_matches('"').to_owned()))
            }
            _ => None,
        },
        "create"
            if matches!(w(1), "temp" | "temporary")
                || matches!((w(1), w(2)), ("global" | "local", "temp" | "temporary")) =>
        {
            Some(Effect::Pin("temporary table"))
        }
        "listen" => Some(Effect::Pin("LISTEN")),
        "prepare" if w(1) != "transaction" => Some(Effect::Pin("SQL-level PREPARE")),
        "declare" if words.windows(2).any(|p| p[0] == "with" && p[1] == "hold") => {
            Some(Effect::Pin("WITH HOLD cursor"))
        }
        "load" => Some(Effect::Pin("LOAD")),
        _ => None,
    }
}

/// The GUC a `SET` names, with PostgreSQL's special spellings.
fn setting_name(first: &str, second: &str) -> String {
    match (first, second) {
        ("time", "zone") => "TimeZone".to_owned(),
        ("names", _) => "client_encoding".to_owned(),
        ("schema", _) => "search_path".to_owned(),
        ("xml", "option") => "xmloption".to_owned(),
        (name, _) => canonical(name.trim_matches('"')).to_owned(),
    }
}

/// Splits `sql` into statements of lower-cased leading words (up to 8 per statement, enough
/// for every rule above plus `WITH HOLD` within a cursor declaration's first words... which can
/// come later, so DECLARE keeps all its words).
fn statements(sql: &str) -> Vec<Vec<String>> {
    let b = sql.as_bytes();
    let (mut i, mut out, mut cur, mut word) = (0, Vec::new(), Vec::<String>::new(), String::new());
    let flush_word = |word: &mut String, cur: &mut Vec<String>| {
        if !word.is_empty() && (cur.len() < 8 || cur.first().is_some_and(|w| w == "declare")) {
            cur.push(word.to_ascii_lowercase());
        }
        word.clear();
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                flush_word(&mut word, &mut cur);
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                flush_word(&mut word, &mut cur);
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b'\'' | b'"' => {
                flush_word(&mut word, &mut cur);
                let quote = c;
                i += 1;
                let start = i;
                while i < b.len() && b[i] != quote {
                    i += 1;
                }
                if quote == b'"' && cur.len() < 8 {
                    // A quoted identifier is a word (e.g. SET "my.setting" = 1).
                    cur.push(String::from_utf8_lossy(&b[start..i]).into_owned());
                }
            }
            b'$' if b
                .get(i + 1)
                .is_some_and(|n| *n == b'$' || n.is_ascii_alphabetic())
                && word.is_empty() =>
            {
                // Dollar quote: $tag$ ... $tag$
                let start = i;
                let mut j = i + 1;
                while j < b.len() && b[j] != b'$' && (b[j].is_ascii_alphanumeric() || b[j] == b'_')
                {
                    j += 1;
                }
                if j < b.len() && b[j] == b'$' {
                    let tag = &b[start..=j];
                    let mut k = j + 1;
                    while k + tag.len() <= b.len() && &b[k..k + tag.len()] != tag {
                        k += 1;
                    }
                    i = (k + tag.len()).min(b.len());
                    continue;
                }
            }
            b';' => {
                flush_word(&mut word, &mut cur);
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' => word.push(c as char),
            _ => flush_word(&mut word, &mut cur),
        }
        i += 1;
    }
    flush_word(&mut word, &mut cur);
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(s: &str) -> Effect {
        Effect::Setting(s.to_owned())
    }

    #[test]
    fn session_settings_are_tracked_and_local_ones_are_not() {
        assert_eq!(
            effects("SET search_path TO s1"),
            vec![setting("search_path")]
        );
        assert_eq!(
            effects("set session statement_timeout = '5s'"),
            vec![setting("statement_timeout")]
        );
        assert_eq!(effects("SET TIME ZONE 'UTC'"), vec![setting("TimeZone")]);
        assert_eq!(effects("set datestyle to iso"), vec![setting("DateStyle")]);
        assert_eq!(
            effects("SET NAMES 'LATIN1'"),
            vec![setting("client_encoding")]
        );
        assert_eq!(effects("SET \"my.flag\" = on"), vec![setting("my.flag")]);
        assert_eq!(effects("RESET work_mem"), vec![setting("work_mem")]);
        assert_eq!(effects("SET LOCAL work_mem = '1MB'"), vec![]);
        assert_eq!(
            effects("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
            vec![]
        );
        assert_eq!(effects("RESET ALL"), vec![Effect::ResetAll]);
        assert_eq!(
            effects("DISCARD ALL"),
            vec![Effect::DeallocateAll, Effect::ResetAll]
        );
        assert_eq!(effects("DEALLOCATE ALL"), vec![Effect::DeallocateAll]);
        assert_eq!(
            effects("deallocate prepare all"),
            vec![Effect::DeallocateAll]
        );
        assert_eq!(
            effects("DEALLOCATE _pg3_7"),
            vec![Effect::Deallocate("_pg3_7".into())]
        );
        assert_eq!(
            effects("DEALLOCATE PREPARE \"Q1\""),
            vec![Effect::Deallocate("Q1".into())]
        );
    }

    #[test]
    fn set_config_changes_the_setting_it_names() {
        assert_eq!(
            effects("SELECT set_config('search_path', 's1', false)"),
            vec![setting("search_path")]
        );
        assert_eq!(
            effects("select PG_CATALOG.Set_Config ( 'TimeZone', 'UTC', true), 1"),
            vec![setting("TimeZone")]
        );
        assert_eq!(
            effects("SELECT set_config('a.b', '1', false), set_config('work_mem', '8MB', false)"),
            vec![setting("a.b"), setting("work_mem")]
        );
        assert_eq!(effects("SELECT my_set_config('a', 'b')"), vec![]);
        assert_eq!(effects("SELECT current_setting('search_path')"), vec![]);
        assert!(may_have_effects(
            b"SELECT pg_catalog.set_config('x.y', '1', false)"
        ));
    }

    #[test]
    fn unreplayable_state_pins() {
        for sql in [
            "CREATE TEMP TABLE t (x int)",
            "create temporary table t as select 1",
            "CREATE GLOBAL TEMPORARY TABLE t (x int)",
            "LISTEN jobs",
            "PREPARE q AS SELECT 1",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "SELECT pg_advisory_lock(42)",
            "select pg_try_advisory_lock(1, 2)",
            "SET ROLE reporting",
            "SET SESSION AUTHORIZATION bob",
            "SELECT set_config($1, $2, false)",
            "select pg_catalog.set_config(name, 'x', false) from t",
        ] {
            assert!(
                matches!(effects(sql).as_slice(), [Effect::Pin(_)]),
                "{sql}: {:?}",
                effects(sql)
            );
        }
        for sql in [
            "SELECT pg_advisory_xact_lock(1)",
            "PREPARE TRANSACTION 'x'",
            "DECLARE c CURSOR FOR SELECT 1",
            "SELECT 'LISTEN'",
        ] {
            assert_eq!(effects(sql), vec![], "{sql}");
        }
    }

    #[test]
    fn the_prefilter_passes_every_statement_with_effects() {
        for sql in [
            "SET x.y = 1",
            "reset all",
            "DISCARD ALL",
            "DeAllocate q",
            "CREATE TEMP TABLE t ()",
            "LISTEN a",
            "PREPARE q AS SELECT 1",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "LOAD 'x'",
            "SELECT pg_advisory_lock(1)",
            "SELECT 1; SET \"a.b\" = 2",
        ] {
            assert!(!effects(sql).is_empty(), "{sql}");
            assert!(may_have_effects(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
            "BEGIN",
            "INSERT INTO t VALUES (1)",
            "",
        ] {
            assert!(!may_have_effects(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn scans_every_statement_and_skips_comments_and_quotes() {
        assert_eq!(
            effects("BEGIN; /* SET x = 1 */ SET search_path = a; -- LISTEN y\nCOMMIT; LISTEN z"),
            vec![setting("search_path"), Effect::Pin("LISTEN")]
        );
        assert_eq!(effects("SELECT $$; LISTEN x; $$"), vec![]);
        assert_eq!(effects("SELECT 'a;b'; SET x.y = 1"), vec![setting("x.y")]);
    }
}
