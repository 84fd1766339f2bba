//! The Kubernetes manifests in `deploy/kubernetes/` say what the README promises: sidepool is a
//! native sidecar, its probes and Prometheus annotations hit the admin listener its own config
//! opens, the app's DSN points at the pool on loopback, passwords come from the Secret, the grace
//! period covers the drain, and the ConfigMap's TOML passes `sidepool check`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use sidepool_config::Config;

/// The password the tests put in the environment for `${APP_DB_PASSWORD}`.
const PASSWORD: &str = "from-the-secret";

fn manifest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// Every YAML document under `deploy/kubernetes`, with the file it came from.
fn must_load_manifests() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifest_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {:?}", manifest_dir());
    let mut docs = Vec::new();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
            if !value.is_null() {
                docs.push((name.clone(), value));
            }
        }
    }
    docs
}

fn must_find<'a>(docs: &'a [(String, Value)], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| d["kind"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind}");
    found[0]
}

fn pod_spec(docs: &[(String, Value)]) -> &Value {
    must_find(docs, "Deployment")
        .pointer("/spec/template/spec")
        .unwrap()
}

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no entry named {name} in {list}"))
}

fn sidecar(docs: &[(String, Value)]) -> &Value {
    named(&pod_spec(docs)["initContainers"], "sidepool")
}

fn app(docs: &[(String, Value)]) -> &Value {
    named(&pod_spec(docs)["containers"], "app")
}

/// The ConfigMap's `sidepool.toml`.
fn config_text(docs: &[(String, Value)]) -> String {
    must_find(docs, "ConfigMap")
        .pointer("/data/sidepool.toml")
        .and_then(Value::as_str)
        .expect("ConfigMap has data.sidepool.toml")
        .to_owned()
}

fn must_parse_config(docs: &[(String, Value)]) -> Config {
    let env = |name: &str| (name == "APP_DB_PASSWORD").then(|| PASSWORD.to_owned());
    sidepool_config::parse(&config_text(docs), "configmap.yaml", &env).unwrap()
}

/// The container port named `name`.
fn port_named(container: &Value, name: &str) -> u16 {
    let port = named(&container["ports"], name)["containerPort"]
        .as_u64()
        .unwrap();
    u16::try_from(port).unwrap()
}

fn env_var<'a>(container: &'a Value, name: &str) -> &'a Value {
    named(&container["env"], name)
}

#[test]
fn every_manifest_parses_and_the_kustomization_lists_each_file() {
    let docs = must_load_manifests();
    let kustomization = must_find(&docs, "Kustomization");
    let mut listed: Vec<&str> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    listed.sort_unstable();
    let mut files: Vec<&str> = docs
        .iter()
        .filter(|(_, d)| d["kind"] != "Kustomization")
        .map(|(f, _)| f.as_str())
        .collect();
    files.dedup();
    assert_eq!(listed, files);
    for (file, doc) in &docs {
        assert!(doc["apiVersion"].is_string(), "{file}: no apiVersion");
        assert!(doc["kind"].is_string(), "{file}: no kind");
    }
}

#[test]
fn sidepool_is_a_native_sidecar_init_container_with_restart_policy_always() {
    let docs = must_load_manifests();
    assert_eq!(sidecar(&docs)["restartPolicy"], "Always");
    let containers = pod_spec(&docs)["containers"].as_array().unwrap();
    assert!(
        containers.iter().all(|c| c["name"] != "sidepool"),
        "sidepool must not also be a regular container"
    );
}

#[test]
fn probes_and_scrape_annotations_hit_the_admin_listener_of_the_configmap_config() {
    let docs = must_load_manifests();
    let config = must_parse_config(&docs);
    let sidecar = sidecar(&docs);
    let admin_port = port_named(sidecar, "admin");
    assert_eq!(admin_port, config.admin.listen.port());
    // The kubelet and Prometheus connect to the pod IP, which a loopback bind would refuse.
    assert!(
        config.admin.listen.ip().is_unspecified(),
        "admin.listen {} is unreachable for probes",
        config.admin.listen
    );
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        let get = &sidecar[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], "admin", "{probe}");
    }
    let annotations = must_find(&docs, "Deployment")
        .pointer("/spec/template/metadata/annotations")
        .unwrap();
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], admin_port.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
}

