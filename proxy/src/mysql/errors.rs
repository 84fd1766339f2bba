//! The errors sidepool itself sends to MySQL clients (docs/design.md §7): `sidepool:` prefix, an
//! error number the driver understands, pool name and counts, and what to do.

use sidepool_pool::PoolError;
use sidepool_protocol::mysql::packet;
use sidepool_protocol::mysql::response::err_packet;

use crate::error::BackendError;
use crate::error::chain;
use crate::lifecycle::CheckoutFailure;

/// `ER_CON_COUNT_ERROR` (1040, "Too many connections"): pool exhausted, wait timeout,
/// max_waiting, max_clients.
pub const TOO_MANY_CONNECTIONS: u16 = 1040;
/// `CR_CONN_HOST_ERROR` (2003, "Can't connect to MySQL server"): backend unreachable.
pub const CONN_HOST_ERROR: u16 = 2003;
/// `ER_ACCESS_DENIED_ERROR` (1045).
pub const ACCESS_DENIED: u16 = 1045;
/// `ER_CLIENT_INTERACTION_TIMEOUT` (4031): the session was ended for idling.
pub const CLIENT_INTERACTION_TIMEOUT: u16 = 4031;
/// `ER_UNKNOWN_STMT_HANDLER` (1243).
pub const UNKNOWN_STMT_HANDLER: u16 = 1243;
/// `ER_NOT_SUPPORTED_YET` (1235).
pub const NOT_SUPPORTED_YET: u16 = 1235;
/// `ER_SERVER_SHUTDOWN` (1053).
pub const SERVER_SHUTDOWN: u16 = 1053;
/// `ER_NET_PACKETS_OUT_OF_ORDER`-class protocol error (1156), for malformed client packets.
pub const PACKETS_OUT_OF_ORDER: u16 = 1156;
/// `ER_UNKNOWN_COM_ERROR` (1047): MariaDB's answer to COM_CHANGE_USER after three failures.
pub const UNKNOWN_COM_ERROR: u16 = 1047;
/// `ER_HANDSHAKE_ERROR` (1043).
pub const HANDSHAKE_ERROR: u16 = 1043;
/// `ER_SECURE_TRANSPORT_REQUIRED` (3159).
pub const SECURE_TRANSPORT_REQUIRED: u16 = 3159;

/// `ER_QUERY_TIMEOUT`: MySQL's and TiDB's `max_execution_time` error (SQLSTATE HY000).
pub const QUERY_TIMEOUT: u16 = 3024;

/// SQLSTATE per error number (MySQL's `sql_state.h`).
fn state(code: u16) -> &'static str {
    match code {
        TOO_MANY_CONNECTIONS => "08004",
        ACCESS_DENIED => "28000",
        HANDSHAKE_ERROR | PACKETS_OUT_OF_ORDER | SERVER_SHUTDOWN | UNKNOWN_COM_ERROR => "08S01",
        _ => "HY000",
    }
}

/// The ERR payload a client gets when no server connection could be attached.
pub fn attach_failed(pool: &str, f: &CheckoutFailure<BackendError>) -> Vec<u8> {
    match f {
        CheckoutFailure::Pool { addr, error } => checkout_failed(pool, addr, error),
        CheckoutFailure::AllDead { addr } => {
            let msg = format!(
                "sidepool: every idle server connection of pool \"{pool}\" to {addr} was closed \
                 by the server; retry"
            );
            err_packet(CONN_HOST_ERROR, "HY000", &msg)
        }
        CheckoutFailure::Refused(BackendError::MySqlServer { payload, .. }) => payload.to_vec(),
        CheckoutFailure::Refused(other) | CheckoutFailure::Failed { error: other, .. } => {
            let msg = format!(
                "sidepool: server connection of pool \"{pool}\" failed: {}",
                chain(other)
            );
            err_packet(CONN_HOST_ERROR, "HY000", &msg)
        }
    }
}

/// An ERR packet (header included) with sequence id `seq`.
pub fn error(seq: u8, code: u16, message: &str) -> Vec<u8> {
    packet::encode(seq, &err_packet(code, state(code), message))
}

/// An ERR payload in the form sent before the greeting, when the client's capabilities are
/// not known yet: code and message without the `#` SQLSTATE marker (as MySQL's own "Too many
/// connections" before the handshake). Drivers would otherwise show `#HY000` in the message.
pub fn before_greeting(payload: &[u8]) -> Vec<u8> {
    match payload {
        [0xFF, c0, c1, b'#', _, _, _, _, _, message @ ..] => {
            let mut out = vec![0xFF, *c0, *c1];
            out.extend_from_slice(message);
            out
        }
        other => other.to_vec(),
    }
}

/// The server's text for error 1045, so drivers and people read it as usual.
pub fn access_denied(user: &str, host: std::net::IpAddr, used_password: bool) -> String {
    format!(
        "Access denied for user '{user}'@'{host}' (using password: {})",
        if used_password { "YES" } else { "NO" }
    )
}

/// The ERR payload a client gets when checking out a server connection failed.
pub fn checkout_failed(pool: &str, backend: &str, e: &PoolError<BackendError>) -> Vec<u8> {
    let (code, msg) = match e {
        PoolError::WaitTimeout {
            waited,
            in_use,
            max_open,
            waiting,
        } => (
            TOO_MANY_CONNECTIONS,
            format!(
                "sidepool: pool \"{pool}\" had no free server connection within {:?} \
                 ({in_use}/{max_open} in use, {waiting} waiting); raise [pools.limits] max_open \
                 or wait_timeout, or find the clients that hold connections",
                // Tenths of a second: the configured wait, not the timer's jitter.
                std::time::Duration::from_millis((waited.as_millis() as u64 + 50) / 100 * 100)
            ),
        ),
        PoolError::Rejected {
            in_use,
            max_open,
            waiting,
        } => (
            TOO_MANY_CONNECTIONS,
            format!(
                "sidepool: pool \"{pool}\" has too many clients waiting ({in_use}/{max_open} in \
                 use, {waiting} waiting); raise [pools.limits] max_waiting or max_open"
            ),
        ),
        PoolError::Connect(BackendError::MySqlServer { payload, .. }) => return payload.to_vec(),
        PoolError::Connect(e) => (
            CONN_HOST_ERROR,
            format!(
                "sidepool: Can't connect to MySQL server on '{backend}' (pool \"{pool}\"): {}; \
                 check that the database is up and reachable from this pod",
                chain(e)
            ),
        ),
        PoolError::ConnectTimeout(after) => (
            CONN_HOST_ERROR,
            format!(
                "sidepool: Can't connect to MySQL server on '{backend}' (pool \"{pool}\"): timed \
                 out after {after:?}; check that the database is up, or raise [pools.limits] \
                 connect_timeout"
            ),
        ),
        PoolError::Closed => (
            SERVER_SHUTDOWN,
            format!("sidepool: pool \"{pool}\" is shutting down"),
        ),
    };
    err_packet(code, state(code), &msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_before_the_greeting_have_no_sqlstate_marker() {
        let with = err_packet(2003, "HY000", "sidepool: down");
        assert_eq!(
            before_greeting(&with),
            b"\xFF\xD3\x07sidepool: down".to_vec()
        );
        let without = [0xFF, 0x10, 0x04, b'x'];
        assert_eq!(before_greeting(&without), without.to_vec());
        assert_eq!(before_greeting(&[]), Vec::<u8>::new());
    }

    #[test]
    fn causes_are_not_repeated() {
        let e = BackendError::Io {
            addr: "db:3306".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(
            chain(&e),
            "cannot reach backend db:3306: connection refused"
        );
    }
}
