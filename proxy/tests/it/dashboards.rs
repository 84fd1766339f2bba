//! Static checks of `dashboards/sidepool.json` (Grafana) and `dashboards/alerts.yml`
//! (Prometheus alerting rules) against the metrics sidepool exports.
//!
//! The list of exported metrics is read from the source of `proxy/src/telemetry.rs` (its
//! `names` module: one `/// kind {labels}: …` doc line above each `pub const`), so a renamed or
//! removed metric breaks these tests rather than a dashboard panel in production.
//!
//! The YAML rules file is checked with a small line-based reader (the workspace has no YAML
//! crate). `promtool check rules` runs on the rules file, and on every dashboard expression
//! wrapped as a recording rule; `make test` installs it (Debian package `prometheus`), and
//! without it those tests fail with that hint.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::dashboards::*;
use sidepool::telemetry::names;

/// One metric of the `names` module.
#[derive(Debug)]
struct Metric {
    kind: String,
    labels: BTreeSet<String>,
}

/// Parses `pub mod names { … }` of telemetry.rs: name → kind and label set.
fn exported() -> BTreeMap<String, Metric> {
    let src = include_str!("../../src/telemetry.rs");
    let start = src
        .find("pub mod names {")
        .expect("telemetry.rs has a names module");
    let body = &src[start..];
    let end = body.find("\n}").expect("names module ends");
    let mut out = BTreeMap::new();
    let mut doc: Option<(String, BTreeSet<String>)> = None;
    for line in body[..end].lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("/// ") {
            let (kind, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            let labels = rest
                .strip_prefix('{')
                .and_then(|r| r.split_once('}'))
                .map(|(l, _)| l.split(',').map(|s| s.trim().to_owned()).collect())
                .unwrap_or_default();
            doc = Some((kind.to_owned(), labels));
        } else if line.starts_with("pub const") {
            let name = line
                .split('"')
                .nth(1)
                .unwrap_or_else(|| panic!("no string in `{line}`"));
            let (kind, labels) = doc
                .take()
                .unwrap_or_else(|| panic!("{name} has no `/// kind {{labels}}` doc line"));
            out.insert(name.to_owned(), Metric { kind, labels });
        }
    }
    out
}

/// The exported metric a series name belongs to (histograms also export `_bucket`, `_sum`,
/// `_count`), or `None` when sidepool does not export it.
fn resolve<'a>(metrics: &'a BTreeMap<String, Metric>, series: &str) -> Option<&'a Metric> {
    if let Some(m) = metrics.get(series) {
        return Some(m);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let m = metrics.get(series.strip_suffix(suffix)?)?;
        (m.kind == "histogram").then_some(m)
    })
}

/// Every `sidepool_*` series an expression names, with the text inside its `{…}` selector.
fn series_refs(expr: &str) -> Vec<(String, Option<String>)> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = expr[from..].find("sidepool_").map(|p| p + from) {
        let word_char = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let mut end = pos;
        while end < bytes.len() && word_char(bytes[end]) {
            end += 1;
        }
        if pos > 0 && word_char(bytes[pos - 1]) {
            from = end;
            continue;
        }
        let selector = (bytes.get(end) == Some(&b'{'))
            .then(|| expr[end + 1..].split_once('}').map(|(s, _)| s.to_owned()))
            .flatten();
        out.push((expr[pos..end].to_owned(), selector));
        from = end;
    }
    out
}

#[test]
fn telemetry_names_are_read_from_the_names_module() {
    let metrics = exported();
    let all = [
        names::POOL_CONNECTIONS,
        names::POOL_MAX_OPEN,
        names::POOL_SATURATION,
        names::POOL_WAITING,
        names::POOL_WAIT,
        names::POOL_WAIT_TIMEOUTS,
        names::POOL_REJECTED,
        names::POOL_OPENED,
        names::POOL_CLOSED,
        names::POOL_CONNECT_ERRORS,
        names::POOL_HOLD,
        names::POOL_LEAKS,
        names::POOL_LEAKED,
        names::POOL_ABANDONED,
        names::CLIENT_CONNECTIONS,
        names::QUERIES,
        names::QUERY_DURATION,
        names::PINNED,
        names::REPLICA_LAG,
        names::BACKEND_UP,
        names::CONFIG_RELOADS,
        names::BUILD_INFO,
    ];
    for name in all {
        assert!(
            metrics.contains_key(name),
            "{name} not parsed from telemetry.rs"
        );
    }
    assert_eq!(metrics[names::POOL_WAIT].kind, "histogram");
    assert!(metrics[names::POOL_WAIT].labels.contains("backend"));
    assert!(!metrics[names::POOL_LEAKS].labels.contains("backend"));
    assert!(metrics.values().all(|m| !m.labels.is_empty()));
}

