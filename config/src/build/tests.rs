use std::net::SocketAddr;
use std::time::Duration;

use crate::ProblemKind::{
    Conflict, Missing, Secret as SecretKind, Syntax, Type, UnknownKey, Value,
};
use crate::testutil::{POOL, assert_problem, must_fail, must_fail_once, must_parse};
use crate::*;

fn with_pool(extra: &str) -> String {
    format!("{POOL}{extra}")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

// ---- defaults ----

#[test]
fn minimal_file_gets_every_default_of_design_section_7() {
    let c = must_parse(&with_pool("client_auth = \"trust\"\n"));
    assert_eq!(c.admin.listen, addr("127.0.0.1:9930"));
    assert_eq!(c.log.level, LogLevel::Info);
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.shutdown.timeout, Duration::from_secs(30));
    assert_eq!(c.runtime.workers, 0);
    assert_eq!(c.source, None);
    let p = &c.pools[0];
    assert_eq!(p.name, "app");
    assert_eq!(p.protocol, Protocol::Postgres);
    assert_eq!(p.mode, PoolMode::Transaction);
    assert_eq!(
        p.primary,
        BackendAddr {
            host: "db".into(),
            port: 5432
        }
    );
    assert!(p.replicas.is_empty());
    assert_eq!(p.client_auth, ClientAuth::Trust);
    let l = &p.limits;
    assert_eq!((l.max_open, l.max_idle, l.min_idle), (20, 10, 0));
    assert_eq!(l.max_lifetime, Some(Duration::from_secs(1800)));
    assert_eq!(l.max_idle_time, Some(Duration::from_secs(300)));
    assert_eq!(l.wait_timeout, Duration::from_secs(5));
    assert_eq!((l.max_waiting, l.max_clients), (1000, 5000));
    assert_eq!(l.connect_timeout, Duration::from_secs(5));
    assert_eq!(p.leaks.threshold, Duration::from_secs(30));
    assert_eq!(p.leaks.action, LeakAction::Warn);
    assert_eq!(p.leaks.terminate_after, Duration::from_secs(300));
    let r = &p.routing;
    assert!(!r.split);
    assert_eq!(r.max_replica_lag, Duration::from_secs(5));
    assert_eq!(r.read_your_writes, Duration::from_secs(1));
    assert!(r.write_functions.is_empty());
    assert_eq!(r.tidb_replica_read, "closest-replicas");
    assert_eq!(r.tidb_read_staleness, Duration::ZERO);
    assert_eq!(p.tls, None);
    assert!(p.users.is_empty());
}

#[test]
fn client_auth_defaults_to_password() {
    let c = must_parse(POOL);
    assert_eq!(c.pools[0].client_auth, ClientAuth::Password);
}

#[test]
fn default_max_idle_follows_a_lower_max_open() {
    let c = must_parse(&with_pool("[pools.limits]\nmax_open = 4\n"));
    assert_eq!(
        (c.pools[0].limits.max_open, c.pools[0].limits.max_idle),
        (4, 4)
    );
}

#[test]
fn empty_tls_table_gets_disable_and_prefer() {
    let c = must_parse(&with_pool("[pools.tls]\n"));
    let tls = c.pools[0].tls.clone().unwrap();
    assert_eq!(tls.client_mode, ClientTlsMode::Disable);
    assert_eq!(tls.server_mode, ServerTlsMode::Prefer);
}

#[test]
fn backend_port_defaults_by_protocol() {
    for (protocol, port, mode) in [
        ("postgres", 5432, "transaction"),
        ("mysql", 3306, "transaction"),
        ("tidb", 4000, "transaction"),
        ("dameng", 5236, "session"),
    ] {
        let text = format!(
            "[[pools]]\nname = \"p\"\nprotocol = \"{protocol}\"\nlisten = \"127.0.0.1:1\"\n\
             primary = \"db\"\nreplicas = [\"[::1]\"]\n"
        );
        let c = must_parse(&text);
        assert_eq!(c.pools[0].primary.port, port, "{protocol}");
        assert_eq!(
            c.pools[0].replicas[0],
            BackendAddr {
                host: "::1".into(),
                port
            }
        );
        assert_eq!(c.pools[0].mode.as_str(), mode, "{protocol} default mode");
    }
}

// ---- every key parses ----

