//! Reading `dashboards/` (the Grafana dashboard and the Prometheus alert rules) and finding the
//! Prometheus tools, shared by the static checks (`dashboards.rs`) and the test against a real
//! Prometheus (`dashboards_prometheus.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// `rel` inside the repository.
pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// The text of `rel` inside the repository.
pub fn read(rel: &str) -> String {
    let path = repo_file(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `dashboards/sidepool.json`, parsed.
pub fn dashboard() -> Value {
    serde_json::from_str(&read("dashboards/sidepool.json")).expect("sidepool.json is JSON")
}

/// All panels, rows' nested panels included (rows themselves excluded).
pub fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            if p["type"] == "row" {
                walk(&p["panels"], out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// (panel title, expr) of every panel target.
pub fn panel_exprs(dash: &Value) -> Vec<(String, String)> {
    panels(dash)
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("?").to_owned();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap_or("").to_owned()))
        })
        .collect()
}

/// The template variable `name` of the dashboard.
pub fn variable<'a>(dash: &'a Value, name: &str) -> &'a Value {
    dash["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no template variable `{name}`"))
}

/// A tool of the Debian package `prometheus` (`prometheus`, `promtool`) on `PATH` or in
/// `/usr/bin`; panics with the install hint when it is missing.
pub fn must_find_prometheus_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found: apt-get install prometheus (or run `make test`, which \
                 installs it through scripts/install-deps.sh)"
            )
        })
}

/// Runs `promtool check rules file`; panics with its output unless it exits 0.
pub fn must_pass_promtool_check_rules(file: &Path) {
    let promtool = must_find_prometheus_tool("promtool");
    let out = Command::new(promtool)
        .arg("check")
        .arg("rules")
        .arg(file)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check rules {}:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
