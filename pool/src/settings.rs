//! The limits a pool enforces, as plain values (`proxy` maps the TOML onto them).

use std::time::Duration;

/// Limits and timings of one pool (one backend). Plain data: `proxy` builds it from
/// `[pools.limits]`, and [`crate::Pool::set_settings`] swaps it at reload.
///
/// No field is validated here; the pool copes with any value: `max_idle` caps `min_idle`,
/// `max_open = 0` makes every checkout wait (or be rejected), `lifetime_jitter` is clamped to
/// `0.0..=1.0`.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Hard cap on idle + in use + being opened (+ being closed) connections, summed over keys.
    pub max_open: u32,
    /// Most idle connections kept (summed over keys); a check-in beyond it closes (`max_idle`).
    pub max_idle: u32,
    /// Idle connections the reaper keeps open for the most recently used key (capped by
    /// `max_idle` and `max_open`). Kept only after the first checkout: the pool learns no key
    /// before that.
    pub min_idle: u32,
    /// Longest a connection lives, shortened per connection by the jitter; `None` = unlimited.
    pub max_lifetime: Option<Duration>,
    /// Longest a connection stays idle; `None` = unlimited.
    pub max_idle_time: Option<Duration>,
    /// Longest a checkout waits in the queue before [`crate::PoolError::WaitTimeout`].
    pub wait_timeout: Duration,
    /// Most checkouts waiting at once; one more is [`crate::PoolError::Rejected`] at once.
    pub max_waiting: u32,
    /// Longest one [`crate::Connector::connect`] may take (auth included).
    pub connect_timeout: Duration,
    /// How often the reaper runs (about 1 s in production; at least 1 ms is used).
    pub reap_interval: Duration,
    /// Fraction (0.0–1.0) by which each connection's lifetime is shortened at random, so that
    /// connections opened together do not all expire together. 0.1 = up to 10 % shorter.
    pub lifetime_jitter: f64,
}

impl PoolSettings {
    /// The lifetime of a connection whose random draw is `draw` (in `0.0..1.0`): `max_lifetime`
    /// shortened by `lifetime_jitter * draw`, so always in `(max * (1 - jitter), max]`.
    pub(crate) fn lifetime(&self, draw: f64) -> Option<Duration> {
        let cut = self.lifetime_jitter.clamp(0.0, 1.0) * draw.clamp(0.0, 1.0);
        self.max_lifetime.map(|max| max.mul_f64(1.0 - cut))
    }

    /// Idle connections the reaper aims for.
    pub(crate) fn idle_target(&self) -> u32 {
        self.min_idle.min(self.max_idle)
    }
}
