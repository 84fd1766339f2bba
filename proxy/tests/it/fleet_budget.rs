//! The fleet budget (`[pools.fleet]`, docs/fleet-budget.md) with real `sidepool` processes in
//! front of one real PostgreSQL: the server's own view never lists more of the pool's sessions
//! than `max_open_total`, sampled by a superuser (not counted) every 100 ms or faster, while
//! pgbench drives every sidecar.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use crate::support::harness::*;
use crate::support::sidecar::Sidecar;
use sidepool_loadtest::testbed::{PgAuth, PgServer};

/// The budget of the steady-state test.
const BUDGET: i64 = 12;
/// Sidecars of the steady-state test.
const SIDECARS: usize = 5;

/// Limits of every sidecar: each alone could open 10, five could open 50.
fn limits() -> PoolSpec {
    PoolSpec::transaction("max_open = 10\nmax_idle = 10\nwait_timeout = \"60s\"")
}

fn fleet(total: i64) -> String {
    format!("[pools.fleet]\nmax_open_total = {total}\nmin_share = 1\n")
}

/// Samples the sessions of the pool's role from a superuser session (which is not one of
/// them) until stopped; keeps the peak and how many samples it took.
struct RoleSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<u64>,
}

impl RoleSampler {
    async fn start(pg: &PgServer, every: Duration) -> Self {
        let admin =
            must_connect(&pg.dsn(pg.superuser(), pg.superuser_password(), "postgres")).await;
        let (stop, peak) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicI64::new(0)),
        );
        let (flag, high) = (stop.clone(), peak.clone());
        let task = tokio::spawn(async move {
            let mut samples = 0;
            while !flag.load(Ordering::Relaxed) {
                let n: i64 = admin
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 \
                         AND backend_type = 'client backend'",
                        &[&USER],
                    )
                    .await
                    .expect("sample pg_stat_activity")
                    .get(0);
                high.fetch_max(n, Ordering::Relaxed);
                samples += 1;
                tokio::time::sleep(every).await;
            }
            samples
        });
        RoleSampler { stop, peak, task }
    }

    fn peak_now(&self) -> i64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Stops; returns (peak, samples).
    async fn finish(self) -> (i64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.task.await.expect("sampler");
        (self.peak.load(Ordering::Relaxed), samples)
    }
}

/// Starts `n` sidecars under a fleet budget of `total`.
async fn must_start_fleet(
    pg: &PgServer,
    n: usize,
    total: i64,
) -> (Vec<Sidecar>, Vec<tempfile::TempDir>) {
    let mut dirs = Vec::new();
    let mut sidecars = Vec::new();
    for _ in 0..n {
        let dir = tempfile::tempdir().unwrap();
        sidecars.push(Sidecar::must_start(dir.path(), pg, &limits(), &fleet(total)).await);
        dirs.push(dir);
    }
    (sidecars, dirs)
}

/// pgbench with `clients` against `sidecar` for `secs` seconds.
fn pgbench(pg: &PgServer, sidecar: &Sidecar, clients: u32, secs: u32) -> tokio::process::Child {
    pg_tool(pg, "pgbench", sidecar.pool.port())
        .args([
            "-n",
            "-S",
            "-c",
            &clients.to_string(),
            "-j",
            "2",
            "-T",
            &secs.to_string(),
        ])
        .spawn()
        .expect("start pgbench")
}

/// Waits for a pgbench run and asserts it ended with zero failed transactions.
async fn must_succeed(bench: tokio::process::Child, who: &str, sidecar: &Sidecar) -> u64 {
    let out = tokio::time::timeout(Duration::from_secs(120), bench.wait_with_output())
        .await
        .expect("pgbench ends")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("number of failed transactions: 0"),
        "{who}: pgbench failed:\n{stdout}\n{stderr}\nsidepool's log:\n{}",
        sidecar.log()
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.split('/').next()?.trim().parse().ok())
        .unwrap_or(0)
}

