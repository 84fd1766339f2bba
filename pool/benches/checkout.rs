//! Checkout + return round trips of sidepool-pool against bb8 0.9 and deadpool 0.13 (managed),
//! with a trivial in-memory connection, so only pool overhead is measured.
//!
//! `cargo bench -p sidepool-pool` (briefly: `-- --warm-up-time 1 --measurement-time 2`).

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sidepool_pool::{Connector, Pool, PoolSettings};
use tokio::runtime::Runtime;

const MAX_OPEN: u32 = 4;
const TASKS: u64 = 8;

struct MemConnector;

impl Connector for MemConnector {
    type Conn = u64;
    type Key = u8;
    type Error = Infallible;

    async fn connect(&self, _key: &u8) -> Result<u64, Infallible> {
        Ok(0)
    }
}

struct Bb8Manager;

impl bb8::ManageConnection for Bb8Manager {
    type Connection = u64;
    type Error = Infallible;

    async fn connect(&self) -> Result<u64, Infallible> {
        Ok(0)
    }

    async fn is_valid(&self, _conn: &mut u64) -> Result<(), Infallible> {
        Ok(())
    }

    fn has_broken(&self, _conn: &mut u64) -> bool {
        false
    }
}

struct DeadpoolManager;

impl deadpool::managed::Manager for DeadpoolManager {
    type Type = u64;
    type Error = Infallible;

    async fn create(&self) -> Result<u64, Infallible> {
        Ok(0)
    }

    async fn recycle(
        &self,
        _conn: &mut u64,
        _metrics: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Infallible> {
        Ok(())
    }
}

fn sidepool_settings() -> PoolSettings {
    PoolSettings {
        max_open: MAX_OPEN,
        max_idle: MAX_OPEN,
        min_idle: 0,
        max_lifetime: Some(Duration::from_secs(3600)),
        max_idle_time: Some(Duration::from_secs(600)),
        wait_timeout: Duration::from_secs(30),
        max_waiting: 10_000,
        connect_timeout: Duration::from_secs(5),
        reap_interval: Duration::from_secs(1),
        lifetime_jitter: 0.1,
    }
}

type Pools = (
    Pool<MemConnector>,
    bb8::Pool<Bb8Manager>,
    deadpool::managed::Pool<DeadpoolManager>,
);

fn pools(rt: &Runtime) -> Pools {
    rt.block_on(async {
        let sidepool = Pool::new(MemConnector, sidepool_settings());
        let bb8 = bb8::Pool::builder()
            .max_size(MAX_OPEN)
            .test_on_check_out(false)
            .build(Bb8Manager)
            .await
            .expect("bb8 pool");
        let deadpool = deadpool::managed::Pool::builder(DeadpoolManager)
            .max_size(MAX_OPEN as usize)
            .build()
            .expect("deadpool pool");
        (sidepool, bb8, deadpool)
    })
}

fn uncontended(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let rt = rt.expect("tokio runtime");
    let (sidepool, bb8, deadpool) = pools(&rt);
    let mut group = c.benchmark_group("uncontended_round_trip");
    group.bench_function("sidepool", |b| {
        b.to_async(&rt).iter(|| async {
            let conn = sidepool.get(&0, ()).await.expect("checkout");
            black_box(*conn);
            conn.release();
        });
    });
    group.bench_function("bb8", |b| {
        b.to_async(&rt).iter(|| async {
            let conn = bb8.get().await.expect("checkout");
            black_box(*conn);
        });
    });
    group.bench_function("deadpool", |b| {
        b.to_async(&rt).iter(|| async {
            let conn = deadpool.get().await.expect("checkout");
            black_box(*conn);
        });
    });
    group.finish();
}

/// Runs `TASKS` tasks that share `iters` round trips; each holds its connection across a
/// yield so that the pool is always contended. Returns the wall time.
async fn contended<F, Fut>(iters: u64, round_trip: F) -> Duration
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let start = Instant::now();
    let per_task = iters.div_ceil(TASKS);
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let round_trip = round_trip.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    round_trip().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("bench task");
    }
    start.elapsed()
}

fn contended_8_tasks_4_conns(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let rt = rt.expect("tokio runtime");
    let (sidepool, bb8, deadpool) = pools(&rt);
    let mut group = c.benchmark_group("contended_8_tasks_4_conns");
    group.bench_function("sidepool", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let pool = sidepool.clone();
            contended(iters, move || {
                let pool = pool.clone();
                async move {
                    let conn = pool.get(&0, ()).await.expect("checkout");
                    tokio::task::yield_now().await;
                    black_box(*conn);
                    conn.release();
                }
            })
        });
    });
    group.bench_function("bb8", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let pool = bb8.clone();
            contended(iters, move || {
                let pool = pool.clone();
                async move {
                    let conn = pool.get().await.expect("checkout");
                    tokio::task::yield_now().await;
                    black_box(*conn);
                }
            })
        });
    });
    group.bench_function("deadpool", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let pool = deadpool.clone();
            contended(iters, move || {
                let pool = pool.clone();
                async move {
                    let conn = pool.get().await.expect("checkout");
                    tokio::task::yield_now().await;
                    black_box(*conn);
                }
            })
        });
    });
    group.finish();
}

criterion_group!(benches, uncontended, contended_8_tasks_4_conns);
criterion_main!(benches);
