//! Everything a pool decides, under its one lock. Nothing here awaits, drops a connection or
//! calls the observer: decisions that need that are returned as [`Effects`] and carried out by
//! [`crate::pool`] after the lock is released.
//!
//! Accounting: every connection is in exactly one of idle, in use, opening or closing, and
//! `idle + in_use + opening + closing <= max_open` holds whenever the lock is free. A closed
//! connection keeps its `closing` slot until its value has been dropped, so the server never
//! sees more than `max_open` connections even while a replacement is being opened.

mod gate;
mod maintenance;
mod placement;
mod slab;
mod waiters;

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::observer::CloseReason;
use crate::{CheckoutInfo, Connector, PoolError, PoolSettings, Stats};
pub(crate) use gate::{Lend, NoOpen};
use slab::Slab;
use waiters::Waiters;

/// What a waiter receives: a connection or the error that ended its wait.
pub(crate) type Delivery<C> = Result<Handover<C>, PoolError<<C as Connector>::Error>>;

/// Identity and age of one connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnMeta {
    pub id: u64,
    pub created_at: Instant,
    /// Random draw in `0.0..1.0` that fixes how much of `max_lifetime` the jitter cuts.
    pub draw: f64,
}

/// What a checkout hands back at check-in besides the connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Loan {
    pub meta: ConnMeta,
    /// Where the checkout is registered in the checkout table.
    pub slot: usize,
}

/// A connection leaving the pool for a checkout (already counted in use and registered).
pub(crate) struct Handover<C: Connector> {
    pub conn: C::Conn,
    pub loan: Loan,
    pub checked_out_at: Instant,
    /// The connection's jittered lifetime under the settings in force now.
    pub lifetime: Option<Duration>,
}

struct IdleConn<T> {
    conn: T,
    meta: ConnMeta,
    since: Instant,
}

struct Checkout<K, O> {
    id: u64,
    key: K,
    owner: O,
    checked_out_at: Instant,
    created_at: Instant,
}

/// A borrow ([`crate::Pool::borrow`]) waiting for the next connection checked in: it goes
/// ahead of every queued checkout.
pub(crate) struct Borrower<C: Connector, O> {
    pub owner: O,
    pub tx: oneshot::Sender<(C::Key, Handover<C>)>,
}

/// Why a connection is being opened by a spawned task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// For the waiter with this id (the connection goes to the oldest waiter of the key).
    Waiter(u64),
    /// Reaper warm-up towards `min_idle`.
    Warm,
}

/// A connection to open in a spawned task; its `opening` slot is already reserved.
pub(crate) struct Open<K> {
    pub key: K,
    pub purpose: Purpose,
}

/// Work decided under the lock, done after it is released, in this order: drop `closes`, spawn
/// `opens`, then free the `held_slots` closing slots.
pub(crate) struct Effects<C: Connector> {
    pub closes: Vec<(C::Conn, CloseReason)>,
    /// How many of `closes` still hold a `closing` slot.
    pub held_slots: u32,
    pub opens: Vec<Open<C::Key>>,
}

impl<C: Connector> Effects<C> {
    pub fn new() -> Self {
        Effects {
            closes: Vec::new(),
            held_slots: 0,
            opens: Vec::new(),
        }
    }
}

/// How a checkout proceeds after its first look at the pool.
pub(crate) enum Begin<C: Connector, O> {
    /// An idle connection of the key.
    Ready(Handover<C>),
    /// An `opening` slot is reserved: the caller connects (and gets its owner back).
    Open(O),
    /// Queued; the connection or error arrives on the receiver.
    Wait(u64, oneshot::Receiver<Delivery<C>>),
    Rejected {
        in_use: u32,
        max_open: u32,
        waiting: u32,
    },
    Closed,
}

#[derive(Default)]
struct Counters {
    wait_count: u64,
    wait_duration: Duration,
    closed: [u64; CloseReason::ALL.len()],
    opened: u64,
    connect_errors: u64,
    wait_timeouts: u64,
    rejected: u64,
}

pub(crate) struct State<C: Connector, O> {
    pub settings: PoolSettings,
    pub closed: bool,
    /// Per key, oldest first; checkouts pop the newest (LIFO) so that surplus ages out.
    idle: HashMap<C::Key, Vec<IdleConn<C::Conn>>>,
    idle_count: u32,
    in_use: u32,
    opening: u32,
    closing: u32,
    /// Of `opening`, those the reaper started for `min_idle`.
    warming: u32,
    /// Connections open only through [`crate::Pool::grow`]: somebody else (the fleet budget)
    /// decides when this pool may open one.
    gated: bool,
    /// Connections to close at check-in instead of placing them ([`crate::Pool::shed`]).
    shed_owed: u32,
    /// At most one borrow waits for the next check-in.
    borrower: Option<Borrower<C, O>>,
    waiters: Waiters<C, O>,
    checkouts: Slab<Checkout<C::Key, O>>,
    /// The key `min_idle` is kept for: the most recently checked-out one.
    last_key: Option<C::Key>,
    next_conn_id: u64,
    counters: Counters,
}

