//! Snapshots of a pool for `/pools`, the console and metrics.

use std::time::Duration;

use tokio::time::Instant;

/// A consistent snapshot of one pool, taken under its lock: Go's `sql.DBStats` plus sidepool's
/// extras. Gauges are `u32`, counters (since the pool was created) `u64`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// The `max_open` in force.
    pub max_open: u32,
    /// Established connections: `in_use + idle + closing` (Go's `OpenConnections`).
    pub open: u32,
    /// Checked out (Go's `InUse`).
    pub in_use: u32,
    /// Idle in the pool (Go's `Idle`).
    pub idle: u32,
    /// Being opened (connect in progress); they count against `max_open`.
    pub opening: u32,
    /// Taken out of the pool and being dropped; they still count against `max_open` so that
    /// the server never sees more than `max_open` connections.
    pub closing: u32,
    /// Checkouts waiting in the queue now.
    pub waiting: u32,
    /// Checkouts that had to wait (counted when they start waiting, like Go's `WaitCount`).
    pub wait_count: u64,
    /// Total time checkouts spent waiting, timed-out and cancelled ones included (Go's
    /// `WaitDuration`).
    pub wait_duration: Duration,
    /// Closed because `max_idle` were idle (Go's `MaxIdleClosed`).
    pub max_idle_closed: u64,
    /// Closed after `max_idle_time` idle (Go's `MaxIdleTimeClosed`).
    pub max_idle_time_closed: u64,
    /// Closed past their lifetime (Go's `MaxLifetimeClosed`).
    pub max_lifetime_closed: u64,
    /// Closed as broken (discarded or dropped by their holder).
    pub broken_closed: u64,
    /// Idle connections of one key closed for a checkout of another key.
    pub rebalance_closed: u64,
    /// Given back to a fleet budget, or opened into a fleet without room.
    pub fleet_closed: u64,
    /// Closed to honour lowered limits after a reload.
    pub reload_closed: u64,
    /// Closed by shutdown.
    pub shutdown_closed: u64,
    /// Connections opened successfully.
    pub opened: u64,
    /// Connect attempts that failed or timed out.
    pub connect_errors: u64,
    /// Checkouts that gave up after `wait_timeout`.
    pub wait_timeouts: u64,
    /// Checkouts rejected because `max_waiting` were waiting.
    pub rejected: u64,
}

impl Stats {
    /// idle + in use + opening + closing: what the hard limit bounds.
    pub fn total(&self) -> u32 {
        self.idle + self.in_use + self.opening + self.closing
    }
}

/// One checked-out connection, as [`crate::Pool::checkouts`] reports it (for leak detection and
/// the console).
#[derive(Clone, Debug)]
pub struct CheckoutInfo<K, O> {
    /// The connection's id (unique within the pool).
    pub id: u64,
    /// The key it belongs to.
    pub key: K,
    /// What the caller attached to the checkout.
    pub owner: O,
    /// When it was checked out.
    pub checked_out_at: Instant,
    /// When the connection was opened.
    pub conn_created_at: Instant,
}
