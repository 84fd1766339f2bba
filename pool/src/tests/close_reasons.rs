//! One test per close reason, each checking the counter, the observer and the live count.

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::PoolError;

#[tokio::test(start_paused = true)]
async fn checkin_beyond_max_idle_closes_with_max_idle() {
    let mut s = settings(5);
    s.max_idle = 1;
    let (pool, fake, rec) = must_pool::<()>(s);
    let conns = [
        pool.get(&"k", ()).await.unwrap(),
        pool.get(&"k", ()).await.unwrap(),
        pool.get(&"k", ()).await.unwrap(),
    ];
    for c in conns {
        c.release();
    }
    let s = pool.stats();
    assert_eq!((s.idle, s.max_idle_closed, s.open), (1, 2, 1));
    assert_eq!(
        rec.closed(),
        vec![CloseReason::MaxIdle, CloseReason::MaxIdle]
    );
    assert_eq!(fake.live(), 1);
}

#[tokio::test(start_paused = true)]
async fn reaper_closes_connection_idle_past_max_idle_time() {
    let mut s = settings(2);
    s.max_idle_time = Some(Duration::from_secs(10));
    let (pool, fake, rec) = must_pool::<()>(s);
    let a = pool.get(&"k", ()).await.unwrap();
    let b = pool.get(&"k", ()).await.unwrap();
    a.release();
    tokio::time::sleep(Duration::from_secs(5)).await;
    b.release();
    tokio::time::sleep(Duration::from_millis(5500)).await; // a idle 10.5 s, b 5.5 s
    let s = pool.stats();
    assert_eq!((s.idle, s.max_idle_time_closed), (1, 1), "only a is closed");
    assert_eq!(rec.closed(), vec![CloseReason::MaxIdleTime]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(pool.stats().max_idle_time_closed, 2);
    assert_eq!(fake.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn idle_connection_past_lifetime_is_not_handed_out() {
    let mut s = settings(2);
    s.max_lifetime = Some(Duration::from_secs(10));
    s.reap_interval = Duration::from_secs(3600); // the reaper must not be what saves us
    let (pool, fake, rec) = must_pool::<()>(s);
    let first = pool.get(&"k", ()).await.unwrap();
    let first_id = first.id();
    first.release();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let fresh = pool.get(&"k", ()).await.unwrap();
    assert_ne!(fresh.id(), first_id);
    assert_eq!(fresh.created_at(), Instant::now());
    let s = pool.stats();
    assert_eq!(
        (s.max_lifetime_closed, s.opened, s.in_use, s.idle),
        (1, 2, 1, 0)
    );
    assert_eq!(rec.closed(), vec![CloseReason::MaxLifetime]);
    assert_eq!(fake.live(), 1);
}

#[tokio::test(start_paused = true)]
async fn expired_connection_at_the_limit_passes_its_slot_to_the_checkout() {
    let mut s = settings(1);
    s.max_lifetime = Some(Duration::from_secs(10));
    s.reap_interval = Duration::from_secs(3600);
    let (pool, fake, _) = must_pool::<()>(s);
    pool.get(&"k", ()).await.unwrap().release();
    tokio::time::sleep(Duration::from_secs(11)).await;
    let fresh = pool.get(&"k", ()).await.unwrap();
    let s = pool.stats();
    assert_eq!(
        (s.wait_count, s.max_lifetime_closed, s.in_use),
        (0, 1, 1),
        "no wait at the limit"
    );
    assert_eq!(fake.max_live(), 1);
    drop(fresh);
}

#[tokio::test(start_paused = true)]
async fn checkin_past_lifetime_closes_and_checked_out_connection_is_never_closed_early() {
    let mut s = settings(2);
    s.max_lifetime = Some(Duration::from_secs(10));
    s.max_idle_time = Some(Duration::from_secs(1));
    s.reap_interval = Duration::from_millis(100);
    let (pool, fake, rec) = must_pool::<()>(s);
    let conn = pool.get(&"k", ()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await; // many reaper passes while in use
    assert_eq!((fake.live(), pool.stats().in_use), (1, 1));
    assert!(rec.closed().is_empty());
    conn.release();
    let s = pool.stats();
    assert_eq!((s.max_lifetime_closed, s.idle, s.open), (1, 0, 0));
    assert_eq!(rec.closed(), vec![CloseReason::MaxLifetime]);
    assert_eq!(fake.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn reaper_closes_idle_connection_past_lifetime() {
    let mut s = settings(2);
    s.max_lifetime = Some(Duration::from_secs(10));
    let (pool, fake, rec) = must_pool::<()>(s);
    pool.get(&"k", ()).await.unwrap().release();
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(pool.stats().idle, 1);
    tokio::time::sleep(Duration::from_millis(1500)).await; // reaper at t = 10 s
    let s = pool.stats();
    assert_eq!((s.idle, s.max_lifetime_closed), (0, 1));
    assert_eq!(rec.closed(), vec![CloseReason::MaxLifetime]);
    assert_eq!(fake.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn discard_and_drop_close_as_broken() {
    let (pool, fake, rec) = must_pool::<()>(settings(2));
    let a = pool.get(&"k", ()).await.unwrap();
    let b = pool.get(&"k", ()).await.unwrap();
    a.discard();
    drop(b); // neither released nor discarded: never reused
    let s = pool.stats();
    assert_eq!((s.broken_closed, s.idle, s.open), (2, 0, 0));
    assert_eq!(rec.closed(), vec![CloseReason::Broken, CloseReason::Broken]);
    assert_eq!(rec.held.lock().len(), 2);
    assert_eq!(fake.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn checkout_at_the_limit_closes_another_keys_idle_connection() {
    let (pool, fake, rec) = must_pool::<()>(settings(2));
    let a1 = pool.get(&"a", ()).await.unwrap();
    let a2 = pool.get(&"a", ()).await.unwrap();
    let older = a1.id();
    a1.release();
    tokio::time::sleep(Duration::from_secs(1)).await;
    a2.release();
    let b = pool.get(&"b", ()).await.unwrap();
    assert!(b.name.starts_with("b#"));
    let s = pool.stats();
    assert_eq!(
        (s.rebalance_closed, s.idle, s.in_use, s.wait_count),
        (1, 1, 1, 0)
    );
    assert_eq!(rec.closed(), vec![CloseReason::Rebalance]);
    assert_eq!(fake.max_live(), 2);
    b.release();
    let a = pool.get(&"a", ()).await.unwrap();
    assert_ne!(a.id(), older, "the least recently used one was closed");
}

#[tokio::test(start_paused = true)]
async fn checkin_with_only_another_keys_waiter_closes_and_opens_for_it() {
    let (pool, fake, rec) = must_pool::<()>(settings(1));
    let a = pool.get(&"a", ()).await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move {
            let conn = pool.get(&"b", ()).await.unwrap();
            let name = conn.name.clone();
            conn.release();
            name
        }
    });
    must_reach(&pool, "b waits", |s| s.waiting == 1).await;
    a.release();
    assert!(waiter.await.unwrap().starts_with("b#"));
    let s = pool.stats();
    assert_eq!((s.rebalance_closed, s.opened, s.waiting), (1, 2, 0));
    assert_eq!(rec.closed(), vec![CloseReason::Rebalance]);
    assert_eq!(fake.max_live(), 1);
}

#[tokio::test(start_paused = true)]
async fn lowering_max_open_closes_idle_excess_as_reload() {
    let (pool, fake, rec) = must_pool::<()>(settings(4));
    let conns: Vec<_> = futures_join(&pool, 4).await;
    let mut conns = conns.into_iter();
    let kept = [conns.next().unwrap(), conns.next().unwrap()];
    for c in conns {
        c.release();
    }
    assert_eq!(pool.stats().idle, 2);
    let mut lower = pool.settings();
    lower.max_open = 2;
    pool.set_settings(lower);
    let s = pool.stats();
    assert_eq!(
        (s.max_open, s.idle, s.in_use, s.reload_closed),
        (2, 0, 2, 2)
    );
    assert_eq!(rec.closed(), vec![CloseReason::Reload, CloseReason::Reload]);
    assert_eq!(fake.live(), 2);
    drop(kept);
}

#[tokio::test(start_paused = true)]
async fn lowering_max_open_closes_in_use_excess_at_checkin_and_new_checkouts_wait() {
    let (pool, fake, rec) = must_pool::<()>(settings(4));
    let mut conns = futures_join(&pool, 4).await;
    let mut lower = pool.settings();
    lower.max_open = 2;
    pool.set_settings(lower);
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move {
            let conn = pool.get(&"k", ()).await.unwrap();
            let id = conn.id();
            conn.release();
            id
        }
    });
    must_reach(&pool, "new checkout waits", |s| s.waiting == 1).await;
    conns.pop().unwrap().release(); // total 4 -> 3: closed (reload)
    conns.pop().unwrap().release(); // 3 -> 2: closed (reload)
    let s = pool.stats();
    assert_eq!((s.reload_closed, s.waiting, s.total()), (2, 1, 2));
    let third = conns.pop().unwrap();
    let third_id = third.id();
    third.release(); // total is 2 = max_open: handed to the waiter
    assert_eq!(waiter.await.unwrap(), third_id);
    assert_eq!(rec.closed(), vec![CloseReason::Reload, CloseReason::Reload]);
    assert_eq!(fake.connects(), 4);
}

#[tokio::test(start_paused = true)]
async fn close_closes_idle_connections_and_refuses_checkouts() {
    let (pool, fake, rec) = must_pool::<()>(settings(3));
    let conns = futures_join(&pool, 2).await;
    for c in conns {
        c.release();
    }
    pool.close().await;
    let s = pool.stats();
    assert_eq!((s.idle, s.open, s.shutdown_closed), (0, 0, 2));
    assert_eq!(
        rec.closed(),
        vec![CloseReason::Shutdown, CloseReason::Shutdown]
    );
    assert!(matches!(pool.get(&"k", ()).await, Err(PoolError::Closed)));
    assert_eq!(fake.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn close_fails_waiters_and_closes_later_checkins() {
    let (pool, fake, rec) = must_pool::<()>(settings(2));
    let mut held = futures_join(&pool, 2).await;
    let mut waiters = Vec::new();
    for _ in 0..3 {
        let pool = pool.clone();
        waiters.push(tokio::spawn(async move {
            let start = Instant::now();
            (pool.get(&"k", ()).await.map(|c| c.id()), start.elapsed())
        }));
    }
    must_reach(&pool, "three waiters", |s| s.waiting == 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    pool.close().await;
    for w in waiters {
        let (result, waited) = w.await.unwrap();
        assert!(matches!(result, Err(PoolError::Closed)), "{result:?}");
        assert_eq!(
            waited,
            Duration::from_millis(300),
            "failed at close, not at timeout"
        );
    }
    held.pop().unwrap().release();
    held.pop().unwrap().release();
    let s = pool.stats();
    assert_eq!(
        (s.idle, s.in_use, s.waiting, s.open, s.shutdown_closed),
        (0, 0, 0, 0, 2)
    );
    assert_eq!(
        rec.closed(),
        vec![CloseReason::Shutdown, CloseReason::Shutdown]
    );
    assert_eq!(fake.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn connection_opened_during_close_is_closed_as_shutdown() {
    let (pool, fake, _) = must_pool::<()>(settings(1));
    fake.set_delay(Duration::from_secs(1));
    let checkout = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get(&"k", ()).await.map(|c| c.id()) }
    });
    must_reach(&pool, "connect started", |s| s.opening == 1).await;
    pool.close().await;
    assert!(matches!(checkout.await.unwrap(), Err(PoolError::Closed)));
    let s = pool.stats();
    assert_eq!(
        (s.opened, s.shutdown_closed, s.open, s.opening),
        (1, 1, 0, 0)
    );
    assert_eq!(fake.live(), 0);
}

/// Checks out `n` connections of key "k".
async fn futures_join(pool: &TestPool, n: usize) -> Vec<crate::Pooled<FakeConnector>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(pool.get(&"k", ()).await.unwrap());
    }
    out
}