#[test]
fn every_key_of_the_design_shape_parses_into_its_field() {
    let text = r#"
[admin]
listen = "0.0.0.0:9000"
[log]
level = "debug"
format = "json"
[shutdown]
timeout = "1m"
[runtime]
workers = 3
[[pools]]
name = "app"
protocol = "mysql"
listen = "127.0.0.1:3307"
mode = "session"
primary = "db:3310"
replicas = ["r1", "r2:3311"]
client_auth = "native"
[pools.limits]
max_open = 8
max_idle = 6
min_idle = 1
max_lifetime = "0s"
max_idle_time = "1h30m"
wait_timeout = "250ms"
max_waiting = 0
max_clients = 7
connect_timeout = "2s"
[pools.leaks]
threshold = "10s"
action = "terminate"
terminate_after = "1m"
[pools.routing]
split = true
max_replica_lag = "2s"
read_your_writes = "0s"
write_functions = ["f1", "s.f2"]
tidb_replica_read = "follower"
tidb_read_staleness = "3s"
[pools.tls]
client_cert = "c.crt"
client_key = "c.key"
client_mode = "require"
server_mode = "verify-ca"
server_ca = "/ca.crt"
[[pools.users]]
name = "u"
password = "${APP_PASSWORD}"
"#;
    let c = must_parse(text);
    assert_eq!(c.admin.listen, addr("0.0.0.0:9000"));
    assert_eq!(
        (c.log.level, c.log.format),
        (LogLevel::Debug, LogFormat::Json)
    );
    assert_eq!(c.shutdown.timeout, Duration::from_secs(60));
    assert_eq!(c.runtime.workers, 3);
    let p = &c.pools[0];
    assert_eq!(p.protocol, Protocol::Mysql);
    assert_eq!(p.mode, PoolMode::Session);
    assert_eq!(p.primary.to_string(), "db:3310");
    let replicas: Vec<String> = p.replicas.iter().map(ToString::to_string).collect();
    assert_eq!(replicas, ["r1:3306", "r2:3311"]);
    assert_eq!(p.client_auth, ClientAuth::Native);
    let l = &p.limits;
    assert_eq!(
        (
            l.max_open,
            l.max_idle,
            l.min_idle,
            l.max_waiting,
            l.max_clients
        ),
        (8, 6, 1, 0, 7)
    );
    assert_eq!(l.max_lifetime, None);
    assert_eq!(l.max_idle_time, Some(Duration::from_secs(5400)));
    assert_eq!(l.wait_timeout, Duration::from_millis(250));
    assert_eq!(l.connect_timeout, Duration::from_secs(2));
    assert_eq!(p.leaks.action, LeakAction::Terminate);
    assert_eq!(p.leaks.threshold, Duration::from_secs(10));
    assert_eq!(p.leaks.terminate_after, Duration::from_secs(60));
    let r = &p.routing;
    assert!(r.split);
    assert_eq!(r.max_replica_lag, Duration::from_secs(2));
    assert_eq!(r.read_your_writes, Duration::ZERO);
    assert_eq!(r.write_functions, ["f1", "s.f2"]);
    assert_eq!(r.tidb_replica_read, "follower");
    assert_eq!(r.tidb_read_staleness, Duration::from_secs(3));
    let tls = p.tls.as_ref().unwrap();
    assert_eq!(
        tls.client_cert.as_deref(),
        Some(std::path::Path::new("c.crt"))
    );
    assert_eq!(
        tls.client_key.as_deref(),
        Some(std::path::Path::new("c.key"))
    );
    assert_eq!(
        (tls.client_mode, tls.server_mode),
        (ClientTlsMode::Require, ServerTlsMode::VerifyCa)
    );
    assert_eq!(
        tls.server_ca.as_deref(),
        Some(std::path::Path::new("/ca.crt"))
    );
    assert_eq!(p.users[0].name, "u");
    assert_eq!(p.users[0].password.expose(), "s3cret");
}

#[test]
fn inline_tables_and_inline_pool_arrays_are_accepted() {
    let text = r#"
pools = [
  { name = "a", protocol = "postgres", listen = "127.0.0.1:1", primary = "db", limits = { max_open = 3 }, users = [{ name = "u", password = "p" }] },
]
"#;
    let c = must_parse(text);
    assert_eq!(c.pools[0].limits.max_open, 3);
    assert_eq!(c.pools[0].users[0].password.expose(), "p");
}

#[test]
fn dotted_keys_inside_a_pool_are_accepted() {
    let c = must_parse(&with_pool(
        "limits.max_open = 5\nleaks.action = \"terminate\"\n",
    ));
    assert_eq!(c.pools[0].limits.max_open, 5);
    assert_eq!(c.pools[0].leaks.action, LeakAction::Terminate);
}

// ---- durations ----

#[test]
fn every_duration_form_is_accepted_in_the_file() {
    for (text, want) in [
        ("500ms", Duration::from_millis(500)),
        ("5s", Duration::from_secs(5)),
        ("30m", Duration::from_secs(1800)),
        ("2h", Duration::from_secs(7200)),
        ("1h30m", Duration::from_secs(5400)),
        ("0s", Duration::ZERO),
    ] {
        let c = must_parse(&format!("[shutdown]\ntimeout = \"{text}\"\n{POOL}"));
        assert_eq!(c.shutdown.timeout, want, "{text}");
    }
}

#[test]
fn integer_duration_is_a_type_problem_with_a_hint() {
    let p = must_fail_once(&format!("[shutdown]\ntimeout = 5\n{POOL}"));
    assert_problem(&p, "shutdown.timeout", Type, "write \"5s\"");
    assert_eq!((p.line, p.column), (2, 11));
}

