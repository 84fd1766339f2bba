//! The errors sidepool itself sends to PostgreSQL clients (docs/design.md §7): `sidepool:`
//! prefix, a code the driver understands, pool name and counts, and what to do.

use bytes::Bytes;
use sidepool_pool::PoolError;
use sidepool_protocol::pg::backend::{ErrorFields, Severity, error_response};

use crate::error::BackendError;
use crate::lifecycle::CheckoutFailure;

/// `too_many_connections`: pool exhausted, wait timeout, max_waiting, max_clients.
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// `connection_failure`: backend unreachable.
pub const CONNECTION_FAILURE: &str = "08006";
/// `admin_shutdown`.
pub const ADMIN_SHUTDOWN: &str = "57P01";
/// `idle_in_transaction_session_timeout`.
pub const IDLE_IN_TRANSACTION_TIMEOUT: &str = "25P03";
/// `invalid_password`.
pub const INVALID_PASSWORD: &str = "28P01";
/// `invalid_authorization_specification`.
pub const INVALID_AUTHORIZATION: &str = "28000";
/// `protocol_violation`.
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// `feature_not_supported`.
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// `query_canceled`: what PostgreSQL's own `statement_timeout` reports.
pub const QUERY_CANCELED: &str = "57014";

/// Builds an ErrorResponse with a hint.
pub fn error(severity: Severity, code: &str, message: &str, hint: Option<&str>) -> Bytes {
    error_response(&ErrorFields {
        hint,
        ..ErrorFields::new(severity, code, message)
    })
}

/// The ErrorResponse a client gets when checking out a server connection failed.
pub fn checkout_failed(
    pool: &str,
    backend: &str,
    severity: Severity,
    e: &PoolError<BackendError>,
) -> Bytes {
    match e {
        PoolError::WaitTimeout {
            waited,
            in_use,
            max_open,
            waiting,
        } => error(
            severity,
            TOO_MANY_CONNECTIONS,
            &format!(
                "sidepool: pool \"{pool}\" had no free server connection within {waited:?} \
                 ({in_use}/{max_open} in use, {waiting} waiting)"
            ),
            Some(
                "raise [pools.limits] max_open or wait_timeout, or find the clients that hold connections",
            ),
        ),
        PoolError::Rejected {
            in_use,
            max_open,
            waiting,
        } => error(
            severity,
            TOO_MANY_CONNECTIONS,
            &format!(
                "sidepool: pool \"{pool}\" has too many clients waiting \
                 ({in_use}/{max_open} in use, {waiting} waiting)"
            ),
            Some("raise [pools.limits] max_waiting or max_open, or send fewer concurrent queries"),
        ),
        PoolError::Connect(BackendError::Server { raw, .. }) => raw.clone(),
        PoolError::Connect(e) => error(
            severity,
            CONNECTION_FAILURE,
            &format!(
                "sidepool: cannot connect to backend {backend} of pool \"{pool}\": {}",
                chain(e)
            ),
            Some("check that the database is up and reachable from this pod"),
        ),
        PoolError::ConnectTimeout(after) => error(
            severity,
            CONNECTION_FAILURE,
            &format!(
                "sidepool: connecting to backend {backend} of pool \"{pool}\" timed out after {after:?}"
            ),
            Some(
                "check that the database is up and reachable, or raise [pools.limits] connect_timeout",
            ),
        ),
        PoolError::Closed => error(
            severity,
            ADMIN_SHUTDOWN,
            &format!("sidepool: pool \"{pool}\" is shutting down"),
            None,
        ),
    }
}

/// The error chain formatter, which is not PostgreSQL's: re-exported for the PostgreSQL stages.
pub use crate::error::chain;

/// The ErrorResponse a client gets when no server connection could be attached.
pub fn attach_failed(pool: &str, severity: Severity, f: &CheckoutFailure<BackendError>) -> Bytes {
    match f {
        CheckoutFailure::Pool { addr, error } => checkout_failed(pool, addr, severity, error),
        CheckoutFailure::AllDead { addr } => {
            let msg = format!(
                "sidepool: every idle server connection of pool \"{pool}\" to {addr} was closed \
                 by the server"
            );
            let hint = Some("the database may have restarted; retry");
            error(severity, CONNECTION_FAILURE, &msg, hint)
        }
        CheckoutFailure::Refused(BackendError::Server { fields, .. }) => {
            error(severity, &fields.code, &fields.message, None)
        }
        CheckoutFailure::Refused(other) | CheckoutFailure::Failed { error: other, .. } => {
            let msg = format!(
                "sidepool: server connection of pool \"{pool}\" failed: {}",
                chain(other)
            );
            error(severity, CONNECTION_FAILURE, &msg, None)
        }
    }
}
