//! The admin HTTP listener against a real PostgreSQL under pgbench: every docs/design.md §9 metric is
//! exposed with its type, the pool saturates and the wait histogram counts every checkout,
//! health and readiness answer as documented, `/pools` is JSON, and CPU profiles come back as
//! pprof protobuf and SVG with one profile at a time.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::harness::*;
use pprof::protos::Message;
use sidepool_loadtest::testbed::PgAuth;

/// docs/design.md §9, name and type. `sidepool_replica_lag_seconds` is left out on purpose: it is not
/// emitted until replica routing exists (see `sidepool::telemetry`).
const DESIGN_METRICS: &[(&str, &str)] = &[
    ("sidepool_pool_connections", "gauge"),
    ("sidepool_pool_max_open", "gauge"),
    ("sidepool_pool_saturation_ratio", "gauge"),
    ("sidepool_pool_waiting_clients", "gauge"),
    ("sidepool_pool_wait_seconds", "histogram"),
    ("sidepool_pool_wait_timeouts_total", "counter"),
    ("sidepool_pool_rejected_total", "counter"),
    ("sidepool_pool_connections_opened_total", "counter"),
    ("sidepool_pool_connections_closed_total", "counter"),
    ("sidepool_pool_connect_errors_total", "counter"),
    ("sidepool_pool_hold_seconds", "histogram"),
    ("sidepool_pool_leaks_total", "counter"),
    ("sidepool_pool_leaked_connections", "gauge"),
    ("sidepool_client_connections", "gauge"),
    ("sidepool_queries_total", "counter"),
    ("sidepool_query_duration_seconds", "histogram"),
    ("sidepool_pinned_sessions", "gauge"),
    ("sidepool_backend_up", "gauge"),
    ("sidepool_config_reloads_total", "counter"),
    ("sidepool_build_info", "gauge"),
];

const CLOSE_REASONS: &[&str] = &[
    "max_idle",
    "max_idle_time",
    "max_lifetime",
    "broken",
    "reload",
    "shutdown",
    "rebalance",
];

async fn scrape(addr: SocketAddr) -> String {
    let r = http_get(addr, "/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        r.head
    );
    r.text()
}

