//! Dameng DM8 pools: one listener per `[[pools]]` entry with `protocol = "dameng"`.
//!
//! Header-aware session passthrough (docs/design.md §8): each client checks out one server connection
//! (a plain TCP connection; the pool's FIFO queue, `wait_timeout` and `max_open` apply) and
//! keeps it for its whole session. Its own STARTUP and LOGIN are relayed byte for byte, so the
//! server checks the client's credentials and no `[[pools.users]]` are needed. [`relay`] frames
//! messages by their 64-byte header ([`sidepool_protocol::dm`]) without touching bodies, and
//! follows the transaction status of execute replies to apply idle and lifetime limits, leak
//! detection and graceful drain only outside a transaction. [`probe`] is the readiness check.
//!
//! A server session is never given to another client: DM logins are per user and sidepool
//! knows no way to reset a DM session, so the connection is closed when its client leaves.

pub mod probe;
pub mod relay;
pub mod service;

use std::net::SocketAddr;
use std::sync::Arc;

use sidepool_config::PoolConfig;
use sidepool_protocol::dm::FrameRules;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::context::Context;
use crate::error::{BackendError, SessionError, StartError};
use crate::lifecycle::{self, ClientSide, Reset, ServerSide, SyncError};
use crate::service::{PoolCore, Service};
use crate::session::ClientInfo;
use crate::telemetry::Role;

pub use self::service::{DmConnector, DmPool, DmService};

impl std::ops::Deref for DmService {
    type Target = PoolCore;

    fn deref(&self) -> &PoolCore {
        &self.core
    }
}

/// The session stage of a `protocol = "dameng"` pool.
///
/// # Errors
/// None today; the signature matches the other protocols' constructors.
pub fn service(p: &PoolConfig, ctx: &Context) -> Result<Arc<dyn Service>, StartError> {
    if p.tls.is_some() {
        warn!(pool = %p.name, "[pools.tls] is ignored for dameng pools: bytes are relayed as the client sends them");
    }
    let metrics = Arc::new(ctx.telemetry.pool_metrics(
        &p.name,
        &p.primary.to_string(),
        Role::Primary,
    ));
    let tcp = crate::net::shared(&p.tcp);
    let connector = DmConnector {
        addr: p.primary.to_string(),
        tcp: tcp.clone(),
    };
    let primary = DmPool::with_observer(
        connector,
        crate::settings::pool_settings(&p.limits),
        metrics.clone(),
    );
    Ok(Arc::new(DmService {
        core: PoolCore::new(p, Arc::new(primary.clone()), metrics, tcp),
        primary,
        rules: FrameRules::default(),
    }))
}

impl ClientSide for DmService {
    fn pool_core(&self) -> &PoolCore {
        &self.core
    }

    /// No DM error message format is known well enough to send one; the driver sees the
    /// connection closed before STARTUP is answered.
    async fn refuse(self: Arc<Self>, _stream: TcpStream, _message: String) -> bool {
        true
    }

    async fn session(
        self: Arc<Self>,
        client: TcpStream,
        addr: SocketAddr,
    ) -> Result<(), SessionError> {
        let core = &self.core;
        let info = Arc::new(ClientInfo::new(
            core.name.clone(),
            addr,
            String::new(),
            String::new(),
            String::new(),
        ));
        let _registered = core.sessions.register(&info);
        let server = tokio::select! {
            s = lifecycle::attach(&*self, &(), &info, &(), None) => s,
            () = info.killed() => {
                info!(reason = ?info.kill_reason(), "client ended while waiting for a server connection");
                return Ok(());
            }
        };
        let server = match server {
            Ok(s) => s.conn,
            Err(e) => {
                warn!(error = %crate::error::chain(&e), primary = %core.primary_addr,
                    "sidepool: no DM server connection for this client; closing its connection");
                return Ok(());
            }
        };
        let end = relay::run(&self, client, server, &info).await;
        debug!(end = ?end, "client session ended");
        Ok(())
    }
}

impl ServerSide for DmService {
    type Connector = DmConnector;
    type State = ();

    fn pool_core(&self) -> &PoolCore {
        &self.core
    }

    fn primary(&self) -> &DmPool {
        &self.primary
    }

    fn replica(&self, _index: usize) -> &DmPool {
        // Never called: a DM pool lists no replica backends (its `PoolCore::replicas` is empty).
        &self.primary
    }

    /// A fresh or idle DM connection is usable when no bytes and no EOF wait on it: a DM
    /// server speaks only when asked.
    fn is_dead(conn: &mut TcpStream) -> bool {
        let mut probe = [0u8; 1];
        !matches!(conn.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    async fn sync(_conn: &mut TcpStream, _state: &()) -> Result<(), SyncError> {
        Ok(())
    }

    /// Never called: a DM session is never given to another client (see the module doc).
    async fn reset(_conn: &mut TcpStream, _reset: Reset) -> Result<(), BackendError> {
        Ok(())
    }
}
