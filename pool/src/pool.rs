//! The pool handle: checkout flow (idle, own connect, FIFO wait), effects outside the lock, and
//! the tasks that open connections for waiters and warm-up.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::debug;

use crate::observer::NoopObserver;
use crate::state::{Begin, Delivery, Effects, Handover, Open, Purpose, State};
use crate::{CheckoutInfo, Connector, PoolError, PoolObserver, PoolSettings, Pooled, Stats};

/// A connection pool for one backend, with hard limits over all keys (docs/design.md §3).
///
/// Cheap to clone: clones share one pool. `O` is what the caller attaches to a checkout (the
/// proxy's session info); [`Pool::checkouts`] gives it back for leak reports.
pub struct Pool<C: Connector, O: Send + 'static = ()> {
    pub(crate) shared: Arc<Shared<C, O>>,
}

/// Lives as long as some `Pool` clone does; stops the reaper when the last one goes.
pub(crate) struct Shared<C: Connector, O: Send + 'static> {
    pub inner: Arc<Inner<C, O>>,
    reaper: AbortHandle,
}

impl<C: Connector, O: Send + 'static> Drop for Shared<C, O> {
    fn drop(&mut self) {
        self.reaper.abort();
    }
}

/// The pool proper, shared by handles, guards and background tasks.
pub(crate) struct Inner<C: Connector, O: Send + 'static> {
    connector: C,
    pub state: Mutex<State<C, O>>,
    pub observer: Arc<dyn PoolObserver>,
    /// Where background connects are spawned, so that a guard dropped outside the runtime
    /// can still start one.
    runtime: Handle,
}

impl<C: Connector, O: Send + 'static> Clone for Pool<C, O> {
    fn clone(&self) -> Self {
        Pool {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C: Connector, O: Send + 'static> Pool<C, O> {
    /// Creates a pool and spawns its reaper. Opens no connection until the first checkout.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new(connector: C, settings: PoolSettings) -> Self {
        Self::with_observer(connector, settings, Arc::new(NoopObserver))
    }

    /// Like [`Pool::new`], reporting events to `observer` (metrics).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn with_observer(
        connector: C,
        settings: PoolSettings,
        observer: Arc<dyn PoolObserver>,
    ) -> Self {
        let runtime = Handle::current();
        let inner = Arc::new(Inner {
            connector,
            state: Mutex::new(State::new(settings)),
            observer,
            runtime: runtime.clone(),
        });
        let reaper = runtime
            .spawn(crate::reaper::run(Arc::downgrade(&inner)))
            .abort_handle();
        Pool {
            shared: Arc::new(Shared { inner, reaper }),
        }
    }

    /// Checks out a connection for `key`: the most recently returned idle one of that key,
    /// else a new one if the total is under `max_open`, else a new one in place of another
    /// key's idle connection (`rebalance`), else a place in the FIFO queue for at most
    /// `wait_timeout`. `owner` is kept with the checkout for [`Pool::checkouts`].
    ///
    /// # Errors
    /// [`PoolError::Rejected`] at once when `max_waiting` already wait;
    /// [`PoolError::WaitTimeout`] after `wait_timeout`; [`PoolError::Connect`] /
    /// [`PoolError::ConnectTimeout`] as soon as a connect made for this checkout fails;
    /// [`PoolError::Closed`] after [`Pool::close`].
    ///
    /// # Cancel safety
    /// Cancel-safe. A dropped checkout leaves the queue; a connection handed to it in the
    /// meantime is checked back in, and a connect in progress for it is abandoned with its
    /// slot freed. A connection that arrives in the very instant the wait times out is used
    /// rather than reported as a timeout.
    pub async fn get(&self, key: &C::Key, owner: O) -> Result<Pooled<C, O>, PoolError<C::Error>> {
        let inner = &self.shared.inner;
        let start = Instant::now();
        let mut fx = Effects::new();
        let (begin, wait_timeout, connect_timeout) = {
            let mut state = inner.state.lock();
            let begin = state.begin(key, owner, start, &mut fx);
            (
                begin,
                state.settings.wait_timeout,
                state.settings.connect_timeout,
            )
        };
        // Drops connections closed on the way (expired, rebalanced) before connecting, so
        // their slots can pass to this checkout.
        inner.run(fx);
        let handover = match begin {
            Begin::Ready(handover) => {
                // Zero wait, reported without another clock read on the hot path.
                inner.observer.checkout_waited(Duration::ZERO);
                return Ok(Pooled::new(Arc::clone(inner), key.clone(), handover));
            }
            Begin::Open(owner) => inner.open_own(key, owner, connect_timeout).await?,
            Begin::Wait(id, rx) => inner.wait(key, id, rx, start, start + wait_timeout).await?,
            Begin::Rejected {
                in_use,
                max_open,
                waiting,
            } => {
                inner.observer.rejected();
                return Err(PoolError::Rejected {
                    in_use,
                    max_open,
                    waiting,
                });
            }
            Begin::Closed => return Err(PoolError::Closed),
        };
        inner
            .observer
            .checkout_waited(Instant::now().saturating_duration_since(start));
        Ok(Pooled::new(Arc::clone(inner), key.clone(), handover))
    }

    /// A consistent snapshot of counts and counters, taken under the lock.
    pub fn stats(&self) -> Stats {
        self.shared.inner.state.lock().stats()
    }

    /// Every connection checked out now, oldest checkout first.
    pub fn checkouts(&self) -> Vec<CheckoutInfo<C::Key, O>>
    where
        O: Clone,
    {
        self.shared.inner.state.lock().checkouts()
    }

    /// Applies new settings (reload). A lowered `max_open` or `max_idle` closes the idle excess
    /// at once (`reload`); connections in use over a lowered `max_open` close at check-in
    /// (`reload`), and new connections open only once the total is under the new `max_open`,
    /// so the total never exceeds the lower of old and new. A raised `max_open` serves waiters
    /// at once. Waiters already queued keep their deadline.
    pub fn set_settings(&self, settings: PoolSettings) {
        let inner = &self.shared.inner;
        let mut fx = Effects::new();
        inner
            .state
            .lock()
            .set_settings(settings, Instant::now(), &mut fx);
        inner.run(fx);
    }

    /// Whether [`Pool::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.shared.inner.state.lock().closed
    }

    /// The settings in force.
    pub fn settings(&self) -> PoolSettings {
        self.shared.inner.state.lock().settings.clone()
    }

    /// Shuts the pool down: closes idle connections (`shutdown`), fails every waiter and every
    /// later checkout with [`PoolError::Closed`], opens nothing more, and closes connections
    /// checked in from now on (`shutdown`). Does not wait for checked-out connections: the
    /// proxy drains its sessions and [`Pool::stats`] shows what is still in use.
    pub async fn close(&self) {
        let inner = &self.shared.inner;
        let mut fx = Effects::new();
        inner.state.lock().close_pool(Instant::now(), &mut fx);
        self.shared.reaper.abort();
        inner.run(fx);
    }
}