#[test]
fn malformed_and_float_durations_are_reported() {
    let p = must_fail_once(&with_pool("[pools.leaks]\nthreshold = \"5 minutes\"\n"));
    assert_problem(&p, "pools[0].leaks.threshold", Value, "invalid duration");
    let p = must_fail_once(&with_pool("[pools.leaks]\nthreshold = 1.5\n"));
    assert_problem(&p, "pools[0].leaks.threshold", Type, "found float");
}

#[test]
fn zero_max_lifetime_and_idle_time_mean_unlimited() {
    let c = must_parse(&with_pool(
        "[pools.limits]\nmax_lifetime = \"0s\"\nmax_idle_time = \"0s\"\n",
    ));
    assert_eq!(c.pools[0].limits.max_lifetime, None);
    assert_eq!(c.pools[0].limits.max_idle_time, None);
}

#[test]
fn zero_connect_timeout_and_leak_threshold_are_rejected() {
    let problems = must_fail(&with_pool(
        "[pools.limits]\nconnect_timeout = \"0s\"\n[pools.leaks]\nthreshold = \"0s\"\n",
    ));
    assert_eq!(problems.len(), 2);
    assert_problem(
        &problems[0],
        "pools[0].limits.connect_timeout",
        Value,
        "above 0s",
    );
    assert_problem(&problems[1], "pools[0].leaks.threshold", Value, "above 0s");
}

#[test]
fn tidb_read_staleness_must_be_whole_seconds() {
    let p = must_fail_once(&with_pool(
        "[pools.routing]\ntidb_read_staleness = \"1s500ms\"\n",
    ));
    assert_problem(
        &p,
        "pools[0].routing.tidb_read_staleness",
        Value,
        "whole seconds",
    );
}

// ---- types and names ----

#[test]
fn wrong_types_are_reported_with_expected_and_found() {
    let problems = must_fail(&with_pool(
        "mode = 1\nreplicas = \"db2\"\n[pools.limits]\nmax_open = \"20\"\n[pools.routing]\nsplit = \"yes\"\n",
    ));
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "pools[0].mode",
            "pools[0].replicas",
            "pools[0].limits.max_open",
            "pools[0].routing.split"
        ]
    );
    assert!(problems.iter().all(|p| p.kind == Type), "{problems:#?}");
    assert!(
        problems[2]
            .message
            .contains("expected an integer, found string")
    );
}

#[test]
fn bad_enum_names_are_reported_with_suggestions_or_choices() {
    let problems = must_fail(&format!(
        "[log]\nlevel = \"verbose\"\nformat = \"jsn\"\n{POOL}mode = \"sesion\"\nclient_auth = \"scram\"\n\
         [pools.leaks]\naction = \"kill\"\n[pools.routing]\ntidb_replica_read = \"folower\"\n"
    ));
    assert_eq!(problems.len(), 6, "{problems:#?}");
    assert_problem(
        &problems[0],
        "log.level",
        Value,
        "expected one of: error, warn, info, debug, trace",
    );
    assert_problem(&problems[1], "log.format", Value, "did you mean `json`?");
    assert_problem(
        &problems[2],
        "pools[0].mode",
        Value,
        "did you mean `session`?",
    );
    assert_problem(
        &problems[3],
        "pools[0].client_auth",
        Value,
        "unknown client_auth `scram`",
    );
    assert_problem(
        &problems[4],
        "pools[0].leaks.action",
        Value,
        "warn, terminate",
    );
    assert_problem(
        &problems[5],
        "pools[0].routing.tidb_replica_read",
        Value,
        "did you mean `follower`?",
    );
}

#[test]
fn unknown_protocol_is_reported_and_the_rest_still_checked() {
    let text = "[[pools]]\nname = \"a\"\nprotocol = \"oracle\"\nlisten = \"127.0.0.1:1\"\nprimary = \"db:0\"\n";
    let problems = must_fail(text);
    assert_eq!(problems.len(), 2);
    assert_problem(
        &problems[0],
        "pools[0].protocol",
        Value,
        "postgres, mysql, tidb, dameng",
    );
    assert_problem(&problems[1], "pools[0].primary", Value, "invalid port");
}

#[test]
fn negative_and_oversized_integers_are_reported() {
    let problems = must_fail(&format!(
        "[runtime]\nworkers = -1\n{POOL}[pools.limits]\nmax_waiting = 5000000000\n"
    ));
    assert_problem(&problems[0], "runtime.workers", Value, "at least 0");
    assert_problem(
        &problems[1],
        "pools[0].limits.max_waiting",
        Value,
        "at most 4294967295",
    );
}

// ---- unknown keys ----

