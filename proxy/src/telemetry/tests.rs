use super::*;

const POOL: &str = "app";
const BACKEND: &str = "db:5432";

/// The value of the sample `series` (name and labels exactly as rendered) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

fn pb(extra: &str) -> String {
    format!("pool=\"{POOL}\",backend=\"{BACKEND}\"{extra}")
}

fn setup() -> (Telemetry, PoolMetrics) {
    let t = Telemetry::new();
    let m = t.pool_metrics(POOL, BACKEND, Role::Primary);
    (t, m)
}

#[test]
fn every_counter_and_gauge_is_rendered_with_its_labels_before_any_event() {
    let (t, _m) = setup();
    let text = t.render();
    let b = pb("");
    for series in [
        format!("sidepool_pool_connections_opened_total{{{b}}}"),
        format!("sidepool_pool_connect_errors_total{{{b}}}"),
        format!("sidepool_pool_wait_timeouts_total{{{b}}}"),
        format!("sidepool_pool_rejected_total{{pool=\"{POOL}\",reason=\"max_waiting\"}}"),
        format!("sidepool_pool_rejected_total{{pool=\"{POOL}\",reason=\"max_clients\"}}"),
        format!("sidepool_pool_leaks_total{{pool=\"{POOL}\"}}"),
        format!("sidepool_pool_leaked_connections{{pool=\"{POOL}\"}}"),
        format!("sidepool_pool_abandoned_transactions_total{{pool=\"{POOL}\"}}"),
        format!("sidepool_queries_total{{pool=\"{POOL}\",route=\"primary\"}}"),
        format!("sidepool_pool_wait_seconds_count{{{b}}}"),
        format!("sidepool_pool_hold_seconds_count{{{b}}}"),
        format!("sidepool_query_duration_seconds_count{{pool=\"{POOL}\",route=\"primary\"}}"),
        "sidepool_config_reloads_total{result=\"ok\"}".to_owned(),
        "sidepool_config_reloads_total{result=\"error\"}".to_owned(),
    ] {
        assert_eq!(sample(&text, &series), Some(0.0), "{series} in\n{text}");
    }
    for reason in CloseReason::ALL {
        let series = format!(
            "sidepool_pool_connections_closed_total{{{}}}",
            pb(&format!(",reason=\"{}\"", reason.as_str()))
        );
        assert_eq!(sample(&text, &series), Some(0.0), "{series}");
    }
    let build = format!(
        "sidepool_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&text, &build), Some(1.0));
    assert!(text.contains("# TYPE sidepool_pool_wait_seconds histogram"));
    assert!(text.contains("# HELP sidepool_pool_saturation_ratio "));
}

#[test]
fn each_close_reason_has_its_own_counter() {
    let (t, m) = setup();
    m.connection_closed(CloseReason::MaxLifetime);
    m.connection_closed(CloseReason::MaxLifetime);
    m.connection_closed(CloseReason::Rebalance);
    let text = t.render();
    let closed = |r: &str| {
        sample(
            &text,
            &format!(
                "sidepool_pool_connections_closed_total{{{}}}",
                pb(&format!(",reason=\"{r}\""))
            ),
        )
    };
    assert_eq!(closed("max_lifetime"), Some(2.0));
    assert_eq!(closed("rebalance"), Some(1.0));
    assert_eq!(closed("broken"), Some(0.0));
}

#[test]
fn zero_wait_checkouts_land_in_the_lowest_wait_bucket() {
    let (t, m) = setup();
    m.checkout_waited(Duration::ZERO);
    m.checkout_waited(Duration::from_millis(2));
    m.checkout_waited(Duration::from_secs(40));
    let text = t.render();
    let bucket = |le: &str| {
        sample(
            &text,
            &format!(
                "sidepool_pool_wait_seconds_bucket{{{}}}",
                pb(&format!(",le=\"{le}\""))
            ),
        )
    };
    assert_eq!(bucket("0.00001"), Some(1.0), "{text}");
    assert_eq!(bucket("0.001"), Some(1.0));
    assert_eq!(bucket("0.0025"), Some(2.0));
    assert_eq!(bucket("30"), Some(2.0));
    assert_eq!(bucket("+Inf"), Some(3.0));
    let count = format!("sidepool_pool_wait_seconds_count{{{}}}", pb(""));
    assert_eq!(sample(&text, &count), Some(3.0));
}

#[test]
fn hold_buckets_reach_an_hour_for_session_mode() {
    let (t, m) = setup();
    m.released(Duration::from_secs(1200));
    let text = t.render();
    let le = |le: &str| {
        sample(
            &text,
            &format!(
                "sidepool_pool_hold_seconds_bucket{{{}}}",
                pb(&format!(",le=\"{le}\""))
            ),
        )
    };
    assert_eq!(le("900"), Some(0.0), "{text}");
    assert_eq!(le("3600"), Some(1.0));
}

#[test]
fn observe_derives_saturation_and_client_states_from_stats() {
    let (t, m) = setup();
    let stats = Stats {
        max_open: 4,
        in_use: 3,
        idle: 1,
        opening: 0,
        waiting: 5,
        ..Stats::default()
    };
    m.observe(&stats, 10, 2);
    let text = t.render();
    let g = |s: String| sample(&text, &s);
    assert_eq!(
        g(format!("sidepool_pool_saturation_ratio{{{}}}", pb(""))),
        Some(0.75)
    );
    assert_eq!(
        g(format!("sidepool_pool_max_open{{{}}}", pb(""))),
        Some(4.0)
    );
    assert_eq!(
        g(format!("sidepool_pool_waiting_clients{{{}}}", pb(""))),
        Some(5.0)
    );
    let conn = |s: &str| {
        g(format!(
            "sidepool_pool_connections{{{}}}",
            pb(&format!(",role=\"primary\",state=\"{s}\""))
        ))
    };
    assert_eq!(conn("in_use"), Some(3.0));
    assert_eq!(conn("idle"), Some(1.0));
    assert_eq!(conn("opening"), Some(0.0));
    let client = |s: &str| {
        g(format!(
            "sidepool_client_connections{{pool=\"{POOL}\",state=\"{s}\"}}"
        ))
    };
    assert_eq!(client("active"), Some(3.0));
    assert_eq!(client("waiting"), Some(5.0));
    assert_eq!(
        client("idle"),
        Some(2.0),
        "10 connected - 3 active - 5 waiting"
    );
    assert_eq!(
        g(format!("sidepool_pinned_sessions{{pool=\"{POOL}\"}}")),
        Some(2.0)
    );

    // Client count racing behind the pool's view never goes negative.
    m.observe(&stats, 1, 0);
    assert_eq!(
        sample(
            &t.render(),
            &format!("sidepool_client_connections{{pool=\"{POOL}\",state=\"idle\"}}")
        ),
        Some(0.0)
    );
}

#[test]
fn backend_is_down_only_after_a_failed_connect_with_nothing_open() {
    let (t, m) = setup();
    let up = |m: &PoolMetrics, stats: &Stats| {
        m.observe(stats, 0, 0);
        sample(
            &t.render(),
            &format!("sidepool_backend_up{{{}}}", pb(",role=\"primary\"")),
        )
    };
    let none = Stats::default();
    assert_eq!(m.reachability(&none), Reachability::Unknown);
    assert_eq!(up(&m, &none), Some(1.0), "unknown counts as up");
    m.connect_failed();
    assert_eq!(up(&m, &none), Some(0.0));
    let busy = Stats {
        in_use: 1,
        ..Stats::default()
    };
    assert_eq!(up(&m, &busy), Some(1.0), "connections in use prove it up");
    m.connection_opened();
    assert_eq!(up(&m, &none), Some(1.0));
    m.probed(false);
    assert_eq!(m.reachability(&none), Reachability::Down);
    m.probed(true);
    assert_eq!(m.reachability(&none), Reachability::Up);
}

#[test]
fn session_hooks_count_into_their_series() {
    let (t, m) = setup();
    m.query(Duration::from_millis(3));
    m.leak_detected();
    m.set_leaked(2);
    m.abandoned();
    m.rejected_max_clients();
    m.rejected();
    m.wait_timed_out();
    t.config_reloaded(false);
    let text = t.render();
    let p = format!("pool=\"{POOL}\"");
    for (series, want) in [
        (
            format!("sidepool_queries_total{{{p},route=\"primary\"}}"),
            1.0,
        ),
        (
            format!("sidepool_query_duration_seconds_count{{{p},route=\"primary\"}}"),
            1.0,
        ),
        (format!("sidepool_pool_leaks_total{{{p}}}"), 1.0),
        (format!("sidepool_pool_leaked_connections{{{p}}}"), 2.0),
        (
            format!("sidepool_pool_abandoned_transactions_total{{{p}}}"),
            1.0,
        ),
        (
            format!("sidepool_pool_rejected_total{{{p},reason=\"max_clients\"}}"),
            1.0,
        ),
        (
            format!("sidepool_pool_rejected_total{{{p},reason=\"max_waiting\"}}"),
            1.0,
        ),
        (
            format!("sidepool_pool_wait_timeouts_total{{{}}}", pb("")),
            1.0,
        ),
        (
            "sidepool_config_reloads_total{result=\"error\"}".to_owned(),
            1.0,
        ),
        (
            "sidepool_config_reloads_total{result=\"ok\"}".to_owned(),
            0.0,
        ),
    ] {
        assert_eq!(sample(&text, &series), Some(want), "{series}");
    }
}

#[test]
fn registering_a_backend_twice_shares_its_series() {
    let t = Telemetry::new();
    let a = t.pool_metrics(POOL, BACKEND, Role::Primary);
    let b = t.pool_metrics(POOL, BACKEND, Role::Primary);
    a.connection_opened();
    b.connection_opened();
    let series = format!("sidepool_pool_connections_opened_total{{{}}}", pb(""));
    assert_eq!(sample(&t.render(), &series), Some(2.0));
}

#[test]
fn counted_tracks_live_guards() {
    let n = AtomicU64::new(0);
    let a = Counted::new(&n);
    let b = Counted::new(&n);
    assert_eq!(n.load(Relaxed), 2);
    drop(a);
    assert_eq!(n.load(Relaxed), 1);
    drop(b);
    assert_eq!(n.load(Relaxed), 0);
}
