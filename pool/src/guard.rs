//! The checkout guard: a connection on loan from the pool.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::Connector;
use crate::pool::Inner;
use crate::state::{Effects, Handover, Loan};

/// A checked-out connection. Derefs to the connection.
///
/// End the checkout with [`Pooled::release`] (healthy, reset already done by the caller) or
/// [`Pooled::discard`] (broken or unresettable). Dropping the guard without either discards
/// it: a connection whose state is unknown never goes back to the pool.
pub struct Pooled<C: Connector, O: Send + 'static = ()> {
    inner: Arc<Inner<C, O>>,
    /// `Some` until the checkout ends.
    conn: Option<C::Conn>,
    loan: Loan,
    key: C::Key,
    checked_out_at: Instant,
    lifetime: Option<Duration>,
}

impl<C: Connector, O: Send + 'static> Pooled<C, O> {
    pub(crate) fn new(inner: Arc<Inner<C, O>>, key: C::Key, handover: Handover<C>) -> Self {
        let Handover {
            conn,
            loan,
            checked_out_at,
            lifetime,
        } = handover;
        Pooled {
            inner,
            conn: Some(conn),
            loan,
            key,
            checked_out_at,
            lifetime,
        }
    }

    /// Gives the connection back as healthy. It goes to the oldest waiter of its key, or idle,
    /// or is closed (`max_lifetime`, `max_idle`, `rebalance`, `reload`, `shutdown`) as the
    /// rules say.
    pub fn release(mut self) {
        self.finish(false);
    }

    /// Closes the connection (`broken`) and frees its slot.
    pub fn discard(mut self) {
        self.finish(true);
    }

    /// When this checkout began.
    pub fn checked_out_at(&self) -> Instant {
        self.checked_out_at
    }

    /// When the connection was opened.
    pub fn created_at(&self) -> Instant {
        self.loan.meta.created_at
    }

    /// This connection's lifetime (`max_lifetime` less its jitter) under the settings in force
    /// at checkout; `None` = unlimited.
    pub fn lifetime(&self) -> Option<Duration> {
        self.lifetime
    }

    /// The key the connection belongs to.
    pub fn key(&self) -> &C::Key {
        &self.key
    }

    /// The connection's id, unique within the pool (also in [`crate::Pool::checkouts`]).
    pub fn id(&self) -> u64 {
        self.loan.meta.id
    }

    fn finish(&mut self, broken: bool) {
        let Some(conn) = self.conn.take() else { return };
        let now = Instant::now();
        let mut fx = Effects::new();
        self.inner
            .state
            .lock()
            .checkin(&self.key, conn, self.loan, broken, now, &mut fx);
        self.inner
            .observer
            .released(now.saturating_duration_since(self.checked_out_at));
        self.inner.run(fx);
    }
}

impl<C: Connector, O: Send + 'static> Deref for Pooled<C, O> {
    type Target = C::Conn;

    fn deref(&self) -> &C::Conn {
        self.conn
            .as_ref()
            .expect("a Pooled holds its connection until it is consumed")
    }
}

impl<C: Connector, O: Send + 'static> DerefMut for Pooled<C, O> {
    fn deref_mut(&mut self) -> &mut C::Conn {
        self.conn
            .as_mut()
            .expect("a Pooled holds its connection until it is consumed")
    }
}

impl<C: Connector, O: Send + 'static> Drop for Pooled<C, O> {
    fn drop(&mut self) {
        self.finish(true);
    }
}

impl<C: Connector, O: Send + 'static> fmt::Debug for Pooled<C, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pooled")
            .field("id", &self.loan.meta.id)
            .field("key", &self.key)
            .field("checked_out_at", &self.checked_out_at)
            .finish_non_exhaustive()
    }
}
