//! Reaper passes, reload and shutdown.

use tokio::time::Instant;

use super::{Effects, Open, Purpose, State, idle_expiry};
use crate::observer::CloseReason;
use crate::{Connector, PoolError, PoolSettings};

impl<C: Connector, O> State<C, O> {
    /// Reaper pass: close idle connections past `max_idle_time` or their lifetime, then open
    /// towards `min_idle` for the most recently used key (not while anyone waits).
    pub fn reap(&mut self, now: Instant, fx: &mut Effects<C>) {
        if self.closed {
            return;
        }
        let mut expired = Vec::new();
        for list in self.idle.values_mut() {
            let mut i = 0;
            while i < list.len() {
                match idle_expiry(&self.settings, &list[i], now) {
                    Some(reason) => expired.push((list.remove(i).conn, reason)),
                    None => i += 1,
                }
            }
        }
        self.idle.retain(|_, list| !list.is_empty());
        for (conn, reason) in expired {
            self.idle_count -= 1;
            self.close(conn, reason, fx);
        }
        if !self.waiters.is_empty() || self.gated {
            return;
        }
        if let Some(key) = &self.last_key {
            let target = self.settings.idle_target();
            while self.idle_count + self.warming < target && self.total() < self.settings.max_open {
                self.opening += 1;
                self.warming += 1;
                fx.opens.push(Open {
                    key: key.clone(),
                    purpose: Purpose::Warm,
                });
            }
        }
    }

    // ---- reload and shutdown ------------------------------------------------------------------

    /// Swaps the settings. Idle connections beyond a lowered `max_open` or `max_idle` close
    /// now (`reload`); in-use ones close at check-in while the total is over `max_open`.
    pub fn set_settings(&mut self, settings: PoolSettings, now: Instant, fx: &mut Effects<C>) {
        self.settings = settings;
        let live = self.total() - self.closing;
        let over_open = live.saturating_sub(self.settings.max_open);
        let over_idle = self.idle_count.saturating_sub(self.settings.max_idle);
        for _ in 0..over_open.max(over_idle) {
            match self.pop_lru() {
                Some(conn) => self.close(conn, CloseReason::Reload, fx),
                None => break,
            }
        }
        self.fill_waiters(now, fx);
    }

    /// Shutdown: close every idle connection and fail every waiter with `Closed`.
    pub fn close_pool(&mut self, now: Instant, fx: &mut Effects<C>) {
        self.closed = true;
        for (_, list) in std::mem::take(&mut self.idle) {
            for ic in list {
                self.idle_count -= 1;
                self.close(ic.conn, CloseReason::Shutdown, fx);
            }
        }
        for waiter in self.waiters.drain() {
            self.counters.wait_duration += now.saturating_duration_since(waiter.enqueued_at);
            let _ = waiter.tx.send(Err(PoolError::Closed));
        }
    }
}