impl<C: Connector, O: Send + 'static> fmt::Debug for Pool<C, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<C: Connector, O: Send + 'static> Inner<C, O> {
    /// Carries out what was decided under the lock: drop closed connections (then free their
    /// slots, which may serve waiters) and spawn connects.
    pub fn run(self: &Arc<Self>, mut fx: Effects<C>) {
        loop {
            for (conn, reason) in fx.closes.drain(..) {
                drop(conn);
                debug!(reason = reason.as_str(), "server connection closed");
                self.observer.connection_closed(reason);
            }
            for open in fx.opens.drain(..) {
                self.runtime.spawn(open_task(Arc::clone(self), open));
            }
            let held = std::mem::take(&mut fx.held_slots);
            if held == 0 {
                return;
            }
            self.state.lock().slots_freed(held, Instant::now(), &mut fx);
        }
    }

    pub async fn connect(
        &self,
        key: &C::Key,
        timeout: Duration,
    ) -> Result<C::Conn, PoolError<C::Error>> {
        match tokio::time::timeout(timeout, self.connector.connect(key)).await {
            Ok(Ok(conn)) => {
                debug!(?key, "server connection opened");
                self.observer.connection_opened();
                Ok(conn)
            }
            Ok(Err(e)) => {
                debug!(?key, error = %e, "server connection failed");
                self.observer.connect_failed();
                Err(PoolError::Connect(e))
            }
            Err(_) => {
                debug!(?key, ?timeout, "server connection timed out");
                self.observer.connect_failed();
                Err(PoolError::ConnectTimeout(timeout))
            }
        }
    }

    /// Connects for the calling checkout in the `opening` slot it reserved.
    async fn open_own(
        self: &Arc<Self>,
        key: &C::Key,
        owner: O,
        timeout: Duration,
    ) -> Result<Handover<C>, PoolError<C::Error>> {
        let mut slot = OpeningSlot {
            inner: self,
            purpose: None,
            armed: true,
        };
        let result = self.connect(key, timeout).await;
        slot.armed = false;
        let now = Instant::now();
        let mut fx = Effects::new();
        let out = {
            let mut state = self.state.lock();
            match result {
                Ok(conn) => state
                    .connected(key, owner, conn, now, &mut fx)
                    .ok_or(PoolError::Closed),
                Err(e) => {
                    state.own_open_ended(true, now, &mut fx);
                    Err(e)
                }
            }
        };
        self.run(fx);
        out
    }

