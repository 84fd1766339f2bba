//! Metrics (docs/design.md §9): one Prometheus registry per [`Telemetry`], rendered by the admin
//! listener's `/metrics`.
//!
//! Owns the metric names, label sets and histogram buckets, and [`PoolMetrics`]: the handles of
//! one pool's backend, registered once when the pool is built so that the hot path (checkout,
//! release, query) only bumps atomics and never formats a label. Gauges that describe a state
//! (connections by state, saturation, waiting clients, pinned sessions, backend up) are not kept
//! up to date on the hot path: the admin listener copies them from [`sidepool_pool::Stats`] and
//! the service counters right before rendering ([`PoolMetrics::observe`]).
//!
//! Must not read configuration, log per event, or install a global recorder: each [`Telemetry`]
//! is a private registry (several servers can run in one test process), so the `metrics` macros
//! and the global recorder are unused.
//!
//! `sidepool_replica_lag_seconds` exists only for replicas (`role="replica"` backends), so that
//! no lag series reads as a healthy replica where there is none; it is infinite (rendered `inf`, which Prometheus parses) while the lag is
//! unknown (check failed, replication stopped).

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use sidepool_pool::{CloseReason, PoolObserver, Stats};

#[cfg(test)]
mod tests;

/// Metric names of docs/design.md §9 (the contract with dashboards and alerts).
pub mod names {
    /// gauge {pool,backend,role,state}: server connections by state (idle, in_use, opening).
    pub const POOL_CONNECTIONS: &str = "sidepool_pool_connections";
    /// gauge {pool,backend}: configured hard limit.
    pub const POOL_MAX_OPEN: &str = "sidepool_pool_max_open";
    /// gauge {pool,backend}: in_use / max_open.
    pub const POOL_SATURATION: &str = "sidepool_pool_saturation_ratio";
    /// gauge {pool,backend}: checkouts queued now.
    pub const POOL_WAITING: &str = "sidepool_pool_waiting_clients";
    /// histogram {pool,backend}: checkout request to connection, zero waits included.
    pub const POOL_WAIT: &str = "sidepool_pool_wait_seconds";
    /// counter {pool,backend}: checkouts that gave up after `wait_timeout`.
    pub const POOL_WAIT_TIMEOUTS: &str = "sidepool_pool_wait_timeouts_total";
    /// counter {pool,reason}: `max_waiting`, `max_clients`.
    pub const POOL_REJECTED: &str = "sidepool_pool_rejected_total";
    /// counter {pool,backend}.
    pub const POOL_OPENED: &str = "sidepool_pool_connections_opened_total";
    /// counter {pool,backend,reason}: see [`sidepool_pool::CloseReason`].
    pub const POOL_CLOSED: &str = "sidepool_pool_connections_closed_total";
    /// counter {pool,backend}.
    pub const POOL_CONNECT_ERRORS: &str = "sidepool_pool_connect_errors_total";
    /// histogram {pool,backend}: how long a checkout held its server connection.
    pub const POOL_HOLD: &str = "sidepool_pool_hold_seconds";
    /// counter {pool}: suspected leaks.
    pub const POOL_LEAKS: &str = "sidepool_pool_leaks_total";
    /// gauge {pool}: checkouts suspected of leaking now.
    pub const POOL_LEAKED: &str = "sidepool_pool_leaked_connections";
    /// counter {pool}: clients gone mid-transaction (rolled back).
    pub const POOL_ABANDONED: &str = "sidepool_pool_abandoned_transactions_total";
    /// gauge {pool,state}: client connections by state (active, idle, waiting).
    pub const CLIENT_CONNECTIONS: &str = "sidepool_client_connections";
    /// counter {pool,route}.
    pub const QUERIES: &str = "sidepool_queries_total";
    /// histogram {pool,route}.
    pub const QUERY_DURATION: &str = "sidepool_query_duration_seconds";
    /// gauge {pool}: clients pinned to a server connection in transaction mode.
    pub const PINNED: &str = "sidepool_pinned_sessions";
    /// gauge {pool,backend}: replica lag, replicas only (infinite while unknown).
    pub const REPLICA_LAG: &str = "sidepool_replica_lag_seconds";
    /// gauge {pool,backend,role}: 1 when the backend is reachable.
    pub const BACKEND_UP: &str = "sidepool_backend_up";
    /// counter {result}: `ok`, `error`.
    pub const CONFIG_RELOADS: &str = "sidepool_config_reloads_total";
    /// gauge {version}: always 1.
    pub const BUILD_INFO: &str = "sidepool_build_info";
    /// gauge {pool,backend}: `[pools.fleet] max_open_total`.
    pub const FLEET_BUDGET: &str = "sidepool_fleet_budget_connections";
    /// gauge {pool,backend}: the server's count at the last census (backends + reservations).
    pub const FLEET_USED: &str = "sidepool_fleet_used_connections";
    /// gauge {pool,backend}: this sidecar's connections now.
    pub const FLEET_SHARE: &str = "sidepool_fleet_share_connections";
    /// gauge {pool,backend}: the fair share at the last census.
    pub const FLEET_FAIR_SHARE: &str = "sidepool_fleet_fair_share_connections";
    /// gauge {pool,backend}: sidecars seen at the last census.
    pub const FLEET_MEMBERS: &str = "sidepool_fleet_members";
    /// gauge {pool,backend}: other sidecars waiting below their fair share at the last census.
    pub const FLEET_HUNGRY: &str = "sidepool_fleet_hungry_members";
    /// histogram {pool,backend}: how long checkouts queued while the budget had no room.
    pub const FLEET_WAIT: &str = "sidepool_fleet_wait_seconds";
    /// counter {pool,backend,kind}: censuses by outcome (room, full, error).
    pub const FLEET_CENSUSES: &str = "sidepool_fleet_censuses_total";
    /// counter {pool,backend,kind}: join attempts by outcome (admitted, no_room, error).
    pub const FLEET_JOINS: &str = "sidepool_fleet_joins_total";
    /// counter {pool,backend,reason}: connections given back to the fleet (joiner, hungry).
    pub const FLEET_YIELDS: &str = "sidepool_fleet_yields_total";
    /// gauge {pool,backend}: 1 while coordination is impossible (no growth).
    pub const FLEET_BLIND: &str = "sidepool_fleet_blind";
    /// counter {pool,backend,reason}: times coordination became impossible.
    pub const FLEET_BLIND_TOTAL: &str = "sidepool_fleet_blind_total";
}

