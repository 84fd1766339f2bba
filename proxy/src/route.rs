//! The route stage (docs/design.md §2, §6): where a transaction or autocommit statement runs, the
//! primary or one of the pool's replicas.
//!
//! Protocol-blind: the sessions classify their statements with
//! [`sidepool_protocol::sql::classify`] and ask [`Routing`] (settings in force, live on reload),
//! [`ReadYourWrites`] (one per client) and [`pick`] (least outstanding requests among the
//! replicas in rotation). [`health`] keeps each replica's place in rotation from periodic lag
//! checks that each protocol implements ([`health::Probe`]).
//!
//! Must not decide anything about transactions a session has open: a session asks only at the
//! start of a transaction or autocommit statement, with no server connection attached.

pub mod health;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::RwLock;
use sidepool_config::{PoolConfig, Protocol};
use sidepool_protocol::sql::{Classified, Route, StatementKind, WriteFunctions};
use tokio::time::Instant;

use crate::backend::Backend;
use crate::telemetry::PoolMetrics;

/// `[pools.routing]` as the sessions use it.
#[derive(Debug, Clone)]
pub struct RoutingSettings {
    /// Reads may go to replicas at all (`split`, and the pool has replicas).
    pub split: bool,
    /// A replica lagging more leaves rotation.
    pub max_replica_lag: Duration,
    /// After a write, the client's reads go to the primary this long.
    pub read_your_writes: Duration,
    /// Configured write functions, added to the classifier's built-in list.
    pub write_functions: WriteFunctions,
    /// TiDB pools: `tidb_replica_read` of replica connections (validated against TiDB's list).
    pub tidb_replica_read: String,
    /// TiDB pools: `tidb_read_staleness` of replica connections; zero = off.
    pub tidb_read_staleness: Duration,
}

impl RoutingSettings {
    /// Settings from a pool's config; `split` only holds when it has replicas.
    pub fn from_config(r: &sidepool_config::Routing, has_replicas: bool) -> Self {
        RoutingSettings {
            split: r.split && has_replicas,
            max_replica_lag: r.max_replica_lag,
            read_your_writes: r.read_your_writes,
            write_functions: WriteFunctions::new(r.write_functions.iter()),
            tidb_replica_read: r.tidb_replica_read.clone(),
            tidb_read_staleness: r.tidb_read_staleness,
        }
    }

    /// Settings of pool `p`, which has replica backends as [`has_replicas`] says.
    pub fn for_pool(p: &PoolConfig) -> Self {
        Self::from_config(&p.routing, has_replicas(p))
    }

    /// Whether replica connections opened under `self` must be opened anew under `now`: the
    /// TiDB session settings they applied after login changed.
    pub fn replica_session_changed(&self, now: &RoutingSettings) -> bool {
        self.tidb_replica_read != now.tidb_replica_read
            || self.tidb_read_staleness != now.tidb_read_staleness
    }
}

/// Whether pool `p` has replica backends: its `replicas`, or, on a TiDB pool with `split`, the
/// replica-read backend of its primary (every TiDB server can serve replica reads).
pub fn has_replicas(p: &PoolConfig) -> bool {
    !p.replicas.is_empty() || tidb_replica_reads(p)
}

/// Whether `p` is a TiDB pool whose reads go to replica-read connections (`split = true`); its
/// replica backends then include one at the primary's address.
pub fn tidb_replica_reads(p: &PoolConfig) -> bool {
    p.protocol == Protocol::Tidb && p.routing.split
}

/// Puts `p`'s `[pools.routing]` in force on a running pool (reload). When the TiDB session
/// settings change, the replicas' idle connections close at once (`reload`), so new reads run
/// on connections opened with the new settings; connections in use then are not reused (see
/// `ServerConn::is_dead` in `mysql::backend`).
pub fn reconfigure(routing: &Routing, replicas: &[Arc<Replica>], p: &PoolConfig) {
    let before = routing.get();
    let now = RoutingSettings::for_pool(p);
    let changed = p.protocol == Protocol::Tidb && before.replica_session_changed(&now);
    routing.set(now);
    if changed {
        for r in replicas {
            close_idle(&*r.backend);
        }
    }
}