#[test]
fn unknown_keys_are_reported_at_every_depth() {
    let text = format!(
        "colour = 1\n[admin]\nlisten = \"127.0.0.1:9930\"\nport = 1\n{POOL}max_open = 3\n\
         [pools.limits]\nmax_opne = 5\n[pools.tls]\nca = \"x\"\n[[pools.users]]\nname = \"u\"\n\
         password = \"p\"\npasword_file = \"f\"\n"
    );
    let problems = must_fail(&text);
    let got: Vec<(&str, usize)> = problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert_eq!(
        got,
        [
            ("colour", 1),
            ("admin.port", 4),
            ("pools[0].max_open", 11),
            ("pools[0].limits.max_opne", 13),
            ("pools[0].tls.ca", 15),
            ("pools[0].users[0].pasword_file", 19),
        ]
    );
    assert!(problems.iter().all(|p| p.kind == UnknownKey));
    assert!(
        problems[0]
            .message
            .contains("valid keys here: admin, log, shutdown, runtime, pools")
    );
    assert!(problems[3].message.contains("did you mean `max_open`?"));
    assert!(
        problems[5]
            .message
            .contains("did you mean `password_file`?")
    );
}

#[test]
fn pools_as_a_single_table_says_to_use_double_brackets() {
    let p = must_fail_once("[pools]\nname = \"a\"\n");
    assert_problem(&p, "pools", Type, "write [[pools]]");
}

#[test]
fn unknown_nested_table_is_reported_once() {
    let p = must_fail_once(&with_pool("[pools.limit]\nmax_open = 3\n"));
    assert_problem(&p, "pools[0].limit", UnknownKey, "did you mean `limits`?");
    assert_eq!((p.line, p.column), (7, 8));
}

// ---- required keys, pools ----

#[test]
fn at_least_one_pool_is_required() {
    let p = must_fail_once("[log]\nlevel = \"info\"\n");
    assert_problem(&p, "pools", Missing, "at least one [[pools]]");
    let p = must_fail_once("pools = []\n");
    assert_problem(&p, "pools", Missing, "at least one");
}

#[test]
fn missing_required_pool_keys_point_at_the_pool_header() {
    let problems = must_fail("[log]\n\n[[pools]]\nmode = \"session\"\n");
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "pools[0].name",
            "pools[0].protocol",
            "pools[0].listen",
            "pools[0].primary"
        ]
    );
    assert!(
        problems
            .iter()
            .all(|p| p.kind == Missing && p.line == 3 && p.column == 1)
    );
}

#[test]
fn pool_names_must_be_non_empty_and_unique() {
    let text = format!(
        "{POOL}{}",
        POOL.replace("6432", "6433").replace("\"app\"", "\"\"")
    );
    let p = must_fail_once(&text);
    assert_problem(&p, "pools[1].name", Value, "must not be empty");

    let text = format!("{POOL}{}", POOL.replace("6432", "6433"));
    let p = must_fail_once(&text);
    assert_problem(&p, "pools[1].name", Conflict, "already used at line 3");
}

// ---- addresses ----

#[test]
fn listen_must_be_ip_and_port() {
    for (bad, needle) in [
        ("localhost:6432", "not a host name"),
        ("127.0.0.1", "IP:port"),
        ("6432", "IP:port"),
    ] {
        let p = must_fail_once(&POOL.replace("127.0.0.1:6432", bad));
        assert_problem(&p, "pools[0].listen", Value, needle);
    }
    let p = must_fail_once(&format!("[admin]\nlisten = \"*:9930\"\n{POOL}"));
    assert_problem(&p, "admin.listen", Value, "IP:port");
}

#[test]
fn ipv6_listen_addresses_are_accepted() {
    let c = must_parse(&POOL.replace("127.0.0.1:6432", "[::1]:6432"));
    assert_eq!(c.pools[0].listen, addr("[::1]:6432"));
}

#[test]
fn listen_addresses_must_be_unique_across_pools_and_differ_from_admin() {
    let second = POOL.replace("\"app\"", "\"b\"");
    let p = must_fail_once(&format!("{POOL}{second}"));
    assert_problem(&p, "pools[1].listen", Conflict, "at line 5");

    let wildcard = POOL
        .replace("\"app\"", "\"b\"")
        .replace("127.0.0.1:6432", "0.0.0.0:6432");
    let p = must_fail_once(&format!("{POOL}{wildcard}"));
    assert_problem(&p, "pools[1].listen", Conflict, "overlaps");

    let p = must_fail_once(&POOL.replace("127.0.0.1:6432", "127.0.0.1:9930"));
    assert_problem(&p, "pools[0].listen", Conflict, "admin.listen");
}

#[test]
fn port_zero_listeners_never_conflict() {
    let a = POOL.replace("127.0.0.1:6432", "127.0.0.1:0");
    let b = a.replace("\"app\"", "\"b\"");
    let c = must_parse(&format!("[admin]\nlisten = \"127.0.0.1:0\"\n{a}{b}"));
    assert_eq!(c.pools.len(), 2);
}

