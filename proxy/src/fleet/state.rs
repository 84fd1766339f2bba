//! One backend's fleet state as the views read it (`SHOW FLEET`, `/pools`).

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::time::Instant;

/// This sidecar's view of one backend's fleet, for `SHOW FLEET`, `/pools` and metrics.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// `ok`, `full`, `joining` or `blind`.
    pub state: &'static str,
    /// Why blind or joining, empty otherwise.
    pub reason: String,
    /// `max_open_total`.
    pub budget: u32,
    /// Backends + reservations at the last census.
    pub used: u32,
    /// Reservations at the last census.
    pub reservations: u32,
    /// Members at the last census.
    pub members: u32,
    /// Other hungry members at the last census.
    pub hungry: u32,
    /// The fair share at the last census.
    pub fair_share: u32,
    /// This sidecar's connections now.
    pub mine: u32,
    /// Clients of this sidecar waiting for a connection now.
    pub waiting_for_budget: u32,
    /// Seconds since the last census that succeeded, `None` before the first.
    pub last_census_age: Option<f64>,
    /// This sidecar's member id.
    pub member_id: u32,
}

/// One backend's fleet state, shared by its task and the views.
#[derive(Debug)]
pub struct FleetState {
    /// The pool's name.
    pub pool: Arc<str>,
    /// `host:port` of the backend.
    pub backend: String,
    /// The last published view and when its census ran.
    pub(crate) snapshot: Mutex<(Snapshot, Option<Instant>)>,
}

impl FleetState {
    /// The state now.
    pub fn snapshot(&self) -> Snapshot {
        let (mut snap, at) = self.snapshot.lock().clone();
        snap.last_census_age = at.map(|t| t.elapsed().as_secs_f64());
        snap
    }
}

/// The columns of `SHOW FLEET` (also the keys of `"fleet"` in `/pools`), after `pool` and
/// `backend`.
pub const COLUMNS: [&str; 12] = [
    "state",
    "reason",
    "budget",
    "used",
    "reservations",
    "members",
    "hungry",
    "fair_share",
    "mine",
    "waiting_for_budget",
    "last_census_age",
    "member_id",
];

impl Snapshot {
    /// The values of [`COLUMNS`], as text (`None` = NULL).
    pub fn values(&self) -> [Option<String>; 12] {
        let n = |v: u32| Some(v.to_string());
        [
            Some(self.state.to_owned()),
            Some(self.reason.clone()),
            n(self.budget),
            n(self.used),
            n(self.reservations),
            n(self.members),
            n(self.hungry),
            n(self.fair_share),
            n(self.mine),
            n(self.waiting_for_budget),
            self.last_census_age.map(|s| format!("{s:.3}")),
            n(self.member_id),
        ]
    }

    /// The `/pools` form: [`COLUMNS`] as keys, numbers as numbers.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "state": self.state,
            "reason": self.reason,
            "budget": self.budget,
            "used": self.used,
            "reservations": self.reservations,
            "members": self.members,
            "hungry": self.hungry,
            "fair_share": self.fair_share,
            "mine": self.mine,
            "waiting_for_budget": self.waiting_for_budget,
            "last_census_age_seconds": self.last_census_age,
            "member_id": self.member_id,
        })
    }
}