/// Closes `backend`'s idle connections now, keeping its settings (the pool closes the idle
/// excess over a lowered `max_idle` at once; the settings in force are then put back).
fn close_idle(backend: &dyn Backend) {
    let s = backend.settings();
    backend.set_settings(sidepool_pool::PoolSettings {
        max_idle: 0,
        min_idle: 0,
        ..s.clone()
    });
    backend.set_settings(s);
}

/// The routing settings in force for one pool; a reload swaps them (`[pools.routing]` is live).
#[derive(Debug)]
pub struct Routing {
    settings: RwLock<Arc<RoutingSettings>>,
}

impl Routing {
    /// Settings `s` in force.
    pub fn new(s: RoutingSettings) -> Self {
        Routing {
            settings: RwLock::new(Arc::new(s)),
        }
    }

    /// The settings now (a cheap clone of an `Arc`).
    pub fn get(&self) -> Arc<RoutingSettings> {
        self.settings.read().clone()
    }

    /// Replaces the settings (reload); sessions see them at their next routing decision.
    pub fn set(&self, s: RoutingSettings) {
        *self.settings.write() = Arc::new(s);
    }
}

/// Why a replica is out of rotation, or that it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ReplicaState {
    /// Not checked yet: out of rotation until a check says otherwise.
    Unknown = 0,
    /// Reachable and lagging at most `max_replica_lag`: in rotation.
    Healthy = 1,
    /// Reachable but lagging too much, or not replicating at all.
    Lagging = 2,
    /// A check or a connection attempt failed.
    Down = 3,
}

impl ReplicaState {
    /// Label for `/pools` and the console.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaState::Unknown => "unknown",
            ReplicaState::Healthy => "healthy",
            ReplicaState::Lagging => "lagging",
            ReplicaState::Down => "down",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => ReplicaState::Healthy,
            2 => ReplicaState::Lagging,
            3 => ReplicaState::Down,
            _ => ReplicaState::Unknown,
        }
    }
}

/// One replica of a pool, protocol-blind: its pool (for statistics), metrics, health and the
/// requests running on it now. The protocol's service keeps the typed pool at the same index.
#[derive(Debug)]
pub struct Replica {
    /// `host:port`, for logs, metrics and errors.
    pub addr: String,
    /// The replica's pool.
    pub backend: Arc<dyn Backend>,
    /// Its metric handles (`role="replica"`).
    pub metrics: Arc<PoolMetrics>,
    state: std::sync::atomic::AtomicU8,
    /// Last measured lag in milliseconds; `u64::MAX` when unknown.
    lag_ms: AtomicU64,
    /// Sessions attached to it now (least outstanding requests balancing).
    outstanding: AtomicU32,
    /// Set when a client's checkout failed to connect; the next check logs the state anew.
    connect_failed: AtomicBool,
}

impl Replica {
    /// A replica not checked yet (out of rotation).
    pub fn new(addr: String, backend: Arc<dyn Backend>, metrics: Arc<PoolMetrics>) -> Self {
        Replica {
            addr,
            backend,
            metrics,
            state: std::sync::atomic::AtomicU8::new(ReplicaState::Unknown as u8),
            lag_ms: AtomicU64::new(u64::MAX),
            outstanding: AtomicU32::new(0),
            connect_failed: AtomicBool::new(false),
        }
    }

    /// Its state now.
    pub fn state(&self) -> ReplicaState {
        ReplicaState::from_u8(self.state.load(Relaxed))
    }

    /// Whether reads may be sent to it.
    pub fn in_rotation(&self) -> bool {
        self.state() == ReplicaState::Healthy
    }