#[test]
fn bad_primary_and_replica_addresses_are_reported_each() {
    let problems = must_fail(
        &with_pool("replicas = [\"::1\", \"db:5432\", \"r:1\", \"r:1\", \"bad host\"]\n")
            .replace("db:5432\"\n", "db:99999\"\n"),
    );
    let got: Vec<(&str, ProblemKind)> = problems.iter().map(|p| (p.key.as_str(), p.kind)).collect();
    assert_eq!(
        got,
        [
            ("pools[0].primary", Value),
            ("pools[0].replicas[0]", Value),
            ("pools[0].replicas[3]", Conflict),
            ("pools[0].replicas[4]", Value),
        ]
    );
    assert!(problems[1].message.contains("[::1]:port"));
}

#[test]
fn replica_equal_to_primary_is_a_conflict() {
    let p = must_fail_once(&with_pool("replicas = [\"db\"]\n"));
    assert_problem(&p, "pools[0].replicas[0]", Conflict, "also the primary");
}

// ---- limits ----

#[test]
fn limits_must_be_ordered_min_idle_max_idle_max_open() {
    let p = must_fail_once(&with_pool("[pools.limits]\nmax_open = 5\nmax_idle = 6\n"));
    assert_problem(
        &p,
        "pools[0].limits.max_idle",
        Conflict,
        "max_idle (6) exceeds max_open (5)",
    );
    assert_eq!(p.line, 9);

    let p = must_fail_once(&with_pool("[pools.limits]\nmax_idle = 2\nmin_idle = 3\n"));
    assert_problem(
        &p,
        "pools[0].limits.min_idle",
        Conflict,
        "min_idle (3) exceeds max_idle (2)",
    );

    let p = must_fail_once(&with_pool("[pools.limits]\nmin_idle = 11\n"));
    assert_problem(
        &p,
        "pools[0].limits.min_idle",
        Conflict,
        "max_idle (10, the default)",
    );
}

#[test]
fn max_open_and_max_clients_must_be_at_least_one() {
    let problems = must_fail(&with_pool(
        "[pools.limits]\nmax_open = 0\nmax_clients = 0\n",
    ));
    assert_eq!(problems.len(), 2);
    assert_problem(
        &problems[0],
        "pools[0].limits.max_open",
        Value,
        "at least 1",
    );
    assert_problem(
        &problems[1],
        "pools[0].limits.max_clients",
        Value,
        "at least 1",
    );
}

// ---- protocol-specific rules ----

#[test]
fn dameng_pools_must_use_session_mode_and_cannot_split() {
    let dm = POOL.replace("postgres", "dameng");
    let problems = must_fail(&format!(
        "{dm}mode = \"transaction\"\n[pools.routing]\nsplit = true\n"
    ));
    assert_eq!(problems.len(), 2);
    assert_problem(
        &problems[0],
        "pools[0].mode",
        Conflict,
        "only mode = \"session\"",
    );
    assert_problem(
        &problems[1],
        "pools[0].routing.split",
        Conflict,
        "cannot split",
    );
}

#[test]
fn client_auth_must_exist_in_the_pools_protocol() {
    let mysql = POOL.replace("postgres", "mysql").replace("db:5432", "db");
    let p = must_fail_once(&format!("{mysql}client_auth = \"md5\"\n"));
    assert_problem(
        &p,
        "pools[0].client_auth",
        Conflict,
        "`md5` does not exist in the mysql protocol",
    );
    let p = must_fail_once(&with_pool("client_auth = \"native\"\n"));
    assert_problem(&p, "pools[0].client_auth", Conflict, "postgres");
    must_parse(&with_pool("client_auth = \"md5\"\n"));
    let tidb = POOL.replace("postgres", "tidb");
    must_parse(&format!("{tidb}client_auth = \"native\"\n"));
}

#[test]
fn tidb_keys_are_accepted_on_any_protocol() {
    let c = must_parse(&with_pool(
        "[pools.routing]\ntidb_replica_read = \"leader\"\n",
    ));
    assert_eq!(c.pools[0].routing.tidb_replica_read, "leader");
}

#[test]
fn empty_write_function_is_rejected() {
    let p = must_fail_once(&with_pool(
        "[pools.routing]\nwrite_functions = [\"ok\", \"\"]\n",
    ));
    assert_problem(
        &p,
        "pools[0].routing.write_functions[1]",
        Value,
        "must not be empty",
    );
}

// ---- tls ----

#[test]
fn client_tls_allow_or_require_needs_cert_and_key() {
    let p = must_fail_once(&with_pool("[pools.tls]\nclient_mode = \"require\"\n"));
    assert_problem(
        &p,
        "pools[0].tls.client_mode",
        Conflict,
        "needs client_cert and client_key",
    );
    let p = must_fail_once(&with_pool(
        "[pools.tls]\nclient_mode = \"allow\"\nclient_cert = \"c\"\n",
    ));
    assert_problem(&p, "pools[0].tls.client_mode", Conflict, "needs client_key");
    let p = must_fail_once(&with_pool("[pools.tls]\nclient_key = \"k\"\n"));
    assert_problem(
        &p,
        "pools[0].tls.client_key",
        Conflict,
        "without client_cert",
    );
}

