//! Python MySQL drivers through sidepool in transaction mode (`max_open = 4`) against a real
//! MariaDB: PyMySQL (text protocol, client-side parameters) and mysql-connector-python in its
//! pure-Python mode with server-side prepared statements, 20+ concurrent clients each,
//! transactions committed and rolled back, session settings that follow a client, and errors
//! (1146 missing table, 1062 duplicate key, 1045 wrong password) after which the session goes
//! on. Clients authenticate to sidepool with caching_sha2_password.
//!
//! The suite lives in `tests/python/mysql/`; see its conftest for why the files are named
//! `suite_*.py` and run with `--confcutdir`.

use crate::support::mysql::{DB, MyProxy, PASSWORD, USER, must_start_mariadb};
use crate::support::python;

/// 24 clients per test share these 4 server connections; a long queue wait is not the
/// failure under test.
const LIMITS: &str = "max_open = 4\nmax_idle = 4\nwait_timeout = \"30s\"";

fn url(host: &str, port: u16) -> String {
    format!("mysql://{USER}:{PASSWORD}@{host}:{port}/{DB}")
}

async fn must_pass_suite(file: &str, sidepool_dsn: &str, direct_dsn: &str) {
    python::must_pass_pytest(
        &[
            "--confcutdir",
            "tests/python/mysql",
            &format!("tests/python/mysql/{file}"),
        ],
        &[
            ("MYSQL_SIDEPOOL_DSN", sidepool_dsn),
            ("MYSQL_DIRECT_DSN", direct_dsn),
        ],
    )
    .await;
}

/// Starts MariaDB and a transaction-mode sidepool and runs `tests/python/mysql/<file>`.
async fn must_pass_through_sidepool(file: &str) {
    let db = must_start_mariadb();
    let proxy = MyProxy::must_start(&db, LIMITS).await;
    must_pass_suite(
        file,
        &url("127.0.0.1", proxy.addr.port()),
        &url(db.host(), db.port()),
    )
    .await;
    // The clients really took turns on at most 4 server connections.
    let stats = proxy.stats();
    assert!(stats.open <= 4 && stats.wait_count > 0, "{stats:?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymysql_transactions_session_state_and_errors_through_transaction_pool() {
    must_pass_through_sidepool("suite_pymysql.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_connector_prepared_statements_transactions_and_errors_through_transaction_pool() {
    must_pass_through_sidepool("suite_mysql_connector.py").await;
}

/// The control: with both DSNs on the server itself both files pass, so a failure through
/// sidepool is sidepool's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_python_suite_passes_straight_against_mariadb() {
    let db = must_start_mariadb();
    let direct = url(db.host(), db.port());
    for file in ["suite_pymysql.py", "suite_mysql_connector.py"] {
        must_pass_suite(file, &direct, &direct).await;
    }
}
