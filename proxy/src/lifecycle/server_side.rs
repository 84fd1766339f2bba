//! What the lifecycle needs of a protocol's server side ([`ServerSide`]), the types it names,
//! and the budgets every protocol shares.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sidepool_pool::{Connector, Pool, Pooled};

use crate::error::BackendError;
use crate::service::PoolCore;
use crate::session::ClientInfo;

/// Budget for the rollback and reset of a connection before it goes back to the pool; past it
/// the connection is closed.
pub const RESET_TIMEOUT: Duration = Duration::from_secs(10);
/// Reused idle connections found dead at checkout before the checkout gives up on a backend.
pub const DEAD_RETRIES: usize = 3;
/// How much a peer may send while sidepool writes to it (see [`crate::io::write_reading`]): a
/// relay that only reads one side while writing the other deadlocks when both peers write
/// before they read.
pub const INBOX_CAP: usize = 64 << 20;

/// A checked-out server connection of protocol `S`, owned by a client session.
pub type Conn<S> = Pooled<<S as ServerSide>::Connector, Arc<ClientInfo>>;
/// The pool of one backend of protocol `S`.
pub type BackendPool<S> = Pool<<S as ServerSide>::Connector, Arc<ClientInfo>>;
/// The error a connector of protocol `S` fails with.
pub type ConnectError<S> = <<S as ServerSide>::Connector as Connector>::Error;

/// What the lifecycle needs of a protocol's server connections.
pub trait ServerSide: Send + Sync + 'static {
    /// Opens the protocol's server connections.
    type Connector: Connector;
    /// The client's session state that a connection is brought in line with at checkout
    /// (settings, schema, character set, …).
    type State: Sync + ?Sized;

    /// The protocol-neutral part of the pool.
    fn pool_core(&self) -> &PoolCore;
    /// The primary's pool.
    fn primary(&self) -> &BackendPool<Self>;
    /// The pool of replica `index` (the index into [`PoolCore::replicas`]).
    fn replica(&self, index: usize) -> &BackendPool<Self>;

    /// Whether an idle connection was closed by the server meanwhile (checked at checkout).
    fn is_dead(conn: &mut <Self::Connector as Connector>::Conn) -> bool;

    /// Brings `conn` in line with the client's `state`.
    ///
    /// # Errors
    /// [`SyncError::Refused`] when the server refused a setting (the client gets its error, the
    /// connection is fine); [`SyncError::Failed`] when the connection failed.
    fn sync<'a>(
        conn: &'a mut <Self::Connector as Connector>::Conn,
        state: &'a Self::State,
    ) -> impl Future<Output = Result<(), SyncError>> + Send + 'a;

    /// Makes `conn` fit for another client: rolls back an open transaction
    /// ([`Reset::rollback`]) and, with [`Reset::session`], resets the whole session state.
    ///
    /// # Errors
    /// The connection failed or the server refused; it is then closed.
    fn reset(
        conn: &mut <Self::Connector as Connector>::Conn,
        reset: Reset,
    ) -> impl Future<Output = Result<(), BackendError>> + Send + '_;
}

/// Why bringing a connection in line with the client's state failed.
#[derive(Debug)]
pub enum SyncError {
    /// The server refused a setting: the client gets this error; the connection is fine.
    Refused(BackendError),
    /// The connection failed: it is closed.
    Failed(BackendError),
}

/// What a connection needs before another client may use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reset {
    /// A transaction is open: roll it back.
    pub rollback: bool,
    /// The client changed session state that is not read back (session mode, pinned state,
    /// settings it left dirty): reset the whole session (`DISCARD ALL`, `COM_RESET_CONNECTION`).
    pub session: bool,
}
