//! One round against one target: connect every client (at most [`CONNECT_PARALLELISM`] at a
//! time), start them together, warm up, measure, and sample the pooler's `/proc` entries at the
//! window's edges (CPU) and once a second (memory).

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::scenario::{Rng, Session, transaction};
use super::stats::LatencyHistogram;
use super::{RunSpec, Scenario, Target, procfs};

/// Clients logging in at the same time while a round sets up; more only queue in the listen
/// backlog and SCRAM's key derivation anyway.
const CONNECT_PARALLELISM: usize = 64;

/// How often progress is reported and the pooler's memory sampled.
const TICK: Duration = Duration::from_secs(1);

/// Shared state of a running round.
#[derive(Debug)]
pub(crate) struct Round {
    pub spec: RunSpec,
    pub target: Target,
    pub scale: u32,
    /// Measurement window `[start, end)`, set once every client is connected.
    window: OnceLock<(Instant, Instant)>,
    /// Transactions completed inside the window.
    measured: AtomicU64,
    /// Transactions completed at any time (progress only).
    completed: AtomicU64,
    /// Failed connects and transactions at any time.
    errors: AtomicU64,
    /// Clients connected (or given up connecting) during setup.
    ready: AtomicUsize,
    connect_slots: Semaphore,
}

impl Round {
    /// End of the measurement window (now, before it is set).
    pub fn window_end(&self) -> Instant {
        self.window.get().map_or_else(Instant::now, |w| w.1)
    }
}

/// What a round is doing, for the progress line.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Round number, from 1.
    pub round: u32,
    /// Rounds in the run.
    pub rounds: u32,
    /// The target's name.
    pub target: String,
    /// `connecting`, `warmup` or `measuring`.
    pub phase: &'static str,
    /// Clients connected so far, of how many.
    pub connected: (usize, usize),
    /// Transactions completed so far (warmup included).
    pub transactions: u64,
    /// Errors so far.
    pub errors: u64,
    /// Transactions per second over the last tick.
    pub tps_now: f64,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "round {}/{} {:<10} {:<10} clients {}/{}  tx {}  errors {}  {:.0} tps",
            self.round,
            self.rounds,
            self.target,
            self.phase,
            self.connected.0,
            self.connected.1,
            self.transactions,
            self.errors,
            self.tps_now
        )
    }
}

/// What one round against one target measured.
#[derive(Debug, Clone)]
pub struct RoundResult {
    /// The target's name.
    pub target: String,
    /// Round number, from 1.
    pub round: u32,
    /// Transactions completed inside the measurement window.
    pub transactions: u64,
    /// Failed connects and transactions during the whole round.
    pub errors: u64,
    /// Length of the measurement window.
    pub elapsed: Duration,
    /// Latencies of the measured transactions.
    pub latency: LatencyHistogram,
    /// Pooler utime + stime over the window, clock ticks.
    pub cpu_ticks: Option<u64>,
    /// Largest pooler VmRSS sampled during the round, KiB.
    pub rss_peak_kib: Option<u64>,
    /// Pooler VmHWM (peak since it started) at the end of the round, KiB.
    pub hwm_kib: Option<u64>,
    /// Pooler VmRSS growth from before to after the idle clients connected, KiB.
    pub idle_rss_delta_kib: Option<i64>,
}

/// `count(*)` of `pgbench_branches`, i.e. the scale `pgbench -i -s N` used.
///
/// # Errors
/// Cannot connect, or the table is missing or empty (run `pgbench -i` first).
pub(crate) async fn detect_scale(dsn: &str) -> anyhow::Result<u32> {
    let mut session = Session::open(dsn, Scenario::Select).await?;
    let rows = session
        .query_count("SELECT count(*) FROM pgbench_branches")
        .await;
    session.close().await;
    let scale = u32::try_from(rows?)?;
    anyhow::ensure!(
        scale > 0,
        "pgbench_branches is empty: run `pgbench -i -s N` first"
    );
    Ok(scale)
}

