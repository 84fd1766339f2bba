//! The fleet budget (`[pools.fleet]`, docs/fleet-budget.md): one budget of server connections
//! for every sidecar of a pool, kept through the database itself.
//!
//! # How
//! Each backend of a fleet pool gets one [`run`] task and its pool is gated: it opens nothing
//! by itself. The task runs a *census* on one of the pool's own connections (borrowed ahead of
//! waiters for one round trip): take a reservation, count the reservations, then count the
//! backends of the pool's users. Only when `backends + reservations <= max_open_total` does it
//! let the pool open one connection ([`sidepool_pool::Pool::grow`]), and it drops the
//! reservation only once the server lists the new session. A sidecar holding nothing (a
//! *joiner*) opens one connection and keeps it only if one statement on it, counting itself,
//! finds room within two seconds. docs/fleet-budget.md §3 shows why no race lets the server
//! list more than the budget, apart from one joiner's connection per joining sidecar.
//!
//! Shares follow demand: members mark themselves (and, when clients wait while they hold less
//! than their fair share, their hunger) with locks the census counts; a member above its fair
//! share gives a connection back at check-in while a joiner waits or another member is hungry.
//!
//! The policy is [`decide`], a pure function; the SQL of each protocol is a [`Dialect`]
//! ([`pg::PgDialect`], [`mysql::MyDialect`]).
//!
//! # Why hand-written
//! No crate coordinates connection budgets through a database; the census is a handful of
//! statements whose order is the safety argument, so it is written out here.

pub mod mysql;
pub mod pg;
mod policy;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use parking_lot::Mutex;
use sidepool_pool::{Connector, Grow, Pool};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::backend::BoxFuture;
use crate::error::BackendError;
use crate::service::PoolCore;
use crate::session::ClientInfo;
use crate::telemetry::{Telemetry, names};
pub use policy::{Ask, Decision, Reading, Spec, decide};
pub use state::{FleetState, Snapshot};

/// How often the task looks at its pool's queue.
const POLL: Duration = Duration::from_millis(50);
/// Census interval while clients wait for a connection this sidecar may not open.
const HUNGRY_TICK: Duration = Duration::from_millis(200);
/// Census interval at rest, for fleets of up to 100 members; it grows with the fleet so that
/// the database receives at most about 100 censuses per second at rest.
const TICK: Duration = Duration::from_secs(1);
/// Longest a census waits for one of the pool's connections to come back.
const BORROW_WAIT: Duration = Duration::from_secs(1);
/// First and last pause between join attempts that found no room (jittered).
const JOIN_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));
/// How long a joiner's one statement waits for room before it gives up.
pub const JOIN_WAIT: Duration = Duration::from_secs(2);

/// The SQL of one protocol's census, run on a server connection of the pool.
pub trait Dialect: Send + Sync + 'static {
    /// The pool's connector.
    type Connector: Connector;

    /// Marks membership (and hunger), takes a reservation if asked, then counts reservations,
    /// members, hungry members other than this one, and backends of the pool's users, in that
    /// order.
    fn census<'a>(
        &'a self,
        conn: &'a mut <Self::Connector as Connector>::Conn,
        ask: Ask,
    ) -> BoxFuture<'a, Result<Reading, BackendError>>;

    /// Drops the reservation the last census took on `conn`.
    fn unreserve<'a>(
        &'a self,
        conn: &'a mut <Self::Connector as Connector>::Conn,
    ) -> BoxFuture<'a, Result<(), BackendError>>;

    /// A joiner's one statement on its new connection: `Ok(true)` once the server's count
    /// (this connection included) is within the budget, `Ok(false)` after [`JOIN_WAIT`]
    /// without room.
    fn join<'a>(
        &'a self,
        conn: &'a mut <Self::Connector as Connector>::Conn,
    ) -> BoxFuture<'a, Result<bool, BackendError>>;
}

/// Metric handles of one backend's fleet.
struct FleetMetrics {
    budget: Gauge,
    used: Gauge,
    share: Gauge,
    fair: Gauge,
    members: Gauge,
    hungry: Gauge,
    wait: Histogram,
    censuses: [Counter; 3],
    joins: [Counter; 3],
    yields: [Counter; 2],
    blind: Gauge,
    blind_total: [Counter; 2],
}

