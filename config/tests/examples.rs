//! Every file in `config/examples/` must load, and say what its comments promise.

use std::path::{Path, PathBuf};

use sidepool_config::{
    ClientAuth, Config, PoolMode, Protocol, SecretRendering, load, load_with_env, parse,
};

fn env(name: &str) -> Option<String> {
    match name {
        "SIDEPOOL_DEMO_PASSWORD" | "SIDEPOOL_MYSQL_PASSWORD" | "APP_PASSWORD" | "TIDB_PASSWORD" => {
            Some(format!("pw-of-{name}"))
        }
        _ => None,
    }
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn must_load(name: &str) -> Config {
    let path = examples_dir().join(name);
    load_with_env(&path, &env).unwrap_or_else(|e| panic!("{name} does not load:\n{e}"))
}

#[test]
fn every_example_file_loads() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let config = load_with_env(&path, &env)
                .unwrap_or_else(|e| panic!("{} does not load:\n{e}", path.display()));
            assert_eq!(config.source.as_deref(), Some(path.as_path()));
            names.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    names.sort();
    assert_eq!(
        names,
        ["dameng.toml", "demo.toml", "full.toml", "mysql.toml"]
    );
}

#[test]
fn demo_example_is_one_small_postgres_transaction_pool() {
    let c = must_load("demo.toml");
    let [pool] = c.pools.as_slice() else {
        panic!("one pool expected")
    };
    assert_eq!(pool.name, "demo");
    assert_eq!(pool.protocol, Protocol::Postgres);
    assert_eq!(pool.listen.to_string(), "127.0.0.1:6432");
    assert_eq!(pool.primary.to_string(), "127.0.0.1:5432");
    assert_eq!(pool.mode, PoolMode::Transaction);
    assert!(pool.limits.max_open <= 5);
    assert_eq!(pool.users[0].name, "demo");
    assert_eq!(
        pool.users[0].password.expose(),
        "pw-of-SIDEPOOL_DEMO_PASSWORD"
    );
}

#[test]
fn mysql_and_dameng_examples_have_their_ports_and_modes() {
    let mysql = must_load("mysql.toml");
    assert_eq!(mysql.pools[0].protocol, Protocol::Mysql);
    assert_eq!(mysql.pools[0].listen.to_string(), "127.0.0.1:3307");
    let dm = must_load("dameng.toml");
    assert_eq!(dm.pools[0].protocol, Protocol::Dameng);
    assert_eq!(dm.pools[0].primary.port, 5236);
    assert_eq!(dm.pools[0].mode, PoolMode::Session);
}

#[test]
fn full_example_has_a_replica_pool_and_a_relative_password_file() {
    let c = must_load("full.toml");
    let app = c.pool("app").unwrap();
    assert_eq!(app.replicas.len(), 1);
    assert!(app.routing.split);
    assert!(app.tls.is_some());
    assert_eq!(
        app.user("reporting").unwrap().password.expose(),
        "reporting-demo-password"
    );
    let orders = c.pool("orders").unwrap();
    assert_eq!(
        (orders.protocol, orders.client_auth),
        (Protocol::Tidb, ClientAuth::Native)
    );
    assert_eq!(orders.primary.port, 4000);
}

/// Every (table, key) pair of a TOML document, with `[[x]]` entries folded together.
fn key_set(text: &str) -> std::collections::BTreeSet<String> {
    fn walk(
        prefix: &str,
        table: &dyn toml_edit::TableLike,
        out: &mut std::collections::BTreeSet<String>,
    ) {
        for (key, item) in table.iter() {
            let path = if prefix.is_empty() {
                key.to_owned()
            } else {
                format!("{prefix}.{key}")
            };
            out.insert(path.clone());
            if let Some(t) = item.as_table_like() {
                walk(&path, t, out);
            } else if let Some(array) = item.as_array_of_tables() {
                for t in array.iter() {
                    walk(&path, t, out);
                }
            }
        }
    }
    let doc = toml_edit::ImDocument::parse(text).expect("valid TOML");
    let mut out = std::collections::BTreeSet::new();
    walk("", doc.as_table(), &mut out);
    out
}

#[test]
fn full_example_writes_every_key_that_the_effective_config_has() {
    let path = examples_dir().join("full.toml");
    let written = key_set(&std::fs::read_to_string(&path).unwrap());
    let effective = key_set(&must_load("full.toml").to_effective_toml());
    let missing: Vec<&String> = effective.difference(&written).collect();
    assert!(missing.is_empty(), "full.toml lacks {missing:?}");
    assert!(written.contains("pools.users.password_file"));
}

#[test]
fn every_example_round_trips_through_its_effective_toml() {
    for name in ["demo.toml", "full.toml", "mysql.toml", "dameng.toml"] {
        let mut config = must_load(name);
        let text = config.render_toml(SecretRendering::Sources);
        let again = parse(&text, name, &env).unwrap_or_else(|e| panic!("{name}:\n{e}\n{text}"));
        config.source = None;
        assert_eq!(again, config, "{name}");
    }
}

#[test]
fn load_reports_an_unreadable_file_as_one_read_problem() {
    let errors = load(Path::new("/nonexistent/sidepool.toml")).unwrap_err();
    assert_eq!(errors.problems.len(), 1);
    let problem = &errors.problems[0];
    assert_eq!(problem.kind, sidepool_config::ProblemKind::Read);
    assert!(
        errors
            .to_string()
            .starts_with("/nonexistent/sidepool.toml:1:1: cannot read config file")
    );
}
