//! MariaDB facts of the fleet budget. User `app` has every global privilege (the testbed's
//! application user); user `lim` gets only the privileges on database `app` that an
//! application needs, so what `lim` can do here, any application user can.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use sidepool_loadtest::testbed::MariaDbServer;

use super::{
    CENSUS_BUDGET, CENSUS_GROWERS, CENSUS_RUN, Cut, Race, must_stay_within_the_budget, probe,
};
use crate::support::mysql::{DB, PASSWORD, USER, must_start_mariadb};

const LIM: &str = "lim";
const LIM_PASSWORD: &str = "lim-secret";

/// What every `GET_LOCK` name of these tests starts with (names are server-wide, at most 64
/// characters).
const PREFIX: &str = "sidepool/fleet-facts/";

/// `GET_LOCK` name `i` of this test fleet.
fn name(i: u32) -> String {
    format!("{PREFIX}{i}")
}

/// A MariaDB with `lim`, which may use database `app` and nothing else.
fn must_start() -> MariaDbServer {
    let db = must_start_mariadb();
    db.sql(&format!(
        "CREATE USER '{LIM}'@'%' IDENTIFIED BY '{LIM_PASSWORD}';\n\
         GRANT ALL PRIVILEGES ON {DB}.* TO '{LIM}'@'%';\n"
    ))
    .expect("create the unprivileged user");
    db
}

fn url(port: u16, user: &str, password: &str) -> String {
    format!("mysql://{user}:{password}@127.0.0.1:{port}/{DB}?prefer_socket=false")
}

async fn connect_as(port: u16, user: &str, password: &str) -> mysql_async::Result<Conn> {
    Conn::new(Opts::from_url(&url(port, user, password)).expect("url")).await
}

async fn must_connect_as(db: &MariaDbServer, user: &str, password: &str) -> Conn {
    connect_as(db.port(), user, password)
        .await
        .unwrap_or_else(|e| panic!("connect as {user}: {e}"))
}

async fn must_lim(db: &MariaDbServer) -> Conn {
    let mut c = must_connect_as(db, LIM, LIM_PASSWORD).await;
    let global: i64 = must_i64(
        &mut c,
        "SELECT COUNT(*) FROM information_schema.USER_PRIVILEGES \
         WHERE PRIVILEGE_TYPE IN ('PROCESS', 'SUPER', 'CONNECTION ADMIN')",
    )
    .await;
    assert_eq!(
        global, 0,
        "lim must be unprivileged for this fact to mean anything"
    );
    c
}

