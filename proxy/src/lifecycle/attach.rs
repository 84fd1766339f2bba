//! Attaching a server connection to a client session: the replica the router chose, falling
//! back to the primary when that replica cannot be reached, with dead idle connections skipped
//! and the client's session state replayed.

use std::sync::Arc;

use sidepool_pool::{ErrorSide, PoolError};
use tracing::debug;

use super::server_side::{BackendPool, Conn, ConnectError, DEAD_RETRIES, ServerSide, SyncError};
use crate::error::BackendError;
use crate::route::Lease;
use crate::session::ClientInfo;

/// A server connection attached to a client session.
#[derive(Debug)]
pub struct Attached<S: ServerSide> {
    /// The connection.
    pub conn: Conn<S>,
    /// The replica it belongs to (counted as outstanding while attached), `None` for the
    /// primary.
    pub replica: Option<Lease>,
}

/// Why no server connection could be attached.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutFailure<E: std::error::Error + 'static> {
    /// The pool gave none: wait timeout, too many waiting, closed, or opening one failed.
    #[error("no server connection from backend {addr}")]
    Pool {
        /// `host:port` of the backend.
        addr: String,
        /// The pool's error.
        #[source]
        error: PoolError<E>,
    },
    /// Every idle connection tried had been closed by the server.
    #[error("every idle server connection to {addr} was closed by the server")]
    AllDead {
        /// `host:port` of the backend.
        addr: String,
    },
    /// The server refused the client's session state (its error is for the client).
    #[error("the server refused the session's settings")]
    Refused(#[source] BackendError),
    /// The connection failed while taking the client's session state.
    #[error("server connection to {addr} failed")]
    Failed {
        /// `host:port` of the backend.
        addr: String,
        /// What failed.
        #[source]
        error: BackendError,
    },
}

impl<E: std::error::Error + 'static> CheckoutFailure<E> {
    /// Whether the backend could not be reached, so that another backend may serve the client
    /// (nothing of its request was sent yet).
    pub fn unreachable(&self) -> bool {
        match self {
            CheckoutFailure::Pool { error, .. } => error.kind().side() == ErrorSide::Server,
            CheckoutFailure::AllDead { .. } | CheckoutFailure::Failed { .. } => true,
            CheckoutFailure::Refused(_) => false,
        }
    }
}

/// Attaches a server connection for the client `info` with session `state`: from replica
/// `replica` if given, falling back to the primary when that replica cannot be reached (the
/// replica is then reported to its health check), else from the primary. Waits first while
/// the pool is paused (console `PAUSE`).
///
/// # Errors
/// The checkout of the last backend tried failed; see [`CheckoutFailure`].
pub async fn attach<S: ServerSide>(
    svc: &S,
    key: &<S::Connector as sidepool_pool::Connector>::Key,
    info: &Arc<ClientInfo>,
    state: &S::State,
    replica: Option<usize>,
) -> Result<Attached<S>, CheckoutFailure<ConnectError<S>>> {
    let core = svc.pool_core();
    core.until_resumed().await;
    if let Some(i) = replica {
        let r = &core.replicas[i];
        let lease = r.lease();
        match checkout::<S>(svc.replica(i), &r.addr, key, info, state).await {
            Ok(conn) => {
                return Ok(Attached {
                    conn,
                    replica: Some(lease),
                });
            }
            Err(f) if f.unreachable() => {
                debug!(backend = %r.addr, "replica unreachable at checkout; the read goes to the primary");
                r.connect_failed();
            }
            Err(f) => return Err(f),
        }
    }
    let conn = checkout::<S>(svc.primary(), &core.primary_addr, key, info, state).await?;
    Ok(Attached {
        conn,
        replica: None,
    })
}

/// One backend's checkout: a live connection ([`checkout_live`]) brought in line with `state`.
///
/// # Errors
/// See [`CheckoutFailure`]; a connection that failed is closed, one whose server refused the
/// state goes back to the pool.
pub async fn checkout<S: ServerSide>(
    pool: &BackendPool<S>,
    addr: &str,
    key: &<S::Connector as sidepool_pool::Connector>::Key,
    info: &Arc<ClientInfo>,
    state: &S::State,
) -> Result<Conn<S>, CheckoutFailure<ConnectError<S>>> {
    let mut conn = checkout_live::<S>(pool, addr, key, info).await?;
    match S::sync(&mut conn, state).await {
        Ok(()) => Ok(conn),
        Err(SyncError::Refused(e)) => {
            conn.release();
            Err(CheckoutFailure::Refused(e))
        }
        Err(SyncError::Failed(error)) => {
            conn.discard();
            Err(CheckoutFailure::Failed {
                addr: addr.to_owned(),
                error,
            })
        }
    }
}

/// A connection from `pool` that the server has not closed: skips (and closes) up to
/// [`DEAD_RETRIES`] idle connections that the server closed meanwhile. Health checks use it
/// as it is; sessions through [`attach`].
///
/// # Errors
/// [`CheckoutFailure::Pool`] or [`CheckoutFailure::AllDead`].
pub async fn checkout_live<S: ServerSide>(
    pool: &BackendPool<S>,
    addr: &str,
    key: &<S::Connector as sidepool_pool::Connector>::Key,
    owner: &Arc<ClientInfo>,
) -> Result<Conn<S>, CheckoutFailure<ConnectError<S>>> {
    for _ in 0..DEAD_RETRIES {
        let mut conn = match pool.get(key, owner.clone()).await {
            Ok(c) => c,
            Err(error) => {
                return Err(CheckoutFailure::Pool {
                    addr: addr.to_owned(),
                    error,
                });
            }
        };
        if !S::is_dead(&mut conn) {
            return Ok(conn);
        }
        debug!(
            backend = addr,
            "idle server connection was closed by the server; discarding it"
        );
        conn.discard();
    }
    Err(CheckoutFailure::AllDead {
        addr: addr.to_owned(),
    })
}

/// A live connection for a replica health check, owned by a stand-in client named
/// `sidepool replica check` (so the check counts against the replica's `max_open` like
/// everything else, and shows as such in `SHOW SERVERS`).
///
/// # Errors
/// Why no connection could be had, as the text the check reports.
pub async fn checkout_for_check<S: ServerSide>(
    pool: &BackendPool<S>,
    pool_name: &Arc<str>,
    key: &<S::Connector as sidepool_pool::Connector>::Key,
    user: String,
    database: String,
) -> Result<Conn<S>, String> {
    let owner = Arc::new(ClientInfo::new(
        pool_name.clone(),
        ([0, 0, 0, 0], 0).into(),
        user,
        database,
        "sidepool replica check".to_owned(),
    ));
    checkout_live::<S>(pool, "replica", key, &owner)
        .await
        .map_err(|e| match e {
            CheckoutFailure::AllDead { .. } => {
                "every idle connection was closed by the server".to_owned()
            }
            CheckoutFailure::Pool { error, .. } => crate::error::chain(&error),
            other => crate::error::chain(&other),
        })
}
