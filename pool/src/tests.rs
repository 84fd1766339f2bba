//! Pool tests with fake connections (pingora-pool style): a connector that can fail, delay and
//! count live connections, and an observer that records events. Time is paused unless a test
//! says otherwise.

mod checkout;
mod close_reasons;
mod gate;
mod limits;
mod reaper;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::{CloseReason, Connector, Pool, PoolObserver, PoolSettings, Stats};

/// Shared knobs and counters of a [`FakeConnector`].
#[derive(Debug, Default)]
struct Control {
    live: AtomicU32,
    max_live: AtomicU32,
    connects: AtomicU32,
    fail: AtomicBool,
    delay_ms: AtomicU64,
    next: AtomicU32,
}

#[derive(Debug, thiserror::Error)]
#[error("fake: password authentication failed")]
struct FakeError;

/// A fake server connection; counts itself live until dropped.
#[derive(Debug)]
struct FakeConn {
    name: String,
    ctl: Arc<Control>,
}

impl Drop for FakeConn {
    fn drop(&mut self) {
        self.ctl.live.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Clone, Default)]
struct FakeConnector {
    ctl: Arc<Control>,
}

impl FakeConnector {
    fn live(&self) -> u32 {
        self.ctl.live.load(Ordering::SeqCst)
    }
    fn max_live(&self) -> u32 {
        self.ctl.max_live.load(Ordering::SeqCst)
    }
    fn connects(&self) -> u32 {
        self.ctl.connects.load(Ordering::SeqCst)
    }
    fn set_fail(&self, fail: bool) {
        self.ctl.fail.store(fail, Ordering::SeqCst);
    }
    fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap();
        self.ctl.delay_ms.store(ms, Ordering::SeqCst);
    }
}

impl Connector for FakeConnector {
    type Conn = FakeConn;
    type Key = &'static str;
    type Error = FakeError;

    async fn connect(&self, key: &&'static str) -> Result<FakeConn, FakeError> {
        let ctl = Arc::clone(&self.ctl);
        let key = *key;
        ctl.connects.fetch_add(1, Ordering::SeqCst);
        let delay = ctl.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if ctl.fail.load(Ordering::SeqCst) {
            return Err(FakeError);
        }
        let live = ctl.live.fetch_add(1, Ordering::SeqCst) + 1;
        ctl.max_live.fetch_max(live, Ordering::SeqCst);
        let n = ctl.next.fetch_add(1, Ordering::SeqCst);
        Ok(FakeConn {
            name: format!("{key}#{n}"),
            ctl,
        })
    }
}

/// Records every observer event.
#[derive(Default)]
struct Recorder {
    opened: AtomicU32,
    connect_failed: AtomicU32,
    closed: Mutex<Vec<CloseReason>>,
    waits: Mutex<Vec<Duration>>,
    wait_timed_out: AtomicU32,
    rejected: AtomicU32,
    held: Mutex<Vec<Duration>>,
}

impl Recorder {
    fn closed(&self) -> Vec<CloseReason> {
        self.closed.lock().clone()
    }
}

impl PoolObserver for Recorder {
    fn connection_opened(&self) {
        self.opened.fetch_add(1, Ordering::SeqCst);
    }
    fn connect_failed(&self) {
        self.connect_failed.fetch_add(1, Ordering::SeqCst);
    }
    fn connection_closed(&self, reason: CloseReason) {
        self.closed.lock().push(reason);
    }
    fn checkout_waited(&self, wait: Duration) {
        self.waits.lock().push(wait);
    }
    fn wait_timed_out(&self) {
        self.wait_timed_out.fetch_add(1, Ordering::SeqCst);
    }
    fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::SeqCst);
    }
    fn released(&self, held: Duration) {
        self.held.lock().push(held);
    }
}

type TestPool<O = ()> = Pool<FakeConnector, O>;

/// Settings with every optional limit off and long timeouts; tests change what they test.
fn settings(max_open: u32) -> PoolSettings {
    PoolSettings {
        max_open,
        max_idle: max_open,
        min_idle: 0,
        max_lifetime: None,
        max_idle_time: None,
        wait_timeout: Duration::from_secs(5),
        max_waiting: 1000,
        connect_timeout: Duration::from_secs(5),
        reap_interval: Duration::from_secs(1),
        lifetime_jitter: 0.0,
    }
}

/// A pool with a fresh fake connector and a recorder.
fn must_pool<O: Send + 'static>(
    s: PoolSettings,
) -> (Pool<FakeConnector, O>, FakeConnector, Arc<Recorder>) {
    let fake = FakeConnector::default();
    let rec = Arc::new(Recorder::default());
    let pool = Pool::with_observer(fake.clone(), s, rec.clone());
    (pool, fake, rec)
}

/// Lets other tasks run until `cond` holds on the pool's stats, without moving the clock more
/// than the tasks themselves do; panics if it never holds.
async fn must_reach<C: Connector, O: Send + 'static>(
    pool: &Pool<C, O>,
    what: &str,
    cond: impl Fn(&Stats) -> bool,
) {
    for _ in 0..10_000 {
        if cond(&pool.stats()) {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("pool never reached: {what}; stats: {:?}", pool.stats());
}

/// Asserts the hard limit on a snapshot.
fn assert_within_limit(s: &Stats, max_open: u32) {
    assert!(
        s.total() <= max_open,
        "idle+in_use+opening+closing > {max_open}: {s:?}"
    );
}
