//! The dashboard and the alert rules against a real Prometheus (Debian package `prometheus`)
//! that scrapes an in-process sidepool every second while tokio-postgres clients load it.
//!
//! The pool is made to show every state a panel draws: a primary and a streaming replica with the
//! read/write split on (replica lag, backend up by role, queries by route), two server
//! connections per backend for eight reading clients (saturation, queueing), a short
//! `wait_timeout` and `max_waiting` (timeouts, rejections), a client idle inside a transaction
//! past `leaks.threshold` on the primary (a leak) that then disconnects (an abandoned
//! transaction). Every panel
//! query, with Grafana's variables replaced the way Grafana replaces them, must then return a
//! sample that is a number (not `NaN`, which is what a quantile over no observations gives).
//! The `pool` and `backend` variables' own queries must list the pool and both backends, and
//! Prometheus must load `alerts.yml` and evaluate every rule without error.
//!
//! Without the `prometheus` binary the test fails with an install hint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::dashboards::*;
use crate::support::harness::*;
use serde_json::Value;
use sidepool_loadtest::testbed::PgAuth;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The pool's name in `harness::config_text`.
const POOL: &str = "test";

/// Grafana's `$__rate_interval` is at least four scrape intervals; Prometheus scrapes every
/// second here.
const RATE_INTERVAL: &str = "5s";
/// `$__interval`: one step of a graph, one scrape here.
const INTERVAL: &str = "1s";
/// `$__range`: the time range of the dashboard, here about as long as the load has run.
const RANGE: &str = "15s";

/// Conditions the load must have produced, as Prometheus saw them: (what, PromQL that returns a
/// sample once it happened). They show that the panels' data are not only zeros.
const PROVOKED: &[(&str, &str)] = &[
    (
        "saturation reached 1",
        r#"max_over_time(sidepool_pool_saturation_ratio{pool="test"}[1m]) == 1"#,
    ),
    (
        "clients queued for a connection",
        r#"max_over_time(sidepool_pool_waiting_clients{pool="test"}[1m]) > 0"#,
    ),
    (
        "checkouts timed out",
        r#"sidepool_pool_wait_timeouts_total{pool="test"} > 0"#,
    ),
    (
        "checkouts were rejected over max_waiting",
        r#"sidepool_pool_rejected_total{pool="test", reason="max_waiting"} > 0"#,
    ),
    (
        "a leak was reported",
        r#"sidepool_pool_leaks_total{pool="test"} > 0"#,
    ),
    (
        "a client left a transaction open",
        r#"sidepool_pool_abandoned_transactions_total{pool="test"} > 0"#,
    ),
];

