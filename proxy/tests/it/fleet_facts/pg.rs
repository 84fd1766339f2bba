//! PostgreSQL facts of the fleet budget. Role `app` is a plain login role (no superuser, no
//! `pg_read_all_stats`): what it can do here, any application role can.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sidepool_loadtest::testbed::{PgAuth, PgServer};
use tokio_postgres::{Client, SimpleQueryMessage};

use super::{
    CENSUS_BUDGET, CENSUS_GROWERS, CENSUS_RUN, Cut, FLEET_KEY, Race, must_stay_within_the_budget,
    probe,
};
use crate::support::harness::{
    DB, PASSWORD, USER, connect, db_message, must_connect, must_eventually, must_start_pg, sqlstate,
};

const OTHER: &str = "other";
const OTHER_PASSWORD: &str = "other-secret";

/// A PostgreSQL with roles `app` (owning database `app`) and `other`, both unprivileged.
fn must_start_with_other() -> PgServer {
    let pg = must_start_pg(PgAuth::Scram);
    pg.create_user(OTHER, OTHER_PASSWORD, PgAuth::Scram)
        .expect("create role");
    pg
}

fn app_dsn(pg: &PgServer) -> String {
    pg.dsn(USER, PASSWORD, DB)
}

async fn must_i64(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", db_message(&e)))
        .get(0)
}

async fn must_bool(c: &Client, sql: &str) -> bool {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", db_message(&e)))
        .get(0)
}

async fn must_run(c: &Client, sql: &str) {
    c.batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", db_message(&e)));
}

async fn pid(c: &Client) -> i32 {
    c.query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pg_backend_pid")
        .get(0)
}