    /// The last measured lag, if known.
    pub fn lag(&self) -> Option<Duration> {
        match self.lag_ms.load(Relaxed) {
            u64::MAX => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Sessions attached to it now.
    pub fn outstanding(&self) -> u32 {
        self.outstanding.load(Relaxed)
    }

    /// Counts a session attached to this replica until the lease is dropped.
    pub fn lease(self: &Arc<Self>) -> Lease {
        self.outstanding.fetch_add(1, Relaxed);
        Lease(self.clone())
    }

    /// A client's checkout could not connect: out of rotation until the next good check.
    pub fn connect_failed(&self) {
        self.connect_failed.store(true, Relaxed);
        self.set_state(ReplicaState::Down);
        self.metrics.probed(false);
    }

    pub(crate) fn set_state(&self, s: ReplicaState) -> ReplicaState {
        ReplicaState::from_u8(self.state.swap(s as u8, Relaxed))
    }

    pub(crate) fn set_lag(&self, lag: Option<Duration>) {
        let ms = lag.map_or(u64::MAX, |d| {
            d.as_millis().min(u128::from(u64::MAX - 1)) as u64
        });
        self.lag_ms.store(ms, Relaxed);
        self.metrics
            .set_replica_lag(lag.map_or(f64::INFINITY, |d| d.as_secs_f64()));
    }

    pub(crate) fn take_connect_failed(&self) -> bool {
        self.connect_failed.swap(false, Relaxed)
    }
}

/// One session attached to a replica (see [`Replica::lease`]).
#[derive(Debug)]
pub struct Lease(Arc<Replica>);

impl Lease {
    /// The replica.
    pub fn replica(&self) -> &Arc<Replica> {
        &self.0
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Relaxed);
    }
}

/// The replica in rotation with the fewest sessions attached, if any. Ties go round-robin
/// (`turn` advances per call), so an idle pool spreads its reads too.
pub fn pick(replicas: &[Arc<Replica>], turn: &AtomicUsize) -> Option<usize> {
    let n = replicas.len();
    if n == 0 {
        return None;
    }
    let start = turn.fetch_add(1, Relaxed) % n;
    (0..n)
        .map(|k| (start + k) % n)
        .filter(|&i| replicas[i].in_rotation())
        .min_by_key(|&i| replicas[i].outstanding())
}

/// Whether a statement of this kind may have written (read-your-writes): anything that is not
/// a read, transaction control or a session setting.
pub fn writes(kind: StatementKind) -> bool {
    matches!(
        kind,
        StatementKind::Write | StatementKind::Multiple | StatementKind::Other
    )
}

/// Where the first statement of a transaction or an autocommit statement should run, before
/// replica health is considered: the classifier's route, except that `BEGIN`/`START
/// TRANSACTION ... READ ONLY` takes the whole transaction to a replica.
pub fn wanted(c: &Classified) -> Route {
    match c.kind {
        StatementKind::Begin { read_only: true } if c.hint != Some(Route::Primary) => {
            Route::Replica
        }
        _ => c.route,
    }
}

/// One client's read-your-writes window (docs/design.md §6): after it writes, its reads go to the
/// primary for `read_your_writes`, measured from when the write's transaction ended.
#[derive(Debug, Default, Clone)]
pub struct ReadYourWrites {
    /// The attached primary connection ran something that may have written.
    pending: bool,
    /// When the last transaction that wrote ended.
    last: Option<Instant>,
}

impl ReadYourWrites {
    /// A statement that may write was sent to the primary.
    pub fn wrote(&mut self) {
        self.pending = true;
    }

    /// The primary connection was given back: the window starts now if it wrote.
    pub fn released(&mut self) {
        if std::mem::take(&mut self.pending) {
            self.last = Some(Instant::now());
        }
    }

    /// Whether reads must stay on the primary now.
    pub fn holds(&self, window: Duration) -> bool {
        self.pending || self.last.is_some_and(|t| t.elapsed() < window)
    }
}
