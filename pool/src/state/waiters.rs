//! The one FIFO wait queue of a pool, indexed by key so that a check-in finds the oldest waiter
//! of its key without scanning.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Delivery;
use crate::Connector;

/// A checkout waiting for a connection.
pub(crate) struct Waiter<C: Connector, O> {
    pub key: C::Key,
    /// Moves into the checkout table when a connection is handed over.
    pub owner: O,
    pub tx: oneshot::Sender<Delivery<C>>,
    pub enqueued_at: Instant,
    /// A connection is being opened on this waiter's behalf, so a freed slot should go to the
    /// next waiter instead.
    has_opener: bool,
}

/// Waiters in arrival order. Ids grow monotonically, so the `BTreeMap` order is FIFO order.
pub(crate) struct Waiters<C: Connector, O> {
    queue: BTreeMap<u64, Waiter<C, O>>,
    by_key: HashMap<C::Key, BTreeSet<u64>>,
    next_id: u64,
}

impl<C: Connector, O> Waiters<C, O> {
    pub fn new() -> Self {
        Waiters {
            queue: BTreeMap::new(),
            by_key: HashMap::new(),
            next_id: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Appends a waiter; returns its id.
    pub fn push(
        &mut self,
        key: C::Key,
        owner: O,
        tx: oneshot::Sender<Delivery<C>>,
        now: Instant,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        match self.by_key.get_mut(&key) {
            Some(ids) => {
                ids.insert(id);
            }
            None => {
                self.by_key.insert(key.clone(), BTreeSet::from([id]));
            }
        }
        let waiter = Waiter {
            key,
            owner,
            tx,
            enqueued_at: now,
            has_opener: false,
        };
        self.queue.insert(id, waiter);
        id
    }

    /// Takes a waiter out of the queue; `None` if it already left.
    pub fn remove(&mut self, id: u64) -> Option<Waiter<C, O>> {
        let waiter = self.queue.remove(&id)?;
        if let Some(ids) = self.by_key.get_mut(&waiter.key) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_key.remove(&waiter.key);
            }
        }
        Some(waiter)
    }

    /// The oldest waiter for `key`.
    pub fn oldest_for(&self, key: &C::Key) -> Option<u64> {
        self.by_key.get(key)?.first().copied()
    }

    /// The oldest waiter that nobody is opening a connection for. The scan skips at most as
    /// many waiters as connections are being opened, so it is bounded by `max_open`.
    pub fn first_without_opener(&self) -> Option<(u64, C::Key)> {
        self.queue
            .iter()
            .find(|(_, w)| !w.has_opener)
            .map(|(id, w)| (*id, w.key.clone()))
    }

    pub fn has_one_without_opener(&self) -> bool {
        self.queue.values().any(|w| !w.has_opener)
    }

    pub fn set_opener(&mut self, id: u64, has_opener: bool) {
        if let Some(w) = self.queue.get_mut(&id) {
            w.has_opener = has_opener;
        }
    }

    /// Empties the queue (shutdown).
    pub fn drain(&mut self) -> impl Iterator<Item = Waiter<C, O>> + use<C, O> {
        self.by_key.clear();
        std::mem::take(&mut self.queue).into_values()
    }
}
