//! The handle side of the fleet gate (docs/fleet-budget.md): [`Pool::set_gated`],
//! [`Pool::grow`], [`Pool::shed`] and [`Pool::borrow`]. The pool stays protocol-blind: the
//! caller runs the coordination queries on what it borrows and decides when to grow.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::pool::OpeningSlot;
use crate::state::{Effects, Lend, NoOpen};
use crate::{Connector, Pool, Pooled};

/// What one [`Pool::grow`] did.
#[derive(Debug)]
pub enum Grow {
    /// A connection opened, passed its check and went to the oldest waiter (or idle).
    Opened,
    /// A connection opened and its check refused it: it was closed (`fleet`).
    Refused,
    /// The connect failed (the text); the error itself went to the waiter it was opened for.
    Failed(String),
    /// Nobody waits and `min_idle` is met: nothing opened.
    NoDemand,
    /// `max_open` is reached: nothing opened.
    AtLimit,
    /// The pool is shut down.
    Closed,
}

impl<C: Connector, O: Send + 'static> Pool<C, O> {
    /// Gates the pool: from now on it opens connections only through [`Pool::grow`] (checkouts
    /// that find nothing idle wait; warm-up and rebalancing opens stop). Ungating lets it open
    /// on its own again under `max_open` and serves waiters at once.
    pub fn set_gated(&self, gated: bool) {
        let inner = &self.shared.inner;
        let mut fx = Effects::new();
        inner.state.lock().set_gated(gated, Instant::now(), &mut fx);
        inner.run(fx);
    }

    /// Opens one connection, for the oldest waiter nobody opens for (else towards `min_idle`),
    /// within `max_open`, and returns once it is placed or has failed: the server lists the
    /// new session before this returns [`Grow::Opened`]. `check` runs on the new connection
    /// first; if it says no, the connection is closed and the waiter stays queued.
    pub async fn grow(
        &self,
        check: impl for<'a> FnOnce(&'a mut C::Conn) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>,
    ) -> Grow {
        let inner = &self.shared.inner;
        let open = match inner.state.lock().grant_open() {
            Ok(open) => open,
            Err(NoOpen::NoDemand) => return Grow::NoDemand,
            Err(NoOpen::AtLimit) => return Grow::AtLimit,
            Err(NoOpen::Closed) => return Grow::Closed,
        };
        let mut slot = OpeningSlot::new(inner, Some(open.purpose));
        let timeout = inner.state.lock().settings.connect_timeout;
        let result = inner.connect(&open.key, timeout).await;
        let (result, passed) = match result {
            Ok(mut conn) => {
                let passed = check(&mut conn).await;
                (Ok(conn), passed)
            }
            Err(e) => (Err(e), false),
        };
        slot.disarm();
        let mut fx = Effects::new();
        let outcome = {
            let mut state = inner.state.lock();
            match result {
                Ok(conn) if !passed => {
                    state.open_refused(&open, conn, &mut fx);
                    Grow::Refused
                }
                Ok(conn) => {
                    state.opened(&open, Ok(conn), Instant::now(), &mut fx);
                    Grow::Opened
                }
                Err(e) => {
                    let shown = e.to_string();
                    state.opened(&open, Err(e), Instant::now(), &mut fx);
                    Grow::Failed(shown)
                }
            }
        };
        inner.run(fx);
        outcome
    }

    /// Gives back up to `n` connections to a fleet budget: idle ones beyond `keep_idle` close
    /// at once, the rest at their next check-in (`fleet`). Returns how many closed at once.
    pub fn shed(&self, n: u32, keep_idle: u32) -> u32 {
        let inner = &self.shared.inner;
        let mut fx = Effects::new();
        let closed = inner.state.lock().shed(n, keep_idle, &mut fx);
        inner.run(fx);
        closed
    }

    /// Cancels the check-in closes [`Pool::shed`] still owes.
    pub fn unshed(&self) {
        self.shared.inner.state.lock().unshed();
    }

    /// Lends a connection of any key for sidepool's own queries, ahead of every waiter: an
    /// idle one now, else the next one checked in, for at most `timeout`. `None` on timeout,
    /// when another borrow is waiting, or after shutdown. Give it back with
    /// [`Pooled::release`] like any checkout.
    pub async fn borrow(&self, owner: O, timeout: Duration) -> Option<Pooled<C, O>> {
        let inner = &self.shared.inner;
        let mut fx = Effects::new();
        let begun = inner
            .state
            .lock()
            .lend_begin(owner, Instant::now(), &mut fx);
        inner.run(fx);
        let mut rx = match begun {
            Lend::Ready(key, handover) => {
                return Some(Pooled::new(Arc::clone(inner), key, handover));
            }
            Lend::Busy => return None,
            Lend::Wait(rx) => rx,
        };
        let got = tokio::time::timeout(timeout, &mut rx).await;
        let (key, handover) = match got {
            Ok(Ok(lent)) => lent,
            Ok(Err(_)) => return None,
            Err(_) => {
                inner.state.lock().lend_cancel();
                // A connection lent in the instant of the timeout is in the channel.
                rx.try_recv().ok()?
            }
        };
        Some(Pooled::new(Arc::clone(inner), key, handover))
    }
}
