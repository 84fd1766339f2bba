//! What every pool has whatever its protocol: the [`PoolCore`] that the admin listener, the leak
//! watcher, the console and reload read and adjust, and the [`Service`] trait each protocol's
//! session stage implements so that the server can accept clients for it.
//!
//! A pool has one primary [`Backend`] and, for the read/write split, one backend per replica
//! (docs/design.md §3: limits per backend); [`PoolCore::backends`] lists them all.

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use sidepool_config::{PoolConfig, PoolMode, Protocol, Tcp};
use sidepool_pool::PoolSettings;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};

use crate::backend::{Backend, BoxFuture};
use crate::net::SharedTcp;
use crate::route::{Replica, Routing, RoutingSettings};
use crate::session::ClientInfo;
use crate::settings::LeakSettings;
use crate::telemetry::{PoolMetrics, Role};

/// Counters and handles one pool shares with the admin listener, the leak watcher and the
/// console, the same for every protocol.
#[derive(Debug)]
pub struct PoolCore {
    /// Pool name, for logs, metrics and client errors.
    pub name: Arc<str>,
    /// The configured protocol.
    pub protocol: Protocol,
    /// Session or transaction pooling.
    pub mode: PoolMode,
    /// `host:port` of the primary, for logs and error messages.
    pub primary_addr: String,
    /// The primary's pool.
    pub backend: Arc<dyn Backend>,
    /// Metric handles of the primary backend (docs/design.md §9).
    pub metrics: Arc<PoolMetrics>,
    /// The `max_clients` limit, for the error text.
    pub max_clients: u32,
    /// `[pools.tcp]` in force, shared with the connectors (live on reload).
    pub tcp: SharedTcp,
    /// `[pools.limits] query_timeout` in force in nanoseconds, 0 = off (live on reload).
    query_timeout: AtomicU64,
    /// Clients connected now (past the `max_clients` check).
    pub clients: AtomicU64,
    /// Clients pinned to their server connection now (transaction mode).
    pub pinned: AtomicU64,
    /// Clients ever pinned.
    pub pins_total: AtomicU64,
    /// Suspected leaks ever reported.
    pub leaks_total: AtomicU64,
    /// Suspected leaks now.
    pub leaked_now: AtomicU64,
    /// Clients that went away inside a transaction (rolled back or closed).
    pub abandoned_total: AtomicU64,
    /// Every logged-in client, for the console (`SHOW CLIENTS`, `KILL`) and drain.
    pub sessions: Sessions,
    /// `[pools.leaks]` in force; the leak watcher follows changes (reload).
    pub leaks: watch::Sender<LeakSettings>,
    /// Set by the console's `PAUSE`: checkouts wait until `RESUME`.
    pub paused: watch::Sender<bool>,
    /// The replicas, in config order; the protocol's service keeps their typed pools at the
    /// same indexes. Empty without `replicas`.
    pub replicas: Vec<Arc<Replica>>,
    /// `[pools.routing]` in force (live on reload).
    pub routing: Arc<Routing>,
    /// Round-robin start for ties between replicas ([`crate::route::pick`]).
    pub replica_turn: AtomicUsize,
    /// The replicas' health checks and the fleet tasks; dropped (aborted) with the pool, or by
    /// [`PoolCore::close`].
    pub checks: Mutex<tokio::task::JoinSet<()>>,
    /// With `[pools.fleet]`: each backend's fleet state, primary first.
    pub fleets: Mutex<Vec<Arc<crate::fleet::state::FleetState>>>,
}

/// One backend of a pool, for listings (console, `/pools`, metrics, leak watcher).
#[derive(Debug, Clone, Copy)]
pub struct BackendView<'a> {
    /// Primary or replica.
    pub role: Role,
    /// `host:port`.
    pub addr: &'a str,
    /// Its pool.
    pub backend: &'a Arc<dyn Backend>,
    /// Its metric handles.
    pub metrics: &'a Arc<PoolMetrics>,
    /// Health and balancing state, replicas only.
    pub replica: Option<&'a Arc<Replica>>,
}

impl PoolCore {
    /// A core for pool `p` with all counters at zero; `tcp` is the cell its connectors read.
    pub fn new(
        p: &PoolConfig,
        backend: Arc<dyn Backend>,
        metrics: Arc<PoolMetrics>,
        tcp: SharedTcp,
    ) -> Self {
        PoolCore {
            name: p.name.as_str().into(),
            protocol: p.protocol,
            mode: p.mode,
            primary_addr: p.primary.to_string(),
            backend,
            metrics,
            max_clients: p.limits.max_clients,
            tcp,
            query_timeout: AtomicU64::new(nanos(p.limits.query_timeout)),
            clients: AtomicU64::new(0),
            pinned: AtomicU64::new(0),
            pins_total: AtomicU64::new(0),
            leaks_total: AtomicU64::new(0),
            leaked_now: AtomicU64::new(0),
            abandoned_total: AtomicU64::new(0),
            sessions: Sessions::default(),
            leaks: watch::Sender::new(LeakSettings::from_config(&p.leaks)),
            paused: watch::Sender::new(false),
            replicas: Vec::new(),
            routing: Arc::new(Routing::new(RoutingSettings::for_pool(p))),
            replica_turn: AtomicUsize::new(0),
            checks: Mutex::new(tokio::task::JoinSet::new()),
            fleets: Mutex::new(Vec::new()),
        }
    }

