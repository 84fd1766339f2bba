//! The `sidepool` binary as a pod runs it: a child process started from a config file, driven by
//! signals, in front of a real PostgreSQL under pgbench load. In-process tests (`lifecycle.rs`)
//! cover the same logic in detail; these prove that the signals reach it.

use std::time::{Duration, Instant};

use crate::support::harness::*;
use crate::support::sidecar::{Sidecar, ready_status};
use sidepool_loadtest::testbed::PgAuth;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_lowering_max_open_from_10_to_3_under_pgbench_loses_no_client_and_caps_the_server() {
    let pg = must_start_pg(PgAuth::Scram);
    must_pgbench_init(&pg).await;
    let direct = must_connect_direct(&pg).await;
    let dir = tempfile::tempdir().unwrap();
    let limits = |n: u32| format!("max_open = {n}\nmax_idle = {n}\nwait_timeout = \"30s\"");
    let sidecar =
        Sidecar::must_start(dir.path(), &pg, &PoolSpec::transaction(&limits(10)), "").await;

    let bench = pg_tool(&pg, "pgbench", sidecar.pool.port())
        .args(["-n", "-c", "16", "-j", "2", "-T", "8"])
        .spawn()
        .expect("start pgbench");
    must_eventually(
        Duration::from_secs(10),
        "pgbench fills the pool",
        || async { server_connections(&direct).await >= 8 },
    )
    .await;

    sidecar.write_config(&pg, &PoolSpec::transaction(&limits(3)), "");
    sidecar.signal("HUP");
    must_eventually(
        Duration::from_secs(10),
        "the server is down to 3 of the pool's connections",
        || async { server_connections(&direct).await <= 3 },
    )
    .await;
    // The same session samples on: a second `app` session would count itself.
    let sampler = PeakSampler::start(direct);

    let out = tokio::time::timeout(Duration::from_secs(60), bench.wait_with_output())
        .await
        .expect("pgbench ends")
        .unwrap();
    let peak = sampler.peak().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pgbench failed:\n{stdout}\n{stderr}");
    assert!(
        !stderr.contains("error") && !stdout.contains("failed transactions: 1"),
        "a client saw an error:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "pgbench did not report zero failures:\n{stdout}"
    );
    assert!(
        peak <= 3,
        "server saw {peak} connections after the pool shrank; sidepool's log:\n{}",
        sidecar.log()
    );
    let log = sidecar.log();
    assert!(log.contains("SIGHUP: reloading"), "{log}");
    assert!(log.contains("config reloaded"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_open_transaction_commit_with_readyz_503_and_exits_0_in_time() {
    let pg = must_start_pg(PgAuth::Scram);
    let direct = must_connect_direct(&pg).await;
    direct
        .batch_execute("CREATE TABLE sigterm_tx (id int); GRANT ALL ON sigterm_tx TO app")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let budget = Duration::from_secs(10);
    let mut sidecar = Sidecar::must_start(
        dir.path(),
        &pg,
        &PoolSpec::transaction("max_open = 2"),
        &format!("[shutdown]\ntimeout = \"{}s\"", budget.as_secs()),
    )
    .await;
    let client = must_connect(&sidecar.dsn()).await;
    client
        .batch_execute("BEGIN; INSERT INTO sigterm_tx VALUES (1)")
        .await
        .unwrap();

    let sent = Instant::now();
    sidecar.signal("TERM");
    must_eventually(
        Duration::from_secs(5),
        "/readyz says 503 while draining",
        || {
            let admin = sidecar.admin;
            async move { ready_status(admin).await == Some(503) }
        },
    )
    .await;
    // Still draining: the open transaction goes on and commits.
    client
        .batch_execute("INSERT INTO sigterm_tx VALUES (2); COMMIT")
        .await
        .expect("the open transaction commits during the drain");
    let status = tokio::time::timeout(budget + Duration::from_secs(5), sidecar.child.wait())
        .await
        .expect("sidepool exits")
        .unwrap();
    let took = sent.elapsed();
    assert!(status.success(), "exit {status:?}\n{}", sidecar.log());
    assert!(
        took < budget,
        "exited {took:?} after SIGTERM, budget {budget:?}"
    );
    let rows: i64 = direct
        .query_one("SELECT count(*) FROM sigterm_tx", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        rows, 2,
        "both rows of the drained transaction are committed"
    );
}
