//! Dameng DM8 pools: one listener per `[[pools]]` entry with `protocol = "dameng"`.
//!
//! Header-aware session passthrough (DESIGN §8): each client checks out one server connection
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
use sidepool_pool::PoolError;
use sidepool_protocol::dm::FrameRules;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{Instrument, debug, info, warn};

use crate::context::Context;
use crate::error::StartError;
use crate::service::{PoolCore, Service};
use crate::session::ClientInfo;
use crate::telemetry::Role;

pub use self::service::{DmConnector, DmPool, DmService};

crate::pool_service!(DmService, serve);

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
    let connector = DmConnector {
        addr: p.primary.to_string(),
    };
    let primary = DmPool::with_observer(
        connector,
        crate::settings::pool_settings(&p.limits),
        metrics.clone(),
    );
    Ok(Arc::new(DmService {
        core: PoolCore::new(p, Arc::new(primary.clone()), metrics),
        primary,
        rules: FrameRules::default(),
    }))
}

/// Serves one accepted client connection to the end.
async fn serve(
    svc: Arc<DmService>,
    client: TcpStream,
    addr: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
) {
    let core = &svc.core;
    if permit.is_none() {
        // No DM error message format is known well enough to send one; the driver sees the
        // connection closed before STARTUP is answered.
        warn!(pool = %core.name, client.addr = %addr, max_clients = core.max_clients,
            "client rejected: max_clients reached; closing its connection");
        core.metrics.rejected_max_clients();
        return;
    }
    let _connected = crate::telemetry::Counted::new(&core.clients);
    let _ = client.set_nodelay(true);
    let info = Arc::new(ClientInfo::new(
        core.name.clone(),
        addr,
        String::new(),
        String::new(),
        String::new(),
    ));
    let _registered = core.sessions.register(&info);
    let span = tracing::info_span!("client", pool = %core.name, client.addr = %addr);
    async {
        let server = tokio::select! {
            s = checkout(&svc, &info) => s,
            () = info.killed() => {
                info!(reason = ?info.kill_reason(), "client ended while waiting for a server connection");
                return;
            }
        };
        let server = match server {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, primary = %core.primary_addr,
                    "sidepool: no DM server connection for this client; closing its connection");
                return;
            }
        };
        let end = relay::run(&svc, client, server, &info).await;
        debug!(end = ?end, "client session ended");
    }
    .instrument(span)
    .await;
}

/// A server connection for `info`: waits while the pool is paused, then checks out. A
/// pre-opened idle connection that the server has closed meanwhile is discarded and the
/// checkout tried once more.
async fn checkout(
    svc: &DmService,
    info: &Arc<ClientInfo>,
) -> Result<sidepool_pool::Pooled<DmConnector, Arc<ClientInfo>>, PoolError<std::io::Error>> {
    svc.core.until_resumed().await;
    let conn = svc.primary.get(&(), info.clone()).await?;
    if still_open(&conn) {
        return Ok(conn);
    }
    debug!("pre-opened DM server connection was closed by the server; trying another");
    conn.discard();
    svc.core.until_resumed().await;
    svc.primary.get(&(), info.clone()).await
}

/// Whether a fresh or idle server connection looks usable: no bytes and no EOF waiting (a DM
/// server speaks only when asked).
fn still_open(conn: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(conn.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}
