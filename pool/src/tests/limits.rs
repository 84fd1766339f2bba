//! The hard limit under load, across threads and across reloads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::{ErrorKind, PoolSettings};

const KEYS: [&str; 6] = [
    "app/main",
    "app/audit",
    "ro/main",
    "batch/main",
    "a/b",
    "c/d",
];

/// Polls `cond` every virtual millisecond until it holds or `within` has passed.
async fn must_reach_within(pool: &TestPool, within: Duration, cond: impl Fn(&Stats) -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond(&pool.stats()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reached: {:?}",
            pool.stats()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Checks the limit on the pool and on live fake connections until told to stop.
fn spawn_checker(
    pool: TestPool,
    fake: FakeConnector,
    max_open: u32,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u32> {
    let paused = tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread;
    tokio::spawn(async move {
        let mut checks = 0;
        while !stop.load(Ordering::SeqCst) {
            let s = pool.stats();
            assert_within_limit(&s, max_open);
            assert!(
                fake.live() <= max_open,
                "{} live fake connections",
                fake.live()
            );
            checks += 1;
            if paused {
                // Under paused time a yielding task would keep the clock from advancing.
                tokio::time::sleep(Duration::from_micros(100)).await;
            } else {
                tokio::task::yield_now().await;
            }
        }
        checks
    })
}

#[tokio::test(start_paused = true)]
async fn hard_limit_holds_under_heavy_concurrency_with_many_keys() {
    const MAX_OPEN: u32 = 8;
    let s = PoolSettings {
        max_open: MAX_OPEN,
        max_idle: 4,
        min_idle: 2,
        max_lifetime: Some(Duration::from_millis(100)),
        max_idle_time: Some(Duration::from_millis(30)),
        wait_timeout: Duration::from_millis(500),
        max_waiting: 250,
        connect_timeout: Duration::from_millis(40),
        reap_interval: Duration::from_millis(10),
        lifetime_jitter: 0.5,
    };
    let (pool, fake, _) = must_pool::<()>(s);
    fake.set_delay(Duration::from_millis(3));
    let stop = Arc::new(AtomicBool::new(false));
    let checker = spawn_checker(pool.clone(), fake.clone(), MAX_OPEN, stop.clone());
    let chaos = tokio::spawn({
        let (fake, stop) = (fake.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(90)).await;
                fake.set_fail(true);
                tokio::time::sleep(Duration::from_millis(10)).await;
                fake.set_fail(false);
            }
        }
    });
    let errors: Arc<[AtomicU32; 5]> = Arc::new(Default::default());
    let mut tasks = Vec::new();
    for t in 0..300u64 {
        let (pool, errors) = (pool.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(t);
            for _ in 0..20 {
                let key = KEYS[rng.gen_range(0..KEYS.len())];
                match pool.get(&key, ()).await {
                    Ok(conn) => {
                        assert_eq!(*conn.key(), key);
                        assert!(conn.name.starts_with(key), "{} for {key}", conn.name);
                        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..15))).await;
                        match rng.gen_range(0..50) {
                            0 => conn.discard(),
                            1 => drop(conn),
                            _ => conn.release(),
                        }
                    }
                    Err(e) => {
                        errors[e.kind() as usize].fetch_add(1, Ordering::SeqCst);
                    }
                }
                // Bursts and lulls, so idle connections age too.
                let pause = if rng.gen_range(0..10) == 0 { 200 } else { 5 };
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..pause))).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    assert!(checker.await.unwrap() > 1000, "the checker ran throughout");
    chaos.await.unwrap();
    assert!(
        fake.max_live() <= MAX_OPEN,
        "{} fake connections were live at once",
        fake.max_live()
    );

    let s = pool.stats();
    assert_eq!((s.in_use, s.waiting), (0, 0), "{s:?}");
    // The workload exercised what it claims to.
    assert!(
        s.wait_count > 100 && s.rebalance_closed > 0 && s.max_lifetime_closed > 0,
        "{s:?}"
    );
    assert!(
        s.connect_errors > 0 && s.broken_closed > 0 && s.max_idle_time_closed > 0,
        "{s:?}"
    );
    let connect_errors = errors[ErrorKind::Connect as usize].load(Ordering::SeqCst)
        + errors[ErrorKind::ConnectTimeout as usize].load(Ordering::SeqCst);
    assert!(connect_errors > 0);
    assert_eq!(errors[ErrorKind::Closed as usize].load(Ordering::SeqCst), 0);

    pool.close().await;
    must_reach_within(&pool, Duration::from_secs(1), |s| {
        s.opening == 0 && s.closing == 0
    })
    .await;
    let s = pool.stats();
    let closed = s.max_idle_closed
        + s.max_idle_time_closed
        + s.max_lifetime_closed
        + s.broken_closed
        + s.rebalance_closed
        + s.reload_closed
        + s.shutdown_closed;
    assert_eq!(
        (s.open, s.opened),
        (0, closed),
        "every opened connection was closed once"
    );
    assert_eq!(u64::from(fake.connects()), s.opened + s.connect_errors);
    assert_eq!(fake.live(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_limit_holds_across_threads() {
    const MAX_OPEN: u32 = 4;
    let mut s = settings(MAX_OPEN);
    s.max_idle = 2;
    s.wait_timeout = Duration::from_secs(60);
    let (pool, fake, _) = must_pool::<()>(s);
    let stop = Arc::new(AtomicBool::new(false));
    let checker = spawn_checker(pool.clone(), fake.clone(), MAX_OPEN, stop.clone());
    let mut tasks = Vec::new();
    for t in 0..64u64 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(t);
            for _ in 0..200 {
                let key = KEYS[rng.gen_range(0..3)];
                let conn = pool.get(&key, ()).await.unwrap();
                for _ in 0..rng.gen_range(0..3) {
                    tokio::task::yield_now().await;
                }
                if rng.gen_range(0..20) == 0 {
                    conn.discard()
                } else {
                    conn.release()
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    checker.await.unwrap();
    assert!(
        fake.max_live() <= MAX_OPEN,
        "{} fake connections were live at once",
        fake.max_live()
    );
    let s = pool.stats();
    assert_eq!(
        (s.in_use, s.waiting, s.opening, s.closing),
        (0, 0, 0, 0),
        "{s:?}"
    );
    assert_eq!(fake.live(), s.idle);
}

#[tokio::test(start_paused = true)]
async fn raising_max_open_serves_waiters_at_once() {
    let (pool, fake, _) = must_pool::<()>(settings(1));
    let held = pool.get(&"k", ()).await.unwrap();
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.get(&"k", ()).await.unwrap() })
        })
        .collect();
    must_reach(&pool, "two waiters", |s| s.waiting == 2).await;
    let mut more = pool.settings();
    more.max_open = 3;
    pool.set_settings(more);
    for w in waiters {
        drop(w.await.unwrap());
    }
    assert_eq!((fake.connects(), fake.max_live()), (3, 3));
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn lowering_max_open_never_exceeds_the_lower_limit_afterwards() {
    const OLD: u32 = 6;
    const NEW: u32 = 3;
    let (pool, fake, _) = must_pool::<()>(settings(OLD));
    let mut held = Vec::new();
    for _ in 0..OLD {
        held.push(pool.get(&"k", ()).await.unwrap());
    }
    let mut lower = pool.settings();
    lower.max_open = NEW;
    pool.set_settings(lower);
    let live_at_reload = fake.live();
    let mut tasks = Vec::new();
    for t in 0..20u64 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(t);
            let key = KEYS[rng.gen_range(0..2)];
            let conn = pool.get(&key, ()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(rng.gen_range(1..20))).await;
            conn.release();
        }));
    }
    // Return the old connections one by one; the total only goes down until it is under NEW.
    let mut last_total = pool.stats().total();
    while let Some(conn) = held.pop() {
        tokio::time::sleep(Duration::from_millis(5)).await;
        conn.release();
        let s = pool.stats();
        assert!(
            s.total() <= last_total.max(NEW),
            "total grew while over the new limit: {s:?}"
        );
        last_total = s.total();
        assert!(fake.live() <= live_at_reload);
    }
    for task in tasks {
        task.await.unwrap();
    }
    let s = pool.stats();
    assert!(s.total() <= NEW && fake.max_live() <= OLD, "{s:?}");
    assert!(s.reload_closed >= u64::from(OLD - NEW), "{s:?}");
}
