//! Where connections go: check-in, direct hand-over to waiters, connects on behalf of waiters
//! (docs/design.md §3 "Check in").

use tokio::time::Instant;

use super::{ConnMeta, Effects, IdleConn, Loan, Open, Purpose, State, expired};
use crate::observer::CloseReason;
use crate::{Connector, PoolError};

impl<C: Connector, O> State<C, O> {
    // ---- check-in -------------------------------------------------------------------------

    /// A checkout ended: close the connection if broken, shut down or expired, else place it.
    pub fn checkin(
        &mut self,
        key: &C::Key,
        conn: C::Conn,
        loan: Loan,
        broken: bool,
        now: Instant,
        fx: &mut Effects<C>,
    ) {
        self.in_use -= 1;
        self.checkouts.remove(loan.slot);
        let meta = loan.meta;
        if broken {
            self.close(conn, CloseReason::Broken, fx);
        } else if self.closed {
            self.close(conn, CloseReason::Shutdown, fx);
        } else if expired(&self.settings, &meta, now) {
            self.close(conn, CloseReason::MaxLifetime, fx);
        } else {
            self.place(key, conn, meta, now, fx);
        }
    }

    /// Finds a home for a healthy connection that is in no state (just checked in or just
    /// opened): the oldest waiter of its key, else a close to make room for another key's
    /// waiter, else the idle list if below `max_idle`.
    fn place(
        &mut self,
        key: &C::Key,
        mut conn: C::Conn,
        mut meta: ConnMeta,
        now: Instant,
        fx: &mut Effects<C>,
    ) {
        loop {
            if self.closed {
                return self.close(conn, CloseReason::Shutdown, fx);
            }
            if self.total() >= self.settings.max_open {
                // Only after max_open was lowered: shrink at the idle point.
                return self.close(conn, CloseReason::Reload, fx);
            }
            if self.shed_owed > 0 {
                self.shed_owed -= 1;
                return self.close(conn, CloseReason::Fleet, fx);
            }
            if let Some(b) = self.borrower.take() {
                match self.lend(key.clone(), b, conn, meta, now) {
                    None => return,
                    Some((c, m)) => {
                        (conn, meta) = (c, m);
                        continue;
                    }
                }
            }
            if self.waiters.is_empty() {
                break;
            }
            if let Some(id) = self.waiters.oldest_for(key) {
                match self.hand_over(id, conn, meta, now) {
                    None => return,
                    Some((c, m)) => {
                        (conn, meta) = (c, m);
                        continue;
                    }
                }
            }
            // Waiters for other keys only. If one of them has nobody opening for it, this
            // connection's slot goes to it; if all have, keep the connection.
            if self.waiters.has_one_without_opener() {
                return self.close(conn, CloseReason::Rebalance, fx);
            }
            break;
        }
        if self.idle_count >= self.settings.max_idle {
            return self.close(conn, CloseReason::MaxIdle, fx);
        }
        self.push_idle(
            key,
            IdleConn {
                conn,
                meta,
                since: now,
            },
        );
    }

    /// Gives a connection to a queued waiter; returns it if the waiter is gone.
    fn hand_over(
        &mut self,
        id: u64,
        conn: C::Conn,
        meta: ConnMeta,
        now: Instant,
    ) -> Option<(C::Conn, ConnMeta)> {
        let Some(waiter) = self.waiters.remove(id) else {
            return Some((conn, meta));
        };
        self.counters.wait_duration += now.saturating_duration_since(waiter.enqueued_at);
        let handover = self.check_out(waiter.key, waiter.owner, conn, meta, now);
        // The send happens under the lock, so a waiter that finds itself out of the queue
        // knows its delivery is already in the channel.
        match waiter.tx.send(Ok(handover)) {
            Ok(()) => None,
            Err(Ok(h)) => {
                self.in_use -= 1;
                self.checkouts.remove(h.loan.slot);
                Some((h.conn, h.loan.meta))
            }
            Err(Err(_)) => None,
        }
    }

    // ---- opening for waiters and warm-up -----------------------------------------------------

    /// Uses free capacity for waiters, oldest first: reserve an `opening` slot and ask for a
    /// spawned connect. At the limit with only other keys' connections idle, close one of them
    /// (one at a time: the freed slot comes back here).
    pub fn fill_waiters(&mut self, now: Instant, fx: &mut Effects<C>) {
        if self.closed || self.gated {
            return;
        }
        while let Some((id, key)) = self.waiters.first_without_opener() {
            if self.total() < self.settings.max_open {
                self.waiters.set_opener(id, true);
                self.opening += 1;
                fx.opens.push(Open {
                    key,
                    purpose: Purpose::Waiter(id),
                });
            } else if let Some(ic) = self.take_idle(&key, now, fx) {
                if let Some((conn, meta)) = self.hand_over(id, ic.conn, ic.meta, now) {
                    self.push_idle(
                        &key,
                        IdleConn {
                            conn,
                            meta,
                            since: ic.since,
                        },
                    );
                }
            } else {
                let over = self.total() - self.closing > self.settings.max_open;
                let lru = if self.closing == 0 && !over {
                    self.pop_lru()
                } else {
                    None
                };
                if let Some(conn) = lru {
                    self.close(conn, CloseReason::Rebalance, fx);
                }
                break;
            }
        }
    }

    /// A spawned connect finished: place the new connection (the oldest waiter of its key
    /// gets it), or give the error to the waiter it was opened for.
    pub fn opened(
        &mut self,
        open: &Open<C::Key>,
        result: Result<C::Conn, PoolError<C::Error>>,
        now: Instant,
        fx: &mut Effects<C>,
    ) {
        self.open_ended(open.purpose);
        match result {
            Ok(conn) => {
                self.counters.opened += 1;
                let meta = self.new_meta(now);
                self.place(&open.key, conn, meta, now, fx);
            }
            Err(e) => {
                self.counters.connect_errors += 1;
                let waiter = match open.purpose {
                    Purpose::Waiter(id) => self.waiters.remove(id),
                    Purpose::Warm => None,
                };
                if let Some(waiter) = waiter {
                    self.counters.wait_duration +=
                        now.saturating_duration_since(waiter.enqueued_at);
                    let _ = waiter.tx.send(Err(e));
                }
                self.fill_waiters(now, fx);
            }
        }
    }

    /// A spawned connect was dropped before finishing (runtime shutdown).
    pub fn open_abandoned(&mut self, purpose: Purpose, now: Instant, fx: &mut Effects<C>) {
        self.open_ended(purpose);
        self.fill_waiters(now, fx);
    }

    pub(super) fn open_ended(&mut self, purpose: Purpose) {
        self.opening -= 1;
        match purpose {
            Purpose::Warm => self.warming -= 1,
            Purpose::Waiter(id) => self.waiters.set_opener(id, false),
        }
    }

    /// Closed connections have been dropped: free their slots and offer them to waiters.
    pub fn slots_freed(&mut self, n: u32, now: Instant, fx: &mut Effects<C>) {
        self.closing -= n;
        self.fill_waiters(now, fx);
    }
}