/// Buckets of the wait and query histograms, in seconds: 10 µs (an idle connection handed
/// over) to 30 s (beyond any sane `wait_timeout`).
pub const WAIT_BUCKETS: [f64; 19] = [
    1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
];

/// Buckets of the hold histogram: the wait buckets, then up to an hour, because session mode
/// holds a connection for a whole client session.
pub const HOLD_BUCKETS: [f64; 23] = [
    1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

const META: Metadata<'static> = Metadata::new("sidepool", Level::INFO, Some(module_path!()));

/// What a backend is to its pool (the `role` label; also the `route` of its queries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The primary: writes and, without read/write split, everything.
    Primary,
    /// A read replica.
    Replica,
}

impl Role {
    /// Label value: `primary` or `replica`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// A private Prometheus registry with sidepool's buckets, descriptions and process-wide series
/// (`sidepool_build_info`, `sidepool_config_reloads_total`).
#[derive(Debug)]
pub struct Telemetry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    reloads_ok: Counter,
    reloads_error: Counter,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// A registry with every metric described, `sidepool_build_info{version}` at 1 and
    /// `sidepool_config_reloads_total{result="ok"|"error"}` at 0.
    pub fn new() -> Telemetry {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(names::POOL_WAIT.into()), &WAIT_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(names::QUERY_DURATION.into()), &WAIT_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(names::POOL_HOLD.into()), &HOLD_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(names::FLEET_WAIT.into()), &WAIT_BUCKETS)
            })
            .expect("bucket lists are non-empty constants")
            .build_recorder();
        for (name, help) in DESCRIPTIONS {
            let (name, help) = (KeyName::from_const_str(name), (*help).into());
            match kind_of(name.as_str()) {
                Kind::Counter => recorder.describe_counter(name, None, help),
                Kind::Gauge => recorder.describe_gauge(name, None, help),
                Kind::Histogram => recorder.describe_histogram(name, None, help),
            }
        }
        let handle = recorder.handle();
        let telemetry = Telemetry {
            reloads_ok: recorder
                .register_counter(&key(names::CONFIG_RELOADS, &[("result", "ok")]), &META),
            reloads_error: recorder
                .register_counter(&key(names::CONFIG_RELOADS, &[("result", "error")]), &META),
            handle,
            recorder,
        };
        telemetry
            .gauge(names::BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))])
            .set(1.0);
        telemetry
    }

    /// Registers the handles of one backend of pool `pool`; `backend` is its `host:port`.
    /// Registering the same pool and backend twice yields handles to the same series.
    pub fn pool_metrics(&self, pool: &str, backend: &str, role: Role) -> PoolMetrics {
        let pb = [("pool", pool), ("backend", backend)];
        let with = |k: &'static str, v: &'static str| [("pool", pool), (k, v)];
        let state = |s: &'static str| {
            self.gauge(
                names::POOL_CONNECTIONS,
                &[
                    ("pool", pool),
                    ("backend", backend),
                    ("role", role.as_str()),
                    ("state", s),
                ],
            )
        };
        let route = with("route", role.as_str());
        PoolMetrics {
            opened: self.counter(names::POOL_OPENED, &pb),
            connect_errors: self.counter(names::POOL_CONNECT_ERRORS, &pb),
            closed: CloseReason::ALL.map(|r| {
                self.counter(
                    names::POOL_CLOSED,
                    &[("pool", pool), ("backend", backend), ("reason", r.as_str())],
                )
            }),
            wait: self.histogram(names::POOL_WAIT, &pb),
            wait_timeouts: self.counter(names::POOL_WAIT_TIMEOUTS, &pb),
            rejected_max_waiting: self
                .counter(names::POOL_REJECTED, &with("reason", "max_waiting")),
            rejected_max_clients: self
                .counter(names::POOL_REJECTED, &with("reason", "max_clients")),
            hold: self.histogram(names::POOL_HOLD, &pb),
            leaks: self.counter(names::POOL_LEAKS, &[("pool", pool)]),
            leaked: self.gauge(names::POOL_LEAKED, &[("pool", pool)]),
            abandoned: self.counter(names::POOL_ABANDONED, &[("pool", pool)]),
            queries: self.counter(names::QUERIES, &route),
            query_duration: self.histogram(names::QUERY_DURATION, &route),
            idle: state("idle"),
            in_use: state("in_use"),
            opening: state("opening"),
            max_open: self.gauge(names::POOL_MAX_OPEN, &pb),
            saturation: self.gauge(names::POOL_SATURATION, &pb),
            waiting: self.gauge(names::POOL_WAITING, &pb),
            clients_active: self.gauge(names::CLIENT_CONNECTIONS, &with("state", "active")),
            clients_idle: self.gauge(names::CLIENT_CONNECTIONS, &with("state", "idle")),
            clients_waiting: self.gauge(names::CLIENT_CONNECTIONS, &with("state", "waiting")),
            pinned: self.gauge(names::PINNED, &[("pool", pool)]),
            backend_up: self.gauge(
                names::BACKEND_UP,
                &[
                    ("pool", pool),
                    ("backend", backend),
                    ("role", role.as_str()),
                ],
            ),
            replica_lag: (role == Role::Replica).then(|| self.gauge(names::REPLICA_LAG, &pb)),
            reachability: AtomicU8::new(Reachability::Unknown as u8),
        }
    }

    /// Counts a configuration reload (`result="ok"` or `"error"`).
    pub fn config_reloaded(&self, ok: bool) {
        if ok {
            self.reloads_ok.increment(1);
        } else {
            self.reloads_error.increment(1);
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of every series. Scrape-time gauges must
    /// have been refreshed first ([`PoolMetrics::observe`]).
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Moves recorded histogram samples into their buckets. Rendering does this too; call it
    /// every few seconds so samples do not pile up in memory when nobody scrapes.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }

    pub(crate) fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        self.recorder.register_counter(&key(name, labels), &META)
    }

    pub(crate) fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        self.recorder.register_gauge(&key(name, labels), &META)
    }

    pub(crate) fn histogram(
        &self,
        name: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Histogram {
        self.recorder.register_histogram(&key(name, labels), &META)
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(*k, (*v).to_owned()))
        .collect();
    Key::from_parts(name, labels)
}