/// Why an idle connection must not be used any more, if it must not.
fn idle_expiry<T>(settings: &PoolSettings, ic: &IdleConn<T>, now: Instant) -> Option<CloseReason> {
    if expired(settings, &ic.meta, now) {
        return Some(CloseReason::MaxLifetime);
    }
    let idle_for = now.saturating_duration_since(ic.since);
    if settings.max_idle_time.is_some_and(|max| idle_for >= max) {
        return Some(CloseReason::MaxIdleTime);
    }
    None
}

/// Whether a connection has reached its jittered lifetime.
fn expired(settings: &PoolSettings, meta: &ConnMeta, now: Instant) -> bool {
    settings
        .lifetime(meta.draw)
        .is_some_and(|life| now.saturating_duration_since(meta.created_at) >= life)
}

impl<C: Connector, O> State<C, O> {
    pub fn new(settings: PoolSettings) -> Self {
        State {
            settings,
            closed: false,
            idle: HashMap::new(),
            idle_count: 0,
            in_use: 0,
            opening: 0,
            closing: 0,
            warming: 0,
            gated: false,
            shed_owed: 0,
            borrower: None,
            waiters: Waiters::new(),
            checkouts: Slab::new(),
            last_key: None,
            next_conn_id: 1,
            counters: Counters::default(),
        }
    }

    /// What the hard limit bounds.
    fn total(&self) -> u32 {
        self.idle_count + self.in_use + self.opening + self.closing
    }

    /// Whether the pool may open a connection on its own now.
    fn may_open(&self) -> bool {
        !self.gated && self.total() < self.settings.max_open
    }

    fn waiting(&self) -> u32 {
        u32::try_from(self.waiters.len()).unwrap_or(u32::MAX)
    }

    // ---- checkout -------------------------------------------------------------------------

    /// First step of a checkout (docs/design.md §3): idle connection of the key, else a new one
    /// under `max_open`, else make room by closing another key's idle connection, else queue (or
    /// reject past `max_waiting`).
    pub fn begin(
        &mut self,
        key: &C::Key,
        owner: O,
        now: Instant,
        fx: &mut Effects<C>,
    ) -> Begin<C, O> {
        if self.closed {
            return Begin::Closed;
        }
        if self.last_key.as_ref() != Some(key) {
            self.last_key = Some(key.clone());
        }
        if let Some(ic) = self.take_idle(key, now, fx) {
            return Begin::Ready(self.check_out(key.clone(), owner, ic.conn, ic.meta, now));
        }
        if self.may_open() {
            self.opening += 1;
            return Begin::Open(owner);
        }
        // Under a lowered max_open the freed slots must not be reused until total < max_open;
        // a gated pool never opens here.
        let at_limit_only = !self.gated && self.total() - self.closing <= self.settings.max_open;
        if fx.held_slots > 0 && at_limit_only {
            // take_idle just closed expired connections of this key: the caller drops them
            // before it connects, so one of their slots passes straight to it.
            fx.held_slots -= 1;
            self.closing -= 1;
            self.opening += 1;
            return Begin::Open(owner);
        }
        // Only other keys' connections can be idle (ours were taken above): close the least
        // recently used one and open ours in its slot; it is dropped before we connect.
        let lru = if at_limit_only { self.pop_lru() } else { None };
        if let Some(conn) = lru {
            self.counters.closed[CloseReason::Rebalance.index()] += 1;
            fx.closes.push((conn, CloseReason::Rebalance));
            self.opening += 1;
            return Begin::Open(owner);
        }
        if self.waiting() >= self.settings.max_waiting {
            self.counters.rejected += 1;
            return Begin::Rejected {
                in_use: self.in_use,
                max_open: self.settings.max_open,
                waiting: self.waiting(),
            };
        }
        let (tx, rx) = oneshot::channel();
        let id = self.waiters.push(key.clone(), owner, tx, now);
        self.counters.wait_count += 1;
        Begin::Wait(id, rx)
    }

    /// The caller's own connect succeeded: check the new connection out to it. `None` if the
    /// pool closed meanwhile (the connection is closed).
    pub fn connected(
        &mut self,
        key: &C::Key,
        owner: O,
        conn: C::Conn,
        now: Instant,
        fx: &mut Effects<C>,
    ) -> Option<Handover<C>> {
        self.opening -= 1;
        self.counters.opened += 1;
        if self.closed {
            self.close(conn, CloseReason::Shutdown, fx);
            return None;
        }
        let meta = self.new_meta(now);
        Some(self.check_out(key.clone(), owner, conn, meta, now))
    }

    /// The caller's own connect failed (`failed`) or was cancelled: free its slot.
    pub fn own_open_ended(&mut self, failed: bool, now: Instant, fx: &mut Effects<C>) {
        self.opening -= 1;
        if failed {
            self.counters.connect_errors += 1;
        }
        self.fill_waiters(now, fx);
    }