impl FleetMetrics {
    fn new(t: &Telemetry, pool: &str, backend: &str) -> Self {
        let pb = [("pool", pool), ("backend", backend)];
        let with = |name, k: &'static str, v: &'static str| {
            t.counter(name, &[("pool", pool), ("backend", backend), (k, v)])
        };
        FleetMetrics {
            budget: t.gauge(names::FLEET_BUDGET, &pb),
            used: t.gauge(names::FLEET_USED, &pb),
            share: t.gauge(names::FLEET_SHARE, &pb),
            fair: t.gauge(names::FLEET_FAIR_SHARE, &pb),
            members: t.gauge(names::FLEET_MEMBERS, &pb),
            hungry: t.gauge(names::FLEET_HUNGRY, &pb),
            wait: t.histogram(names::FLEET_WAIT, &pb),
            censuses: ["room", "full", "error"].map(|k| with(names::FLEET_CENSUSES, "kind", k)),
            joins: ["admitted", "no_room", "error"].map(|k| with(names::FLEET_JOINS, "kind", k)),
            yields: ["joiner", "hungry"].map(|k| with(names::FLEET_YIELDS, "reason", k)),
            blind: t.gauge(names::FLEET_BLIND, &pb),
            blind_total: BLIND_REASONS.map(|r| with(names::FLEET_BLIND_TOTAL, "reason", r)),
        }
    }
}

/// Why coordination can be impossible: the server refused a census statement, or could not
/// be reached.
const BLIND_REASONS: [&str; 2] = ["refused", "unreachable"];

/// With `[pools.fleet]` in `p`: puts every backend of the pool under the budget, each with its
/// own census (`primary` and `replicas` in config order). TiDB's lock names
/// are cluster-wide while its processlist is per server, so there each server gets its own
/// lock space (docs/fleet-budget.md §8).
pub fn join_all<D: Dialect>(
    core: &PoolCore,
    p: &sidepool_config::PoolConfig,
    primary: &Pool<D::Connector, Arc<ClientInfo>>,
    replicas: &[Pool<D::Connector, Arc<ClientInfo>>],
    dialect: impl Fn(&Spec) -> D,
    telemetry: &Telemetry,
) {
    let Some(f) = &p.fleet else { return };
    let backends = std::iter::once((primary, p.primary.to_string())).chain(
        replicas
            .iter()
            .zip(p.replicas.iter().map(ToString::to_string)),
    );
    let users: Vec<String> = p.users.iter().map(|u| u.name.clone()).collect();
    for (pool, addr) in backends {
        let mut f = f.clone();
        if p.protocol == sidepool_config::Protocol::Tidb {
            f.key = format!("{}@{addr}", f.key);
        }
        join_fleet(
            core,
            pool.clone(),
            &addr,
            &f,
            users.clone(),
            &dialect,
            telemetry,
        );
    }
}

/// Puts one backend of `core`'s pool under the fleet budget `f`: gates `pool`, lists the
/// backend's fleet state in `core.fleets` and runs its task among `core.checks` (aborted with
/// the pool). `users` are the pool's users, whose sessions the census counts.
pub fn join_fleet<D: Dialect>(
    core: &PoolCore,
    pool: Pool<D::Connector, Arc<ClientInfo>>,
    backend: &str,
    f: &sidepool_config::Fleet,
    users: Vec<String>,
    dialect: impl FnOnce(&Spec) -> D,
    telemetry: &Telemetry,
) {
    let spec = Spec::new(&core.name, backend, f, users);
    let dialect = dialect(&spec);
    pool.set_gated(true);
    let state = Arc::new(FleetState {
        pool: spec.pool.clone(),
        backend: spec.backend.clone(),
        snapshot: Mutex::new((
            Snapshot {
                state: "joining",
                budget: spec.total,
                member_id: spec.member,
                fair_share: spec.min_share,
                ..Snapshot::default()
            },
            None,
        )),
    });
    let metrics = FleetMetrics::new(telemetry, &spec.pool, &spec.backend);
    metrics.budget.set(f64::from(spec.total));
    info!(pool = %spec.pool, backend, key = %f.key, budget = spec.total, member = spec.member,
        "fleet budget on: connections open only within the budget");
    let task = Member {
        pool,
        dialect: Arc::new(dialect),
        spec,
        state: state.clone(),
        metrics,
        blind: None,
        hungry_since: None,
        last: None,
        backoff: JOIN_BACKOFF.0,
    };
    core.fleets.lock().push(state);
    core.checks.lock().spawn(task.run());
}