enum Kind {
    Counter,
    Gauge,
    Histogram,
}

fn kind_of(name: &str) -> Kind {
    if name.ends_with("_total") {
        Kind::Counter
    } else if [
        names::POOL_WAIT,
        names::POOL_HOLD,
        names::QUERY_DURATION,
        names::FLEET_WAIT,
    ]
    .contains(&name)
    {
        Kind::Histogram
    } else {
        Kind::Gauge
    }
}

/// `# HELP` texts.
const DESCRIPTIONS: &[(&str, &str)] = &[
    (
        names::FLEET_BUDGET,
        "Server connections all sidecars of the pool may hold together ([pools.fleet] max_open_total).",
    ),
    (
        names::FLEET_USED,
        "Server connections of the pool's users the server listed at the last census, reservations included.",
    ),
    (
        names::FLEET_SHARE,
        "Server connections this sidecar holds now.",
    ),
    (
        names::FLEET_FAIR_SHARE,
        "This sidecar's fair share of the fleet budget at the last census.",
    ),
    (
        names::FLEET_MEMBERS,
        "Sidecars of the fleet seen at the last census.",
    ),
    (
        names::FLEET_HUNGRY,
        "Other sidecars with waiting clients below their fair share at the last census.",
    ),
    (
        names::FLEET_WAIT,
        "How long clients queued while the fleet budget had no room for this sidecar.",
    ),
    (
        names::FLEET_CENSUSES,
        "Fleet censuses by outcome (room, full, error).",
    ),
    (
        names::FLEET_JOINS,
        "Join attempts (each one connection beyond the budget for at most one login and one statement) by outcome.",
    ),
    (
        names::FLEET_YIELDS,
        "Server connections given back to other sidecars of the fleet, by reason.",
    ),
    (
        names::FLEET_BLIND,
        "1 while fleet coordination is impossible (the sidecar does not grow).",
    ),
    (
        names::FLEET_BLIND_TOTAL,
        "Times fleet coordination became impossible, by reason.",
    ),
    (
        names::POOL_CONNECTIONS,
        "Server connections by state (idle, in_use, opening).",
    ),
    (
        names::POOL_MAX_OPEN,
        "Configured hard limit of server connections (max_open).",
    ),
    (
        names::POOL_SATURATION,
        "Server connections in use divided by max_open.",
    ),
    (
        names::POOL_WAITING,
        "Checkouts queued for a server connection now.",
    ),
    (
        names::POOL_WAIT,
        "Time from checkout request to connection, zero-wait checkouts included.",
    ),
    (
        names::POOL_WAIT_TIMEOUTS,
        "Checkouts that gave up after wait_timeout.",
    ),
    (
        names::POOL_REJECTED,
        "Requests refused at once because max_waiting clients waited or max_clients were connected.",
    ),
    (names::POOL_OPENED, "Server connections opened."),
    (names::POOL_CLOSED, "Server connections closed, by reason."),
    (
        names::POOL_CONNECT_ERRORS,
        "Failed or timed-out attempts to open a server connection.",
    ),
    (
        names::POOL_HOLD,
        "How long a checkout held its server connection.",
    ),
    (names::POOL_LEAKS, "Suspected connection leaks detected."),
    (names::POOL_LEAKED, "Checkouts suspected of leaking now."),
    (
        names::POOL_ABANDONED,
        "Clients that disconnected mid-transaction (rolled back).",
    ),
    (
        names::CLIENT_CONNECTIONS,
        "Client connections by state (active, idle, waiting).",
    ),
    (names::QUERIES, "Queries relayed, by route."),
    (
        names::QUERY_DURATION,
        "Query time as seen by sidepool, by route.",
    ),
    (
        names::PINNED,
        "Clients pinned to a server connection in transaction mode.",
    ),
    (
        names::BACKEND_UP,
        "1 when the backend is reachable, 0 after a failed connect with none open.",
    ),
    (
        names::REPLICA_LAG,
        "Replica lag measured by the last health check (+Inf while unknown).",
    ),
    (names::CONFIG_RELOADS, "Configuration reloads, by result."),
    (
        names::BUILD_INFO,
        "Always 1; the version label names the running build.",
    ),
];

