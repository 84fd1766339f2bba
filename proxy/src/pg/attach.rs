//! What the session lifecycle ([`crate::lifecycle`]) needs of PostgreSQL server connections:
//! the pools, the dead-connection check, replaying the client's settings, and the reset before
//! another client may use a connection (`ROLLBACK`, `DISCARD ALL`).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::backend::{PgConnector, ServerConn};
use super::replay;
use super::service::{PgPool, PgService};
use crate::error::BackendError;
use crate::lifecycle::{Reset, ServerSide, SyncError};
use crate::service::PoolCore;

impl ServerSide for PgService {
    type Connector = PgConnector;
    /// The client's settings (startup parameters plus what it changed).
    type State = Arc<BTreeMap<String, String>>;

    fn pool_core(&self) -> &PoolCore {
        &self.core
    }

    fn primary(&self) -> &PgPool {
        &self.primary
    }

    fn replica(&self, index: usize) -> &PgPool {
        &self.replicas[index]
    }

    fn is_dead(conn: &mut ServerConn) -> bool {
        conn.is_dead()
    }

    async fn sync(conn: &mut ServerConn, settings: &Self::State) -> Result<(), SyncError> {
        replay::sync_settings(conn, settings)
            .await
            .map_err(|e| match e {
                e @ BackendError::Server { .. } => SyncError::Refused(e),
                other => SyncError::Failed(other),
            })
    }

    async fn reset(conn: &mut ServerConn, reset: Reset) -> Result<(), BackendError> {
        if reset.rollback {
            conn.run("ROLLBACK").await?;
        }
        if reset.session {
            conn.params = conn.startup_params.clone();
            conn.synced = None;
            conn.prepared.clear();
            conn.run("DISCARD ALL").await?;
        }
        Ok(())
    }
}
