//! Checkout paths: reuse, FIFO hand-over, timeouts, rejection, connect errors, cancellation,
//! stats and the checkout table.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::{ErrorKind, PoolError};

/// Polls a future once (it must stay pending) so that it enqueues itself.
async fn must_pend<F: Future + Unpin>(fut: &mut F) {
    std::future::poll_fn(|cx| {
        assert!(
            std::pin::Pin::new(&mut *fut).poll(cx).is_pending(),
            "future completed early"
        );
        Poll::Ready(())
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn released_connection_is_reused_most_recent_first() {
    let (pool, fake, _) = must_pool::<()>(settings(4));
    let a = pool.get(&"k", ()).await.unwrap();
    let b = pool.get(&"k", ()).await.unwrap();
    let (a_id, b_id) = (a.id(), b.id());
    a.release();
    tokio::time::sleep(Duration::from_secs(1)).await;
    b.release();
    let c = pool.get(&"k", ()).await.unwrap();
    assert_eq!(
        c.id(),
        b_id,
        "LIFO: the most recently returned connection comes first"
    );
    let d = pool.get(&"k", ()).await.unwrap();
    assert_eq!(d.id(), a_id);
    assert_eq!(fake.connects(), 2);
}

#[tokio::test(start_paused = true)]
async fn idle_connection_of_another_key_is_not_handed_out() {
    let (pool, fake, _) = must_pool::<()>(settings(4));
    pool.get(&"a", ()).await.unwrap().release();
    let b = pool.get(&"b", ()).await.unwrap();
    assert!(b.name.starts_with("b#"), "got {}", b.name);
    assert_eq!(*b.key(), "b");
    assert_eq!(fake.connects(), 2);
    assert_eq!(pool.stats().idle, 1);
}

#[tokio::test(start_paused = true)]
async fn waiters_get_connections_in_fifo_order() {
    let (pool, _, _) = must_pool::<()>(settings(1));
    let held = pool.get(&"k", ()).await.unwrap();
    let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..5 {
        let (p, order) = (pool.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let conn = p.get(&"k", ()).await.unwrap();
            order.lock().push(i);
            tokio::time::sleep(Duration::from_millis(10)).await;
            conn.release();
        }));
        must_reach(&pool, "one more waiter", |s| s.waiting == i + 1).await;
    }
    held.release();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock(), vec![0, 1, 2, 3, 4]);
    let s = pool.stats();
    assert_eq!(
        (s.opened, s.wait_count, s.idle),
        (1, 5, 1),
        "hand-over, no new connection"
    );
}

#[tokio::test(start_paused = true)]
async fn checkin_hands_over_to_oldest_waiter_of_same_key_before_older_waiter_of_other_key() {
    let (pool, _, _) = must_pool::<()>(settings(2));
    let a = pool.get(&"a", ()).await.unwrap();
    let b = pool.get(&"b", ()).await.unwrap();
    let a_id = a.id();
    let waiter_b = tokio::spawn({
        let pool = pool.clone();
        async move { must_take_id(&pool, "b").await }
    });
    must_reach(&pool, "b waits", |s| s.waiting == 1).await;
    let waiter_a = tokio::spawn({
        let pool = pool.clone();
        async move { must_take_id(&pool, "a").await }
    });
    must_reach(&pool, "a waits", |s| s.waiting == 2).await;
    a.release();
    assert_eq!(
        waiter_a.await.unwrap(),
        a_id,
        "same-key waiter got the connection directly"
    );
    // The a-waiter's release finds only the b-waiter: a is closed to open a b connection.
    b.release();
    waiter_b.await.unwrap();
    assert_eq!(pool.stats().rebalance_closed, 1);
}

