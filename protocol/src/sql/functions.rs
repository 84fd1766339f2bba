//! Functions whose call makes a read statement a write (or ties it to one server's session).

use std::cmp::Ordering;

/// Built-in write functions, both dialects together: a PostgreSQL function name in a MySQL
/// statement (or the reverse) only sends that statement to the primary, which is never wrong.
const BUILTIN: &[&str] = &[
    // PostgreSQL: sequences (currval/lastval read session state that lives on the primary).
    "nextval",
    "setval",
    "currval",
    "lastval",
    // PostgreSQL: session and transaction state, notifications, server control.
    "set_config",
    "setseed",
    "pg_notify",
    "txid_current",
    "txid_current_if_assigned",
    "pg_current_xact_id",
    "pg_current_xact_id_if_assigned",
    "pg_export_snapshot",
    "pg_cancel_backend",
    "pg_terminate_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_switch_wal",
    "pg_switch_xlog",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_promote",
    "pg_import_system_collations",
    "pg_file_write",
    "pg_file_rename",
    "pg_file_unlink",
    "loread",
    "lowrite",
    // MySQL, MariaDB, TiDB: named locks, per-connection results, sequences.
    "get_lock",
    "release_lock",
    "release_all_locks",
    "is_free_lock",
    "is_used_lock",
    "last_insert_id",
    "found_rows",
    "row_count",
];

/// Built-in name prefixes: every function starting with one is a write function.
const BUILTIN_PREFIXES: &[&str] = &[
    "pg_advisory_",
    "pg_try_advisory_",
    "lo_",
    "dblink",
    "pg_logical_",
    "pg_replication_",
    "pg_create_",
    "pg_drop_",
    "pg_copy_",
    "pg_stat_reset",
];

/// Extra write functions from configuration, added to the built-in list.
///
/// Built once (at configuration load), consulted without allocating: names are kept lowercase
/// and sorted. A name `schema.fn` matches only calls written with that schema; a bare `fn`
/// matches calls with or without one. A trailing `*` makes a prefix (`audit_*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteFunctions {
    exact: Box<[Box<[u8]>]>,
    prefixes: Box<[Box<[u8]>]>,
}

impl WriteFunctions {
    /// No extra functions: only the built-in list applies.
    pub fn none() -> Self {
        Self::default()
    }

    /// The extra functions `names` (case-insensitive; surrounding whitespace and empty names
    /// ignored).
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut exact = Vec::new();
        let mut prefixes = Vec::new();
        for name in names {
            let name = name.as_ref().trim().to_ascii_lowercase();
            match name.strip_suffix('*') {
                Some(prefix) if !prefix.is_empty() => prefixes.push(prefix.as_bytes().into()),
                Some(_) => {}
                None if name.is_empty() => {}
                None => exact.push(name.into_bytes().into_boxed_slice()),
            }
        }
        exact.sort_unstable();
        exact.dedup();
        Self {
            exact: exact.into_boxed_slice(),
            prefixes: prefixes.into_boxed_slice(),
        }
    }

    /// Whether no extra function is configured.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }

    /// Whether a call of `name`, optionally qualified by `schema`, is a write (built-in or
    /// configured). Case-insensitive; allocation-free.
    pub fn is_write_call(&self, schema: Option<&[u8]>, name: &[u8]) -> bool {
        is_builtin(name)
            || self.matches(name.iter().copied())
            || schema.is_some_and(|schema| {
                let qualified = schema.iter().chain(b".").chain(name).copied();
                self.matches(qualified)
            })
    }

    fn matches(&self, name: impl Iterator<Item = u8> + Clone) -> bool {
        let lower = name.map(|b| b.to_ascii_lowercase());
        let found = self
            .exact
            .binary_search_by(|entry| cmp_iter(entry.iter().copied(), lower.clone()))
            .is_ok();
        found
            || self
                .prefixes
                .iter()
                .any(|prefix| starts_with(lower.clone(), prefix))
    }
}

fn cmp_iter(a: impl Iterator<Item = u8>, b: impl Iterator<Item = u8>) -> Ordering {
    a.cmp(b)
}

fn starts_with(mut name: impl Iterator<Item = u8>, prefix: &[u8]) -> bool {
    prefix.iter().all(|&p| name.next() == Some(p))
}

fn is_builtin(name: &[u8]) -> bool {
    BUILTIN
        .iter()
        .any(|f| name.eq_ignore_ascii_case(f.as_bytes()))
        || BUILTIN_PREFIXES.iter().any(|p| {
            name.get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p.as_bytes()))
        })
}
