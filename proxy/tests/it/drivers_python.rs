//! Python drivers through sidepool in transaction mode (`max_open = 4`) against a real
//! PostgreSQL: psycopg 3 with every statement server-prepared under a name, and asyncpg with its
//! statement cache and type introspection, 40 concurrent clients each, COPY both ways, a
//! `search_path` that must follow the client across server connections, and error recovery.
//!
//! The suite lives in `tests/python/` at the repo root; these tests start the server and the
//! proxy, prepare the virtualenv with `scripts/python-venv.sh` (PyPI must be reachable the first
//! time) and run pytest on one driver's file, so a failure names the driver.

use crate::support::harness::*;
use crate::support::python;
use sidepool_loadtest::testbed::PgAuth;

/// 40 clients per driver share these 4 server connections; a long queue wait is not the
/// failure under test, so waits may last as long as the suite.
const LIMITS: &str = "max_open = 4\nmax_idle = 4\nwait_timeout = \"30s\"";

/// `postgresql://app:app-secret@127.0.0.1:PORT/app`.
fn url(port: u16) -> String {
    format!("postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{DB}")
}

/// Runs pytest on `target` (relative to the repo root) with the suite's two DSNs; panics with
/// pytest's report unless every test passed. (pytest-asyncio wants its loop scope said; the
/// short traceback format also spares pytest's source formatting, which crashed with "AST
/// constructor recursion depth mismatch" under CPython 3.11.7.)
async fn must_pass_pytest(target: &str, sidepool_dsn: &str, direct_dsn: &str) {
    python::must_pass_pytest(
        &["-o", "asyncio_default_fixture_loop_scope=function", target],
        &[("SIDEPOOL_DSN", sidepool_dsn), ("DIRECT_DSN", direct_dsn)],
    )
    .await;
}

/// Starts PostgreSQL and a transaction-mode sidepool and runs `tests/python/<file>` through it.
async fn must_pass_through_sidepool(file: &str) {
    let pg = must_start_pg(PgAuth::Scram);
    let proxy = Proxy::must_start(&pg, &PoolSpec::transaction(LIMITS)).await;
    must_pass_pytest(
        &format!("tests/python/{file}"),
        &url(proxy.addr.port()),
        &url(pg.port()),
    )
    .await;
    // The 40 clients really took turns on at most 4 server connections.
    let stats = proxy.stats();
    assert!(stats.open <= 4 && stats.wait_count > 0, "{stats:?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_prepared_statements_copy_session_state_and_errors_through_transaction_pool() {
    must_pass_through_sidepool("test_psycopg.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_prepared_statements_copy_types_session_state_and_errors_through_transaction_pool()
{
    must_pass_through_sidepool("test_asyncpg.py").await;
}

/// The control: with both DSNs on the server itself the whole suite passes, so a failure
/// through sidepool is sidepool's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_suite_passes_straight_against_postgresql() {
    let pg = must_start_pg(PgAuth::Scram);
    must_pass_pytest("tests/python", &url(pg.port()), &url(pg.port())).await;
}