/// What is known about a backend's reachability, from connects and readiness probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reachability {
    /// No connect attempt or probe yet.
    Unknown = 0,
    /// Connections are open, or the last connect attempt or probe succeeded.
    Up = 1,
    /// The last connect attempt or probe failed and no connection is open.
    Down = 2,
}

/// The metric handles of one backend of one pool, registered once by
/// [`Telemetry::pool_metrics`]. Pool events arrive through [`PoolObserver`]; sessions call the
/// other methods. Every method is a few atomic operations.
pub struct PoolMetrics {
    opened: Counter,
    connect_errors: Counter,
    closed: [Counter; CloseReason::ALL.len()],
    wait: Histogram,
    wait_timeouts: Counter,
    rejected_max_waiting: Counter,
    rejected_max_clients: Counter,
    hold: Histogram,
    leaks: Counter,
    leaked: Gauge,
    abandoned: Counter,
    queries: Counter,
    query_duration: Histogram,
    idle: Gauge,
    in_use: Gauge,
    opening: Gauge,
    max_open: Gauge,
    saturation: Gauge,
    waiting: Gauge,
    clients_active: Gauge,
    clients_idle: Gauge,
    clients_waiting: Gauge,
    pinned: Gauge,
    backend_up: Gauge,
    /// `sidepool_replica_lag_seconds`, registered for replicas only.
    replica_lag: Option<Gauge>,
    reachability: AtomicU8,
}