/// The task of one backend.
struct Member<D: Dialect> {
    pool: Pool<D::Connector, Arc<ClientInfo>>,
    dialect: Arc<D>,
    spec: Spec,
    state: Arc<FleetState>,
    metrics: FleetMetrics,
    /// Why coordination is impossible now, if it is.
    blind: Option<&'static str>,
    /// When clients began to wait while the budget had no room.
    hungry_since: Option<Instant>,
    /// The last census that succeeded.
    last: Option<Reading>,
    backoff: Duration,
}

impl<D: Dialect> Member<D> {
    async fn run(mut self) {
        let owner = Arc::new(ClientInfo::new(
            self.spec.pool.clone(),
            ([0, 0, 0, 0], 0).into(),
            "sidepool".to_owned(),
            String::new(),
            "sidepool fleet census".to_owned(),
        ));
        let mut next_census = Instant::now();
        loop {
            tokio::time::sleep(POLL).await;
            if self.pool.is_closed() {
                return;
            }
            let st = self.pool.stats();
            let now = Instant::now();
            let hungry = st.waiting > 0;
            self.note_hunger(hungry, now);
            let mine = st.total();
            self.metrics.share.set(f64::from(mine));
            if mine == 0 {
                if hungry && now >= next_census {
                    next_census = now + self.join().await;
                }
                self.publish(&st, None);
                continue;
            }
            let due = now >= next_census;
            if !due {
                continue;
            }
            let tick = if hungry { HUNGRY_TICK } else { self.tick() };
            next_census = now + jitter(tick);
            self.census(&owner, &st).await;
        }
    }

    /// The rest tick for a fleet of the last census's size: 1 s up to 100 members, then
    /// `members / 100` seconds.
    fn tick(&self) -> Duration {
        let members = self.last.map_or(1, |r| r.members);
        TICK.max(Duration::from_millis(u64::from(members) * 10))
    }

    fn note_hunger(&mut self, hungry: bool, now: Instant) {
        match (hungry, self.hungry_since) {
            (true, None) => self.hungry_since = Some(now),
            (false, Some(since)) => {
                self.metrics
                    .wait
                    .record(now.duration_since(since).as_secs_f64());
                self.hungry_since = None;
            }
            _ => {}
        }
    }

    /// One join attempt; returns the pause before the next.
    async fn join(&mut self) -> Duration {
        let verdict: Arc<Mutex<Option<Result<bool, String>>>> = Arc::default();
        let seen = verdict.clone();
        let dialect = self.dialect.clone();
        let grow = self
            .pool
            .grow(move |conn| {
                Box::pin(async move {
                    let outcome = dialect.join(conn).await.map_err(|e| e.to_string());
                    let ok = matches!(outcome, Ok(true));
                    *seen.lock() = Some(outcome);
                    ok
                })
            })
            .await;
        let verdict = verdict.lock().take();
        match (grow, verdict) {
            (Grow::Opened, _) => {
                self.metrics.joins[0].increment(1);
                info!(pool = %self.spec.pool, backend = %self.spec.backend, "joined the fleet");
                self.set_blind(None);
                self.backoff = JOIN_BACKOFF.0;
                Duration::ZERO
            }
            (Grow::Refused, Some(Ok(false))) => {
                self.metrics.joins[1].increment(1);
                self.set_blind(None);
                self.set_state("joining", "no room in the fleet budget");
                self.next_backoff()
            }
            (Grow::Refused, Some(Err(e))) => {
                self.metrics.joins[2].increment(1);
                self.blind_because("refused", &e);
                self.next_backoff()
            }
            (Grow::Failed(e), _) => {
                self.metrics.joins[2].increment(1);
                self.blind_because("unreachable", &e);
                self.next_backoff()
            }
            _ => HUNGRY_TICK,
        }
    }

