//! Replica health and lag checks (docs/design.md §6): one task per replica asks the server every
//! [`CHECK_INTERVAL`] how far behind it is and moves it in or out of rotation.
//!
//! The question is protocol-specific ([`Probe`]: PostgreSQL replay timestamp and LSNs, MySQL
//! `SHOW SLAVE STATUS`); what the answer means is decided here, once for every protocol.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::{Replica, ReplicaState, Routing};
use crate::backend::BoxFuture;

/// How often each replica is checked. A lagging or failed replica leaves rotation at the first
/// check that sees it, so this bounds how long reads keep going to it.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long one check may take (checkout, query, answer). A check that takes longer counts as
/// a failure, unless the replica's pool is saturated (then nothing is learnt).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What a replica said about itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Checked {
    /// It replays the primary's changes, this far behind.
    Lag(Duration),
    /// It answered but is no usable replica: not in recovery (promoted, or a primary), lag
    /// unknown (replication stopped: MySQL `Seconds_Behind_Master` NULL), or not replicating.
    NotReplicating(&'static str),
    /// Nothing to ask with yet (no login known to the replica); the state stays.
    Skipped,
}

/// Asks one replica for its lag; implemented per protocol over the replica's own pool.
pub trait Probe: Send + Sync + 'static {
    /// Runs the check once.
    ///
    /// # Errors
    /// Why the replica could not be asked (checkout, connect, query failure), for the log.
    fn check(&self) -> BoxFuture<'_, Result<Checked, String>>;
}

/// Checks `replica` every [`CHECK_INTERVAL`] until the task is aborted (pool retired).
pub async fn run(pool: Arc<str>, replica: Arc<Replica>, routing: Arc<Routing>, probe: impl Probe) {
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let outcome = match tokio::time::timeout(CHECK_TIMEOUT, probe.check()).await {
            Ok(r) => Some(r),
            Err(_) if saturated(&replica) => None,
            Err(_) => Some(Err(format!("no answer within {CHECK_TIMEOUT:?}"))),
        };
        if let Some(outcome) = outcome {
            apply(&pool, &replica, routing.get().max_replica_lag, outcome);
        }
    }
}

/// Whether every connection the replica may open is in use: a slow check then says nothing
/// about the replica.
fn saturated(replica: &Replica) -> bool {
    let s = replica.backend.stats();
    s.max_open > 0 && s.in_use >= s.max_open
}

/// Moves `replica` in or out of rotation for one check's `outcome`; logs changes.
pub fn apply(pool: &str, replica: &Replica, max_lag: Duration, outcome: Result<Checked, String>) {
    let (state, lag, why) = match &outcome {
        Ok(Checked::Skipped) => return,
        Ok(Checked::Lag(lag)) if *lag <= max_lag => (ReplicaState::Healthy, Some(*lag), None),
        Ok(Checked::Lag(lag)) => (ReplicaState::Lagging, Some(*lag), None),
        Ok(Checked::NotReplicating(why)) => (ReplicaState::Lagging, None, Some((*why).to_owned())),
        Err(e) => (ReplicaState::Down, None, Some(e.clone())),
    };
    replica.set_lag(lag);
    replica.metrics.probed(state != ReplicaState::Down);
    let before = replica.set_state(state);
    let connect_failed = replica.take_connect_failed();
    if before == state && !(connect_failed && state == ReplicaState::Healthy) {
        return;
    }
    match state {
        ReplicaState::Healthy => info!(
            pool,
            backend = %replica.addr,
            lag = ?lag.unwrap_or_default(),
            "replica in rotation"
        ),
        ReplicaState::Lagging => warn!(
            pool,
            backend = %replica.addr,
            ?lag,
            ?max_lag,
            why = why.as_deref().unwrap_or("lag above routing.max_replica_lag"),
            "replica out of rotation: reads go to the primary or other replicas"
        ),
        ReplicaState::Down | ReplicaState::Unknown => warn!(
            pool,
            backend = %replica.addr,
            error = why.as_deref().unwrap_or(""),
            "replica check failed; out of rotation: reads go to the primary or other replicas"
        ),
    }
}