#[test]
fn server_tls_verification_needs_server_ca() {
    for mode in ["verify-ca", "verify-full"] {
        let p = must_fail_once(&with_pool(&format!(
            "[pools.tls]\nserver_mode = \"{mode}\"\n"
        )));
        assert_problem(&p, "pools[0].tls.server_mode", Conflict, "needs server_ca");
    }
    must_parse(&with_pool("[pools.tls]\nserver_mode = \"require\"\n"));
}

// ---- users and secrets ----

#[test]
fn password_expands_whole_and_embedded_env_references_and_escapes() {
    let c = must_parse(&with_pool(
        "[[pools.users]]\nname = \"a\"\npassword = \"${APP_PASSWORD}\"\n\
         [[pools.users]]\nname = \"b\"\npassword = \"x${OTHER}y$${APP_PASSWORD}\"\n",
    ));
    let users = &c.pools[0].users;
    assert_eq!(users[0].password.expose(), "s3cret");
    assert_eq!(
        users[0].password.source(),
        &SecretSource::Env("${APP_PASSWORD}".into())
    );
    assert_eq!(users[1].password.expose(), "xothery${APP_PASSWORD}");
}

#[test]
fn unset_env_variable_is_a_problem_naming_it() {
    let p = must_fail_once(&with_pool(
        "[[pools.users]]\nname = \"a\"\npassword = \"${NOT_SET}\"\n",
    ));
    assert_problem(
        &p,
        "pools[0].users[0].password",
        SecretKind,
        "`NOT_SET` is not set",
    );
    assert_eq!((p.line, p.column), (9, 12));
}

#[test]
fn empty_password_is_rejected() {
    let p = must_fail_once(&with_pool(
        "[[pools.users]]\nname = \"a\"\npassword = \"${EMPTY}\"\n",
    ));
    assert_problem(&p, "pools[0].users[0].password", Value, "empty");
}

#[test]
fn password_file_is_read_with_trailing_newline_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "from-file\r\n").unwrap();
    let c = must_parse(&with_pool(&format!(
        "[[pools.users]]\nname = \"a\"\npassword_file = \"{}\"\n",
        file.display()
    )));
    assert_eq!(c.pools[0].users[0].password.expose(), "from-file");
    assert_eq!(
        c.pools[0].users[0].password.source(),
        &SecretSource::File(file)
    );
}

#[test]
fn missing_password_file_is_a_problem_with_its_io_source() {
    let p = must_fail_once(&with_pool(
        "[[pools.users]]\nname = \"a\"\npassword_file = \"/nonexistent/sidepool/pw\"\n",
    ));
    assert_problem(
        &p,
        "pools[0].users[0].password_file",
        SecretKind,
        "cannot read password_file",
    );
    let source = std::error::Error::source(&p).expect("io error kept as source");
    assert!(source.to_string().contains("No such file"), "{source}");
}

#[test]
fn password_and_password_file_together_are_a_conflict() {
    let p = must_fail_once(&with_pool(
        "[[pools.users]]\nname = \"a\"\npassword = \"x\"\npassword_file = \"/f\"\n",
    ));
    assert_problem(&p, "pools[0].users[0].password_file", Conflict, "not both");
}

#[test]
fn user_without_password_is_allowed_only_with_trust() {
    let p = must_fail_once(&with_pool("[[pools.users]]\nname = \"a\"\n"));
    assert_problem(
        &p,
        "pools[0].users[0].password",
        Missing,
        "client_auth = \"trust\"",
    );
    let c = must_parse(&with_pool(
        "client_auth = \"trust\"\n[[pools.users]]\nname = \"a\"\n",
    ));
    assert_eq!(c.pools[0].users[0].password.expose(), "");
}

#[test]
fn user_names_must_be_present_non_empty_and_unique() {
    let problems = must_fail(&with_pool(
        "client_auth = \"trust\"\n[[pools.users]]\npassword = \"x\"\n[[pools.users]]\nname = \"\"\n\
         [[pools.users]]\nname = \"u\"\n[[pools.users]]\nname = \"u\"\n",
    ));
    let got: Vec<(&str, ProblemKind)> = problems.iter().map(|p| (p.key.as_str(), p.kind)).collect();
    assert_eq!(
        got,
        [
            ("pools[0].users[0].name", Missing),
            ("pools[0].users[1].name", Value),
            ("pools[0].users[3].name", Conflict),
        ]
    );
}

// ---- positions and collecting everything ----

#[test]
fn three_mistakes_are_all_reported_with_their_lines() {
    let text = r#"[log]
level = "loud"

[[pools]]
name = "app"
protocol = "postgres"
listen = "127.0.0.1:6432"
primary = "db:5432"

[pools.limits]
max_open = 5
max_idle = 8
wait_timeout = 5
"#;
    let errors = parse(text, "sidepool.toml", &crate::testutil::env).unwrap_err();
    let lines: Vec<String> = errors.to_string().lines().map(str::to_owned).collect();
    assert_eq!(
        lines,
        [
            "sidepool.toml:2:9: log.level: unknown log level `loud`; expected one of: error, warn, info, debug, trace",
            "sidepool.toml:12:12: pools[0].limits.max_idle: max_idle (8) exceeds max_open (5)",
            "sidepool.toml:13:16: pools[0].limits.wait_timeout: expected a duration string, found integer 5; durations need a unit: write \"5s\"",
        ]
    );
}