/// The value of the first sample of `name` (exactly; `_bucket` etc. are other names) whose
/// labels contain every fragment of `labels`.
fn value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let rest = l.strip_prefix(name)?;
        if !rest.starts_with('{') && !rest.starts_with(' ') {
            return None;
        }
        let (series, v) = rest.rsplit_once(' ')?;
        if labels.iter().all(|f| series.contains(f)) {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

fn must_value(text: &str, name: &str, labels: &[&str]) -> f64 {
    value(text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
}

/// The share of CPU samples whose stack has a `sidepool` function, and the ten functions found
/// on the most stacks, runtime and standard library frames left out (for the messages).
fn sidepool_share(p: &pprof::protos::Profile) -> (f64, Vec<(String, i64)>) {
    use std::collections::{HashMap, HashSet};
    let name = |function_id: u64| -> &str {
        p.function
            .iter()
            .find(|f| f.id == function_id)
            .and_then(|f| p.string_table.get(usize::try_from(f.name).ok()?))
            .map_or("?", String::as_str)
    };
    let locations: HashMap<u64, &pprof::protos::Location> =
        p.location.iter().map(|l| (l.id, l)).collect();
    let (mut total, mut ours) = (0i64, 0i64);
    let mut inclusive: HashMap<&str, i64> = HashMap::new();
    for sample in &p.sample {
        let n = sample.value.first().copied().unwrap_or(0);
        let names: HashSet<&str> = sample
            .location_id
            .iter()
            .filter_map(|id| locations.get(id))
            .flat_map(|l| l.line.iter().map(|line| name(line.function_id)))
            .collect();
        total += n;
        if names.iter().any(|f| f.starts_with("sidepool")) {
            ours += n;
        }
        for f in names {
            *inclusive.entry(f).or_default() += n;
        }
    }
    let plumbing = [
        "std::",
        "core::",
        "alloc::",
        "tokio::",
        "<",
        "__",
        "start_thread",
        "clone",
    ];
    let mut top: Vec<(String, i64)> = inclusive
        .into_iter()
        .filter(|(f, _)| !plumbing.iter().any(|p| f.starts_with(p)))
        .map(|(f, n)| (f.to_owned(), n))
        .collect();
    top.sort_by_key(|t| std::cmp::Reverse(t.1));
    top.truncate(10);
    (ours as f64 / total.max(1) as f64, top)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_metrics_and_profiles_under_pgbench_load() {
    let pg = must_start_pg(PgAuth::Scram);
    must_pgbench_init(&pg).await;
    let proxy = Proxy::must_start(
        &pg,
        &PoolSpec::transaction("max_open = 4\nmax_idle = 4\nwait_timeout = \"30s\""),
    )
    .await;
    let admin = proxy.server().admin_addr();
    let pool = "pool=\"test\"";

    // Every contracted metric is there with its type before any traffic.
    let text = scrape(admin).await;
    for (name, kind) in DESIGN_METRICS {
        assert!(
            text.lines().any(|l| l == format!("# TYPE {name} {kind}")),
            "{name} ({kind}) missing from\n{text}"
        );
    }
    for reason in CLOSE_REASONS {
        let r = format!("reason=\"{reason}\"");
        assert_eq!(
            value(&text, "sidepool_pool_connections_closed_total", &[pool, &r]),
            Some(0.0),
            "closed{{{r}}}"
        );
    }
    assert_eq!(must_value(&text, "sidepool_pool_max_open", &[pool]), 4.0);

    let health = http_get(admin, "/healthz").await;
    assert_eq!((health.status, health.text().trim()), (200, "ok"));
    let ready = http_get(admin, "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(http_get(admin, "/no/such/page").await.status, 404);
    for bad in ["seconds=0", "seconds=999"] {
        let r = http_get(admin, &format!("/debug/pprof/profile?{bad}")).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        let r = http_get(admin, &format!("/debug/pprof/flamegraph?{bad}")).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }

    let bench = tokio::spawn(
        pg_tool(&pg, "pgbench", proxy.addr.port())
            .args(["-c", "20", "-j", "2", "-T", "6", "-n"])
            .output(),
    );

    // During the run: 20 clients on 4 connections saturate the pool and queue.
    let waited = std::cell::Cell::new(false);
    must_eventually(
        Duration::from_secs(15),
        "saturation 1 and waiting clients",
        || {
            let waited = &waited;
            async move {
                let text = scrape(admin).await;
                let sat = must_value(&text, "sidepool_pool_saturation_ratio", &[pool]);
                let waiting = must_value(
                    &text,
                    "sidepool_client_connections",
                    &[pool, "state=\"waiting\""],
                );
                let in_use = must_value(
                    &text,
                    "sidepool_pool_connections",
                    &[pool, "state=\"in_use\""],
                );
                assert!(in_use <= 4.0, "in_use {in_use} over max_open 4");
                assert!((0.0..=1.0).contains(&sat), "saturation {sat}");
                waited.set(waited.get() || waiting > 0.0);
                sat == 1.0 && waited.get()
            }
        },
    )
    .await;

    // A 1 s profile under load; a second request meanwhile is refused.
    let profile = tokio::spawn(http_get(admin, "/debug/pprof/profile?seconds=1"));
    must_eventually(Duration::from_secs(5), "profile running", || async {
        sidepool::admin::profile_running()
    })
    .await;
    let busy = http_get(admin, "/debug/pprof/profile?seconds=1").await;
    assert_eq!(busy.status, 409, "{}", busy.text());
    let busy = http_get(admin, "/debug/pprof/flamegraph?seconds=1").await;
    assert_eq!(busy.status, 409, "{}", busy.text());
    let profile = profile.await.unwrap();
    assert_eq!(profile.status, 200, "{}", profile.text());
    let decoded = pprof::protos::Profile::decode(&profile.body[..]).expect("pprof protobuf");
    assert!(
        decoded
            .sample
            .iter()
            .any(|s| s.value.iter().any(|v| *v > 0)),
        "profile has no samples: {} samples",
        decoded.sample.len()
    );
    assert!(!decoded.location.is_empty() && decoded.period > 0);
    let (share, top) = sidepool_share(&decoded);
    eprintln!(
        "sidepool frames on {:.0}% of CPU samples; hottest: {:?}",
        share * 100.0,
        &top[..top.len().min(6)]
    );
    assert!(
        share >= 0.3,
        "only {:.0}% of CPU samples have a sidepool frame; hottest functions: {top:#?}",
        share * 100.0
    );

    let flame = http_get(admin, "/debug/pprof/flamegraph?seconds=1").await;
    assert_eq!(flame.status, 200, "{}", flame.text());
    let svg = flame.text();
    assert!(
        svg.contains("<svg"),
        "not an SVG: {}",
        &svg[..svg.len().min(200)]
    );
    assert!(
        svg.contains("sidepool"),
        "no sidepool frame in the flamegraph"
    );

    let out = bench.await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let transactions: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.split('/').next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no transaction count in\n{stdout}"));
    assert!(transactions > 0.0);

    // After the run: every checkout came back, and the histograms count each one once.
    must_eventually(Duration::from_secs(10), "clients gone", || async {
        let text = scrape(admin).await;
        proxy.stats().in_use == 0
            && ["active", "idle", "waiting"].iter().all(|s| {
                value(
                    &text,
                    "sidepool_client_connections",
                    &[pool, &format!("state=\"{s}\"")],
                ) == Some(0.0)
            })
    })
    .await;
    let text = scrape(admin).await;
    let waits = must_value(&text, "sidepool_pool_wait_seconds_count", &[pool]);
    let holds = must_value(&text, "sidepool_pool_hold_seconds_count", &[pool]);
    assert_eq!(holds, waits, "each checkout is released exactly once");
    // One checkout per pgbench transaction (BEGIN..END), plus at most a couple per client for
    // logins and pgbench's start-up queries.
    assert!(
        waits >= transactions && waits <= transactions + 2.0 * 20.0 + 5.0,
        "{waits} checkouts for {transactions} pgbench transactions"
    );
    let zero_wait = must_value(
        &text,
        "sidepool_pool_wait_seconds_bucket",
        &[pool, "le=\"0.00001\""],
    );
    assert!(zero_wait < waits, "some checkouts must have queued");
    assert!(must_value(&text, "sidepool_pool_connections_opened_total", &[pool]) >= 4.0);
    assert_eq!(
        must_value(&text, "sidepool_backend_up", &[pool, "role=\"primary\""]),
        1.0
    );
    for reason in CLOSE_REASONS {
        let r = format!("reason=\"{reason}\"");
        assert!(
            value(&text, "sidepool_pool_connections_closed_total", &[pool, &r]).is_some(),
            "closed{{{r}}} after the run"
        );
    }

    let pools = http_get(admin, "/pools").await;
    assert_eq!(pools.status, 200);
    let json: serde_json::Value = serde_json::from_slice(&pools.body).expect("/pools is JSON");
    let p = &json["pools"][0];
    assert_eq!(p["name"], "test");
    assert_eq!(p["mode"], "transaction");
    assert_eq!(p["protocol"], "postgres");
    assert_eq!(p["limits"]["max_open"], 4);
    assert_eq!(p["stats"]["max_open"], 4);
    assert_eq!(p["backend"], format!("127.0.0.1:{}", pg.port()));
    assert!(p["stats"]["opened"].as_u64().unwrap() >= 4, "{p}");

    proxy.server().set_draining(true);
    let draining = http_get(admin, "/readyz").await;
    assert_eq!(draining.status, 503);
    assert!(draining.text().contains("draining"), "{}", draining.text());
    proxy.server().set_draining(false);
    assert_eq!(http_get(admin, "/readyz").await.status, 200);

    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_naming_the_pool_whose_primary_is_unreachable() {
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = Proxy::must_start_to(
        &dead.to_string(),
        &PoolSpec::transaction("max_open = 2\nconnect_timeout = \"2s\""),
    )
    .await;
    let admin = proxy.server().admin_addr();

    let ready = http_get(admin, "/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    let body = ready.text();
    assert!(
        body.contains("pool \"test\"") && body.contains(&dead.to_string()),
        "{body}"
    );
    assert_eq!(
        http_get(admin, "/healthz").await.status,
        200,
        "alive though not ready"
    );
    let text = scrape(admin).await;
    assert_eq!(
        must_value(&text, "sidepool_backend_up", &["pool=\"test\""]),
        0.0
    );

    // A client's failed login counts as a connect error.
    let err = connect(&proxy.app_dsn()).await.expect_err("no backend");
    assert_eq!(sqlstate(&err), "08006");
    let text = scrape(admin).await;
    assert_eq!(
        must_value(
            &text,
            "sidepool_pool_connect_errors_total",
            &["pool=\"test\""]
        ),
        1.0
    );
    assert_eq!(
        must_value(&text, "sidepool_backend_up", &["pool=\"test\""]),
        0.0
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_admin_address_in_use_fails_start_and_leaves_nothing_listening() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let pool_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = config_text("127.0.0.1:5432", &PoolSpec::transaction("max_open = 1"))
        .replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{taken_addr}\""),
            1,
        )
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{pool_port}\""),
        );
    let config = sidepool_config::parse(&text, "test.toml", &|_| None).unwrap();
    let err = sidepool::Server::start(&config)
        .await
        .expect_err("bind fails");
    assert!(
        matches!(err, sidepool::StartError::AdminBind { addr, .. } if addr == taken_addr),
        "{err:?}"
    );
    // The pool's listener was released with the failed start.
    std::net::TcpListener::bind(("127.0.0.1", pool_port)).expect("pool port free again");
}
