//! Session settings that follow a client from one server connection to the next.
//!
//! A client's settings are its startup parameters plus what it changed with `SET`/`RESET`
//! (read back from the server before the connection is returned). On checkout the server
//! connection is brought in line in one round trip: `set_config` for values that differ
//! (it parses values like the startup packet, lists included) and `RESET` for settings another
//! client left behind that this client never asked for.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::backend::ServerConn;
use crate::error::BackendError;

/// Reported parameters (ParameterStatus) a client may change with SET; a report of one updates
/// the client's settings even when it never set it explicitly.
const FOLLOWS_CLIENT: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
    "search_path",
];

/// True for reported parameters that belong to the client's session state.
pub fn follows_client(name: &str) -> bool {
    FOLLOWS_CLIENT.contains(&name)
}

/// Brings `conn`'s settings in line with `wanted`. Free when `conn` was last synced with this
/// very `wanted` and its parameters have not changed since ([`ServerConn::synced`]): clients
/// with the same startup settings share one map, so the common checkout compares nothing.
///
/// # Errors
/// I/O failures, or the server rejecting a value (the client's own mistake, e.g. a bad
/// TimeZone in its startup packet).
pub async fn sync_settings(
    conn: &mut ServerConn,
    wanted: &Arc<BTreeMap<String, String>>,
) -> Result<(), BackendError> {
    if conn.synced.as_ref().is_some_and(|s| Arc::ptr_eq(s, wanted)) {
        return Ok(());
    }
    sync_settings_now(conn, wanted).await?;
    conn.synced = Some(wanted.clone());
    Ok(())
}

/// [`sync_settings`] without the shortcut.
async fn sync_settings_now(
    conn: &mut ServerConn,
    wanted: &BTreeMap<String, String>,
) -> Result<(), BackendError> {
    let set: Vec<(&String, &String)> = wanted
        .iter()
        .filter(|(k, v)| conn.params.get(*k) != Some(*v))
        .collect();
    // Settings changed here by an earlier client that this one does not have.
    let reset: Vec<String> = conn
        .params
        .iter()
        .filter(|(k, v)| !wanted.contains_key(*k) && conn.startup_params.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    if set.is_empty() && reset.is_empty() {
        return Ok(());
    }
    let mut sql = String::new();
    for k in &reset {
        sql.push_str(&format!("RESET {}; ", ident(k)));
    }
    let calls: Vec<String> = set
        .iter()
        .map(|(k, v)| {
            format!(
                "pg_catalog.set_config({}, {}, false)",
                literal(k),
                literal(v)
            )
        })
        .collect();
    if calls.is_empty() {
        sql.push_str("SELECT 1");
    } else {
        sql.push_str(&format!("SELECT {}", calls.join(", ")));
    }
    conn.run(&sql).await?;
    for k in reset {
        match conn.startup_params.get(&k) {
            Some(v) => conn.params.insert(k, v.clone()),
            None => conn.params.remove(&k),
        };
    }
    for (k, v) in set {
        conn.params.insert(k.clone(), v.clone());
    }
    Ok(())
}

/// Reads the current values of `names` (`None` for a setting that does not exist).
///
/// # Errors
/// I/O failures or an error from the server.
pub async fn read_settings(
    conn: &mut ServerConn,
    names: &[String],
) -> Result<Vec<(String, Option<String>)>, BackendError> {
    let calls: Vec<String> = names
        .iter()
        .map(|n| format!("pg_catalog.current_setting({}, true)", literal(n)))
        .collect();
    let (_, row) = conn
        .run_returning(&format!("SELECT {}", calls.join(", ")))
        .await?;
    Ok(names
        .iter()
        .cloned()
        .zip(row.into_iter().chain(std::iter::repeat(None)))
        .collect())
}

/// A SQL escape-string literal: correct whatever `standard_conforming_strings` is.
fn literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// A quoted identifier.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_hostile_values() {
        assert_eq!(literal(r"a'b\c"), r"E'a''b\\c'");
        assert_eq!(ident("my\"guc"), "\"my\"\"guc\"");
    }
}