#[test]
fn problems_in_several_pools_are_all_reported_in_file_order() {
    let b = POOL
        .replace("\"app\"", "\"b\"")
        .replace("6432", "6433")
        .replace("db:5432", "db:x");
    let text = format!("{POOL}mode = \"x\"\n{b}[pools.leaks]\naction = \"y\"\n");
    let problems = must_fail(&text);
    let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, [7, 13, 15]);
}

#[test]
fn toml_syntax_error_is_one_problem_with_its_position() {
    let p = must_fail_once("[log]\nlevel = \"info\nformat = \"text\"\n");
    assert_eq!(p.kind, Syntax);
    assert_eq!(p.line, 2);
    assert!(p.message.starts_with("invalid TOML"), "{p}");
    assert_eq!(p.key, "");
    assert!(p.to_string().starts_with("test.toml:2:"), "{p}");

    let p = must_fail_once(&format!("{POOL}name = \"again\"\n"));
    assert_eq!((p.kind, p.line), (Syntax, 7));
}

#[test]
fn tidb_status_port_is_a_port_of_tidb_pools_only() {
    let tidb = POOL.replace("postgres", "tidb");
    let c = must_parse(&format!("{tidb}tidb_status_port = 10080\n"));
    assert_eq!(c.pools[0].tidb_status_port, Some(10080));
    assert_eq!(must_parse(&tidb).pools[0].tidb_status_port, None);
    let p = must_fail_once(&with_pool("tidb_status_port = 10080\n"));
    assert_problem(&p, "pools[0].tidb_status_port", Conflict, "tidb");
    let p = must_fail_once(&format!("{tidb}tidb_status_port = 70000\n"));
    assert_problem(&p, "pools[0].tidb_status_port", Value, "at most 65535");
    let p = must_fail_once(&format!("{tidb}tidb_status_port = 0\n"));
    assert_problem(&p, "pools[0].tidb_status_port", Value, "at least 1");
}

#[test]
fn a_tidb_pool_may_split_reads_without_replicas() {
    // Every TiDB server serves replica reads, so the primary alone is enough.
    let tidb = POOL.replace("postgres", "tidb");
    let c = must_parse(&format!(
        "{tidb}replicas = []\n[pools.routing]\nsplit = true\ntidb_read_staleness = \"5s\"\n"
    ));
    let p = &c.pools[0];
    assert!(p.replicas.is_empty() && p.routing.split);
    assert_eq!(p.routing.tidb_read_staleness, Duration::from_secs(5));
}

// ---- [pools.tcp] and query_timeout ----

#[test]
fn tcp_options_default_to_quick_server_and_gentle_client_detection() {
    let p = &must_parse(POOL).pools[0];
    let s = p.tcp.server;
    assert_eq!(s.keepalive_idle, Some(Duration::from_secs(15)));
    assert_eq!(s.keepalive_interval, Duration::from_secs(5));
    assert_eq!(s.keepalive_count, 3);
    assert_eq!(s.user_timeout, Some(Duration::from_secs(30)));
    // A silent server is given up idle + interval x count after its last packet: under 1 min.
    let silent = s.keepalive_idle.unwrap() + s.keepalive_interval * s.keepalive_count;
    assert!(silent <= s.user_timeout.unwrap() && silent < Duration::from_secs(60));
    let c = p.tcp.client;
    assert_eq!(c.keepalive_idle, Some(Duration::from_secs(60)));
    assert_eq!(c.keepalive_interval, Duration::from_secs(10));
    assert_eq!(c.keepalive_count, 6);
    assert_eq!(c.user_timeout, None);
    assert_eq!(p.limits.query_timeout, None);
}

#[test]
fn every_tcp_key_and_query_timeout_parse_into_their_fields() {
    let c = must_parse(&with_pool(
        "[pools.limits]\nquery_timeout = \"1s500ms\"\n[pools.tcp]\n\
         server_keepalive_idle = \"20s\"\nserver_keepalive_interval = \"2s\"\n\
         server_keepalive_count = 4\nserver_user_timeout = \"1m500ms\"\n\
         client_keepalive_idle = \"0s\"\nclient_keepalive_interval = \"30s\"\n\
         client_keepalive_count = 127\nclient_user_timeout = \"2m\"\n",
    ));
    let p = &c.pools[0];
    assert_eq!(p.limits.query_timeout, Some(Duration::from_millis(1500)));
    let want_server = TcpOptions {
        keepalive_idle: Some(Duration::from_secs(20)),
        keepalive_interval: Duration::from_secs(2),
        keepalive_count: 4,
        user_timeout: Some(Duration::from_millis(60_500)),
    };
    let want_client = TcpOptions {
        keepalive_idle: None,
        keepalive_interval: Duration::from_secs(30),
        keepalive_count: 127,
        user_timeout: Some(Duration::from_secs(120)),
    };
    assert_eq!((p.tcp.server, p.tcp.client), (want_server, want_client));
    let off = must_parse(&with_pool(
        "[pools.limits]\nquery_timeout = \"0s\"\n[pools.tcp]\nserver_user_timeout = \"0s\"\n",
    ));
    assert_eq!(off.pools[0].limits.query_timeout, None);
    assert_eq!(off.pools[0].tcp.server.user_timeout, None);
}