    /// The primary, then every replica.
    pub fn backends(&self) -> Vec<BackendView<'_>> {
        let primary = BackendView {
            role: Role::Primary,
            addr: &self.primary_addr,
            backend: &self.backend,
            metrics: &self.metrics,
            replica: None,
        };
        std::iter::once(primary)
            .chain(self.replicas.iter().map(|r| BackendView {
                role: Role::Replica,
                addr: &r.addr,
                backend: &r.backend,
                metrics: &r.metrics,
                replica: Some(r),
            }))
            .collect()
    }

    /// The replica to send a read to now (in rotation, fewest sessions attached), if any.
    pub fn pick_replica(&self) -> Option<usize> {
        crate::route::pick(&self.replicas, &self.replica_turn)
    }

    /// New limits for every backend (reload).
    pub fn set_limits(&self, settings: PoolSettings) {
        for b in self.backends() {
            b.backend.set_settings(settings.clone());
        }
    }

    /// `query_timeout` in force (`None`: off).
    pub fn query_timeout(&self) -> Option<Duration> {
        match self.query_timeout.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n)),
        }
    }

    /// New `[pools.tcp]` and `query_timeout` (reload): sockets opened and requests started
    /// from now on get them.
    pub fn set_network(&self, tcp: &Tcp, query_timeout: Option<Duration>) {
        *self.tcp.write() = *tcp;
        self.query_timeout
            .store(nanos(query_timeout), Ordering::Relaxed);
    }

    /// Stops the health checks and closes every backend's pool: idle connections now,
    /// checked-out ones when returned.
    pub async fn close(&self) {
        self.checks.lock().abort_all();
        for b in self.backends() {
            b.backend.close().await;
        }
    }

    /// Counts a client that went away inside a transaction or mid-statement.
    pub fn abandoned(&self) {
        self.abandoned_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.metrics.abandoned();
    }

    /// Waits while the pool is paused (console `PAUSE`); returns at once otherwise. Sessions
    /// call it before every checkout.
    pub async fn until_resumed(&self) {
        if !*self.paused.borrow() {
            return;
        }
        let mut rx = self.paused.subscribe();
        // The sender lives as long as `self`, so this only ends by resuming.
        let _ = rx.wait_for(|paused| !paused).await;
    }
}

/// `d` in nanoseconds for an atomic (0 = off; beyond 584 years is saturated).
fn nanos(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| {
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
    })
}

/// The logged-in clients of one pool.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<u64, Weak<ClientInfo>>>,
}

impl Sessions {
    /// Adds a client for as long as the returned guard lives.
    pub fn register(&self, info: &Arc<ClientInfo>) -> Registered<'_> {
        self.map.lock().insert(info.id, Arc::downgrade(info));
        Registered {
            sessions: self,
            id: info.id,
        }
    }

    /// Puts `info` in the place of the registered client with the same id (a new login on
    /// the same connection); the caller's registration guard stays valid.
    pub fn replace(&self, info: &Arc<ClientInfo>) {
        self.map.lock().insert(info.id, Arc::downgrade(info));
    }

    /// Every client logged in now, oldest first.
    pub fn list(&self) -> Vec<Arc<ClientInfo>> {
        let mut all: Vec<Arc<ClientInfo>> =
            self.map.lock().values().filter_map(Weak::upgrade).collect();
        all.sort_by_key(|c| c.id);
        all
    }

    /// The client with session id `id`, if logged in.
    pub fn find(&self, id: u64) -> Option<Arc<ClientInfo>> {
        self.map.lock().get(&id).and_then(Weak::upgrade)
    }

    /// How many clients are logged in.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether no client is logged in.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keeps a client in [`Sessions`]; removes it on drop.
#[derive(Debug)]
pub struct Registered<'a> {
    sessions: &'a Sessions,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.sessions.map.lock().remove(&self.id);
    }
}

/// A protocol's client-facing side as the server sees it: it accepts a socket and hands it to
/// `serve`. Every [`crate::lifecycle::ClientSide`] is one; the session lifecycle behind
/// `serve` is [`crate::lifecycle::admit`].
pub trait Service: Send + Sync + Debug + 'static {
    /// The protocol-neutral part.
    fn core(&self) -> &PoolCore;

    /// Runs one client session to its end. `permit` is the client's `max_clients` slot, `None`
    /// when the listener is full: the session then refuses the client with the protocol's own
    /// error (PostgreSQL 53300, MySQL 1040).
    fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        addr: SocketAddr,
        permit: Option<OwnedSemaphorePermit>,
    ) -> BoxFuture<'static, ()>;
}