impl std::fmt::Debug for PoolMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolMetrics")
            .field("reachability", &self.last_reachability())
            .finish_non_exhaustive()
    }
}

impl PoolMetrics {
    /// A query relayed to this backend finished after `duration`
    /// (`sidepool_queries_total`, `sidepool_query_duration_seconds`).
    pub fn query(&self, duration: Duration) {
        self.queries.increment(1);
        self.query_duration.record(duration.as_secs_f64());
    }

    /// A suspected leak was detected (`sidepool_pool_leaks_total`).
    pub fn leak_detected(&self) {
        self.leaks.increment(1);
    }

    /// Checkouts suspected of leaking now (`sidepool_pool_leaked_connections`).
    pub fn set_leaked(&self, n: u64) {
        self.leaked.set(n as f64);
    }

    /// A client went away mid-transaction (`sidepool_pool_abandoned_transactions_total`).
    pub fn abandoned(&self) {
        self.abandoned.increment(1);
    }

    /// A client was refused because `max_clients` were connected
    /// (`sidepool_pool_rejected_total{reason="max_clients"}`).
    pub fn rejected_max_clients(&self) {
        self.rejected_max_clients.increment(1);
    }

    /// Records the outcome of a readiness probe (a TCP connect to the backend).
    pub fn probed(&self, reachable: bool) {
        self.set_reachability(if reachable {
            Reachability::Up
        } else {
            Reachability::Down
        });
    }