#[tokio::test(start_paused = true)]
async fn wait_timeout_fails_after_exactly_wait_timeout() {
    let mut s = settings(1);
    s.wait_timeout = Duration::from_millis(1500);
    let (pool, _, rec) = must_pool::<()>(s);
    let _held = pool.get(&"k", ()).await.unwrap();
    let start = Instant::now();
    let err = pool.get(&"k", ()).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(1500));
    match err {
        PoolError::WaitTimeout {
            waited,
            in_use,
            max_open,
            waiting,
        } => {
            assert_eq!(
                (waited, in_use, max_open, waiting),
                (Duration::from_millis(1500), 1, 1, 0)
            );
        }
        other => panic!("expected WaitTimeout, got {other:?}"),
    }
    let s = pool.stats();
    assert_eq!((s.wait_timeouts, s.wait_count, s.waiting), (1, 1, 0));
    assert_eq!(s.wait_duration, Duration::from_millis(1500));
    assert_eq!(rec.wait_timed_out.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn wait_timeout_text_names_counts() {
    let e: PoolError<FakeError> = PoolError::WaitTimeout {
        waited: Duration::from_secs(5),
        in_use: 20,
        max_open: 20,
        waiting: 37,
    };
    assert_eq!(
        e.to_string(),
        "no server connection became free within 5s (20/20 in use, 37 waiting)"
    );
    assert_eq!(e.kind(), ErrorKind::WaitTimeout);
    assert_eq!(e.kind().as_str(), "wait_timeout");
}

#[tokio::test(start_paused = true)]
async fn max_waiting_rejects_at_once() {
    let mut s = settings(1);
    s.max_waiting = 2;
    let (pool, _, rec) = must_pool::<()>(s);
    let _held = pool.get(&"k", ()).await.unwrap();
    let mut w1 = Box::pin(pool.get(&"k", ()));
    let mut w2 = Box::pin(pool.get(&"k", ()));
    must_pend(&mut w1).await;
    must_pend(&mut w2).await;
    let start = Instant::now();
    let err = pool.get(&"k", ()).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(
        matches!(
            err,
            PoolError::Rejected {
                in_use: 1,
                max_open: 1,
                waiting: 2
            }
        ),
        "{err:?}"
    );
    assert_eq!(pool.stats().rejected, 1);
    assert_eq!(rec.rejected.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn connect_error_is_returned_at_once() {
    let (pool, fake, rec) = must_pool::<()>(settings(2));
    fake.set_fail(true);
    let start = Instant::now();
    let err = pool.get(&"k", ()).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(matches!(err, PoolError::Connect(FakeError)), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Connect);
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert_eq!(source, "fake: password authentication failed");
    let s = pool.stats();
    assert_eq!((s.connect_errors, s.opening, s.wait_timeouts), (1, 0, 0));
    assert_eq!(rec.connect_failed.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn connect_error_reaches_a_waiter_at_once_not_as_timeout() {
    let mut s = settings(1);
    s.wait_timeout = Duration::from_secs(30);
    let (pool, fake, _) = must_pool::<()>(s);
    let held = pool.get(&"k", ()).await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move {
            let start = Instant::now();
            (pool.get(&"k", ()).await.map(|c| c.id()), start.elapsed())
        }
    });
    must_reach(&pool, "waiter queued", |s| s.waiting == 1).await;
    fake.set_fail(true);
    fake.set_delay(Duration::from_millis(200));
    held.discard(); // frees the slot: a connect is made for the waiter, and fails
    let (result, waited) = waiter.await.unwrap();
    assert!(matches!(result, Err(PoolError::Connect(_))), "{result:?}");
    assert_eq!(waited, Duration::from_millis(200));
    let s = pool.stats();
    assert_eq!(
        (s.connect_errors, s.wait_timeouts, s.waiting, s.opening),
        (1, 0, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn connect_timeout_fails_after_connect_timeout() {
    let mut s = settings(1);
    s.connect_timeout = Duration::from_secs(2);
    let (pool, fake, _) = must_pool::<()>(s);
    fake.set_delay(Duration::from_secs(10));
    let start = Instant::now();
    let err = pool.get(&"k", ()).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert!(
        matches!(err, PoolError::ConnectTimeout(d) if d == Duration::from_secs(2)),
        "{err:?}"
    );
    let s = pool.stats();
    assert_eq!((s.connect_errors, s.opening, s.open), (1, 0, 0));
    // The freed slot is usable again.
    fake.set_delay(Duration::ZERO);
    pool.get(&"k", ()).await.unwrap().release();
}

#[tokio::test(start_paused = true)]
async fn dropped_waiter_leaves_queue_and_loses_nothing() {
    let (pool, fake, _) = must_pool::<()>(settings(1));
    let held = pool.get(&"k", ()).await.unwrap();
    let id = held.id();
    let gave_up = tokio::time::timeout(Duration::from_millis(100), pool.get(&"k", ())).await;
    assert!(gave_up.is_err(), "the outer timeout cancelled the checkout");
    assert_eq!(pool.stats().waiting, 0);
    held.release();
    let s = pool.stats();
    assert_eq!(
        (s.idle, s.in_use),
        (1, 0),
        "the connection went idle, not to the gone waiter"
    );
    assert_eq!(pool.get(&"k", ()).await.unwrap().id(), id);
    assert_eq!(fake.connects(), 1);
}

#[tokio::test(start_paused = true)]
async fn connection_handed_to_a_dropped_waiter_is_checked_back_in() {
    let (pool, fake, _) = must_pool::<()>(settings(1));
    let held = pool.get(&"k", ()).await.unwrap();
    let mut waiter = Box::pin(pool.get(&"k", ()));
    must_pend(&mut waiter).await;
    held.release(); // handed over into the waiter's channel
    assert_eq!(pool.stats().in_use, 1);
    drop(waiter); // dropped before it ever saw the connection
    let s = pool.stats();
    assert_eq!((s.idle, s.in_use, s.waiting), (1, 0, 0));
    assert!(pool.checkouts().is_empty());
    assert_eq!(fake.live(), 1);
}

#[tokio::test(start_paused = true)]
async fn connection_handed_over_at_the_deadline_is_not_lost() {
    let mut s = settings(1);
    s.wait_timeout = Duration::from_secs(1);
    let (pool, _, _) = must_pool::<()>(s);
    let held = pool.get(&"k", ()).await.unwrap();
    let mut waiter = Box::pin(pool.get(&"k", ()));
    must_pend(&mut waiter).await;
    tokio::time::advance(Duration::from_secs(1)).await; // the deadline passes...
    held.release(); // ...and the connection is sent in the same instant
    let got = waiter.await;
    let s = pool.stats();
    match got {
        Ok(conn) => {
            assert_eq!((s.in_use, s.idle), (1, 0));
            conn.release();
        }
        Err(e) => panic!("a delivered connection was reported as {e:?}"),
    }
    assert_eq!(pool.stats().idle, 1);
}

#[tokio::test(start_paused = true)]
async fn cancelled_connect_frees_its_slot() {
    let (pool, fake, _) = must_pool::<()>(settings(1));
    fake.set_delay(Duration::from_secs(3));
    let gave_up = tokio::time::timeout(Duration::from_secs(1), pool.get(&"k", ())).await;
    assert!(gave_up.is_err());
    let s = pool.stats();
    assert_eq!((s.opening, s.open), (0, 0));
    fake.set_delay(Duration::ZERO);
    let start = Instant::now();
    pool.get(&"k", ()).await.unwrap().release();
    assert_eq!(start.elapsed(), Duration::ZERO, "slot was free at once");
}

#[tokio::test(start_paused = true)]
async fn stats_and_checkouts_describe_the_pool() {
    let (pool, _, rec) = must_pool::<&'static str>(settings(3));
    let t0 = Instant::now();
    let a = pool.get(&"db1", "client-a").await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b = pool.get(&"db2", "client-b").await.unwrap();
    let list = pool.checkouts();
    assert_eq!(list.len(), 2);
    assert_eq!(
        (list[0].id, list[0].key, list[0].owner),
        (a.id(), "db1", "client-a")
    );
    assert_eq!((list[0].checked_out_at, list[0].conn_created_at), (t0, t0));
    assert_eq!(
        (list[1].id, list[1].key, list[1].owner),
        (b.id(), "db2", "client-b")
    );
    assert_eq!(list[1].checked_out_at, t0 + Duration::from_secs(2));
    assert_eq!(a.checked_out_at(), t0);
    assert_eq!(a.created_at(), t0);
    let s = pool.stats();
    assert_eq!(
        (s.max_open, s.open, s.in_use, s.idle, s.opened),
        (3, 2, 2, 0, 2)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.release();
    let list = pool.checkouts();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].owner, "client-b");
    let s = pool.stats();
    assert_eq!((s.open, s.in_use, s.idle), (2, 1, 1));
    assert_eq!(*rec.held.lock(), vec![Duration::from_secs(3)]);
    assert_eq!(*rec.waits.lock(), vec![Duration::ZERO, Duration::ZERO]);
    assert_eq!(rec.opened.load(Ordering::SeqCst), 2);
    drop(b);
}

#[tokio::test(start_paused = true)]
async fn checkout_wait_is_reported_to_the_observer() {
    let (pool, _, rec) = must_pool::<()>(settings(1));
    let held = pool.get(&"k", ()).await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get(&"k", ()).await.unwrap().release() }
    });
    must_reach(&pool, "waiter queued", |s| s.waiting == 1).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    held.release();
    waiter.await.unwrap();
    assert_eq!(
        *rec.waits.lock(),
        vec![Duration::ZERO, Duration::from_millis(700)]
    );
    assert_eq!(pool.stats().wait_duration, Duration::from_millis(700));
}

#[tokio::test(start_paused = true)]
async fn checkout_future_is_send() {
    let (pool, _, _) = must_pool::<Arc<String>>(settings(1));
    let owner = Arc::new("session".to_owned());
    let conn = tokio::spawn(async move { pool.get(&"k", owner).await.map(|c| c.id()) });
    assert_eq!(conn.await.unwrap().unwrap(), 1);
}

/// Checks out a connection of `key`, releases it, and returns its id.
async fn must_take_id(pool: &TestPool, key: &'static str) -> u64 {
    let conn = pool.get(&key, ()).await.unwrap();
    let id = conn.id();
    conn.release();
    id
}
