//! The load generator against a real throwaway MariaDB, directly: `select` (text point
//! select), `prepared` (server-side prepared statement) and `tpcb` on pgbench's tables created
//! by `MariaDbServer::create_pgbench_tables`, about 1 s each through the library API.

use std::time::Duration;

use sidepool_loadtest::load::{self, RunSpec, Scenario, Target};
use sidepool_loadtest::testbed::{MariaDbOptions, MariaDbServer};

async fn must_run(dsn: &str, scenario: Scenario) -> load::TargetSummary {
    let spec = RunSpec {
        clients: 4,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        ..RunSpec::new(scenario)
    };
    let targets = [Target {
        name: "direct".into(),
        dsn: dsn.to_owned(),
        pid: None,
    }];
    let report = load::run(&spec, &targets, &mut |_| {}).await.expect("run");
    let [t] = &report.targets[..] else {
        panic!("one target expected: {report:?}")
    };
    assert_eq!(t.errors, 0, "{scenario:?}: {t:?}");
    assert!(t.transactions > 0 && t.tps > 0.0, "{scenario:?}: {t:?}");
    t.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_prepared_and_tpcb_against_mariadb_directly_complete_without_errors() {
    let db = MariaDbServer::must_start(&MariaDbOptions::default());
    db.create_user("bench", "bench-pw").expect("create user");
    db.create_database("bench", "bench")
        .expect("create database");
    db.create_pgbench_tables("bench", 1)
        .expect("pgbench tables");
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM bench.pgbench_accounts")
            .unwrap(),
        "100000"
    );
    // Over TCP: mysql_async would otherwise move to the server's unix socket.
    let dsn = format!(
        "{}?prefer_socket=false",
        db.dsn("bench", "bench-pw", "bench")
    );

    must_run(&dsn, Scenario::Select).await;
    must_run(&dsn, Scenario::Prepared).await;
    let tpcb = must_run(&dsn, Scenario::Tpcb).await;
    // Each TPC-B transaction commits one history row.
    let history: u64 = db
        .sql("SELECT COUNT(*) FROM bench.pgbench_history")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        history >= tpcb.transactions,
        "{history} history rows for {} transactions",
        tpcb.transactions
    );
    // MySQL DSNs get the same loopback-only check as PostgreSQL ones.
    assert!(load::check_loopback("x", "mysql://a:b@example.com:3306/db").is_err());
    assert!(load::check_loopback("x", &dsn).is_ok());
}
