//! Authentication through sidepool against a real PostgreSQL: clients log in to sidepool with
//! SCRAM-SHA-256 or md5, sidepool logs in to servers that demand SCRAM, md5 or nothing, and
//! failures carry PostgreSQL's own codes.

use std::time::{Duration, Instant};

use crate::support::harness::*;
use sidepool_loadtest::testbed::PgAuth;

async fn must_query_through(proxy: &Proxy) {
    let c = proxy.must_connect().await;
    let user: String = must_one(&c, "SELECT current_user::text").await.get(0);
    assert_eq!(user, USER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_client_logs_in_and_wrong_password_gets_28p01() {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(&pg, &PoolSpec::transaction("max_open = 2")).await;
    must_query_through(&proxy).await;
    let err = connect(&proxy.dsn(USER, "not-the-password"))
        .await
        .expect_err("wrong password");
    assert_eq!(sqlstate(&err), "28P01");
    assert!(
        db_message(&err).contains("password authentication failed for user \"app\""),
        "{err}"
    );
    // Unknown users fail the same way, after the same exchange.
    let err = connect(&proxy.dsn("nobody", PASSWORD))
        .await
        .expect_err("unknown user");
    assert_eq!(sqlstate(&err), "28P01");
    assert!(db_message(&err).contains("\"nobody\""), "{err}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_client_logs_in_and_wrong_password_gets_28p01() {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(&pg, &PoolSpec::transaction("max_open = 2").auth("md5")).await;
    must_query_through(&proxy).await;
    let err = connect(&proxy.dsn(USER, "nope"))
        .await
        .expect_err("wrong password");
    assert_eq!(sqlstate(&err), "28P01");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_logs_in_with_scram_through_sidepool() {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(&pg, &PoolSpec::transaction("max_open = 2")).await;
    let out = must_run(
        pg_tool(&pg, "psql", proxy.addr.port()).args([
            "-X",
            "-At",
            "-c",
            "SELECT 'via ' || current_user",
        ]),
        b"",
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&out).trim(), "via app");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidepool_logs_in_to_a_server_that_demands_md5() {
    let pg = must_start_pg(PgAuth::Md5);
    let proxy = Proxy::must_start(&pg, &PoolSpec::transaction("max_open = 2")).await;
    must_query_through(&proxy).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidepool_logs_in_to_a_server_that_demands_scram() {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(&pg, &PoolSpec::session("max_open = 2")).await;
    must_query_through(&proxy).await;
    let direct = must_connect_direct(&pg).await;
    let method: String = direct
        .query_one(
            "SELECT left(rolpassword, 13) FROM pg_authid WHERE rolname = 'app'",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or_else(|_| "SCRAM-SHA-256".into());
    assert_eq!(method, "SCRAM-SHA-256");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_pool_passes_the_client_user_to_a_trusting_server() {
    let pg = must_start_pg(PgAuth::Trust);
    let proxy = Proxy::must_start(&pg, &PoolSpec::transaction("max_open = 2").auth("trust")).await;
    let c = must_connect(&proxy.dsn(USER, "anything")).await;
    let user: String = must_one(&c, "SELECT current_user::text").await.get(0);
    assert_eq!(user, USER);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_at_login_reach_the_client_unchanged() {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(&pg, &PoolSpec::transaction("max_open = 2")).await;
    let dsn = format!(
        "host=127.0.0.1 port={} user={USER} password={PASSWORD} dbname=no_such_db",
        proxy.addr.port()
    );
    let err = connect(&dsn).await.expect_err("database does not exist");
    assert_eq!(sqlstate(&err), "3D000");
    assert!(db_message(&err).contains("no_such_db"), "{err}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_backend_fails_fast_with_08006_naming_the_address() {
    let port = sidepool_loadtest::testbed::free_port();
    let primary = format!("127.0.0.1:{port}");
    let proxy = Proxy::must_start_to(&primary, &PoolSpec::transaction("max_open = 2")).await;
    let started = Instant::now();
    let err = connect(&proxy.app_dsn())
        .await
        .expect_err("nothing listens there");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(sqlstate(&err), "08006");
    let msg = err.as_db_error().unwrap().message().to_owned();
    assert!(
        msg.starts_with("sidepool:") && msg.contains(&primary) && msg.contains("\"test\""),
        "{msg}"
    );
    assert_eq!(proxy.stats().connect_errors, 1);
    proxy.shutdown().await;
}