    /// Waits in the queue until a delivery or the deadline.
    async fn wait(
        self: &Arc<Self>,
        key: &C::Key,
        id: u64,
        rx: oneshot::Receiver<Delivery<C>>,
        start: Instant,
        deadline: Instant,
    ) -> Result<Handover<C>, PoolError<C::Error>> {
        let mut guard = QueuedCheckout {
            inner: self,
            key,
            id,
            rx,
            done: false,
        };
        let result = tokio::time::timeout_at(deadline, &mut guard.rx).await;
        guard.done = true;
        match result {
            Ok(Ok(delivery)) => delivery,
            // Senders are only dropped unsent when the pool state itself is dropped.
            Ok(Err(_)) => Err(PoolError::Closed),
            Err(_elapsed) => {
                let now = Instant::now();
                let left = self.state.lock().leave_queue(id, true, now);
                match left {
                    Some((in_use, max_open, waiting)) => {
                        self.observer.wait_timed_out();
                        let waited = now.saturating_duration_since(start);
                        Err(PoolError::WaitTimeout {
                            waited,
                            in_use,
                            max_open,
                            waiting,
                        })
                    }
                    // Already out of the queue: the delivery was sent under the lock.
                    None => guard.rx.try_recv().unwrap_or(Err(PoolError::Closed)),
                }
            }
        }
    }
}

/// An `opening` slot reserved for a connect; if the connect future is dropped before it
/// finishes (cancelled checkout, runtime shutdown), the slot is given back.
pub(crate) struct OpeningSlot<'a, C: Connector, O: Send + 'static> {
    inner: &'a Arc<Inner<C, O>>,
    /// `None` = the caller's own connect.
    purpose: Option<Purpose>,
    armed: bool,
}

impl<'a, C: Connector, O: Send + 'static> OpeningSlot<'a, C, O> {
    /// Guards the slot reserved for a connect with `purpose` (`None` = the caller's own).
    pub fn new(inner: &'a Arc<Inner<C, O>>, purpose: Option<Purpose>) -> Self {
        OpeningSlot {
            inner,
            purpose,
            armed: true,
        }
    }

    /// The connect finished: the caller accounts for the slot itself.
    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl<C: Connector, O: Send + 'static> Drop for OpeningSlot<'_, C, O> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let now = Instant::now();
        let mut fx = Effects::new();
        {
            let mut state = self.inner.state.lock();
            match self.purpose {
                None => state.own_open_ended(false, now, &mut fx),
                Some(purpose) => state.open_abandoned(purpose, now, &mut fx),
            }
        }
        self.inner.run(fx);
    }
}

/// A queued checkout; if it is dropped while queued it leaves the queue, and a connection
/// already handed to it goes back to the pool.
struct QueuedCheckout<'a, C: Connector, O: Send + 'static> {
    inner: &'a Arc<Inner<C, O>>,
    key: &'a C::Key,
    id: u64,
    rx: oneshot::Receiver<Delivery<C>>,
    done: bool,
}

impl<C: Connector, O: Send + 'static> Drop for QueuedCheckout<'_, C, O> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let now = Instant::now();
        let mut fx = Effects::new();
        {
            let mut state = self.inner.state.lock();
            let delivered = match state.leave_queue(self.id, false, now) {
                Some(_) => None,
                None => self.rx.try_recv().ok().and_then(Result::ok),
            };
            if let Some(h) = delivered {
                state.checkin(self.key, h.conn, h.loan, false, now, &mut fx);
            }
        }
        self.inner.run(fx);
    }
}

/// Opens one connection in the background (for a waiter or warm-up) and places it.
async fn open_task<C: Connector, O: Send + 'static>(inner: Arc<Inner<C, O>>, open: Open<C::Key>) {
    let mut slot = OpeningSlot {
        inner: &inner,
        purpose: Some(open.purpose),
        armed: true,
    };
    let timeout = inner.state.lock().settings.connect_timeout;
    let result = inner.connect(&open.key, timeout).await;
    slot.armed = false;
    let mut fx = Effects::new();
    inner
        .state
        .lock()
        .opened(&open, result, Instant::now(), &mut fx);
    inner.run(fx);
}