async fn must_i64(c: &mut Conn, sql: &str) -> i64 {
    c.query_first::<i64, _>(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// `GET_LOCK(name(i), timeout)`: 1 taken, 0 timed out.
async fn get_lock(c: &mut Conn, i: u32, timeout: u32) -> i64 {
    must_i64(
        c,
        &format!("SELECT COALESCE(GET_LOCK('{}', {timeout}), -1)", name(i)),
    )
    .await
}

/// The connection id holding `name(i)`, 0 if free.
async fn holder(c: &mut Conn, i: u32) -> i64 {
    must_i64(c, &holder_sql(i)).await
}

/// Polls `sql` on `c` every 20 ms until it returns `want`; panics after `within`.
async fn must_poll(c: &mut Conn, sql: &str, want: i64, within: Duration) {
    let deadline = Instant::now() + within;
    while must_i64(c, sql).await != want {
        assert!(
            Instant::now() < deadline,
            "not within {within:?}: {sql} = {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn holder_sql(i: u32) -> String {
    format!("SELECT COALESCE(IS_USED_LOCK('{}'), 0)", name(i))
}

fn sessions_sql(user: &str) -> String {
    format!("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{user}'")
}

/// Sessions of `user` in the processlist as `c` sees it (`c` included if it is one).
async fn sessions_of(c: &mut Conn, user: &str) -> i64 {
    must_i64(c, &sessions_sql(user)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_one_session_holds_several_lock_names_and_an_unprivileged_user_sees_the_holder() {
    let db = must_start();
    let mut watch = must_lim(&db).await;
    let mut owner = must_lim(&db).await;
    for i in 0..3 {
        assert_eq!(get_lock(&mut owner, i, 0).await, 1);
    }
    for i in 0..3 {
        assert_eq!(holder(&mut watch, i).await, i64::from(owner.id()));
        assert_eq!(
            get_lock(&mut watch, i, 0).await,
            0,
            "held by another session"
        );
    }
    assert_eq!(holder(&mut watch, 3).await, 0);
}

/// Rounds of the handover race; each uses a name of its own.
const HANDOVER_ROUNDS: u32 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_release_lock_hands_the_name_to_the_waiting_session_and_a_racing_try_never_wins() {
    let db = must_start();
    let mut watch = must_connect_as(&db, USER, PASSWORD).await;
    let mut owner = must_lim(&db).await;
    let mut waiter = must_lim(&db).await;
    let waiter_id = waiter.id();
    let mut racer = must_lim(&db).await;
    for i in 1..=HANDOVER_ROUNDS {
        assert_eq!(get_lock(&mut owner, i, 0).await, 1);
        let wait = tokio::spawn(async move {
            let got = get_lock(&mut waiter, i, 10).await;
            (waiter, got)
        });
        let queued = format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
             WHERE ID = {waiter_id} AND STATE LIKE '%ser lock%'"
        );
        must_poll(&mut watch, &queued, 1, Duration::from_secs(5)).await;
        let race = Race::start(
            racer,
            probe(move |c: &mut Conn| {
                Box::pin(async move {
                    let won = get_lock(c, i, 0).await == 1;
                    if won {
                        must_i64(c, &format!("SELECT RELEASE_LOCK('{}')", name(i))).await;
                    }
                    won
                })
            }),
        )
        .await;
        let released = must_i64(&mut owner, &format!("SELECT RELEASE_LOCK('{}')", name(i))).await;
        assert_eq!(released, 1);
        let got;
        (waiter, got) = tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("the waiter gets the name")
            .expect("waiter task");
        assert_eq!(got, 1, "round {i}: the waiter timed out");
        let won;
        (racer, won) = race.finish().await;
        assert_eq!(won, 0, "round {i}: a try won the name from its waiter");
        assert_eq!(holder(&mut watch, i).await, i64::from(waiter_id));
        must_i64(&mut waiter, &format!("SELECT RELEASE_LOCK('{}')", name(i))).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_reset_connection_and_release_all_locks_each_drop_a_sessions_lock_names() {
    let db = must_start();
    let mut watch = must_lim(&db).await;
    let mut client = must_lim(&db).await;
    for i in [1, 2] {
        assert_eq!(get_lock(&mut client, i, 0).await, 1);
    }
    assert!(client.reset().await.expect("COM_RESET_CONNECTION"));
    assert_eq!(
        holder(&mut watch, 1).await,
        0,
        "COM_RESET_CONNECTION kept it"
    );
    assert_eq!(
        holder(&mut watch, 2).await,
        0,
        "COM_RESET_CONNECTION kept it"
    );
    for i in [1, 2] {
        assert_eq!(get_lock(&mut client, i, 0).await, 1);
    }
    assert_eq!(must_i64(&mut client, "SELECT RELEASE_ALL_LOCKS()").await, 2);
    assert_eq!(holder(&mut watch, 1).await, 0, "RELEASE_ALL_LOCKS kept it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_a_session_whose_socket_closes_frees_its_lock_names_and_leaves_the_processlist_at_once()
 {
    let db = must_start();
    let mut watch = must_connect_as(&db, USER, PASSWORD).await;
    let cut = Cut::must_start(format!("{}:{}", db.host(), db.port())).await;
    let mut victim = connect_as(cut.addr.port(), LIM, LIM_PASSWORD)
        .await
        .expect("connect through the relay");
    assert_eq!(get_lock(&mut victim, 5, 0).await, 1);
    assert_eq!(sessions_of(&mut watch, LIM).await, 1);
    let started = Instant::now();
    cut.cut().await;
    must_poll(&mut watch, &holder_sql(5), 0, Duration::from_secs(5)).await;
    must_poll(&mut watch, &sessions_sql(LIM), 0, Duration::from_secs(5)).await;
    eprintln!(
        "closed socket to free name and session: {:?}",
        started.elapsed()
    );
    drop(victim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_without_process_privilege_a_user_sees_only_its_own_sessions_in_the_processlist() {
    let db = must_start();
    let _app_a = must_connect_as(&db, USER, PASSWORD).await;
    let _app_b = must_connect_as(&db, USER, PASSWORD).await;
    let mut lim = must_lim(&db).await;
    let _lim_b = must_lim(&db).await;
    assert_eq!(
        sessions_of(&mut lim, USER).await,
        0,
        "another user's sessions"
    );
    assert_eq!(sessions_of(&mut lim, LIM).await, 2, "its own sessions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_an_unprivileged_user_may_bound_its_sessions_life_and_wait_timeout_ends_it_idle() {
    let db = must_start();
    let mut watch = must_connect_as(&db, USER, PASSWORD).await;
    let mut silent = must_lim(&db).await;
    silent
        .query_drop(
            "SET SESSION net_read_timeout = 7, net_write_timeout = 8, \
             idle_transaction_timeout = 9, wait_timeout = 1",
        )
        .await
        .expect("session timeouts");
    let shown: (i64, i64, i64, i64) = silent
        .query_first(
            "SELECT @@SESSION.net_read_timeout, @@SESSION.net_write_timeout, \
             @@SESSION.idle_transaction_timeout, @@SESSION.wait_timeout",
        )
        .await
        .expect("read back")
        .expect("a row");
    assert_eq!(shown, (7, 8, 9, 1));
    must_poll(&mut watch, &sessions_sql(LIM), 0, Duration::from_secs(5)).await;
    assert!(silent.query_drop("SELECT 1").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_max_user_connections_refuses_the_next_login_with_1226() {
    let db = must_start();
    db.sql(&format!(
        "ALTER USER '{LIM}'@'%' WITH MAX_USER_CONNECTIONS 2;"
    ))
    .expect("set the limit");
    let _a = must_lim(&db).await;
    let _b = must_lim(&db).await;
    match connect_as(db.port(), LIM, LIM_PASSWORD).await {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1226, "{}", e.message),
        Err(other) => panic!("expected error 1226, got {other}"),
        Ok(_) => panic!("a third login was let in"),
    }
}

/// The reservation names the census counts.
const RESERVATIONS: u32 = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_reserve_then_count_keeps_racing_growers_within_the_budget() {
    let db = must_start();
    let sampler = must_connect_as(&db, db.superuser(), db.superuser_password()).await;
    let grown = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + CENSUS_RUN;
    let mut growers = Vec::new();
    for g in 0..CENSUS_GROWERS {
        let (port, grown) = (db.port(), grown.clone());
        growers.push(tokio::spawn(async move {
            grow_until(port, g, deadline, &grown).await;
        }));
    }
    let count = probe(|c: &mut Conn| Box::pin(sessions_of(c, LIM)));
    must_stay_within_the_budget(sampler, count, deadline, growers, &grown).await;
}

/// One grower `g`: a coordinating session that opens up to three more sessions through the
/// census (reserve a name, count the reserved names, then count the sessions), keeps each for
/// a moment and closes it, until `deadline`.
async fn grow_until(port: u16, g: u32, deadline: Instant, grown: &AtomicU64) {
    let mut coordinator = connect_as(port, LIM, LIM_PASSWORD).await.expect("connect");
    let mut opened = std::collections::VecDeque::new();
    let reserved_names = format!(
        "SELECT COUNT(IS_USED_LOCK(CONCAT('{PREFIX}', seq))) FROM seq_0_to_{}",
        RESERVATIONS - 1
    );
    while Instant::now() < deadline {
        assert_eq!(get_lock(&mut coordinator, g, 0).await, 1, "its own name");
        let reservations = must_i64(&mut coordinator, &reserved_names).await;
        let sessions = sessions_of(&mut coordinator, LIM).await;
        let room = sessions + reservations <= CENSUS_BUDGET;
        if room {
            opened.push_back(connect_as(port, LIM, LIM_PASSWORD).await.expect("grow"));
            grown.fetch_add(1, Ordering::Relaxed);
        }
        must_i64(
            &mut coordinator,
            &format!("SELECT RELEASE_LOCK('{}')", name(g)),
        )
        .await;
        if (opened.len() >= 3 || !room)
            && let Some(c) = opened.pop_front()
        {
            let _ = c.disconnect().await;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