/// Runs one round of `spec` against `target`. Client-side failures are counted in
/// [`RoundResult::errors`]; only a pid that cannot be read is an error.
///
/// # Errors
/// `/proc/PID` of the target's pooler cannot be read.
pub async fn run_round(
    spec: &RunSpec,
    target: &Target,
    scale: u32,
    round_no: u32,
    progress: &mut dyn FnMut(&Progress),
) -> anyhow::Result<RoundResult> {
    let round = Arc::new(Round {
        spec: spec.clone(),
        target: target.clone(),
        scale,
        window: OnceLock::new(),
        measured: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        ready: AtomicUsize::new(0),
        connect_slots: Semaphore::new(CONNECT_PARALLELISM),
    });
    let sample = || -> anyhow::Result<Option<procfs::ProcSample>> {
        match target.pid {
            Some(pid) => Ok(Some(procfs::sample(pid)?)),
            None => Ok(None),
        }
    };
    let mut reporter = Reporter {
        round: &round,
        round_no,
        progress,
        last: (Instant::now(), 0),
        rss_peak: None,
    };
    let total = spec.idle_clients + spec.clients;

    // Idle clients first, so the memory they cost is measured alone.
    let (release_idle, idle_released) = watch::channel(false);
    let mut idle = JoinSet::new();
    let before_idle = sample()?;
    for _ in 0..spec.idle_clients {
        idle.spawn(idle_client(Arc::clone(&round), idle_released.clone()));
    }
    reporter
        .wait_ready(spec.idle_clients, total, &sample)
        .await?;
    let after_idle = sample()?;
    let idle_rss_delta_kib = match (spec.idle_clients, before_idle, after_idle) {
        (1.., Some(b), Some(a)) => Some(a.rss_kib as i64 - b.rss_kib as i64),
        _ => None,
    };

    let (go, started) = watch::channel(false);
    let mut active = JoinSet::new();
    for id in 0..spec.clients {
        let seed = (u64::from(round_no) << 32) ^ id as u64;
        active.spawn(active_client(Arc::clone(&round), seed, started.clone()));
    }
    reporter.wait_ready(total, total, &sample).await?;

    let start = Instant::now() + spec.warmup;
    let end = start + spec.duration;
    let _ = round.window.set((start, end));
    let _ = go.send(true);
    reporter.tick_until(start, "warmup", &sample).await?;
    let cpu_start = sample()?;
    reporter.tick_until(end, "measuring", &sample).await?;
    let cpu_end = sample()?;

    let mut latency = LatencyHistogram::new();
    while let Some(joined) = active.join_next().await {
        if let Ok(hist) = joined {
            latency.merge(&hist);
        }
    }
    let last = sample()?;
    reporter.note_rss(last);
    let _ = release_idle.send(true);
    while idle.join_next().await.is_some() {}

    Ok(RoundResult {
        target: target.name.clone(),
        round: round_no,
        transactions: round.measured.load(Ordering::Relaxed),
        errors: round.errors.load(Ordering::Relaxed),
        elapsed: spec.duration,
        latency,
        cpu_ticks: cpu_start
            .zip(cpu_end)
            .map(|(a, b)| b.cpu_ticks.saturating_sub(a.cpu_ticks)),
        rss_peak_kib: reporter.rss_peak,
        hwm_kib: last.map(|s| s.hwm_kib),
        idle_rss_delta_kib,
    })
}

/// Progress lines and memory samples while a round runs.
struct Reporter<'a> {
    round: &'a Round,
    round_no: u32,
    progress: &'a mut dyn FnMut(&Progress),
    last: (Instant, u64),
    rss_peak: Option<u64>,
}

