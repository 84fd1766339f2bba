use std::time::Duration;

use super::*;
use crate::load::Scenario;

#[test]
fn name_value_splits_at_the_first_equals_sign() {
    assert_eq!(
        parse_name_value("direct=host=127.0.0.1 port=5432").unwrap(),
        ("direct".into(), "host=127.0.0.1 port=5432".into())
    );
    assert!(matches!(
        parse_name_value("=x"),
        Err(OptionError::NotNameValue(_))
    ));
    assert!(matches!(
        parse_name_value("nodsn"),
        Err(OptionError::NotNameValue(_))
    ));
}

#[test]
fn pid_must_be_a_positive_number() {
    assert_eq!(
        parse_pid("sidepool=4242").unwrap(),
        ("sidepool".into(), 4242)
    );
    assert_eq!(parse_pid("x=0"), Err(OptionError::Pid("0".into())));
    assert_eq!(parse_pid("x=abc"), Err(OptionError::Pid("abc".into())));
}

#[test]
fn durations_take_ms_s_m_and_bare_seconds() {
    assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
    for bad in ["", "s", "ten s", "-1s", "1h"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn loopback_hosts_pass_and_others_are_refused() {
    for ok in [
        "host=127.0.0.1 port=5432 user=u",
        "host=localhost user=u",
        "host=::1 user=u",
        "host=/tmp/sock user=u",
        "postgres://u@127.0.0.1:6432/db",
    ] {
        check_loopback("t", ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    assert!(matches!(
        check_loopback("t", "host=10.0.0.5 user=u"),
        Err(OptionError::NotLoopback { host, .. }) if host == "10.0.0.5"
    ));
    assert!(matches!(
        check_loopback("t", "host=db.example.com user=u"),
        Err(OptionError::NotLoopback { .. })
    ));
    assert!(matches!(
        check_loopback("t", "host=127.0.0.1 hostaddr=192.168.1.2 user=u"),
        Err(OptionError::NotLoopback { .. })
    ));
    assert!(matches!(
        check_loopback("t", "host=127.0.0.1 port=notaport"),
        Err(OptionError::Dsn { .. })
    ));
}

#[test]
fn targets_keep_order_and_get_their_pids_by_name() {
    let targets = vec![
        ("direct".to_owned(), "host=127.0.0.1".to_owned()),
        ("sidepool".to_owned(), "host=127.0.0.1 port=6432".to_owned()),
    ];
    let built = build_targets(&targets, &[("sidepool".into(), 77)]).unwrap();
    assert_eq!(
        built
            .iter()
            .map(|t| (t.name.as_str(), t.pid))
            .collect::<Vec<_>>(),
        [("direct", None), ("sidepool", Some(77))]
    );
    assert_eq!(build_targets(&[], &[]), Err(OptionError::NoTargets));
    assert_eq!(
        build_targets(&targets, &[("pgbouncer".into(), 1)]),
        Err(OptionError::UnknownPidTarget("pgbouncer".into()))
    );
    let twice = vec![targets[0].clone(), targets[0].clone()];
    assert!(matches!(
        build_targets(&twice, &[]),
        Err(OptionError::Duplicate(_))
    ));
}

#[test]
fn validate_enforces_the_caps() {
    let ok = RunSpec::new(Scenario::Select);
    ok.validate().unwrap();
    let cases = [
        RunSpec {
            clients: 0,
            ..ok.clone()
        },
        RunSpec {
            clients: MAX_CLIENTS + 1,
            ..ok.clone()
        },
        RunSpec {
            idle_clients: MAX_IDLE_CLIENTS + 1,
            ..ok.clone()
        },
        RunSpec {
            duration: Duration::from_millis(10),
            ..ok.clone()
        },
        RunSpec {
            duration: MAX_DURATION + Duration::from_secs(1),
            ..ok.clone()
        },
        RunSpec {
            warmup: MAX_DURATION * 2,
            ..ok.clone()
        },
        RunSpec {
            rounds: 0,
            ..ok.clone()
        },
        RunSpec {
            rounds: MAX_ROUNDS + 1,
            ..ok.clone()
        },
    ];
    for spec in cases {
        assert!(
            matches!(spec.validate(), Err(OptionError::OutOfRange { .. })),
            "{spec:?}"
        );
    }
}
