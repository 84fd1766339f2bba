//! The load generator against a real throwaway PostgreSQL, directly (no pooler): `select` and
//! `storm` for about 2 s each through the library API.

use std::time::Duration;

use sidepool_loadtest::load::{self, RunSpec, Scenario, Target};
use sidepool_loadtest::testbed::{PgAuth, PgOptions, PgServer};

/// A trust-auth server with pgbench's tables at scale 1.
fn must_start_pgbench_server() -> PgServer {
    let pg = PgServer::must_start(&PgOptions {
        auth: PgAuth::Trust,
        ..PgOptions::default()
    });
    let out = std::process::Command::new(pg.bin("pgbench"))
        .args(["-i", "-q", "-s", "1", "-h", pg.host(), "-p"])
        .arg(pg.port().to_string())
        .args(["-U", pg.superuser(), "postgres"])
        .output()
        .expect("running pgbench -i");
    assert!(
        out.status.success(),
        "pgbench -i failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    pg
}

async fn must_run(pg: &PgServer, scenario: Scenario) -> load::ScenarioReport {
    let spec = RunSpec {
        clients: 4,
        duration: Duration::from_secs(2),
        warmup: Duration::from_millis(200),
        ..RunSpec::new(scenario)
    };
    let targets = [Target {
        name: "direct".into(),
        dsn: pg.dsn(pg.superuser(), "", "postgres"),
        // Our own process: proves the /proc sampling path end to end (the figures are the
        // load generator's, which is fine for a test).
        pid: Some(std::process::id()),
    }];
    let mut ticks = 0;
    let report = load::run(&spec, &targets, &mut |_| ticks += 1)
        .await
        .expect("run");
    assert!(ticks >= 1, "progress was never reported");
    report
}

fn assert_sane(report: &load::ScenarioReport) {
    let [t] = &report.targets[..] else {
        panic!("one target expected: {report:?}")
    };
    assert!(t.transactions > 0, "{t:?}");
    assert_eq!(t.errors, 0, "{t:?}");
    assert!(t.tps > 0.0 && t.tps_ratio == Some(1.0), "{t:?}");
    let p = t.latency;
    assert!(p.p50_us > 0, "{p:?}");
    assert!(
        p.p50_us <= p.p99_us && p.p99_us <= p.p999_us && p.p999_us <= p.max_us,
        "{p:?}"
    );
    // Every measured transaction finished inside the 2 s window, under the 30 s timeout.
    assert!(p.max_us < 2_100_000, "{p:?}");
    assert!(t.cpu_us_per_tx.is_some_and(|c| c >= 0.0), "{t:?}");
    assert!(t.peak_rss_kib.is_some_and(|k| k > 0), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_and_storm_against_postgres_directly_complete_without_errors() {
    let pg = must_start_pgbench_server();
    let select = must_run(&pg, Scenario::Select).await;
    assert_sane(&select);
    let storm = must_run(&pg, Scenario::Storm).await;
    assert_sane(&storm);
    // Every storm transaction opens a connection: it cannot outrun the plain select.
    assert!(
        storm.targets[0].tps < select.targets[0].tps,
        "{storm:?} vs {select:?}"
    );
}
