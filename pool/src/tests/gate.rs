//! The fleet gate: a gated pool opens only through `grow`, sheds at check-in, lends ahead of
//! waiters.

use std::time::Duration;

use super::*;
use crate::Grow;

fn pass<T>(_: &mut T) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
    Box::pin(async { true })
}

fn refuse<T>(_: &mut T) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
    Box::pin(async { false })
}

#[tokio::test(start_paused = true)]
async fn a_gated_pool_opens_nothing_by_itself_and_grow_serves_the_oldest_waiter() {
    let mut s = settings(4);
    s.min_idle = 2;
    let (pool, fake, _) = must_pool::<u32>(s);
    pool.set_gated(true);
    let first = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get(&"k", 1).await.map(|c| c.name.clone()) }
    });
    let second = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get(&"k", 2).await.map(|c| c.name.clone()) }
    });
    must_reach(&pool, "two waiters", |s| s.waiting == 2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        fake.connects(),
        0,
        "gated: neither checkout nor warm-up opens"
    );
    assert!(matches!(pool.grow(pass).await, Grow::Opened));
    assert_eq!(
        first.await.unwrap().unwrap(),
        "k#0",
        "the oldest waiter gets it"
    );
    assert_eq!(pool.stats().waiting, 1);
    assert!(matches!(pool.grow(pass).await, Grow::Opened));
    assert_eq!(second.await.unwrap().unwrap(), "k#1");
    // Both checkouts ended (their guards dropped as broken): nobody waits and 0 are idle,
    // so the warm-up target is the only demand left.
    assert!(matches!(pool.grow(pass).await, Grow::Opened));
    assert_eq!(pool.stats().idle, 1);
}

#[tokio::test(start_paused = true)]
async fn grow_stops_at_max_open_and_without_demand() {
    let (pool, fake, _) = must_pool::<()>(settings(1));
    pool.set_gated(true);
    assert!(matches!(pool.grow(pass).await, Grow::NoDemand));
    let held = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get(&"k", ()).await.map(|c| c.release()) }
    });
    must_reach(&pool, "a waiter", |s| s.waiting == 1).await;
    assert!(matches!(pool.grow(pass).await, Grow::Opened));
    held.await.unwrap().unwrap();
    let a = pool.get(&"k", ()).await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get(&"k", ()).await.map(|c| c.id()) }
    });
    must_reach(&pool, "a waiter", |s| s.waiting == 1).await;
    assert!(matches!(pool.grow(pass).await, Grow::AtLimit));
    assert_eq!(fake.connects(), 1);
    let a_id = a.id();
    a.release();
    assert_eq!(waiter.await.unwrap().unwrap(), a_id);
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_closes_as_fleet_and_its_waiter_stays_queued() {
    let (pool, fake, rec) = must_pool::<()>(settings(2));
    pool.set_gated(true);
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get(&"k", ()).await.map(|c| c.id()) }
    });
    must_reach(&pool, "a waiter", |s| s.waiting == 1).await;
    assert!(matches!(pool.grow(refuse).await, Grow::Refused));
    must_reach(&pool, "the refused one dropped", |s| s.total() == 0).await;
    assert_eq!(fake.live(), 0);
    assert_eq!(rec.closed(), vec![CloseReason::Fleet]);
    assert_eq!(pool.stats().waiting, 1, "still queued");
    assert!(matches!(pool.grow(pass).await, Grow::Opened));
    waiter.await.unwrap().unwrap();
    assert_eq!(pool.stats().fleet_closed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_connect_reaches_its_waiter_at_once() {
    let (pool, fake, _) = must_pool::<()>(settings(2));
    pool.set_gated(true);
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get(&"k", ()).await.map(|c| c.id()) }
    });
    must_reach(&pool, "a waiter", |s| s.waiting == 1).await;
    fake.set_fail(true);
    assert!(matches!(pool.grow(pass).await, Grow::Failed(_)));
    let err = waiter.await.unwrap().unwrap_err();
    assert!(
        matches!(err, crate::PoolError::Connect(FakeError)),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn shed_closes_idle_beyond_what_it_keeps_and_owes_the_rest_at_check_in() {
    let (pool, fake, rec) = must_pool::<()>(settings(4));
    let mut conns = futures_join(&pool, 4).await.into_iter();
    let a = conns.next().unwrap();
    let b = conns.next().unwrap();
    for c in conns {
        c.release();
    }
    assert_eq!(pool.stats().idle, 2);
    // Three to give back, one idle to keep: one idle closes now, two are owed.
    assert_eq!(pool.shed(3, 1), 1);
    must_reach(&pool, "one closed", |s| s.total() == 3).await;
    a.release();
    b.release();
    must_reach(&pool, "both owed closed", |s| s.total() == 1).await;
    assert_eq!(fake.live(), 1);
    assert_eq!(rec.closed(), vec![CloseReason::Fleet; 3]);
    let c = pool.get(&"k", ()).await.unwrap();
    c.release();
    assert_eq!(pool.stats().idle, 1, "nothing more owed");
}

#[tokio::test(start_paused = true)]
async fn unshed_cancels_what_is_owed() {
    let (pool, _, _) = must_pool::<()>(settings(2));
    let a = pool.get(&"k", ()).await.unwrap();
    assert_eq!(pool.shed(1, 0), 0);
    pool.unshed();
    a.release();
    assert_eq!(pool.stats().idle, 1);
}

#[tokio::test(start_paused = true)]
async fn a_borrow_takes_an_idle_connection_of_any_key_or_the_next_check_in_ahead_of_waiters() {
    let (pool, _, _) = must_pool::<u32>(settings(1));
    pool.get(&"a", 0).await.unwrap().release();
    let lent = pool.borrow(9, Duration::from_secs(1)).await.unwrap();
    assert_eq!(*lent.key(), "a");
    let owners: Vec<u32> = pool.checkouts().iter().map(|c| c.owner).collect();
    assert_eq!(owners, vec![9], "the borrow shows in the checkout table");
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get(&"a", 1).await.map(|c| c.id()) }
    });
    must_reach(&pool, "a waiter", |s| s.waiting == 1).await;
    let borrow = tokio::spawn({
        let pool = pool.clone();
        async move { pool.borrow(9, Duration::from_secs(1)).await.map(|c| c.id()) }
    });
    tokio::task::yield_now().await;
    let id = lent.id();
    lent.release();
    assert_eq!(borrow.await.unwrap(), Some(id), "the borrow goes first");
    // The second borrow's guard was dropped as broken; the waiter is served by a reopen.
    assert!(waiter.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_borrow_gives_up_after_its_timeout_and_frees_its_place() {
    let (pool, _, _) = must_pool::<()>(settings(1));
    let a = pool.get(&"a", ()).await.unwrap();
    assert!(pool.borrow((), Duration::from_millis(100)).await.is_none());
    a.release();
    assert_eq!(pool.stats().idle, 1, "nothing lent to a borrow that left");
    assert!(pool.borrow((), Duration::from_millis(100)).await.is_some());
}

/// Checks out `n` connections of key "k" one after another.
async fn futures_join(pool: &TestPool, n: usize) -> Vec<crate::Pooled<FakeConnector>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(pool.get(&"k", ()).await.unwrap());
    }
    out
}
