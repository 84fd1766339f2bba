use std::time::Duration;

use super::quote;
use crate::testutil::{POOL, env, must_parse};
use crate::{Config, SecretRendering, parse};

/// A config touching every key, with secrets from the environment, a file and inline, and a
/// trust user without one.
fn rich_config(pw_file: &std::path::Path) -> Config {
    must_parse(
        &format!(
            r#"
[admin]
listen = "[::1]:9000"
[log]
level = "trace"
format = "json"
[shutdown]
timeout = "1h30m"
[runtime]
workers = 2
[[pools]]
name = "app \"main\""
protocol = "postgres"
listen = "127.0.0.1:6000"
mode = "session"
primary = "db.example:5433"
replicas = ["[fe80::1]:5432", "r2"]
client_auth = "trust"
[pools.limits]
max_open = 7
max_idle = 3
min_idle = 1
max_lifetime = "0s"
max_idle_time = "1s500ms"
wait_timeout = "0s"
max_waiting = 9
max_clients = 11
connect_timeout = "750ms"
[pools.leaks]
threshold = "45s"
action = "terminate"
terminate_after = "2m"
[pools.routing]
split = true
max_replica_lag = "3s"
read_your_writes = "2s"
write_functions = ["nextval2", "my\\fn"]
tidb_replica_read = "learner"
tidb_read_staleness = "7s"
[pools.tls]
client_cert = "/c.crt"
client_key = "/c.key"
client_mode = "allow"
server_mode = "verify-full"
server_ca = "/ca.crt"
[[pools.users]]
name = "env"
password = "${{APP_PASSWORD}}"
[[pools.users]]
name = "file"
password_file = "{}"
[[pools.users]]
name = "nopass"
{POOL}"#,
            pw_file.display()
        )
        .replace("name = \"app\"", "name = \"second\""),
    )
}

fn pw_file() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "file-secret\n").unwrap();
    file
}

#[test]
fn effective_toml_with_sources_reparses_to_an_equal_config() {
    let file = pw_file();
    let config = rich_config(file.path());
    let text = config.render_toml(SecretRendering::Sources);
    let again = parse(&text, "effective.toml", &env).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(again, config, "{text}");
    assert_eq!(again.pools[0].users[1].password.expose(), "file-secret");
}

#[test]
fn effective_toml_of_defaults_reparses_to_an_equal_config() {
    let config = must_parse(POOL);
    let again = parse(&config.to_effective_toml(), "effective.toml", &env).unwrap();
    assert_eq!(again, config);
}

#[test]
fn effective_toml_redacts_every_secret_and_names_its_source() {
    let file = pw_file();
    let mut config = rich_config(file.path());
    config.pools[0].users.push(crate::User {
        name: "inline".into(),
        password: crate::Secret::new("inline-secret"),
    });
    for rendering in [SecretRendering::Redacted, SecretRendering::Sources] {
        let text = config.render_toml(rendering);
        for secret in ["s3cret", "file-secret", "inline-secret"] {
            assert!(
                !text.contains(secret),
                "{rendering:?} leaks {secret}:\n{text}"
            );
        }
    }
    let text = config.to_effective_toml();
    assert!(
        text.contains("password = \"<redacted>\"  # from ${APP_PASSWORD}\n"),
        "{text}"
    );
    assert!(text.contains("# from password_file \""), "{text}");
    // Redacted passwords re-parse as the literal text "<redacted>"; everything else is equal.
    let mut again = parse(&text, "effective.toml", &env).unwrap();
    assert_eq!(again.pools[0].users[0].password.expose(), "<redacted>");
    for (a, b) in again.pools[0].users.iter_mut().zip(&config.pools[0].users) {
        a.password = b.password.clone();
    }
    assert_eq!(again, config);
}

#[test]
fn effective_toml_lists_every_key_with_duration_strings() {
    let config = must_parse(POOL);
    let text = config.to_effective_toml();
    for line in [
        "listen = \"127.0.0.1:9930\"",
        "level = \"info\"",
        "format = \"text\"",
        "timeout = \"30s\"",
        "workers = 0",
        "mode = \"transaction\"",
        "primary = \"db:5432\"",
        "replicas = []",
        "client_auth = \"password\"",
        "max_open = 20",
        "max_idle = 10",
        "min_idle = 0",
        "max_lifetime = \"30m\"",
        "max_idle_time = \"5m\"",
        "wait_timeout = \"5s\"",
        "max_waiting = 1000",
        "max_clients = 5000",
        "connect_timeout = \"5s\"",
        "query_timeout = \"0s\"",
        "server_keepalive_idle = \"15s\"",
        "server_keepalive_interval = \"5s\"",
        "server_keepalive_count = 3",
        "server_user_timeout = \"30s\"",
        "client_keepalive_idle = \"1m\"",
        "client_keepalive_interval = \"10s\"",
        "client_keepalive_count = 6",
        "client_user_timeout = \"0s\"",
        "threshold = \"30s\"",
        "action = \"warn\"",
        "terminate_after = \"5m\"",
        "split = false",
        "max_replica_lag = \"5s\"",
        "read_your_writes = \"1s\"",
        "write_functions = []",
        "tidb_replica_read = \"closest-replicas\"",
        "tidb_read_staleness = \"0s\"",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    assert!(!text.contains("[pools.tls]"), "absent tls must stay absent");
}

#[test]
fn effective_toml_writes_compound_durations() {
    let mut config = must_parse(POOL);
    config.shutdown.timeout = Duration::from_secs(5400);
    assert!(config.to_effective_toml().contains("timeout = \"1h30m\""));
}

#[test]
fn quote_escapes_quotes_backslashes_and_controls() {
    assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    assert_eq!(quote("x\ny\u{1}"), "\"x\\ny\\u0001\"");
}

#[test]
fn effective_toml_keeps_the_tidb_status_port() {
    let tidb = POOL.replace("postgres", "tidb");
    let config = must_parse(&format!("{tidb}tidb_status_port = 10080\n"));
    let text = config.to_effective_toml();
    assert!(text.contains("tidb_status_port = 10080"), "{text}");
    let again = parse(&text, "effective.toml", &env).unwrap();
    assert_eq!(again, config);
}
