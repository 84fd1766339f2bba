//! The facts about PostgreSQL and MariaDB that the fleet budget's design rests on
//! (`docs/fleet-budget.md`), checked against real servers with real drivers and no sidepool:
//! what an unprivileged role can see of other sessions (`pg_locks`, `pg_stat_activity`, the
//! processlist), that a released lock goes straight to its waiter, which client statements
//! drop a session's locks, that a session whose socket closes gives everything back at once,
//! which per-session settings bound how long a silent peer's session lives, and that the
//! census protocol the design chose keeps racing growers within the budget.
//!
//! Each test's name states the fact. If one fails after a server upgrade, the design's
//! reasoning has to be read again, not the test relaxed.

mod mariadb;
mod pg;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

/// The first key of the int4-pair advisory locks these tests take: the design derives it from
/// the fleet key; here any constant does.
const FLEET_KEY: i32 = 0x5e_ed01;

/// A TCP relay in front of a server for one connection, which [`Cut::cut`] closes on both
/// sides at once: what the server sees when a sidecar is SIGKILLed (the kernel closes its
/// sockets; no Terminate, no COM_QUIT is sent).
pub struct Cut {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Cut {
    /// Listens on a free port; the first connection accepted is relayed to `upstream`.
    pub async fn must_start(upstream: String) -> Cut {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
        Cut { addr, task }
    }

    /// Drops both sockets (the relay task owns them).
    pub async fn cut(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// One step a test runs on a session of its own, again and again: a try for a lock, a count.
pub type Probe<S, T> = Box<dyn for<'a> Fn(&'a mut S) -> BoxFuture<'a, T> + Send + Sync>;

/// Boxes `f` as a [`Probe`] (and lets the compiler see the closure's signature).
pub fn probe<S, T, F>(f: F) -> Probe<S, T>
where
    F: for<'a> Fn(&'a mut S) -> BoxFuture<'a, T> + Send + Sync + 'static,
{
    Box::new(f)
}

/// A session trying for a lock back to back (each try gives back what it won) until told to
/// stop, then twice more: those two run after whatever the test waited for.
pub struct Race<S> {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(S, u64)>,
}

impl<S: Send + 'static> Race<S> {
    /// Returns once the first try has been answered.
    pub async fn start(mut session: S, try_once: Probe<S, bool>) -> Race<S> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (first, answered) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut first = Some(first);
            let (mut won, mut after_stop) = (0, 0);
            while after_stop < 2 {
                if flag.load(Ordering::Relaxed) {
                    after_stop += 1;
                }
                if try_once(&mut session).await {
                    won += 1;
                }
                if let Some(tx) = first.take() {
                    let _ = tx.send(());
                }
            }
            (session, won)
        });
        answered.await.expect("the racer tried");
        Race { stop, task }
    }

    /// Stops the racer: its session back, and how many of its tries won.
    pub async fn finish(self) -> (S, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("racer")
    }
}

/// The budget of the census races, their growers and how long they run.
pub const CENSUS_BUDGET: i64 = 10;
pub const CENSUS_GROWERS: u32 = 6;
pub const CENSUS_RUN: Duration = Duration::from_secs(3);

/// Samples the server's count with `count` every millisecond until `deadline`, then waits for
/// the `growers`; panics unless the count never passed [`CENSUS_BUDGET`], reached it, and
/// more than 20 connections were grown (so the race cannot pass by doing nothing).
pub async fn must_stay_within_the_budget<S>(
    mut sampler: S,
    count: Probe<S, i64>,
    deadline: Instant,
    growers: Vec<tokio::task::JoinHandle<()>>,
    grown: &AtomicU64,
) {
    let mut peak = 0;
    while Instant::now() < deadline {
        peak = peak.max(count(&mut sampler).await);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for g in growers {
        g.await.expect("grower");
    }
    assert!(
        peak <= CENSUS_BUDGET,
        "the server saw {peak} > {CENSUS_BUDGET}"
    );
    assert_eq!(peak, CENSUS_BUDGET, "the growers never filled the budget");
    assert!(
        grown.load(Ordering::Relaxed) > 20,
        "too few grows to mean much"
    );
}