    /// Reachability given a fresh `stats` snapshot: [`Reachability::Up`] whenever connections
    /// are idle or in use, else the outcome of the last connect attempt or probe.
    pub fn reachability(&self, stats: &Stats) -> Reachability {
        if stats.idle + stats.in_use > 0 {
            Reachability::Up
        } else {
            self.last_reachability()
        }
    }

    /// Refreshes the scrape-time gauges from a pool snapshot, the connected `clients` and the
    /// `pinned` clients of the pool. `sidepool_backend_up` is 1 unless the backend is
    /// [`Reachability::Down`] (unknown counts as up: nothing has failed yet).
    pub fn observe(&self, stats: &Stats, clients: u64, pinned: u64) {
        self.observe_backend(stats);
        self.observe_clients(
            u64::from(stats.in_use),
            u64::from(stats.waiting),
            clients,
            pinned,
        );
    }

    /// Refreshes the pool-wide client gauges: `active` clients hold a server connection of
    /// any backend, `waiting` ones wait for one, the rest of `clients` are idle.
    pub fn observe_clients(&self, active: u64, waiting: u64, clients: u64, pinned: u64) {
        self.clients_active.set(active as f64);
        self.clients_waiting.set(waiting as f64);
        self.clients_idle
            .set(clients.saturating_sub(active + waiting) as f64);
        self.pinned.set(pinned as f64);
    }

    /// Refreshes the gauges that describe this backend alone (connections by state, limit,
    /// saturation, waiting checkouts, up); for replicas, whose pool-wide series (clients,
    /// pinned) the primary's [`PoolMetrics::observe`] sets.
    pub fn observe_backend(&self, stats: &Stats) {
        self.idle.set(f64::from(stats.idle));
        self.in_use.set(f64::from(stats.in_use));
        self.opening.set(f64::from(stats.opening));
        self.max_open.set(f64::from(stats.max_open));
        self.saturation.set(saturation(stats));
        self.waiting.set(f64::from(stats.waiting));
        let up = self.reachability(stats) != Reachability::Down;
        self.backend_up.set(if up { 1.0 } else { 0.0 });
    }

    /// The lag a replica check measured, in seconds (`+Inf` when unknown). No-op for the
    /// primary.
    pub fn set_replica_lag(&self, seconds: f64) {
        if let Some(g) = &self.replica_lag {
            g.set(seconds);
        }
    }

    fn last_reachability(&self) -> Reachability {
        match self.reachability.load(Relaxed) {
            1 => Reachability::Up,
            2 => Reachability::Down,
            _ => Reachability::Unknown,
        }
    }

    fn set_reachability(&self, r: Reachability) {
        self.reachability.store(r as u8, Relaxed);
    }
}

/// in_use / max_open, 0 for a zero limit.
pub fn saturation(stats: &Stats) -> f64 {
    if stats.max_open == 0 {
        0.0
    } else {
        f64::from(stats.in_use) / f64::from(stats.max_open)
    }
}

impl PoolObserver for PoolMetrics {
    fn connection_opened(&self) {
        self.opened.increment(1);
        self.set_reachability(Reachability::Up);
    }

    fn connect_failed(&self) {
        self.connect_errors.increment(1);
        self.set_reachability(Reachability::Down);
    }

    fn connection_closed(&self, reason: CloseReason) {
        self.closed[reason.index()].increment(1);
    }

    fn checkout_waited(&self, wait: Duration) {
        self.wait.record(wait.as_secs_f64());
    }

    fn wait_timed_out(&self) {
        self.wait_timeouts.increment(1);
    }

    fn rejected(&self) {
        self.rejected_max_waiting.increment(1);
    }

    fn released(&self, held: Duration) {
        self.hold.record(held.as_secs_f64());
    }
}

/// Counts one live item in an `AtomicU64` for as long as it exists (connected clients).
#[derive(Debug)]
pub struct Counted<'a>(&'a AtomicU64);

impl<'a> Counted<'a> {
    /// Adds one to `count`; dropping the guard takes it away again.
    pub fn new(count: &'a AtomicU64) -> Self {
        count.fetch_add(1, Relaxed);
        Counted(count)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}