/// A gauge of the sidecar's `/metrics` (the first series with that name).
async fn gauge(sidecar: &Sidecar, name: &str) -> Option<f64> {
    let text = http_get(sidecar.admin, "/metrics").await?;
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: sidepool\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_sidecars_under_pgbench_never_list_more_than_a_budget_of_12_and_no_transaction_fails()
{
    let pg = must_start_pg(PgAuth::Scram);
    must_pgbench_init(&pg).await;
    let (sidecars, _dirs) = must_start_fleet(&pg, SIDECARS, BUDGET).await;
    let sampler = RoleSampler::start(&pg, Duration::from_millis(20)).await;
    let benches: Vec<_> = sidecars.iter().map(|s| pgbench(&pg, s, 20, 10)).collect();
    let mut done = Vec::new();
    for (i, (bench, sidecar)) in benches.into_iter().zip(&sidecars).enumerate() {
        done.push(must_succeed(bench, &format!("sidecar {i}"), sidecar).await);
    }
    let (peak, samples) = sampler.finish().await;
    assert!(samples >= 100, "only {samples} samples");
    assert!(
        peak <= BUDGET,
        "the server listed {peak} sessions of the pool's role, budget {BUDGET}"
    );
    assert!(
        peak >= BUDGET - 2,
        "the fleet never came near its budget: peak {peak}"
    );
    assert!(
        done.iter().all(|&n| n > 0),
        "every sidecar served: {done:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_sidecar_next_to_four_idle_members_gets_all_they_leave_within_5_seconds() {
    let pg = must_start_pg(PgAuth::Scram);
    must_pgbench_init(&pg).await;
    let (sidecars, _dirs) = must_start_fleet(&pg, SIDECARS, BUDGET).await;
    // Four members with one idle client each: they hold one connection (min_share) and want
    // nothing more.
    let mut idle_clients = Vec::new();
    for s in &sidecars[1..] {
        let c = must_connect(&s.dsn()).await;
        c.simple_query("SELECT 1")
            .await
            .expect("idle member's query");
        idle_clients.push(c);
    }
    let sampler = RoleSampler::start(&pg, Duration::from_millis(20)).await;
    let busy = &sidecars[0];
    let bench = pgbench(&pg, busy, 20, 12);
    let want = (BUDGET - 4) as f64;
    let start = Instant::now();
    must_eventually(
        Duration::from_secs(8),
        "the busy sidecar holds 8 connections",
        || async { gauge(busy, "sidepool_fleet_share_connections").await >= Some(want) },
    )
    .await;
    let took = start.elapsed();
    assert!(
        took <= Duration::from_secs(5),
        "took {took:?} (pgbench start included)"
    );
    // The console and /pools say the same.
    let console = must_connect(
        &busy
            .dsn()
            .replace(&format!("dbname={DB}"), "dbname=sidepool"),
    )
    .await;
    let shown = console
        .simple_query("SHOW FLEET")
        .await
        .expect("SHOW FLEET");
    let row = shown
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .expect("a SHOW FLEET row");
    assert_eq!(row.get("budget"), Some("12"));
    assert_eq!(
        row.get("members"),
        Some("5"),
        "four idle members and the busy one"
    );
    let mine: u32 = row.get("mine").unwrap().parse().unwrap();
    assert!(mine >= 8, "SHOW FLEET mine = {mine}");
    let pools = http_get(busy.admin, "/pools").await.expect("/pools");
    assert!(
        pools.contains("\"fleet\":[{") && pools.contains("\"budget\":12"),
        "{pools}"
    );
    assert!(sampler.peak_now() <= BUDGET);
    must_succeed(bench, "busy sidecar", busy).await;
    let (peak, _) = sampler.finish().await;
    assert!(peak <= BUDGET, "peak {peak}");
    for c in &idle_clients {
        c.simple_query("SELECT 1")
            .await
            .expect("idle members still serve");
    }
}

// ---- MariaDB ----

mod mariadb {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
    use std::time::Duration;

    use mysql_async::prelude::*;

    use super::{BUDGET, SIDECARS};
    use crate::support::mysql::{USER, config_text, must_start_mariadb, primary};
    use crate::support::sidecar::Sidecar;

    /// mysql_async clients per sidecar.
    const CLIENTS: usize = 20;
    const RUN: Duration = Duration::from_secs(8);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn five_sidecars_under_load_never_list_more_than_a_budget_of_12_in_the_processlist() {
        let db = must_start_mariadb();
        let limits = "max_open = 10\nmax_idle = 10\nwait_timeout = \"60s\"";
        let text = format!(
            "{}\n[pools.fleet]\nmax_open_total = {BUDGET}\n",
            config_text(&primary(&db), "transaction", "password", limits)
        );
        let mut sidecars = Vec::new();
        let mut dirs = Vec::new();
        for _ in 0..SIDECARS {
            let dir = tempfile::tempdir().unwrap();
            sidecars.push(Sidecar::must_start_config(dir.path(), &text).await);
            dirs.push(dir);
        }
        // The superuser's own session is not one of `app`'s.
        let root = db.dsn(db.superuser(), db.superuser_password(), "mysql");
        let mut sampler = mysql_async::Conn::from_url(root).await.expect("superuser");
        let stop = Arc::new(AtomicBool::new(false));
        let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut clients = Vec::new();
        for s in &sidecars {
            for _ in 0..CLIENTS {
                let url = format!(
                    // prefer_socket=false: mysql_async would otherwise ask for @@socket and
                    // reconnect to the server's own socket, around sidepool.
                    "mysql://{USER}:{}@127.0.0.1:{}/{}?prefer_socket=false",
                    crate::support::mysql::PASSWORD,
                    s.pool.port(),
                    crate::support::mysql::DB
                );
                let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
                clients.push(tokio::spawn(async move {
                    let mut conn = match mysql_async::Conn::from_url(url).await {
                        Ok(c) => c,
                        Err(e) => {
                            eprintln!("login failed: {e}");
                            failed.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    };
                    while !stop.load(Ordering::Relaxed) {
                        match conn.query_drop("SELECT 1").await {
                            Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                eprintln!("query failed: {e}");
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                    let _ = conn.disconnect().await;
                }));
            }
        }
        let peak = AtomicI64::new(0);
        let mut samples = 0;
        let end = tokio::time::Instant::now() + RUN;
        while tokio::time::Instant::now() < end {
            let n: i64 = sampler
                .query_first(format!(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{USER}'"
                ))
                .await
                .expect("sample the processlist")
                .unwrap_or(0);
            peak.fetch_max(n, Ordering::Relaxed);
            samples += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.await.expect("client task");
        }
        let peak = peak.load(Ordering::Relaxed);
        let logs: Vec<String> = sidecars.iter().map(Sidecar::log).collect();
        assert_eq!(
            failed.load(Ordering::Relaxed),
            0,
            "clients failed; logs:\n{logs:#?}"
        );
        assert!(done.load(Ordering::Relaxed) > 1000, "the load ran");
        assert!(samples >= 100, "only {samples} samples");
        assert!(
            peak <= BUDGET,
            "the processlist listed {peak} of {USER}'s sessions, budget {BUDGET}; logs:\n{logs:#?}"
        );
        assert!(
            peak >= BUDGET - 2,
            "the fleet never came near its budget: peak {peak}"
        );
    }
}
