use super::*;
use crate::testutil::{POOL, must_parse};

fn two_pools(extra_a: &str, extra_b: &str) -> String {
    let b = POOL.replace("\"app\"", "\"b\"").replace("6432", "6433");
    format!("{POOL}{extra_a}{b}{extra_b}")
}

#[test]
fn identical_configs_have_an_empty_diff() {
    let a = must_parse(&two_pools("", ""));
    let d = diff(&a, &a.clone());
    assert!(d.is_empty(), "{d:?}");
    assert!(!d.needs_restart());
}

#[test]
fn reordering_pools_is_not_a_change() {
    let b = POOL.replace("\"app\"", "\"b\"").replace("6432", "6433");
    let old = must_parse(&format!("{POOL}{b}"));
    let new = must_parse(&format!("{b}{POOL}"));
    assert!(diff(&old, &new).is_empty());
}

#[test]
fn pools_are_added_and_removed_by_name() {
    let old = must_parse(&two_pools("", ""));
    let c = POOL.replace("\"app\"", "\"c\"").replace("6432", "6434");
    let new = must_parse(&format!("{POOL}{c}"));
    let d = diff(&old, &new);
    assert_eq!(d.pools_added, ["c"]);
    assert_eq!(d.pools_removed, ["b"]);
    assert!(d.pools_changed.is_empty());
}

#[test]
fn limits_leaks_and_routing_changes_are_live() {
    let old = must_parse(&two_pools("", ""));
    let new = must_parse(&two_pools(
        "[pools.limits]\nmax_open = 5\n[pools.leaks]\naction = \"terminate\"\n\
         [pools.routing]\nread_your_writes = \"2s\"\n",
        "",
    ));
    let d = diff(&old, &new);
    assert_eq!(d.pools_changed.len(), 1);
    let change = &d.pools_changed[0];
    assert_eq!(change.name, "app");
    assert_eq!(
        change.fields,
        [PoolField::Limits, PoolField::Leaks, PoolField::Routing]
    );
    assert!(change.is_live());
    assert!(!change.needs_rebuild());
}

#[test]
fn listen_backend_tls_and_user_changes_need_a_rebuild() {
    let old = must_parse(&two_pools(
        "",
        "[[pools.users]]\nname = \"u\"\npassword = \"a\"\n",
    ));
    let new = must_parse(
        &two_pools(
            "replicas = [\"r1\"]\n[pools.tls]\n",
            "[[pools.users]]\nname = \"u\"\npassword = \"b\"\n",
        )
        .replace("127.0.0.1:6432", "127.0.0.1:7000"),
    );
    let d = diff(&old, &new);
    let fields: Vec<(&str, &[PoolField])> = d
        .pools_changed
        .iter()
        .map(|c| (c.name.as_str(), c.fields.as_slice()))
        .collect();
    assert_eq!(
        fields,
        [
            (
                "app",
                &[PoolField::Listen, PoolField::Replicas, PoolField::Tls][..]
            ),
            ("b", &[PoolField::Users][..]),
        ]
    );
    assert!(d.pools_changed.iter().all(PoolChange::needs_rebuild));
}

#[test]
fn mixed_live_and_rebuild_changes_need_a_rebuild() {
    let old = must_parse(POOL);
    let new = must_parse(&format!(
        "{POOL}mode = \"session\"\n[pools.limits]\nmax_open = 3\n"
    ));
    let change = &diff(&old, &new).pools_changed[0];
    assert_eq!(change.fields, [PoolField::Mode, PoolField::Limits]);
    assert!(change.needs_rebuild());
}

#[test]
fn global_section_changes_are_flagged_and_runtime_needs_restart() {
    let old = must_parse(POOL);
    let new = must_parse(&format!(
        "[admin]\nlisten = \"127.0.0.1:9931\"\n[log]\nlevel = \"debug\"\n[shutdown]\ntimeout = \"1s\"\n\
         [runtime]\nworkers = 4\n{POOL}"
    ));
    let d = diff(&old, &new);
    assert!(d.admin_changed && d.log_changed && d.shutdown_changed && d.runtime_changed);
    assert!(d.needs_restart());
    assert!(d.pools_changed.is_empty());

    let only_log = must_parse(&format!("[log]\nformat = \"json\"\n{POOL}"));
    let d = diff(&old, &only_log);
    assert!(d.log_changed && !d.admin_changed && !d.needs_restart());
}

#[test]
fn a_tidb_status_port_change_needs_a_rebuild() {
    let tidb = POOL.replace("postgres", "tidb");
    let old = must_parse(&tidb);
    let new = must_parse(&format!("{tidb}tidb_status_port = 10080\n"));
    let d = diff(&old, &new);
    assert_eq!(d.pools_changed[0].fields, [PoolField::TidbStatusPort]);
    assert!(d.pools_changed[0].needs_rebuild());
}

#[test]
fn toggling_split_rebuilds_a_tidb_pool_and_tidb_settings_stay_live() {
    let tidb = POOL.replace("postgres", "tidb");
    let off = must_parse(&tidb);
    let on = must_parse(&format!("{tidb}[pools.routing]\nsplit = true\n"));
    let d = diff(&off, &on);
    assert_eq!(
        d.pools_changed[0].fields,
        [PoolField::Replicas, PoolField::Routing],
        "the primary's replica-read backend comes and goes with split"
    );
    assert!(d.pools_changed[0].needs_rebuild());

    let follower = must_parse(&format!(
        "{tidb}[pools.routing]\nsplit = true\ntidb_replica_read = \"follower\"\n"
    ));
    let d = diff(&on, &follower);
    assert_eq!(d.pools_changed[0].fields, [PoolField::Routing]);
    assert!(d.pools_changed[0].is_live());

    // Elsewhere `split` stays live: replicas exist whatever it says.
    let pg_on = must_parse(&format!("{POOL}[pools.routing]\nsplit = true\n"));
    assert!(diff(&must_parse(POOL), &pg_on).pools_changed[0].is_live());
}

#[test]
fn tcp_and_query_timeout_changes_are_live() {
    let old = must_parse(&two_pools("", ""));
    let new = must_parse(&two_pools(
        "[pools.limits]\nquery_timeout = \"10s\"\n[pools.tcp]\nserver_keepalive_idle = \"5s\"\n",
        "",
    ));
    let d = diff(&old, &new);
    let change = &d.pools_changed[0];
    assert_eq!(change.fields, [PoolField::Limits, PoolField::Tcp]);
    assert!(change.is_live());
    assert_eq!(PoolField::Tcp.as_str(), "tcp");
}
