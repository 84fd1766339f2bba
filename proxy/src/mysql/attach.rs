//! What the session lifecycle ([`crate::lifecycle`]) needs of MySQL server connections: the
//! pools, the dead-connection check, replaying the client's session state (schema, variables,
//! character set), and the reset before another client may use a connection (`ROLLBACK`, or
//! `COM_RESET_CONNECTION` when the session changed more than a transaction).

use sidepool_protocol::mysql::response::{self, Expect};

use super::backend::{MyConnector, ServerConn, SessionState};
use super::replay;
use super::service::{MyPool, MyService};
use crate::error::BackendError;
use crate::lifecycle::{Reset, ServerSide, SyncError};
use crate::service::PoolCore;

impl ServerSide for MyService {
    type Connector = MyConnector;
    type State = SessionState;

    fn pool_core(&self) -> &PoolCore {
        &self.core
    }

    fn primary(&self) -> &MyPool {
        &self.primary
    }

    fn replica(&self, index: usize) -> &MyPool {
        &self.replicas[index]
    }

    fn is_dead(conn: &mut ServerConn) -> bool {
        conn.is_dead()
    }

    async fn sync(conn: &mut ServerConn, state: &SessionState) -> Result<(), SyncError> {
        match replay::sync(conn, state).await {
            Ok(None) => Ok(()),
            Ok(Some(err)) => Err(SyncError::Refused(refusal(err))),
            Err(e) => Err(SyncError::Failed(e)),
        }
    }

    /// `COM_RESET_CONNECTION` rolls back too, so a session reset needs no `ROLLBACK` first.
    async fn reset(conn: &mut ServerConn, reset: Reset) -> Result<(), BackendError> {
        if reset.session {
            conn.reset().await
        } else if reset.rollback {
            conn.must(b"\x03ROLLBACK", Expect::ResultSets)
                .await
                .map(drop)
        } else {
            Ok(())
        }
    }
}

/// The server's ERR packet as an error that keeps the packet to forward as it is.
fn refusal(payload: bytes::Bytes) -> BackendError {
    let (code, message) = match response::parse_err(&payload) {
        Ok(e) => (e.code, e.message),
        Err(_) => (0, String::from_utf8_lossy(&payload).into_owned()),
    };
    BackendError::MySqlServer {
        code,
        message,
        payload,
    }
}
