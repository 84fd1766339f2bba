//! Session state that follows a client from one server connection to the next: the schema and
//! the session variables it changed (read back from the server after a change, so values are
//! the server's canonical ones). On checkout the connection is brought in line: a connection
//! carrying another client's variables is reset (COM_RESET_CONNECTION), then one `SET SESSION`
//! and one COM_INIT_DB as needed.

use bytes::Bytes;
use sidepool_protocol::mysql::command;
use sidepool_protocol::mysql::response::Expect;

use super::backend::{Reply, ServerConn, SessionState};
use crate::error::BackendError;

/// Brings `conn` in line with `wanted`. `Ok(Some(err))`: the server refused the client's own
/// state (an ERR payload to forward, e.g. the schema was dropped).
///
/// # Errors
/// I/O failures.
pub async fn sync(
    conn: &mut ServerConn,
    wanted: &SessionState,
) -> Result<Option<Bytes>, BackendError> {
    let foreign = conn
        .state
        .vars
        .iter()
        .any(|(k, v)| wanted.vars.get(k) != Some(v));
    if foreign {
        conn.reset().await?;
    }
    let set: Vec<String> = wanted
        .vars
        .iter()
        .filter(|(k, v)| conn.state.vars.get(*k) != Some(*v))
        .map(|(k, v)| format!("@@session.{k} = {v}"))
        .collect();
    if !set.is_empty() {
        if let Reply::Err(e) = conn.query(&format!("SET {}", set.join(", "))).await? {
            return Ok(Some(e));
        }
        conn.state.vars = wanted.vars.clone();
    }
    if let Some(schema) = &wanted.schema
        && conn.state.schema.as_ref() != Some(schema)
    {
        let mut payload = vec![command::INIT_DB];
        payload.extend_from_slice(schema.as_bytes());
        if let Reply::Err(e) = conn.command(&payload, Expect::Ok).await? {
            return Ok(Some(e));
        }
        conn.state.schema = Some(schema.clone());
    }
    Ok(None)
}

/// Reads back the current values of `names` (valid identifiers only) and, with `schema`, the
/// current schema, into both the client's state and the connection's.
///
/// # Errors
/// I/O failures or an ERR (the caller closes the connection: its state is unknown).
pub async fn read_back(
    conn: &mut ServerConn,
    names: &[String],
    schema: bool,
    client: &mut SessionState,
) -> Result<(), BackendError> {
    let names: Vec<&String> = names.iter().filter(|n| is_identifier(n)).collect();
    if names.is_empty() && !schema {
        return Ok(());
    }
    let mut columns: Vec<String> = vec!["DATABASE()".into()];
    columns.extend(names.iter().map(|n| format!("@@session.{n}")));
    let row = match conn
        .query(&format!("SELECT {}", columns.join(", ")))
        .await?
    {
        Reply::Rows(rows) => rows.into_iter().next().unwrap_or_default(),
        Reply::Err(raw) => {
            return Err(BackendError::MySqlServer {
                code: 0,
                message: String::from_utf8_lossy(&raw).into_owned(),
                payload: raw,
            });
        }
        _ => Vec::new(),
    };
    let mut values = row.into_iter();
    let db = values.next().flatten();
    if schema {
        client.schema = db.clone();
        conn.state.schema = db;
    }
    for (name, value) in names.into_iter().zip(values) {
        let literal = literal(value.as_deref());
        client.vars.insert(name.clone(), literal.clone());
        conn.state.vars.insert(name.clone(), literal);
    }
    Ok(())
}

/// A variable name sidepool may put into SQL.
fn is_identifier(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A value as SQL: NULL, a bare integer, or a quoted string.
fn literal(value: Option<&str>) -> String {
    match value {
        None => "NULL".into(),
        Some(v)
            if !v.is_empty()
                && v.trim_start_matches('-')
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                && v != "-" =>
        {
            v.to_owned()
        }
        Some(v) => format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_safe_literals() {
        assert_eq!(literal(None), "NULL");
        assert_eq!(literal(Some("0")), "0");
        assert_eq!(literal(Some("-5")), "-5");
        assert_eq!(literal(Some("-")), "'-'");
        assert_eq!(literal(Some("")), "''");
        assert_eq!(literal(Some("a'b\\c")), "'a''b\\\\c'");
        assert!(is_identifier("sql_mode"));
        assert!(!is_identifier("x;drop"));
    }
}
