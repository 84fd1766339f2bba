use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use sidepool_protocol::sql::{Dialect, Route, WriteFunctions, classify};

use super::health::{self, CHECK_INTERVAL, Checked, Probe};
use super::*;
use crate::backend::BoxFuture;
use crate::telemetry::{Role, Telemetry};

/// A backend with no connections, for the statistics a replica carries.
#[derive(Debug)]
struct NoBackend;

impl crate::backend::Backend for NoBackend {
    fn stats(&self) -> sidepool_pool::Stats {
        sidepool_pool::Stats::default()
    }
    fn holders(&self) -> Vec<crate::backend::Holder> {
        Vec::new()
    }
    fn set_settings(&self, _: sidepool_pool::PoolSettings) {}
    fn settings(&self) -> sidepool_pool::PoolSettings {
        unreachable!("not used")
    }
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

fn replica(t: &Telemetry, addr: &str) -> Arc<Replica> {
    Arc::new(Replica::new(
        addr.to_owned(),
        Arc::new(NoBackend),
        Arc::new(t.pool_metrics("p", addr, Role::Replica)),
    ))
}

fn healthy(r: &Replica) {
    health::apply(
        "p",
        r,
        Duration::from_secs(5),
        Ok(Checked::Lag(Duration::ZERO)),
    );
}

#[test]
fn replicas_start_out_of_rotation_until_a_check_passes() {
    let t = Telemetry::new();
    let r = replica(&t, "r1:5432");
    assert_eq!(r.state(), ReplicaState::Unknown);
    assert_eq!(pick(std::slice::from_ref(&r), &AtomicUsize::new(0)), None);
    healthy(&r);
    assert_eq!(
        pick(std::slice::from_ref(&r), &AtomicUsize::new(0)),
        Some(0)
    );
}

#[test]
fn pick_prefers_the_replica_with_fewest_outstanding_and_skips_unusable_ones() {
    let t = Telemetry::new();
    let rs = [replica(&t, "a:1"), replica(&t, "b:1"), replica(&t, "c:1")];
    rs.iter().for_each(|r| healthy(r));
    let turn = AtomicUsize::new(0);
    let _a1 = rs[0].lease();
    let _a2 = rs[0].lease();
    let _b1 = rs[1].lease();
    assert_eq!(pick(&rs, &turn), Some(2), "c has none outstanding");
    rs[2].connect_failed();
    assert_eq!(pick(&rs, &turn), Some(1), "c is down; b has fewer than a");
    health::apply(
        "p",
        &rs[1],
        Duration::from_secs(1),
        Ok(Checked::Lag(Duration::from_secs(3))),
    );
    assert_eq!(rs[1].state(), ReplicaState::Lagging);
    assert_eq!(pick(&rs, &turn), Some(0));
    drop((_a1, _a2));
    assert_eq!(rs[0].outstanding(), 0, "dropping a lease counts it out");
}

#[test]
fn ties_between_idle_replicas_go_round_robin() {
    let t = Telemetry::new();
    let rs = [replica(&t, "a:1"), replica(&t, "b:1")];
    rs.iter().for_each(|r| healthy(r));
    let turn = AtomicUsize::new(0);
    let picks: Vec<_> = (0..4).map(|_| pick(&rs, &turn).unwrap()).collect();
    assert_eq!(picks, [0, 1, 0, 1]);
}

#[test]
fn check_outcomes_set_state_lag_and_metrics() {
    let t = Telemetry::new();
    let r = replica(&t, "r1:5432");
    let max = Duration::from_secs(2);
    health::apply("p", &r, max, Ok(Checked::Lag(Duration::from_millis(1500))));
    assert!(r.in_rotation());
    assert_eq!(r.lag(), Some(Duration::from_millis(1500)));
    health::apply("p", &r, max, Ok(Checked::Lag(Duration::from_millis(2500))));
    assert_eq!(r.state(), ReplicaState::Lagging);
    health::apply("p", &r, max, Ok(Checked::NotReplicating("stopped")));
    assert_eq!((r.state(), r.lag()), (ReplicaState::Lagging, None));
    health::apply("p", &r, max, Err("refused".into()));
    assert_eq!(r.state(), ReplicaState::Down);
    let text = t.render();
    assert!(
        text.contains(r#"sidepool_replica_lag_seconds{pool="p",backend="r1:5432"} inf"#),
        "{text}"
    );
    r.metrics.observe_backend(&Default::default());
    assert!(
        t.render()
            .contains(r#"sidepool_backend_up{pool="p",backend="r1:5432",role="replica"} 0"#)
    );
    healthy(&r);
    r.metrics.observe_backend(&Default::default());
    let text = t.render();
    assert!(
        text.contains(r#"sidepool_backend_up{pool="p",backend="r1:5432",role="replica"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"sidepool_replica_lag_seconds{pool="p",backend="r1:5432"} 0"#),
        "{text}"
    );
}

#[test]
fn the_primary_has_no_lag_series() {
    let t = Telemetry::new();
    let m = t.pool_metrics("p", "db:5432", Role::Primary);
    m.set_replica_lag(3.0);
    assert!(!t.render().contains("sidepool_replica_lag_seconds{"));
}

/// A replica whose answers the test scripts: lag grows while `paused` is set.
struct ScriptedProbe {
    answer: Arc<Mutex<Result<Checked, String>>>,
    calls: Arc<AtomicUsize>,
}

impl Probe for ScriptedProbe {
    fn check(&self) -> BoxFuture<'_, Result<Checked, String>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let answer = self.answer.lock().clone();
        Box::pin(async move { answer })
    }
}

#[tokio::test(start_paused = true)]
async fn checks_move_a_replica_out_within_one_interval_and_back_after_recovery() {
    let t = Telemetry::new();
    let r = replica(&t, "r1:5432");
    let settings = RoutingSettings::from_config(
        &sidepool_config::Routing {
            split: true,
            max_replica_lag: Duration::from_secs(1),
            ..Default::default()
        },
        true,
    );
    let routing = Arc::new(Routing::new(settings));
    let answer = Arc::new(Mutex::new(Ok(Checked::Lag(Duration::ZERO))));
    let calls = Arc::new(AtomicUsize::new(0));
    let probe = ScriptedProbe {
        answer: answer.clone(),
        calls: calls.clone(),
    };
    let task = tokio::spawn(health::run("p".into(), r.clone(), routing, probe));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(r.in_rotation(), "the first check runs at once");

    *answer.lock() = Ok(Checked::Lag(Duration::from_millis(1500)));
    tokio::time::sleep(CHECK_INTERVAL).await;
    assert_eq!(r.state(), ReplicaState::Lagging, "out at the next check");

    *answer.lock() = Ok(Checked::Lag(Duration::from_millis(200)));
    tokio::time::sleep(CHECK_INTERVAL).await;
    assert!(r.in_rotation(), "back at the next check");
    assert_eq!(calls.load(Ordering::Relaxed), 3);
    task.abort();
}

/// A probe that never answers.
struct Hanging;

impl Probe for Hanging {
    fn check(&self) -> BoxFuture<'_, Result<Checked, String>> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(start_paused = true)]
async fn a_check_without_answer_takes_the_replica_out() {
    let t = Telemetry::new();
    let r = replica(&t, "r1:5432");
    healthy(&r);
    let routing = Arc::new(Routing::new(RoutingSettings::from_config(
        &Default::default(),
        true,
    )));
    let task = tokio::spawn(health::run("p".into(), r.clone(), routing, Hanging));
    tokio::time::sleep(health::CHECK_TIMEOUT + Duration::from_millis(10)).await;
    assert_eq!(r.state(), ReplicaState::Down);
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn read_your_writes_holds_reads_on_the_primary_for_the_window_after_release() {
    let window = Duration::from_secs(1);
    let mut ryw = ReadYourWrites::default();
    assert!(!ryw.holds(window));
    ryw.wrote();
    assert!(ryw.holds(window), "while the writing transaction is open");
    tokio::time::sleep(Duration::from_secs(5)).await;
    ryw.released();
    assert!(
        ryw.holds(window),
        "the window starts when the connection is returned"
    );
    tokio::time::sleep(Duration::from_millis(999)).await;
    assert!(ryw.holds(window));
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert!(!ryw.holds(window));
    ryw.released();
    assert!(
        !ryw.holds(window),
        "a release without a write starts nothing"
    );
}

#[test]
fn read_only_transactions_and_reads_want_a_replica_and_writes_are_writes() {
    let f = WriteFunctions::none();
    let c = |sql: &str| classify(sql.as_bytes(), Dialect::Postgres, &f);
    assert_eq!(wanted(&c("SELECT 1")), Route::Replica);
    assert_eq!(wanted(&c("BEGIN READ ONLY")), Route::Replica);
    assert_eq!(
        wanted(&c(
            "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
        )),
        Route::Replica
    );
    assert_eq!(
        wanted(&c("/* sidepool:primary */ BEGIN READ ONLY")),
        Route::Primary
    );
    assert_eq!(wanted(&c("BEGIN")), Route::Primary);
    assert_eq!(wanted(&c("SELECT nextval('s')")), Route::Primary);
    assert!(writes(c("INSERT INTO t VALUES (1)").kind));
    assert!(writes(
        c("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x").kind
    ));
    assert!(!writes(c("BEGIN").kind));
    assert!(!writes(c("COMMIT").kind));
    assert!(!writes(c("SET search_path = a").kind));
    assert!(!writes(c("SELECT 1").kind));
}
