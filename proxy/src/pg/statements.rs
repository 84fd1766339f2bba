//! Named prepared statements in transaction mode.
//!
//! A client's statement names mean nothing on the server connection it gets next, so sidepool
//! keeps, per client, its statement names and their content (query text and parameter types),
//! and, per server connection, which statements are prepared there. Statements are named on the
//! server by content (`sidepool_<n>`, one name per distinct content in the pool), so clients
//! sending the same query share one server-side statement, and a statement is prepared on a
//! server connection the first time a client uses it there ("on demand").

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use super::effects::Effect;

/// One client statement: the server-side name of its content, and the content itself (the
/// Parse message after the name) to prepare it on demand.
#[derive(Debug, Clone)]
pub struct Statement {
    /// Name of this content on every server connection of the pool.
    pub server_name: Arc<str>,
    /// Query text and parameter types, as the client's Parse carried them.
    pub content: Bytes,
    /// It may run on a replica (read/write split; classified at Parse).
    pub read: bool,
    /// It may write (read-your-writes).
    pub writes: bool,
    /// What running it does to session state (a `SET`, `set_config`, `DISCARD ALL`, …),
    /// applied at each Bind: a statement is often parsed on one server connection, or with
    /// none, and executed later on another. `None` for the common statement with no effect.
    pub effects: Option<Arc<[Effect]>>,
}

/// Names server-side statements by content, pool-wide.
#[derive(Debug, Default)]
pub struct StatementNames {
    names: Mutex<HashMap<Bytes, Arc<str>>>,
}

impl StatementNames {
    /// The server name for this content, allocating one the first time it is seen.
    pub fn name_for(&self, content: &[u8]) -> Arc<str> {
        let mut names = self.names.lock();
        if let Some(n) = names.get(content) {
            return n.clone();
        }
        let name: Arc<str> = format!("sidepool_{}", names.len() + 1).into();
        names.insert(Bytes::copy_from_slice(content), name.clone());
        name
    }
}

/// Statements prepared on one server connection, least recently used first out.
#[derive(Debug, Default)]
pub struct Prepared {
    used: HashMap<Arc<str>, u64>,
    tick: u64,
    /// Statements that may or may not still be prepared here: a client's `DEALLOCATE ALL` or
    /// `DISCARD` went to the server, and it may have failed. Preparing one of these closes it
    /// first (closing a missing statement is not an error), so either way the Parse succeeds.
    unsure: HashSet<Arc<str>>,
}

impl Prepared {
    /// True (and marked used) if `name` is prepared here.
    pub fn touch(&mut self, name: &str) -> bool {
        self.tick += 1;
        match self.used.get_mut(name) {
            Some(t) => {
                *t = self.tick;
                true
            }
            None => false,
        }
    }

    /// Records `name` as prepared here. Returns the statement to close first when this would
    /// exceed `capacity`.
    pub fn insert(&mut self, name: Arc<str>, capacity: usize) -> Option<Arc<str>> {
        self.tick += 1;
        let victim = if self.used.len() >= capacity.max(1) && !self.used.contains_key(&name) {
            let oldest = self
                .used
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(n, _)| n.clone());
            if let Some(v) = &oldest {
                self.used.remove(v);
            }
            oldest
        } else {
            None
        };
        self.used.insert(name, self.tick);
        victim
    }

    /// Forgets `name` (its Parse failed or it was closed).
    pub fn remove(&mut self, name: &str) {
        self.used.remove(name);
    }

    /// Forgets everything (after `DISCARD ALL`).
    pub fn clear(&mut self) {
        self.used.clear();
        self.unsure.clear();
    }

    /// A client statement that deallocates every statement of the session was sent: nothing
    /// is known to be prepared here any more, and what was may still be.
    pub fn clear_unsure(&mut self) {
        self.unsure.extend(self.used.drain().map(|(name, _)| name));
    }

    /// Whether `name` may still be prepared here although it is not recorded (see
    /// [`Prepared::clear_unsure`]); it is taken off that list, as the caller closes it now.
    pub fn take_unsure(&mut self, name: &str) -> bool {
        !self.unsure.is_empty() && self.unsure.remove(name)
    }

    /// Statements prepared here.
    pub fn len(&self) -> usize {
        self.used.len()
    }

    /// True when nothing is prepared here.
    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_content_gets_the_same_server_name() {
        let names = StatementNames::default();
        let a = names.name_for(b"SELECT 1\0\0\0");
        let b = names.name_for(b"SELECT 2\0\0\0");
        assert_ne!(a, b);
        assert_eq!(names.name_for(b"SELECT 1\0\0\0"), a);
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut p = Prepared::default();
        assert_eq!(p.insert("a".into(), 2), None);
        assert_eq!(p.insert("b".into(), 2), None);
        assert!(p.touch("a"));
        assert_eq!(p.insert("c".into(), 2).as_deref(), Some("b"));
        assert!(p.touch("a") && p.touch("c") && !p.touch("b"));
        assert_eq!(p.insert("c".into(), 2), None, "re-inserting is not growth");
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn statements_cleared_unsure_are_closed_once_before_they_are_prepared_again() {
        let mut p = Prepared::default();
        p.insert("a".into(), 4);
        p.insert("b".into(), 4);
        p.clear_unsure();
        assert!(p.is_empty() && !p.touch("a"));
        assert!(p.take_unsure("a"));
        assert!(!p.take_unsure("a"), "closed once");
        assert!(!p.take_unsure("c"), "never prepared here");
        p.clear();
        assert!(
            !p.take_unsure("b"),
            "a certain DISCARD ALL leaves nothing unsure"
        );
    }
}