/// Panics unless the session's role is neither superuser nor allowed to read all statistics.
async fn must_be_unprivileged(c: &Client) {
    let row = c
        .query_one(
            "SELECT rolsuper, pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') \
             FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .expect("role attributes");
    assert_eq!(
        (row.get::<_, bool>(0), row.get::<_, bool>(1)),
        (false, false),
        "the role must be unprivileged for this fact to mean anything"
    );
}

/// Sessions holding or queued for the advisory lock `(FLEET_KEY, key2)` as `watch` sees them
/// in `pg_locks`: (pid, mode, granted), by pid.
async fn advisory(watch: &Client, key2: i32) -> Vec<(i32, String, bool)> {
    watch
        .query(
            "SELECT pid, mode, granted FROM pg_locks WHERE locktype = 'advisory' \
             AND classid::int8 = $1 AND objid::int8 = $2 AND objsubid = 2 ORDER BY pid",
            &[&i64::from(FLEET_KEY), &i64::from(key2)],
        )
        .await
        .expect("pg_locks")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// Client backends of `role` as `watch` counts them in `pg_stat_activity` (`watch` itself
/// included if it is one).
async fn backends_of(watch: &Client, role: &str) -> i64 {
    watch
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await
        .expect("pg_stat_activity")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_an_unprivileged_role_sees_advisory_locks_of_other_roles_and_databases_in_pg_locks() {
    let pg = must_start_with_other();
    let watch = must_connect(&app_dsn(&pg)).await;
    must_be_unprivileged(&watch).await;
    // Another role, in another database: advisory locks are per database, pg_locks is not.
    let holder = must_connect(&pg.dsn(OTHER, OTHER_PASSWORD, "postgres")).await;
    must_be_unprivileged(&holder).await;
    must_run(&holder, &format!("SELECT pg_advisory_lock({FLEET_KEY}, 7)")).await;
    assert_eq!(
        advisory(&watch, 7).await,
        vec![(pid(&holder).await, "ExclusiveLock".to_owned(), true)]
    );
    must_run(
        &holder,
        &format!("SELECT pg_advisory_unlock({FLEET_KEY}, 7)"),
    )
    .await;
    assert!(advisory(&watch, 7).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_locks_lists_each_session_sharing_an_advisory_lock_once_however_often_it_took_it() {
    let pg = must_start_pg(PgAuth::Scram);
    let watch = must_connect(&app_dsn(&pg)).await;
    let mut holders = Vec::new();
    for _ in 0..3 {
        let c = must_connect(&app_dsn(&pg)).await;
        must_run(
            &c,
            &format!("SELECT pg_advisory_lock_shared({FLEET_KEY}, 0)"),
        )
        .await;
        holders.push(c);
    }
    // Taken again by the same session: counted once more by the server, listed once.
    must_run(
        &holders[0],
        &format!("SELECT pg_advisory_lock_shared({FLEET_KEY}, 0)"),
    )
    .await;
    let rows = advisory(&watch, 0).await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(
        rows.iter()
            .all(|(_, mode, granted)| mode == "ShareLock" && *granted)
    );
    // One unlock of the double holder leaves it holding: still three rows.
    must_run(
        &holders[0],
        &format!("SELECT pg_advisory_unlock_shared({FLEET_KEY}, 0)"),
    )
    .await;
    assert_eq!(advisory(&watch, 0).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_an_unprivileged_role_counts_another_roles_sessions_in_pg_stat_activity() {
    let pg = must_start_with_other();
    let watch = must_connect(&app_dsn(&pg)).await;
    must_be_unprivileged(&watch).await;
    assert_eq!(backends_of(&watch, OTHER).await, 0);
    let _a = must_connect(&pg.dsn(OTHER, OTHER_PASSWORD, DB)).await;
    let _b = must_connect(&pg.dsn(OTHER, OTHER_PASSWORD, "postgres")).await;
    assert_eq!(backends_of(&watch, OTHER).await, 2);
    // The database is visible too, so a budget per database can be counted.
    let in_app: i64 = watch
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND datname = $2",
            &[&OTHER, &DB],
        )
        .await
        .expect("pg_stat_activity")
        .get(0);
    assert_eq!(in_app, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_session_is_in_pg_stat_activity_as_soon_as_its_login_completes() {
    let pg = must_start_with_other();
    let watch = must_connect(&app_dsn(&pg)).await;
    let mut open = Vec::new();
    for n in 1..=20 {
        open.push(must_connect(&pg.dsn(OTHER, OTHER_PASSWORD, DB)).await);
        // No polling: the very next statement of another session counts it.
        assert_eq!(backends_of(&watch, OTHER).await, n);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_stat_activity_is_read_once_per_transaction_at_its_first_use() {
    let pg = must_start_with_other();
    let watch = must_connect(&app_dsn(&pg)).await;
    must_run(&watch, "BEGIN").await;
    // Locks read first do not fix the snapshot: pg_stat_activity is read when first used.
    let _ = must_i64(&watch, "SELECT count(*) FROM pg_locks").await;
    let _early = must_connect(&pg.dsn(OTHER, OTHER_PASSWORD, DB)).await;
    assert_eq!(backends_of(&watch, OTHER).await, 1);
    let _late = must_connect(&pg.dsn(OTHER, OTHER_PASSWORD, DB)).await;
    assert_eq!(backends_of(&watch, OTHER).await, 1, "frozen until COMMIT");
    must_run(&watch, "COMMIT").await;
    assert_eq!(backends_of(&watch, OTHER).await, 2);
}

/// A `DO` block that returns once `OTHER` has no session, looking `rounds` times 50 ms apart,
/// and raises `still there` otherwise; `clear` says whether it clears the statistics snapshot
/// before each look (as the joiner's statement does). After its first look it takes the
/// advisory lock `(FLEET_KEY, mark)`, so a test knows that look has happened.
fn wait_for_room(rounds: u32, clear: bool, mark: i32) -> String {
    let clear = if clear {
        "PERFORM pg_stat_clear_snapshot();"
    } else {
        ""
    };
    format!(
        "DO $$ BEGIN FOR i IN 1..{rounds} LOOP {clear} \
         IF (SELECT count(*) FROM pg_stat_activity WHERE usename = '{OTHER}') = 0 \
         THEN RETURN; END IF; \
         IF i = 1 THEN PERFORM pg_advisory_lock_shared({FLEET_KEY}, {mark}); END IF; \
         PERFORM pg_sleep(0.05); END LOOP; \
         RAISE EXCEPTION 'still there'; END $$"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_looping_statement_sees_a_session_leave_only_if_it_clears_the_stats_snapshot() {
    let pg = must_start_with_other();
    let watch = must_connect(&app_dsn(&pg)).await;
    for (clear, mark) in [(false, 9), (true, 10)] {
        let joiner = must_connect(&app_dsn(&pg)).await;
        let leaving = must_connect(&pg.dsn(OTHER, OTHER_PASSWORD, DB)).await;
        let sql = wait_for_room(if clear { 100 } else { 20 }, clear, mark);
        let wait = tokio::spawn(async move { joiner.batch_execute(&sql).await });
        must_eventually(Duration::from_secs(10), "the first look", || async {
            !advisory(&watch, mark).await.is_empty()
        })
        .await;
        drop(leaving);
        let ended = wait.await.expect("joiner task");
        if clear {
            ended.unwrap_or_else(|e| panic!("never saw it leave: {}", db_message(&e)));
        } else {
            let err = ended.expect_err("a frozen snapshot still shows it");
            assert!(
                db_message(&err).contains("still there"),
                "{}",
                db_message(&err)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_session_advisory_lock_taken_in_a_transaction_survives_its_rollback() {
    let pg = must_start_pg(PgAuth::Scram);
    let watch = must_connect(&app_dsn(&pg)).await;
    let holder = must_connect(&app_dsn(&pg)).await;
    must_run(
        &holder,
        &format!("BEGIN; SELECT pg_advisory_lock_shared({FLEET_KEY}, 0); ROLLBACK"),
    )
    .await;
    assert_eq!(advisory(&watch, 0).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_hot_standby_grants_advisory_locks_and_counts_sessions_like_a_primary() {
    let pg = must_start_pg(PgAuth::Scram);
    let replica = pg.must_start_replica();
    replica.wait_caught_up().expect("the replica catches up");
    let dsn = format!(
        "host=127.0.0.1 port={} user={USER} password={PASSWORD} dbname={DB}",
        replica.port()
    );
    let watch = must_connect(&dsn).await;
    let holder = must_connect(&dsn).await;
    assert!(must_bool(&holder, "SELECT pg_is_in_recovery()").await);
    let sql = format!("SELECT pg_try_advisory_lock_shared({FLEET_KEY}, 0)");
    assert!(must_bool(&holder, &sql).await);
    assert_eq!(
        advisory(&watch, 0).await,
        vec![(pid(&holder).await, "ShareLock".to_owned(), true)]
    );
    assert_eq!(backends_of(&watch, USER).await, 2);
}

/// Rounds of the handover race; each uses a lock of its own.
const HANDOVER_ROUNDS: i32 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_unlock_hands_the_lock_to_the_queued_waiter_and_a_racing_try_lock_never_wins() {
    let pg = must_start_pg(PgAuth::Scram);
    let watch = must_connect(&app_dsn(&pg)).await;
    let holder = must_connect(&app_dsn(&pg)).await;
    let waiter = Arc::new(must_connect(&app_dsn(&pg)).await);
    let mut racer = must_connect(&app_dsn(&pg)).await;
    let waiter_pid = pid(&waiter).await;
    for key in 1..=HANDOVER_ROUNDS {
        must_run(
            &holder,
            &format!("SELECT pg_advisory_lock({FLEET_KEY}, {key})"),
        )
        .await;
        let queued = waiter.clone();
        let wait = tokio::spawn(async move {
            must_run(
                &queued,
                &format!("SELECT pg_advisory_lock({FLEET_KEY}, {key})"),
            )
            .await;
        });
        must_eventually(Duration::from_secs(5), "the waiter is queued", || async {
            advisory(&watch, key)
                .await
                .contains(&(waiter_pid, "ExclusiveLock".to_owned(), false))
        })
        .await;
        let race = Race::start(
            racer,
            probe(move |c: &mut Client| {
                Box::pin(async move {
                    let won = must_bool(
                        c,
                        &format!("SELECT pg_try_advisory_lock({FLEET_KEY}, {key})"),
                    )
                    .await;
                    if won {
                        must_run(c, &format!("SELECT pg_advisory_unlock({FLEET_KEY}, {key})"))
                            .await;
                    }
                    won
                })
            }),
        )
        .await;
        must_run(
            &holder,
            &format!("SELECT pg_advisory_unlock({FLEET_KEY}, {key})"),
        )
        .await;
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("the waiter gets the lock")
            .expect("waiter task");
        let won;
        (racer, won) = race.finish().await;
        assert_eq!(
            won, 0,
            "round {key}: a try-lock won the lock from its waiter"
        );
        assert_eq!(
            advisory(&watch, key).await,
            vec![(waiter_pid, "ExclusiveLock".to_owned(), true)]
        );
        must_run(
            &waiter,
            &format!("SELECT pg_advisory_unlock({FLEET_KEY}, {key})"),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_discard_all_unlock_all_and_a_do_block_each_drop_a_sessions_advisory_locks() {
    let pg = must_start_pg(PgAuth::Scram);
    let watch = must_connect(&app_dsn(&pg)).await;
    let client = must_connect(&app_dsn(&pg)).await;
    for statement in [
        "DISCARD ALL",
        "SELECT pg_advisory_unlock_all()",
        // What sidepool cannot see: the unlock inside code the server runs.
        "DO $$ BEGIN PERFORM pg_advisory_unlock_all(); END $$",
    ] {
        must_run(
            &client,
            &format!(
                "SELECT pg_advisory_lock({FLEET_KEY}, 3); \
                 SELECT pg_advisory_lock_shared({FLEET_KEY}, 0)"
            ),
        )
        .await;
        assert_eq!(advisory(&watch, 3).await.len(), 1);
        must_run(&client, statement).await;
        assert!(advisory(&watch, 3).await.is_empty(), "{statement} kept it");
        assert!(advisory(&watch, 0).await.is_empty(), "{statement} kept it");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_session_whose_socket_closes_frees_its_locks_and_leaves_pg_stat_activity_at_once() {
    let pg = must_start_with_other();
    let watch = must_connect(&app_dsn(&pg)).await;
    let cut = Cut::must_start(format!("{}:{}", pg.host(), pg.port())).await;
    let dsn = format!(
        "host=127.0.0.1 port={} user={OTHER} password={OTHER_PASSWORD} dbname={DB}",
        cut.addr.port()
    );
    let victim = must_connect(&dsn).await;
    must_run(&victim, &format!("SELECT pg_advisory_lock({FLEET_KEY}, 5)")).await;
    assert_eq!(backends_of(&watch, OTHER).await, 1);
    let started = Instant::now();
    cut.cut().await;
    must_eventually(Duration::from_secs(5), "the lock is free", || async {
        advisory(&watch, 5).await.is_empty()
    })
    .await;
    must_eventually(Duration::from_secs(5), "the backend is gone", || async {
        backends_of(&watch, OTHER).await == 0
    })
    .await;
    eprintln!(
        "closed socket to free lock and backend: {:?}",
        started.elapsed()
    );
    drop(victim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_an_unprivileged_role_may_bound_its_sessions_life_with_keepalives_and_timeouts() {
    let pg = must_start_pg(PgAuth::Scram);
    // In the startup packet, as sidepool would send them when it opens a connection...
    let dsn = format!(
        "{} options='-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 \
         -c tcp_keepalives_count=3 -c tcp_user_timeout=10000'",
        app_dsn(&pg)
    );
    let c = must_connect(&dsn).await;
    must_be_unprivileged(&c).await;
    // ... or with SET in the session.
    must_run(
        &c,
        "SET client_connection_check_interval = '2s'; SET idle_session_timeout = '10min'; \
         SET idle_in_transaction_session_timeout = '30s'",
    )
    .await;
    for (name, value) in [
        ("tcp_keepalives_idle", "5"),
        ("tcp_keepalives_interval", "2"),
        ("tcp_keepalives_count", "3"),
        ("tcp_user_timeout", "10000"),
        ("client_connection_check_interval", "2s"),
        ("idle_session_timeout", "10min"),
        ("idle_in_transaction_session_timeout", "30s"),
    ] {
        let shown: String = c
            .query_one(&format!("SHOW {name}"), &[])
            .await
            .expect("SHOW")
            .get(0);
        assert_eq!(shown, value, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_idle_session_timeout_set_by_an_unprivileged_role_ends_an_idle_session() {
    let pg = must_start_with_other();
    let watch = must_connect(&app_dsn(&pg)).await;
    let silent = must_connect(&pg.dsn(OTHER, OTHER_PASSWORD, DB)).await;
    must_run(&silent, "SET idle_session_timeout = '300ms'").await;
    must_eventually(Duration::from_secs(5), "the server ended it", || async {
        backends_of(&watch, OTHER).await == 0
    })
    .await;
    assert!(silent.simple_query("SELECT 1").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_role_connection_limit_refuses_the_next_login_with_53300() {
    let pg = must_start_pg(PgAuth::Scram);
    pg.psql("postgres", &format!("ALTER ROLE {USER} CONNECTION LIMIT 2"))
        .expect("set the limit");
    let _a = must_connect(&app_dsn(&pg)).await;
    let _b = must_connect(&app_dsn(&pg)).await;
    let Err(err) = connect(&app_dsn(&pg)).await else {
        panic!("a third login was let in");
    };
    assert_eq!(sqlstate(&err), "53300", "{}", db_message(&err));
}

/// The grow step of `docs/fleet-budget.md` in one round trip: take a reservation, then read
/// the reservations, then count the role's backends (in this order, in one implicit
/// transaction, so the count is read after the reservations).
fn census_sql() -> String {
    format!(
        "SELECT pg_try_advisory_lock_shared({FLEET_KEY}, 0); \
         SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid::int8 = \
         {FLEET_KEY} AND objid = 0 AND objsubid = 2 AND granted; \
         SELECT count(*) FROM pg_stat_activity WHERE usename = '{USER}'"
    )
}

/// The single values of a multi-statement simple query's results, in order.
fn values(messages: &[SimpleQueryMessage]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_reserve_then_count_keeps_racing_growers_within_the_budget() {
    let pg = must_start_pg(PgAuth::Scram);
    let sampler = must_connect(&pg.dsn(pg.superuser(), pg.superuser_password(), "postgres")).await;
    let grown = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + CENSUS_RUN;
    let mut growers = Vec::new();
    for _ in 0..CENSUS_GROWERS {
        let (dsn, grown) = (app_dsn(&pg), grown.clone());
        growers.push(tokio::spawn(async move {
            grow_until(&dsn, deadline, &grown).await;
        }));
    }
    let count = probe(|c: &mut Client| Box::pin(backends_of(c, USER)));
    must_stay_within_the_budget(sampler, count, deadline, growers, &grown).await;
}

/// One grower: a coordinating session that opens up to three more sessions through the
/// census, keeps each for a moment and closes it, until `deadline`.
async fn grow_until(dsn: &str, deadline: Instant, grown: &AtomicU64) {
    let coordinator = must_connect(dsn).await;
    let mut opened: std::collections::VecDeque<Client> = std::collections::VecDeque::new();
    let sql = census_sql();
    while Instant::now() < deadline {
        let found = coordinator.simple_query(&sql).await.expect("census");
        let v = values(&found);
        let (reserved, reservations, backends) = (
            v[0] == "t",
            v[1].parse::<i64>().expect("count"),
            v[2].parse::<i64>().expect("count"),
        );
        assert!(reserved, "shared reservations never conflict");
        if backends + reservations <= CENSUS_BUDGET {
            opened.push_back(must_connect(dsn).await);
            grown.fetch_add(1, Ordering::Relaxed);
        }
        must_run(
            &coordinator,
            &format!("SELECT pg_advisory_unlock_shared({FLEET_KEY}, 0)"),
        )
        .await;
        if opened.len() >= 3 || backends + reservations > CENSUS_BUDGET {
            // A close ends the backend a moment later: counted meanwhile, which only
            // makes the others wait.
            opened.pop_front();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
