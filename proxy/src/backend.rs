//! The protocol-blind view of one backend's pool. The pool is generic over its connector
//! (`Pool<PgConnector, _>`, `Pool<MyConnector, _>`, …); [`Backend`] is the object-safe view of
//! it that the pool core, the route stage, the leak watcher and the console need.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sidepool_pool::{Connector, Pool, PoolSettings, Stats};
use tokio::time::Instant;

use crate::session::ClientInfo;

/// A boxed future, for the object-safe traits below.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One checked-out server connection and the client holding it.
#[derive(Debug, Clone)]
pub struct Holder {
    /// The connection's id within its pool.
    pub id: u64,
    /// When it was checked out.
    pub checked_out_at: Instant,
    /// When the server connection was opened.
    pub conn_created_at: Instant,
    /// The client holding it.
    pub client: Arc<ClientInfo>,
}

/// The protocol-blind view of one backend's pool.
pub trait Backend: Send + Sync + Debug {
    /// A statistics snapshot.
    fn stats(&self) -> Stats;
    /// Every checked-out connection with its holder.
    fn holders(&self) -> Vec<Holder>;
    /// New limits (reload); see `Pool::set_settings`.
    fn set_settings(&self, settings: PoolSettings);
    /// The limits in force.
    fn settings(&self) -> PoolSettings;
    /// Closes the pool: idle connections now, checked-out ones when returned.
    fn close(&self) -> BoxFuture<'_, ()>;
}

impl<C: Connector> Backend for Pool<C, Arc<ClientInfo>> {
    fn stats(&self) -> Stats {
        Pool::stats(self)
    }

    fn holders(&self) -> Vec<Holder> {
        self.checkouts()
            .into_iter()
            .map(|c| Holder {
                id: c.id,
                checked_out_at: c.checked_out_at,
                conn_created_at: c.conn_created_at,
                client: c.owner,
            })
            .collect()
    }

    fn set_settings(&self, settings: PoolSettings) {
        Pool::set_settings(self, settings);
    }

    fn settings(&self) -> PoolSettings {
        Pool::settings(self)
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(Pool::close(self))
    }
}
