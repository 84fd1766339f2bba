//! Hooks for metrics: the pool reports events, `proxy` turns them into counters and histograms.

use std::time::Duration;

/// Why the pool closed a connection (the `reason` label of
/// `sidepool_pool_connections_closed_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// Checked in while `max_idle` connections were already idle.
    MaxIdle,
    /// Idle longer than `max_idle_time`.
    MaxIdleTime,
    /// Older than its (jittered) `max_lifetime`, at check-in, at checkout or by the reaper.
    MaxLifetime,
    /// Discarded by its holder, or its guard dropped without [`crate::Pooled::release`].
    Broken,
    /// Closed to get under a lowered `max_open` or `max_idle` after
    /// [`crate::Pool::set_settings`].
    Reload,
    /// Closed by [`crate::Pool::close`] or checked in after it.
    Shutdown,
    /// An idle connection of one key closed to make room for a checkout of another key.
    Rebalance,
    /// Given back to a fleet budget shared with other pools ([`crate::Pool::shed`]), or opened
    /// and found to have no room in it ([`crate::Pool::grow`]).
    Fleet,
}

impl CloseReason {
    /// Every reason, in the order of [`CloseReason::index`].
    pub const ALL: [CloseReason; 8] = [
        CloseReason::MaxIdle,
        CloseReason::MaxIdleTime,
        CloseReason::MaxLifetime,
        CloseReason::Broken,
        CloseReason::Reload,
        CloseReason::Shutdown,
        CloseReason::Rebalance,
        CloseReason::Fleet,
    ];

    /// Metric label: `max_idle`, `max_idle_time`, `max_lifetime`, `broken`, `reload`,
    /// `shutdown`, `rebalance`.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::MaxIdle => "max_idle",
            CloseReason::MaxIdleTime => "max_idle_time",
            CloseReason::MaxLifetime => "max_lifetime",
            CloseReason::Broken => "broken",
            CloseReason::Reload => "reload",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Rebalance => "rebalance",
            CloseReason::Fleet => "fleet",
        }
    }

    /// Position in [`CloseReason::ALL`], for arrays of per-reason metric handles.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Receives pool events, typically to update metrics. Every method defaults to doing nothing.
///
/// Called outside the pool's lock (except where noted), from whichever task caused the event;
/// implementations must be cheap and must not call back into the pool.
pub trait PoolObserver: Send + Sync {
    /// A connection was opened.
    fn connection_opened(&self) {}
    /// Opening a connection failed or timed out.
    fn connect_failed(&self) {}
    /// A connection was closed (its value dropped), for `reason`.
    fn connection_closed(&self, reason: CloseReason) {
        let _ = reason;
    }
    /// A checkout succeeded after `wait` (zero-wait checkouts included, connect time included).
    fn checkout_waited(&self, wait: Duration) {
        let _ = wait;
    }
    /// A checkout gave up after `wait_timeout`.
    fn wait_timed_out(&self) {}
    /// A checkout was rejected because `max_waiting` were already waiting.
    fn rejected(&self) {}
    /// A checkout ended (release, discard or drop) after holding its connection for `held`.
    fn released(&self, held: Duration) {
        let _ = held;
    }
}

/// The observer of [`crate::Pool::new`]: ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl PoolObserver for NoopObserver {}