    fn next_backoff(&mut self) -> Duration {
        let pause = jitter(self.backoff);
        self.backoff = (self.backoff * 2).min(JOIN_BACKOFF.1);
        pause
    }

    /// One census on a borrowed connection, and what follows from it.
    async fn census(&mut self, owner: &Arc<ClientInfo>, st: &sidepool_pool::Stats) {
        let Some(mut conn) = self.pool.borrow(owner.clone(), BORROW_WAIT).await else {
            return;
        };
        let plan = decide(&self.spec, self.last.as_ref(), st, self.blind.is_some());
        let reading = match self.dialect.census(&mut conn, plan.ask).await {
            Ok(r) => r,
            Err(e) => {
                self.metrics.censuses[2].increment(1);
                let reason = match e.kind() {
                    crate::error::BackendErrorKind::Unreachable => "unreachable",
                    _ => "refused",
                };
                self.blind_because(reason, &e.to_string());
                conn.discard();
                return;
            }
        };
        self.set_blind(None);
        let room = reading.used() <= self.spec.total;
        if reading.reserved {
            if room {
                self.metrics.censuses[0].increment(1);
                let _ = self.pool.grow(|_| Box::pin(async { true })).await;
            } else {
                self.metrics.censuses[1].increment(1);
            }
            if let Err(e) = self.dialect.unreserve(&mut conn).await {
                // Closing the connection drops the reservation with it.
                warn!(pool = %self.spec.pool, error = %e, "fleet: reservation not released; closing its connection");
                conn.discard();
                self.last = Some(reading);
                return;
            }
        } else {
            let full = reading.used() >= self.spec.total;
            self.metrics.censuses[usize::from(full)].increment(1);
        }
        conn.release();
        self.last = Some(reading);
        let after = self.pool.stats();
        let next = decide(&self.spec, Some(&reading), &after, false);
        match next.give_back {
            Some(reason) => {
                self.pool.shed(1, self.spec.min_share);
                self.metrics.yields[usize::from(reason == "hungry")].increment(1);
            }
            None => self.pool.unshed(),
        }
        self.publish(&after, Some(&next));
    }

    fn blind_because(&mut self, reason: &'static str, detail: &str) {
        if self.blind != Some(reason) {
            warn!(pool = %self.spec.pool, backend = %self.spec.backend, reason, error = detail,
                "fleet coordination impossible: not growing until it works again");
            let i = BLIND_REASONS.iter().position(|r| *r == reason).unwrap_or(0);
            self.metrics.blind_total[i].increment(1);
        }
        self.set_blind(Some(reason));
        self.set_state("blind", detail);
    }

    fn set_blind(&mut self, reason: Option<&'static str>) {
        if self.blind.is_some() && reason.is_none() {
            info!(pool = %self.spec.pool, backend = %self.spec.backend, "fleet coordination works again");
        }
        self.blind = reason;
        self.metrics
            .blind
            .set(if reason.is_some() { 1.0 } else { 0.0 });
    }

    fn set_state(&self, state: &'static str, reason: &str) {
        let mut snap = self.state.snapshot.lock();
        snap.0.state = state;
        snap.0.reason = reason.to_owned();
    }

    /// Publishes the state after a census (`plan`) or a join attempt (`None`).
    fn publish(&self, st: &sidepool_pool::Stats, plan: Option<&Decision>) {
        let mut snap = self.state.snapshot.lock();
        let s = &mut snap.0;
        s.mine = st.total();
        s.waiting_for_budget = st.waiting;
        if let (Some(r), Some(plan)) = (self.last, plan) {
            s.used = r.used();
            s.reservations = r.reservations;
            s.members = r.members;
            s.hungry = r.hungry_others;
            s.fair_share = plan.fair_share;
            s.state = if r.used() >= self.spec.total {
                "full"
            } else {
                "ok"
            };
            s.reason.clear();
            snap.1 = Some(Instant::now());
            self.metrics.used.set(f64::from(r.used()));
            self.metrics.members.set(f64::from(r.members));
            self.metrics.hungry.set(f64::from(r.hungry_others));
            self.metrics.fair.set(f64::from(plan.fair_share));
        }
    }
}

/// `d` give or take 20 %.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::Rng::gen_range(&mut rand::thread_rng(), 0.8..1.2))
}