#[test]
fn app_dsn_points_at_the_pool_listener_on_localhost() {
    let docs = must_load_manifests();
    let config = must_parse_config(&docs);
    let pool = &config.pools[0];
    assert!(
        pool.listen.ip().is_loopback(),
        "pool listens on {}",
        pool.listen
    );
    let dsn = env_var(app(&docs), "DATABASE_URL")["value"]
        .as_str()
        .unwrap();
    let authority = dsn
        .strip_prefix("postgres://")
        .and_then(|rest| rest.split('/').next())
        .unwrap();
    let (user, host_port) = authority.split_once('@').unwrap();
    assert!(!user.contains(':'), "the DSN carries a password: {dsn}");
    let addr: SocketAddr = host_port.parse().unwrap();
    assert_eq!(addr, pool.listen, "DSN {dsn}");
}

#[test]
fn passwords_come_from_the_secret_and_only_by_reference() {
    let docs = must_load_manifests();
    let secret = must_find(&docs, "Secret");
    let secret_name = secret.pointer("/metadata/name").unwrap();
    for (container, var) in [
        (sidecar(&docs), "APP_DB_PASSWORD"),
        (app(&docs), "PGPASSWORD"),
    ] {
        let key_ref = env_var(container, var)
            .pointer("/valueFrom/secretKeyRef")
            .unwrap_or_else(|| panic!("{var} is not from a Secret"));
        assert_eq!(&key_ref["name"], secret_name, "{var}");
        let key = key_ref["key"].as_str().unwrap();
        assert!(secret["stringData"][key].is_string(), "Secret has no {key}");
    }
    assert!(config_text(&docs).contains(r#"password = "${APP_DB_PASSWORD}""#));
    let config = must_parse_config(&docs);
    assert_eq!(config.pools[0].users[0].password.expose(), PASSWORD);
}

#[test]
fn config_volume_is_mounted_where_the_sidecar_reads_it() {
    let docs = must_load_manifests();
    let spec = pod_spec(&docs);
    let sidecar = sidecar(&docs);
    let mount = named(&sidecar["volumeMounts"], "sidepool-config");
    let volume = named(&spec["volumes"], "sidepool-config");
    assert_eq!(
        volume.pointer("/configMap/name"),
        must_find(&docs, "ConfigMap").pointer("/metadata/name")
    );
    let args: Vec<&str> = sidecar["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let mount_path = mount["mountPath"].as_str().unwrap();
    assert_eq!(args, ["--config", &format!("{mount_path}/sidepool.toml")]);
}

#[test]
fn grace_period_covers_the_app_pre_stop_and_the_sidecar_drain() {
    let docs = must_load_manifests();
    let config = must_parse_config(&docs);
    let grace = pod_spec(&docs)["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    let pre_stop: u64 = app(&docs)
        .pointer("/lifecycle/preStop/exec/command")
        .and_then(|c| c.as_array()?.last()?.as_str()?.parse().ok())
        .expect("app preStop is `sleep N`");
    // The app stops first (preStop, then its own shutdown), then sidepool drains for up to
    // shutdown.timeout: the grace period must leave the drain its whole budget.
    let drain = config.shutdown.timeout;
    assert!(
        Duration::from_secs(grace) > Duration::from_secs(pre_stop) + drain,
        "grace {grace}s <= preStop {pre_stop}s + drain {drain:?}"
    );
}

#[test]
fn configmap_toml_passes_sidepool_check() {
    let docs = must_load_manifests();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sidepool.toml");
    std::fs::write(&path, config_text(&docs)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sidepool"))
        .args(["check", "--config"])
        .arg(&path)
        .env("APP_DB_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let effective = String::from_utf8_lossy(&out.stdout);
    assert!(!effective.contains(PASSWORD), "check printed the password");
}
