//! Reaper: min_idle warm-up, lifetime jitter, and stopping with the pool.

use std::time::Duration;

use super::*;

#[tokio::test(start_paused = true)]
async fn min_idle_is_not_kept_before_the_first_checkout() {
    let mut s = settings(4);
    s.min_idle = 2;
    let (pool, fake, _) = must_pool::<()>(s);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!((fake.connects(), pool.stats().idle), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn min_idle_is_warmed_up_after_the_first_checkout() {
    let mut s = settings(5);
    s.min_idle = 2;
    let (pool, fake, _) = must_pool::<()>(s);
    let held = pool.get(&"k", ()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let s = pool.stats();
    assert_eq!(
        (s.idle, s.in_use, s.opened),
        (2, 1, 3),
        "two idle besides the one in use"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(fake.connects(), 3, "no more once the target is met");
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn min_idle_warm_up_stays_within_max_open_and_max_idle() {
    let mut s = settings(2);
    s.min_idle = 5;
    s.max_idle = 5;
    let (pool, fake, _) = must_pool::<()>(s);
    let held = pool.get(&"k", ()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = pool.stats();
    assert_eq!((s.idle, s.in_use, s.total()), (1, 1, 2));
    assert_eq!(fake.max_live(), 2);
    drop(held);

    let mut s = settings(10);
    s.min_idle = 5;
    s.max_idle = 3;
    let (pool, _, _) = must_pool::<()>(s);
    pool.get(&"k", ()).await.unwrap().release();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = pool.stats();
    assert_eq!(
        (s.idle, s.max_idle_closed),
        (3, 0),
        "min_idle is capped by max_idle"
    );
}

#[tokio::test(start_paused = true)]
async fn min_idle_is_kept_for_the_most_recently_used_key() {
    let mut s = settings(10);
    s.min_idle = 3;
    let (pool, fake, _) = must_pool::<()>(s);
    pool.get(&"a", ()).await.unwrap().release();
    pool.get(&"b", ()).await.unwrap().release();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(fake.connects(), 3);
    let b1 = pool.get(&"b", ()).await.unwrap();
    let b2 = pool.get(&"b", ()).await.unwrap();
    assert_eq!(fake.connects(), 3, "the warmed connection belongs to b");
    drop((b1, b2));
}

#[tokio::test(start_paused = true)]
async fn lifetime_jitter_shortens_each_lifetime_within_bounds() {
    let mut s = settings(40);
    s.max_lifetime = Some(Duration::from_secs(100));
    s.lifetime_jitter = 0.2;
    let (pool, fake, _) = must_pool::<()>(s);
    let mut conns = Vec::new();
    for _ in 0..40 {
        conns.push(pool.get(&"k", ()).await.unwrap());
    }
    let lifetimes: Vec<Duration> = conns.iter().map(|c| c.lifetime().unwrap()).collect();
    for l in &lifetimes {
        assert!(
            *l > Duration::from_secs(80) && *l <= Duration::from_secs(100),
            "{l:?}"
        );
    }
    assert!(
        lifetimes.iter().any(|l| *l != lifetimes[0]),
        "lifetimes are spread: {lifetimes:?}"
    );
    for c in conns {
        c.release();
    }
    tokio::time::sleep(Duration::from_millis(79_500)).await;
    assert_eq!(pool.stats().max_lifetime_closed, 0);
    tokio::time::sleep(Duration::from_secs(21)).await;
    assert_eq!(pool.stats().max_lifetime_closed, 40);
    assert_eq!(fake.live(), 0);
}

#[test]
fn jittered_lifetime_is_between_max_less_jitter_and_max() {
    let mut s = settings(1);
    s.max_lifetime = Some(Duration::from_secs(100));
    s.lifetime_jitter = 0.1;
    assert_eq!(s.lifetime(0.0), Some(Duration::from_secs(100)));
    assert_eq!(s.lifetime(0.5), Some(Duration::from_secs(95)));
    assert!(s.lifetime(0.999_999).unwrap() > Duration::from_secs(90));
    s.lifetime_jitter = 7.0; // clamped to 1.0
    assert_eq!(s.lifetime(0.25), Some(Duration::from_secs(75)));
    s.max_lifetime = None;
    assert_eq!(s.lifetime(0.5), None);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_pool_handle_closes_idle_connections() {
    let (pool, fake, _) = must_pool::<()>(settings(4));
    let other = pool.clone();
    pool.get(&"k", ()).await.unwrap().release();
    drop(pool);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fake.live(), 1, "a clone still holds the pool");
    drop(other);
    tokio::task::yield_now().await;
    assert_eq!(
        fake.live(),
        0,
        "nothing (reaper included) kept the pool alive"
    );
}