impl Reporter<'_> {
    fn note_rss(&mut self, sample: Option<procfs::ProcSample>) {
        if let Some(s) = sample {
            self.rss_peak = Some(self.rss_peak.map_or(s.rss_kib, |p| p.max(s.rss_kib)));
        }
    }

    fn report(&mut self, phase: &'static str, of: usize) {
        let now = Instant::now();
        let done = self.round.completed.load(Ordering::Relaxed);
        let secs = now.duration_since(self.last.0).as_secs_f64();
        let tps_now = if secs > 0.0 {
            done.saturating_sub(self.last.1) as f64 / secs
        } else {
            0.0
        };
        self.last = (now, done);
        (self.progress)(&Progress {
            round: self.round_no,
            rounds: self.round.spec.rounds,
            target: self.round.target.name.clone(),
            phase,
            connected: (self.round.ready.load(Ordering::Relaxed), of),
            transactions: done,
            errors: self.round.errors.load(Ordering::Relaxed),
            tps_now,
        });
    }

    /// Until `want` clients are ready; each connect is bounded, so this ends.
    async fn wait_ready(
        &mut self,
        want: usize,
        of: usize,
        sample: &dyn Fn() -> anyhow::Result<Option<procfs::ProcSample>>,
    ) -> anyhow::Result<()> {
        let mut next = Instant::now() + TICK;
        while self.round.ready.load(Ordering::Acquire) < want {
            if Instant::now() >= next {
                self.note_rss(sample()?);
                self.report("connecting", of);
                next += TICK;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    async fn tick_until(
        &mut self,
        until: Instant,
        phase: &'static str,
        sample: &dyn Fn() -> anyhow::Result<Option<procfs::ProcSample>>,
    ) -> anyhow::Result<()> {
        let of = self.round.spec.clients + self.round.spec.idle_clients;
        loop {
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            tokio::time::sleep_until((now + TICK).min(until).into()).await;
            self.note_rss(sample()?);
            self.report(phase, of);
        }
    }
}

async fn idle_client(round: Arc<Round>, mut released: watch::Receiver<bool>) {
    let session = {
        let _slot = round.connect_slots.acquire().await;
        let opened = Session::open(&round.target.dsn, Scenario::Select).await;
        match opened {
            Ok(mut session) => match session.ping().await {
                Ok(()) => Some(session),
                Err(_) => None,
            },
            Err(_) => None,
        }
    };
    if session.is_none() {
        round.errors.fetch_add(1, Ordering::Relaxed);
    }
    round.ready.fetch_add(1, Ordering::Release);
    let _ = released.wait_for(|&r| r).await;
    if let Some(session) = session {
        if !session.is_open() {
            round.errors.fetch_add(1, Ordering::Relaxed);
        }
        session.close().await;
    }
}

async fn active_client(
    round: Arc<Round>,
    seed: u64,
    mut started: watch::Receiver<bool>,
) -> LatencyHistogram {
    let mut rng = Rng::new(seed);
    let mut session = None;
    if round.spec.scenario != Scenario::Storm {
        let _slot = round.connect_slots.acquire().await;
        match Session::open(&round.target.dsn, round.spec.scenario).await {
            Ok(s) => session = Some(s),
            Err(_) => {
                round.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    round.ready.fetch_add(1, Ordering::Release);
    let mut hist = LatencyHistogram::new();
    if started.wait_for(|&s| s).await.is_err() {
        return hist;
    }
    let Some(&(start, end)) = round.window.get() else {
        return hist;
    };
    while Instant::now() < end {
        let began = Instant::now();
        match transaction(&round, &mut session, &mut rng).await {
            Ok(()) => {
                let done = Instant::now();
                round.completed.fetch_add(1, Ordering::Relaxed);
                // Counted by completion time, as pgbench does.
                if done >= start && done < end {
                    round.measured.fetch_add(1, Ordering::Relaxed);
                    hist.record(done - began);
                }
            }
            Err(_) => {
                round.errors.fetch_add(1, Ordering::Relaxed);
                if session.as_ref().is_some_and(|s| !s.is_open()) {
                    session = None;
                }
                // Don't spin on a target that refuses everything.
                let pause = Instant::now() + Duration::from_millis(10);
                tokio::time::sleep_until(pause.min(end).into()).await;
            }
        }
    }
    if let Some(session) = session {
        session.close().await;
    }
    hist
}
