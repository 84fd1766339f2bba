//! Admitting an accepted client: the `max_clients` refusal, the connected-clients count, the
//! session's span, and how the session's end is logged.

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{Instrument, debug, info, warn};

use crate::backend::BoxFuture;
use crate::error::{SessionError, Side, chain};
use crate::service::{PoolCore, Service};

/// What admission needs of a protocol's client side.
pub trait ClientSide: Send + Sync + 'static {
    /// The protocol-neutral part of the pool.
    fn pool_core(&self) -> &PoolCore;

    /// Tells a client that the pool's `max_clients` is reached, in the protocol's own terms
    /// (`message` says so), and closes. Returns whether it was a client being refused: `false`
    /// when the connection turned out to be something else (a PostgreSQL CancelRequest, which
    /// is served all the same) or went away first.
    fn refuse(
        self: Arc<Self>,
        stream: TcpStream,
        message: String,
    ) -> impl Future<Output = bool> + Send;

    /// Runs the session: the protocol's login, then its relay, until the client leaves. The
    /// span it runs in has an empty `user` field to record once the login names the user.
    ///
    /// # Errors
    /// Why the session ended early; logged by [`admit`] by the side at fault.
    fn session(
        self: Arc<Self>,
        stream: TcpStream,
        addr: SocketAddr,
    ) -> impl Future<Output = Result<(), SessionError>> + Send;
}

/// Serves one accepted client connection to its end. `permit` is the client's `max_clients`
/// slot, `None` when the listener is full: the client is then refused (counted as
/// `sidepool_pool_rejected_total{reason="max_clients"}`).
pub async fn admit<S: ClientSide>(
    svc: Arc<S>,
    stream: TcpStream,
    addr: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
) {
    let _ = stream.set_nodelay(true);
    let core = svc.pool_core();
    let options = core.tcp.read().client;
    if let Err(e) = crate::net::apply(&stream, &options) {
        debug!(pool = %core.name, client.addr = %addr, error = %e, "client socket options not set");
    }
    if permit.is_none() {
        let message = format!(
            "sidepool: too many client connections to pool \"{}\" (max_clients {})",
            core.name, core.max_clients
        );
        let (name, max_clients, metrics) =
            (core.name.clone(), core.max_clients, core.metrics.clone());
        // Boxed: the refusal reads a startup packet (and may negotiate TLS) and is rare; inline,
        // its state would make every admitted session's future as large as itself.
        if Box::pin(svc.clone().refuse(stream, message)).await {
            warn!(pool = %name, client.addr = %addr, max_clients, "client rejected: max_clients reached");
            metrics.rejected_max_clients();
        }
        return;
    }
    let _connected = crate::telemetry::Counted::new(&core.clients);
    let span = tracing::info_span!(
        "client",
        pool = %core.name,
        client.addr = %addr,
        user = tracing::field::Empty
    );
    let ended = svc
        .clone()
        .session(stream, addr)
        .instrument(span.clone())
        .await;
    if let Err(e) = ended {
        match e.side() {
            Side::Client => debug!(parent: &span, error = %chain(&e), "client session ended"),
            _ => info!(parent: &span, error = %chain(&e), "client session failed"),
        }
    }
}

/// Every protocol's client side is a [`Service`] the server can hand sockets to.
impl<S: ClientSide + Debug> Service for S {
    fn core(&self) -> &PoolCore {
        self.pool_core()
    }

    fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        addr: SocketAddr,
        permit: Option<OwnedSemaphorePermit>,
    ) -> BoxFuture<'static, ()> {
        Box::pin(admit(self, stream, addr, permit))
    }
}

/// The hint every protocol gives with a `max_clients` refusal.
pub const MAX_CLIENTS_HINT: &str =
    "raise [pools.limits] max_clients, or use fewer connections per application instance";