#[test]
fn bad_tcp_values_are_all_reported_with_their_lines() {
    let text = format!(
        "{POOL}[pools.tcp]\nserver_keepalive_idle = \"1s500ms\"\nserver_keepalive_interval = \"0s\"\n\
         server_keepalive_count = 128\nserver_user_timeout = \"1ms5us\"\n\
         client_keepalive_idle = \"40000s\"\nclient_keepalive_count = 0\nclient_keepalive_cnt = 1\n\
         client_user_timeout = \"25d\"\n"
    );
    let errors = parse(&text, "sidepool.toml", &crate::testutil::env).unwrap_err();
    let lines: Vec<String> = errors.to_string().lines().map(str::to_owned).collect();
    assert_eq!(
        lines,
        [
            "sidepool.toml:8:25: pools[0].tcp.server_keepalive_idle: keepalive times are whole seconds; write e.g. \"15s\"",
            "sidepool.toml:9:29: pools[0].tcp.server_keepalive_interval: must be at least 1s",
            "sidepool.toml:10:26: pools[0].tcp.server_keepalive_count: must be at most 127, found 128",
            "sidepool.toml:11:23: pools[0].tcp.server_user_timeout: TCP_USER_TIMEOUT takes whole milliseconds",
            "sidepool.toml:12:25: pools[0].tcp.client_keepalive_idle: must be at most 32767s (the kernel's limit)",
            "sidepool.toml:13:26: pools[0].tcp.client_keepalive_count: must be at least 1, found 0",
            "sidepool.toml:14:1: pools[0].tcp.client_keepalive_cnt: unknown key `client_keepalive_cnt`; did you mean `client_keepalive_count`?",
            "sidepool.toml:15:23: pools[0].tcp.client_user_timeout: unknown unit `d` in duration \"25d\"; units are h, m, s, ms, us, ns",
        ]
    );
    let p = must_fail_once(&with_pool("[pools.tcp]\nclient_user_timeout = \"600h\"\n"));
    assert_problem(
        &p,
        "pools[0].tcp.client_user_timeout",
        Value,
        "at most 24 days",
    );
}

// ---- [pools.fleet] ----

#[test]
fn no_fleet_table_means_no_fleet_budget() {
    assert_eq!(must_parse(POOL).pools[0].fleet, None);
}

#[test]
fn fleet_keys_parse_and_the_key_defaults_to_the_pool_name() {
    let c = must_parse(&with_pool("[pools.fleet]\nmax_open_total = 200\n"));
    let f = c.pools[0].fleet.as_ref().unwrap();
    assert_eq!((f.max_open_total, f.min_share), (200, 1));
    assert_eq!(f.key, c.pools[0].name);
    let c = must_parse(&with_pool(
        "[pools.fleet]\nmax_open_total = 12\nmin_share = 2\nkey = \"orders\"\n",
    ));
    let f = c.pools[0].fleet.as_ref().unwrap();
    assert_eq!(
        (f.max_open_total, f.min_share, f.key.as_str()),
        (12, 2, "orders")
    );
}

#[test]
fn a_fleet_needs_a_total_a_share_within_it_and_a_protocol_with_locks() {
    let p = must_fail_once(&with_pool("[pools.fleet]\nmin_share = 1\n"));
    assert_problem(
        &p,
        "pools[0].fleet.max_open_total",
        Missing,
        "max_open_total",
    );
    let p = must_fail_once(&with_pool(
        "[pools.fleet]\nmax_open_total = 4\nmin_share = 5\n",
    ));
    assert_problem(
        &p,
        "pools[0].fleet.min_share",
        Value,
        "exceeds max_open_total (4)",
    );
    let p = must_fail_once(&with_pool("[pools.fleet]\nmax_open_total = 0\n"));
    assert_problem(&p, "pools[0].fleet.max_open_total", Value, "at least 1");
    let p = must_fail_once(&with_pool(
        "[pools.fleet]\nmax_open_total = 4\nmax_open = 2\n",
    ));
    assert_problem(&p, "pools[0].fleet.max_open", UnknownKey, "max_open_total");
    let dm = POOL.replace("protocol = \"postgres\"", "protocol = \"dameng\"");
    assert_ne!(dm, POOL, "the fixture names its protocol");
    let p = must_fail_once(&format!("{dm}[pools.fleet]\nmax_open_total = 4\n"));
    assert_problem(&p, "pools[0].fleet", Conflict, "not for dameng");
}