    /// A waiter leaves the queue by itself (timeout or cancellation). Returns the counts for
    /// the error, or `None` if it was no longer queued (its delivery is then in its channel).
    pub fn leave_queue(
        &mut self,
        id: u64,
        timed_out: bool,
        now: Instant,
    ) -> Option<(u32, u32, u32)> {
        let waiter = self.waiters.remove(id)?;
        self.counters.wait_duration += now.saturating_duration_since(waiter.enqueued_at);
        if timed_out {
            self.counters.wait_timeouts += 1;
        }
        Some((self.in_use, self.settings.max_open, self.waiting()))
    }

    fn check_out(
        &mut self,
        key: C::Key,
        owner: O,
        conn: C::Conn,
        meta: ConnMeta,
        now: Instant,
    ) -> Handover<C> {
        self.in_use += 1;
        let entry = Checkout {
            id: meta.id,
            key,
            owner,
            checked_out_at: now,
            created_at: meta.created_at,
        };
        let slot = self.checkouts.insert(entry);
        Handover {
            conn,
            loan: Loan { meta, slot },
            checked_out_at: now,
            lifetime: self.settings.lifetime(meta.draw),
        }
    }

    fn new_meta(&mut self, now: Instant) -> ConnMeta {
        let id = self.next_conn_id;
        self.next_conn_id += 1;
        ConnMeta {
            id,
            created_at: now,
            draw: rand::random::<f64>(),
        }
    }

    // ---- idle list helpers ------------------------------------------------------------------

    /// Pops the newest usable idle connection of any key (the most recently used key first),
    /// closing expired ones on the way.
    fn take_idle_any(
        &mut self,
        now: Instant,
        fx: &mut Effects<C>,
    ) -> Option<(C::Key, IdleConn<C::Conn>)> {
        loop {
            let key = match &self.last_key {
                Some(k) if self.idle.get(k).is_some_and(|l| !l.is_empty()) => k.clone(),
                _ => self
                    .idle
                    .iter()
                    .find(|(_, l)| !l.is_empty())
                    .map(|(k, _)| k.clone())?,
            };
            if let Some(ic) = self.take_idle(&key, now, fx) {
                return Some((key, ic));
            }
        }
    }

    /// Pops the newest usable idle connection of `key`, closing expired ones on the way.
    fn take_idle(
        &mut self,
        key: &C::Key,
        now: Instant,
        fx: &mut Effects<C>,
    ) -> Option<IdleConn<C::Conn>> {
        loop {
            let ic = self.idle.get_mut(key)?.pop()?;
            self.idle_count -= 1;
            match idle_expiry(&self.settings, &ic, now) {
                Some(reason) => self.close(ic.conn, reason, fx),
                None => return Some(ic),
            }
        }
    }

    fn push_idle(&mut self, key: &C::Key, ic: IdleConn<C::Conn>) {
        self.idle_count += 1;
        match self.idle.get_mut(key) {
            Some(list) => list.push(ic),
            None => {
                self.idle.insert(key.clone(), vec![ic]);
            }
        }
    }

    /// Removes the least recently returned idle connection of any key.
    fn pop_lru(&mut self) -> Option<C::Conn> {
        let list = self
            .idle
            .values_mut()
            .filter(|list| !list.is_empty())
            .min_by_key(|list| list[0].since)?;
        let ic = list.remove(0);
        self.idle_count -= 1;
        Some(ic.conn)
    }

    /// Counts a close and keeps its slot as `closing` until the value is dropped.
    fn close(&mut self, conn: C::Conn, reason: CloseReason, fx: &mut Effects<C>) {
        self.counters.closed[reason.index()] += 1;
        self.closing += 1;
        fx.held_slots += 1;
        fx.closes.push((conn, reason));
    }

    // ---- snapshots ----------------------------------------------------------------------------

    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let closed = |r: CloseReason| c.closed[r.index()];
        Stats {
            max_open: self.settings.max_open,
            open: self.idle_count + self.in_use + self.closing,
            in_use: self.in_use,
            idle: self.idle_count,
            opening: self.opening,
            closing: self.closing,
            waiting: self.waiting(),
            wait_count: c.wait_count,
            wait_duration: c.wait_duration,
            max_idle_closed: closed(CloseReason::MaxIdle),
            max_idle_time_closed: closed(CloseReason::MaxIdleTime),
            max_lifetime_closed: closed(CloseReason::MaxLifetime),
            broken_closed: closed(CloseReason::Broken),
            rebalance_closed: closed(CloseReason::Rebalance),
            fleet_closed: closed(CloseReason::Fleet),
            reload_closed: closed(CloseReason::Reload),
            shutdown_closed: closed(CloseReason::Shutdown),
            opened: c.opened,
            connect_errors: c.connect_errors,
            wait_timeouts: c.wait_timeouts,
            rejected: c.rejected,
        }
    }

    pub fn checkouts(&self) -> Vec<CheckoutInfo<C::Key, O>>
    where
        O: Clone,
    {
        let mut list: Vec<_> = self
            .checkouts
            .iter()
            .map(|c| CheckoutInfo {
                id: c.id,
                key: c.key.clone(),
                owner: c.owner.clone(),
                checked_out_at: c.checked_out_at,
                conn_created_at: c.created_at,
            })
            .collect();
        list.sort_by_key(|c| (c.checked_out_at, c.id));
        list
    }
}
