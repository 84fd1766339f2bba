//! Why a checkout failed.

use std::time::Duration;

/// Result of a checkout.
pub type Result<T, E> = std::result::Result<T, PoolError<E>>;

/// Why [`crate::Pool::get`] gave no connection. `E` is the connector's error.
///
/// The texts name the counts an operator needs (`20/20 in use, 37 waiting`); `proxy` adds the
/// `sidepool:` prefix, the pool name and the database's error code. [`PoolError::Connect`]'s
/// text leaves the cause to [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
pub enum PoolError<E> {
    /// No connection became free within `wait_timeout`.
    #[error(
        "no server connection became free within {waited:?} ({in_use}/{max_open} in use, \
         {waiting} waiting)"
    )]
    WaitTimeout {
        /// How long the checkout waited.
        waited: Duration,
        /// Connections in use when it gave up.
        in_use: u32,
        /// The pool's `max_open` then.
        max_open: u32,
        /// Checkouts still waiting then.
        waiting: u32,
    },
    /// `max_waiting` checkouts were already waiting; this one failed at once.
    #[error(
        "too many clients are waiting for a server connection ({in_use}/{max_open} in use, \
         {waiting} waiting)"
    )]
    Rejected {
        /// Connections in use.
        in_use: u32,
        /// The pool's `max_open`.
        max_open: u32,
        /// Checkouts waiting (= `max_waiting`).
        waiting: u32,
    },
    /// The connector failed (unreachable server, wrong password, …): returned at once, never
    /// turned into a wait timeout.
    #[error("cannot open a server connection")]
    Connect(#[source] E),
    /// The connector took longer than `connect_timeout`.
    #[error("opening a server connection timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The pool was closed ([`crate::Pool::close`]).
    #[error("the pool is shutting down")]
    Closed,
}

impl<E> PoolError<E> {
    /// The error's kind, for metric labels and the retry/close decision.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PoolError::WaitTimeout { .. } => ErrorKind::WaitTimeout,
            PoolError::Rejected { .. } => ErrorKind::Rejected,
            PoolError::Connect(_) => ErrorKind::Connect,
            PoolError::ConnectTimeout(_) => ErrorKind::ConnectTimeout,
            PoolError::Closed => ErrorKind::Closed,
        }
    }
}

/// The closed set of [`PoolError`] kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// [`PoolError::WaitTimeout`]
    WaitTimeout,
    /// [`PoolError::Rejected`]
    Rejected,
    /// [`PoolError::Connect`]
    Connect,
    /// [`PoolError::ConnectTimeout`]
    ConnectTimeout,
    /// [`PoolError::Closed`]
    Closed,
}

/// Who is at fault for an error (pingora's `ErrorSource`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorSide {
    /// The server could not be reached or refused the login.
    Server,
    /// The pool itself: saturated or shutting down.
    Proxy,
}

impl ErrorKind {
    /// Metric label: `wait_timeout`, `rejected`, `connect`, `connect_timeout`, `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::WaitTimeout => "wait_timeout",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Connect => "connect",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::Closed => "closed",
        }
    }

    /// Which side is at fault.
    pub fn side(self) -> ErrorSide {
        match self {
            ErrorKind::Connect | ErrorKind::ConnectTimeout => ErrorSide::Server,
            ErrorKind::WaitTimeout | ErrorKind::Rejected | ErrorKind::Closed => ErrorSide::Proxy,
        }
    }
}