/// How long the load may run at most, whatever happens to the test.
const LOAD_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scraping_sidepool_under_load_has_data_for_every_dashboard_query() {
    let dash = dashboard();
    let pg = must_start_pg(PgAuth::Scram);
    // A streaming replica and the split on, so the replica panels (lag, backend up by role)
    // have data too; the load's autocommit reads go to the replica, the leak to the primary.
    let replica = pg.must_start_replica();
    replica.wait_caught_up().expect("replica catches up");
    let backend = format!("127.0.0.1:{}", pg.port());
    let replica_backend = format!("127.0.0.1:{}", replica.port());
    let spec = PoolSpec::transaction("max_open = 2\nwait_timeout = \"400ms\"\nmax_waiting = 4")
        .leaks("threshold = \"1s\"\naction = \"warn\"")
        .split(std::slice::from_ref(&replica_backend), "");
    let proxy = Proxy::must_start(&pg, &spec).await;
    let prom = Prometheus::must_start(proxy.server().admin_addr()).await;

    // A client that holds a server connection inside a transaction and goes quiet: a leak.
    let leaky = proxy.must_connect().await;
    leaky.batch_execute("BEGIN; SELECT 1").await.unwrap();

    let mut load = Load::default();
    // Two slow clients that keep both of the replica's connections busy, so queued checkouts
    // time out.
    load.spawn(proxy.must_connect().await, "SELECT pg_sleep(0.7)");
    load.spawn(proxy.must_connect().await, "SELECT pg_sleep(0.7)");
    // Six quick clients, two more than max_waiting can queue.
    for _ in 0..6 {
        load.spawn(proxy.must_connect().await, "SELECT pg_sleep(0.02)");
    }

    prom.must_eventually_have_data(
        r#"max_over_time(sidepool_pool_leaked_connections{pool="test"}[1m]) > 0"#,
        Duration::from_secs(20),
    )
    .await;
    drop(leaky); // gone inside its transaction: abandoned, rolled back

    // The template variables resolve to this pool and its backend.
    let pools = prom.label_values(variable(&dash, "pool"), &[]).await;
    assert!(pools.contains(&POOL.to_owned()), "pool values {pools:?}");
    let mut backends = prom
        .label_values(variable(&dash, "backend"), &[("$pool", POOL)])
        .await;
    backends.sort();
    let mut expected = vec![backend.clone(), replica_backend.clone()];
    expected.sort();
    assert_eq!(backends, expected, "backend values");

    let mut pending: Vec<(String, String)> = PROVOKED
        .iter()
        .map(|(what, expr)| ((*what).to_owned(), (*expr).to_owned()))
        .collect();
    // `backend` is a multi-value variable with "All" selected: both backends.
    for (title, expr) in panel_exprs(&dash) {
        pending.push((title, grafana_interpolate(&expr, POOL, &backends)));
    }

    // Poll until every query has data; the load keeps running meanwhile.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut still = Vec::new();
        for (what, query) in pending {
            let result = prom.must_query(&query).await;
            if !has_number(&result) {
                still.push((what, query));
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no data within 30 s for:\n{}",
            pending
                .iter()
                .map(|(what, query)| format!("  {what}: {query}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(load.finish().await > 0, "no query of the load succeeded");

    // Prometheus loaded alerts.yml, evaluates every rule without error, and each rule's
    // expression runs on its own through the query API.
    let rules = prom
        .must_evaluate_alert_rules(Duration::from_secs(10))
        .await;
    assert!(rules.len() >= 6, "alert rules loaded: {rules:?}");
    for (name, query) in &rules {
        let result = prom.query(query).await;
        assert!(result.is_ok(), "alert {name}: {query}: {result:?}");
    }
    must_pass_promtool_check_rules(&repo_file("dashboards/alerts.yml"));

    prom.stop().await;
    proxy.shutdown().await;
}

/// The load's client tasks. Dropped unfinished (the test failed), it aborts them, so that they
/// do not report the database going away as failures of their own.
#[derive(Default)]
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<u64>>,
}

impl Load {
    fn spawn(&mut self, client: tokio_postgres::Client, sql: &'static str) {
        self.tasks
            .push(tokio::spawn(run_queries(client, sql, self.stop.clone())));
    }

    /// Stops the clients; how many queries succeeded in all.
    async fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let mut succeeded = 0;
        for task in self.tasks.drain(..) {
            succeeded += task.await.unwrap();
        }
        succeeded
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// Runs `sql` on `client` until `stop`, or [`LOAD_LIMIT`] at most; returns how many succeeded.
/// The pool's own refusals (SQLSTATE 53300: wait timeout, `max_waiting`) are expected here.
async fn run_queries(
    client: tokio_postgres::Client,
    sql: &'static str,
    stop: Arc<AtomicBool>,
) -> u64 {
    let limit = Instant::now() + LOAD_LIMIT;
    let mut ok = 0;
    while !stop.load(Ordering::Relaxed) && Instant::now() < limit {
        match client.simple_query(sql).await {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(sqlstate(&e), "53300", "{sql}: {}", db_message(&e));
                // A rejection comes back at once: pace the retries.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    ok
}

/// `expr` with the dashboard's variables replaced as Grafana does for one selected value of a
/// multi-value variable (regex metacharacters escaped), and Grafana's interval variables set
/// for a 1 s scrape interval.
fn grafana_interpolate(expr: &str, pool: &str, backends: &[String]) -> String {
    // A multi-value variable inside a regex matcher becomes `(a|b)`, each value escaped.
    let backend = match backends {
        [one] => regex_escape(one),
        many => format!(
            "({})",
            many.iter()
                .map(|b| regex_escape(b))
                .collect::<Vec<_>>()
                .join("|")
        ),
    };
    let out = expr
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__interval", INTERVAL)
        .replace("$__range", RANGE)
        .replace("$pool", &regex_escape(pool))
        .replace("$backend", &backend);
    assert!(!out.contains('$'), "a variable left in `{out}`");
    out
}

/// Grafana's escaping of a value inside a PromQL regex string: a backslash (itself escaped for
/// the string literal) before each regex metacharacter.
fn regex_escape(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        if r"\^$*+?.()|[]{}".contains(c) {
            out.push_str(r"\\");
        }
        out.push(c);
    }
    out
}

/// Whether an instant-query result holds at least one sample that is a number.
fn has_number(result: &Value) -> bool {
    result["result"].as_array().into_iter().flatten().any(|s| {
        s["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| !v.is_nan())
    })
}

/// A Prometheus server run from the installed binary with its own config and data directory,
/// scraping one target every second and loading `dashboards/alerts.yml`.
struct Prometheus {
    child: tokio::process::Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    async fn must_start(target: SocketAddr) -> Prometheus {
        let binary = must_find_prometheus_tool("prometheus");
        let mut dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: sidepool\n    static_configs:\n      - targets: [\"{target}\"]\n",
                rules = repo_file("dashboards/alerts.yml").display(),
            ),
        )
        .unwrap();
        // A free port can be taken between probing and binding: try a few.
        for _ in 0..3 {
            let addr = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
            let child = tokio::process::Command::new(&binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
            let mut prom = Prometheus { child, addr, dir };
            if prom.wait_ready(Duration::from_secs(20)).await {
                return prom;
            }
            let log = prom.log();
            assert!(
                log.contains("address already in use"),
                "prometheus did not become ready:\n{log}"
            );
            dir = prom.dir;
        }
        panic!("prometheus found no free port in three tries");
    }

    /// Polls `/-/ready` until 200; false when the process exits first.
    async fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            if let Ok((200, _)) = http_get(self.addr, "/-/ready").await {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within {within:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET path` of the HTTP API: its `data`, or the error Prometheus answered.
    async fn api(&self, path: &str) -> Result<Value, String> {
        let (status, body) = http_get(self.addr, path)
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let json: Value = serde_json::from_str(&body)
            .map_err(|e| format!("GET {path}: {status} not JSON ({e}): {body}"))?;
        if json["status"] == "success" {
            Ok(json["data"].clone())
        } else {
            Err(format!("GET {path}: {status} {}", json["error"]))
        }
    }

    /// An instant query at the current time.
    async fn query(&self, expr: &str) -> Result<Value, String> {
        self.api(&format!("/api/v1/query?query={}", percent_encode(expr)))
            .await
    }

    async fn must_query(&self, expr: &str) -> Value {
        self.query(expr)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log()))
    }

    async fn must_eventually_have_data(&self, expr: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !has_number(&self.must_query(expr).await) {
            assert!(
                Instant::now() < deadline,
                "no data within {within:?}: {expr}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The values of a Grafana `label_values(selector, label)` variable, with `vars` replaced
    /// in the selector (the label-values API Grafana itself calls).
    async fn label_values(&self, variable: &Value, vars: &[(&str, &str)]) -> Vec<String> {
        let text = variable["query"]["query"].as_str().expect("variable query");
        let (selector, label) = text
            .strip_prefix("label_values(")
            .and_then(|t| t.strip_suffix(')'))
            .and_then(|t| t.rsplit_once(','))
            .unwrap_or_else(|| panic!("not label_values(selector, label): {text}"));
        let selector = vars
            .iter()
            .fold(selector.trim().to_owned(), |s, (var, value)| {
                s.replace(var, &regex_escape(value))
            });
        let data = self
            .api(&format!(
                "/api/v1/label/{}/values?match%5B%5D={}",
                label.trim(),
                percent_encode(&selector)
            ))
            .await
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        serde_json::from_value(data).expect("label values are strings")
    }

    /// Waits until Prometheus has evaluated every alerting rule with health `ok`; returns
    /// (alert name, expression) of each.
    async fn must_evaluate_alert_rules(&self, within: Duration) -> Vec<(String, String)> {
        let deadline = Instant::now() + within;
        loop {
            let data = self
                .api("/api/v1/rules?type=alert")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let rules: Vec<&Value> = data["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            let unhealthy: Vec<String> = rules
                .iter()
                .filter(|r| r["health"] != "ok")
                .map(|r| format!("{} {} {}", r["name"], r["health"], r["lastError"]))
                .collect();
            if !rules.is_empty() && unhealthy.is_empty() {
                return rules
                    .iter()
                    .map(|r| {
                        let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
                        (s("name"), s("query"))
                    })
                    .collect();
            }
            assert!(
                Instant::now() < deadline,
                "alert rules not all evaluated ok within {within:?}: {unhealthy:?}\n{data}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn stop(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One HTTP/1.0 GET (the server closes the connection after the body, never chunks it):
/// status and body.
async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP status in {head:?}")))?;
    Ok((status, body.to_owned()))
}
