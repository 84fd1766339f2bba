//! Text the testbed writes for PostgreSQL: `postgresql.conf` settings, SQL quoting, DSNs.

use std::fmt::Write as _;
use std::path::Path;

/// Everything after this line in `postgresql.conf` belongs to the testbed and is rewritten on
/// every start (a new port after a bind race; a replica's own port after `pg_basebackup`).
pub(super) const CONF_MARKER: &str = "# --- sidepool testbed: everything below is rewritten ---";

/// The per-start settings appended to `postgresql.conf`.
#[derive(Debug)]
pub(super) struct ConfSettings<'a> {
    pub port: u16,
    pub socket_dir: &'a Path,
    pub max_connections: u32,
    pub password_encryption: &'a str,
    pub extra: &'a [String],
}

/// `base` (initdb's file, with any earlier testbed section removed) plus the testbed section.
/// Later lines win in `postgresql.conf`, so `extra` lines override ours.
pub(super) fn render_conf(base: &str, s: &ConfSettings<'_>) -> String {
    let mut out = match base.find(CONF_MARKER) {
        Some(at) => base[..at].to_owned(),
        None => base.to_owned(),
    };
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(CONF_MARKER);
    out.push('\n');
    let socket_dir = s.socket_dir.display().to_string();
    let lines = [
        ("listen_addresses", quote_literal("127.0.0.1")),
        ("port", s.port.to_string()),
        ("unix_socket_directories", quote_literal(&socket_dir)),
        ("max_connections", s.max_connections.to_string()),
        ("password_encryption", quote_literal(s.password_encryption)),
        // A throwaway cluster: durability costs time and buys nothing.
        ("fsync", "off".into()),
        ("synchronous_commit", "off".into()),
        ("full_page_writes", "off".into()),
        ("shared_buffers", "'32MB'".into()),
        // Streaming replicas (`PgServer::start_replica`): PostgreSQL 15's defaults, spelled
        // out, plus some WAL kept for a replica that is stopped for a while.
        ("wal_level", "replica".into()),
        ("max_wal_senders", "4".into()),
        ("wal_keep_size", "'64MB'".into()),
        ("hot_standby", "on".into()),
        // pg_ctl -l sends stderr to a file in the data dir.
        ("logging_collector", "off".into()),
        ("log_destination", "'stderr'".into()),
        ("log_line_prefix", "'%m [%p] %q%u@%d '".into()),
    ];
    for (key, value) in lines {
        let _ = writeln!(out, "{key} = {value}");
    }
    for line in s.extra {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `"name"` with embedded quotes doubled.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with embedded quotes doubled (`standard_conforming_strings` is on since 9.1).
pub(super) fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A libpq key/value DSN value: bare when safe, else single-quoted with `\` escapes.
pub(super) fn dsn_value(value: &str) -> String {
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\' || c == '=');
    if plain {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(port: u16, extra: &[String]) -> ConfSettings<'_> {
        ConfSettings {
            port,
            socket_dir: Path::new("/tmp/sp"),
            max_connections: 300,
            password_encryption: "scram-sha-256",
            extra,
        }
    }

    #[test]
    fn conf_section_replaces_the_previous_one() {
        let extra = vec!["work_mem = '7MB'".to_owned()];
        let first = render_conf("#initdb\nmax_wal_size = 1GB", &settings(5001, &extra));
        let second = render_conf(&first, &settings(5002, &extra));
        assert_eq!(second.matches(CONF_MARKER).count(), 1);
        assert!(
            second.starts_with("#initdb\nmax_wal_size = 1GB\n"),
            "{second}"
        );
        assert!(second.contains("\nport = 5002\n"), "{second}");
        assert!(!second.contains("5001"), "{second}");
        assert!(second.contains("unix_socket_directories = '/tmp/sp'\n"));
        assert!(
            second.ends_with("work_mem = '7MB'\n"),
            "extra lines come last: {second}"
        );
    }

    #[test]
    fn sql_quoting_doubles_quotes() {
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn dsn_values_are_quoted_only_when_needed() {
        assert_eq!(dsn_value("secret"), "secret");
        assert_eq!(dsn_value(""), "''");
        assert_eq!(dsn_value("a b"), "'a b'");
        assert_eq!(dsn_value(r"it's\x"), r"'it\'s\\x'");
    }
}