#[test]
fn dashboard_has_datasource_pool_and_backend_variables() {
    let dash = dashboard();
    let ds = variable(&dash, "datasource");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    for name in ["pool", "backend"] {
        let v = variable(&dash, name);
        assert_eq!(v["type"], "query", "{name}");
        assert_eq!(v["multi"], true, "{name} is multi-value");
        assert_eq!(v["includeAll"], true, "{name} includes All");
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{name}");
        let query = v["query"]["query"].as_str().expect("variable query");
        assert!(
            query.starts_with("label_values(") && query.ends_with(&format!(", {name})")),
            "{name}: {query}"
        );
        for (series, _) in series_refs(query) {
            assert!(resolve(&exported(), &series).is_some(), "{series}");
        }
    }
    let backend = variable(&dash, "backend")["query"]["query"].clone();
    assert!(backend.as_str().unwrap_or("").contains(r#"pool=~"$pool""#));
}

#[test]
fn every_panel_uses_the_datasource_variable_and_has_a_unique_id() {
    let dash = dashboard();
    assert!(dash["schemaVersion"].as_u64().unwrap_or(0) >= 36);
    let mut ids = BTreeSet::new();
    let all = panels(&dash);
    assert!(all.len() >= 15, "only {} panels", all.len());
    for p in all {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id: {title}"
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no targets");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
        }
        assert!(p["gridPos"]["w"].as_u64().unwrap_or(0) > 0, "{title}");
        assert!(
            !p["description"].as_str().unwrap_or("").is_empty(),
            "{title}"
        );
    }
}

#[test]
fn dashboard_exprs_reference_only_exported_metrics() {
    let metrics = exported();
    for (title, expr) in panel_exprs(&dashboard()) {
        let refs = series_refs(&expr);
        assert!(!refs.is_empty(), "{title}: no sidepool metric in `{expr}`");
        for (series, _) in refs {
            assert!(
                resolve(&metrics, &series).is_some(),
                "{title}: `{series}` is not exported by sidepool (telemetry.rs names)"
            );
        }
    }
}

#[test]
fn dashboard_exprs_filter_by_pool_and_by_backend_where_labelled() {
    let metrics = exported();
    for (title, expr) in panel_exprs(&dashboard()) {
        for (series, selector) in series_refs(&expr) {
            let Some(metric) = resolve(&metrics, &series) else {
                continue; // reported by dashboard_exprs_reference_only_exported_metrics
            };
            let selector = selector.unwrap_or_default();
            assert!(
                selector.contains(r#"pool=~"$pool""#),
                "{title}: `{series}` not filtered by pool in `{expr}`"
            );
            assert_eq!(
                selector.contains(r#"backend=~"$backend""#),
                metric.labels.contains("backend"),
                "{title}: `{series}` backend filter must match its labels {:?}",
                metric.labels
            );
        }
    }
}

#[test]
fn dashboard_shows_every_operational_metric() {
    let used: BTreeSet<String> = panel_exprs(&dashboard())
        .iter()
        .flat_map(|(_, e)| series_refs(e).into_iter().map(|(s, _)| s))
        .collect();
    let required = [
        "sidepool_pool_saturation_ratio",
        "sidepool_pool_wait_seconds_bucket",
        "sidepool_pool_waiting_clients",
        "sidepool_pool_wait_timeouts_total",
        "sidepool_pool_rejected_total",
        "sidepool_pool_connections",
        "sidepool_pool_connections_closed_total",
        "sidepool_pool_leaks_total",
        "sidepool_pool_leaked_connections",
        "sidepool_pool_abandoned_transactions_total",
        "sidepool_queries_total",
        "sidepool_query_duration_seconds_bucket",
        "sidepool_pinned_sessions",
        "sidepool_replica_lag_seconds",
        "sidepool_backend_up",
    ];
    for name in required {
        assert!(used.contains(name), "no panel shows {name}");
    }
}

/// One `- alert:` entry of alerts.yml.
#[derive(Debug, Default)]
struct Rule {
    alert: String,
    expr: String,
    duration: Option<String>,
    severity: String,
    summary: String,
    description: String,
}

/// Line-based reader for the simple shape of alerts.yml (one-line scalars only).
fn rules() -> (Vec<String>, Vec<Rule>) {
    let text = read("dashboards/alerts.yml");
    let mut groups = Vec::new();
    let mut rules: Vec<Rule> = Vec::new();
    assert!(
        text.lines().any(|l| l.trim_end() == "groups:"),
        "alerts.yml starts with `groups:`"
    );
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let line = line.strip_prefix("- ").unwrap_or(line);
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value)
            .to_owned();
        match key {
            "name" => groups.push(value),
            "alert" => rules.push(Rule {
                alert: value,
                ..Rule::default()
            }),
            _ => {
                let Some(rule) = rules.last_mut() else {
                    continue;
                };
                match key {
                    "expr" => rule.expr = value,
                    "for" => rule.duration = Some(value),
                    "severity" => rule.severity = value,
                    "summary" => rule.summary = value,
                    "description" => rule.description = value,
                    _ => {}
                }
            }
        }
    }
    (groups, rules)
}

#[test]
fn alert_rules_cover_saturation_waits_timeouts_leaks_backends_and_lag() {
    let (groups, rules) = rules();
    assert_eq!(groups, ["sidepool"]);
    // (alert, metric in expr, threshold text in expr, for, severity)
    let expected = [
        (
            "SidepoolPoolSaturated",
            "sidepool_pool_saturation_ratio",
            "> 0.9",
            Some("5m"),
            "warning",
        ),
        (
            "SidepoolPoolWaitHigh",
            "sidepool_pool_wait_seconds_bucket",
            "> 0.1",
            Some("5m"),
            "warning",
        ),
        (
            "SidepoolPoolWaitTimeouts",
            "sidepool_pool_wait_timeouts_total",
            "> 0",
            None,
            "critical",
        ),
        (
            "SidepoolConnectionLeak",
            "sidepool_pool_leaked_connections",
            "> 0",
            None,
            "warning",
        ),
        (
            "SidepoolBackendDown",
            "sidepool_backend_up",
            "== 0",
            Some("1m"),
            "critical",
        ),
        (
            "SidepoolReplicaLag",
            "sidepool_replica_lag_seconds",
            "> 5",
            Some("2m"),
            "warning",
        ),
    ];
    assert_eq!(rules.len(), expected.len(), "{rules:#?}");
    for (name, metric, threshold, duration, severity) in expected {
        let rule = rules
            .iter()
            .find(|r| r.alert == name)
            .unwrap_or_else(|| panic!("no alert {name}"));
        assert!(rule.expr.contains(metric), "{name}: {}", rule.expr);
        assert!(rule.expr.contains(threshold), "{name}: {}", rule.expr);
        assert_eq!(rule.duration.as_deref(), duration, "{name}");
        assert_eq!(rule.severity, severity, "{name}");
    }
    let leak = rules.iter().find(|r| r.alert == "SidepoolConnectionLeak");
    assert!(leak.is_some_and(|r| r.expr.contains("increase(sidepool_pool_leaks_total[5m])")));
    for rule in &rules {
        assert!(
            rule.summary.contains("{{ $labels.pool }}"),
            "{}",
            rule.alert
        );
        assert!(
            rule.description.contains("{{ $labels.pool }}"),
            "{}",
            rule.alert
        );
    }
}

#[test]
fn alert_exprs_reference_only_exported_metrics() {
    let metrics = exported();
    let (_, rules) = rules();
    for rule in rules {
        let refs = series_refs(&rule.expr);
        assert!(!refs.is_empty(), "{}: {}", rule.alert, rule.expr);
        for (series, _) in refs {
            let metric = resolve(&metrics, &series)
                .unwrap_or_else(|| panic!("{}: `{series}` not exported", rule.alert));
            assert!(metric.labels.contains("pool"), "{}: {series}", rule.alert);
        }
    }
}

/// `promtool check rules` accepts the alert rules.
#[test]
fn promtool_accepts_the_alert_rules() {
    must_pass_promtool_check_rules(&repo_file("dashboards/alerts.yml"));
}

/// Every dashboard expression, with Grafana's variables
/// replaced, must parse as PromQL (wrapped as recording rules for `promtool check rules`).
#[test]
fn promtool_parses_every_dashboard_expr() {
    let mut yaml = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in panel_exprs(&dashboard()).iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$pool", ".*")
            .replace("$backend", ".*");
        let quoted = serde_json::to_string(&expr).expect("quote expr");
        yaml.push_str(&format!(
            "      - record: dashboard:expr_{i}\n        expr: {quoted}\n"
        ));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("dashboard-exprs.yml");
    std::fs::write(&file, yaml).expect("write rules");
    must_pass_promtool_check_rules(&file);
}
