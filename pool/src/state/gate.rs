//! The gate a fleet budget puts on a pool (docs/fleet-budget.md): while gated, the pool opens
//! nothing on its own; connections open one at a time through [`crate::Pool::grow`], when the
//! party holding the budget says so. It also sheds connections at check-in and lends one
//! connection ahead of every waiter, for the coordination queries.

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Borrower, ConnMeta, Effects, Handover, Open, Purpose, State};
use crate::Connector;
use crate::observer::CloseReason;

/// Why [`State::grant_open`] reserved nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoOpen {
    /// Nobody waits and `min_idle` is met.
    NoDemand,
    /// `max_open` connections exist (or are being opened or closed).
    AtLimit,
    /// The pool is shut down.
    Closed,
}

/// How a borrow starts.
pub(crate) enum Lend<C: Connector> {
    /// An idle connection of this key.
    Ready(C::Key, Handover<C>),
    /// Waiting for the next check-in.
    Wait(oneshot::Receiver<(C::Key, Handover<C>)>),
    /// Another borrow already waits, or the pool is shut down.
    Busy,
}

impl<C: Connector, O> State<C, O> {
    /// Gates or ungates the pool. Ungating serves waiters at once.
    pub fn set_gated(&mut self, gated: bool, now: Instant, fx: &mut Effects<C>) {
        self.gated = gated;
        if !gated {
            self.shed_owed = 0;
            self.fill_waiters(now, fx);
        }
    }

    /// Reserves an `opening` slot for one connection: for the oldest waiter nobody opens for,
    /// else towards `min_idle` for the most recently used key.
    pub fn grant_open(&mut self) -> Result<Open<C::Key>, NoOpen> {
        if self.closed {
            return Err(NoOpen::Closed);
        }
        let purpose = match self.waiters.first_without_opener() {
            Some((id, key)) => Some((key, Purpose::Waiter(id))),
            None => self
                .last_key
                .clone()
                .filter(|_| self.idle_count + self.warming < self.settings.idle_target())
                .map(|key| (key, Purpose::Warm)),
        };
        let Some((key, purpose)) = purpose else {
            return Err(NoOpen::NoDemand);
        };
        if self.total() >= self.settings.max_open {
            return Err(NoOpen::AtLimit);
        }
        self.opening += 1;
        match purpose {
            Purpose::Waiter(id) => self.waiters.set_opener(id, true),
            Purpose::Warm => self.warming += 1,
        }
        Ok(Open { key, purpose })
    }

    /// A connection opened through the gate was refused by its check: close it (`fleet`) and
    /// free its slot; its waiter stays queued.
    pub fn open_refused(&mut self, open: &Open<C::Key>, conn: C::Conn, fx: &mut Effects<C>) {
        self.open_ended(open.purpose);
        self.counters.opened += 1;
        self.close(conn, CloseReason::Fleet, fx);
    }

    /// Gives back up to `n` connections: idle ones beyond `keep_idle` close now (oldest first),
    /// the rest at their next check-in. Returns how many closed now.
    pub fn shed(&mut self, n: u32, keep_idle: u32, fx: &mut Effects<C>) -> u32 {
        let mut now_closed = 0;
        while now_closed < n && self.idle_count > keep_idle {
            let Some(conn) = self.pop_lru() else { break };
            self.close(conn, CloseReason::Fleet, fx);
            now_closed += 1;
        }
        self.shed_owed = self.shed_owed.max(n - now_closed);
        now_closed
    }

    /// Cancels check-in closes still owed by [`State::shed`].
    pub fn unshed(&mut self) {
        self.shed_owed = 0;
    }

    /// Starts a borrow: an idle connection of any key now, else the next one checked in.
    pub fn lend_begin(&mut self, owner: O, now: Instant, fx: &mut Effects<C>) -> Lend<C> {
        if self.closed || self.borrower.is_some() {
            return Lend::Busy;
        }
        if let Some((key, ic)) = self.take_idle_any(now, fx) {
            return Lend::Ready(
                key.clone(),
                self.check_out(key, owner, ic.conn, ic.meta, now),
            );
        }
        let (tx, rx) = oneshot::channel();
        self.borrower = Some(Borrower { owner, tx });
        Lend::Wait(rx)
    }

    /// A waiting borrow gave up: leave the slot free for the next one.
    pub fn lend_cancel(&mut self) {
        self.borrower = None;
    }

    /// Hands a connection being placed to the waiting borrow; returns it if the borrow is gone.
    pub(super) fn lend(
        &mut self,
        key: C::Key,
        b: Borrower<C, O>,
        conn: C::Conn,
        meta: ConnMeta,
        now: Instant,
    ) -> Option<(C::Conn, ConnMeta)> {
        let handover = self.check_out(key.clone(), b.owner, conn, meta, now);
        match b.tx.send((key, handover)) {
            Ok(()) => None,
            Err((_, h)) => {
                self.in_use -= 1;
                self.checkouts.remove(h.loan.slot);
                Some((h.conn, h.loan.meta))
            }
        }
    }
}
