//! What the pool needs from a database: a way to open a connection for a key.

use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;

/// Opens server connections. The pool knows nothing else about them: no protocol, no health
/// check (the caller decides with [`crate::Pooled::release`] or [`crate::Pooled::discard`]).
pub trait Connector: Send + Sync + 'static {
    /// A server connection. Dropping it closes it.
    type Conn: Send + 'static;
    /// What a connection belongs to, e.g. (user, database). Limits bound the sum over keys.
    type Key: Clone + Eq + Hash + Debug + Send + Sync + 'static;
    /// Why a connect failed; handed to the caller as [`crate::PoolError::Connect`].
    type Error: std::error::Error + Send + Sync + 'static;

    /// Opens one connection for `key`, authentication included. The pool bounds it with
    /// `connect_timeout` and may drop the future (timeout, cancelled checkout).
    fn connect(
        &self,
        key: &Self::Key,
    ) -> impl Future<Output = Result<Self::Conn, Self::Error>> + Send;
}
