use super::profile::{self, DEFAULT_SECONDS, Format, ProfileError};

#[test]
fn profile_seconds_default_to_30_and_are_bounded_to_1_through_60() {
    assert_eq!(profile::seconds(None), Ok(DEFAULT_SECONDS));
    assert_eq!(profile::seconds(Some("")), Ok(30));
    assert_eq!(profile::seconds(Some("debug=1")), Ok(30));
    assert_eq!(profile::seconds(Some("seconds=1")), Ok(1));
    assert_eq!(profile::seconds(Some("debug=1&seconds=60")), Ok(60));
    for bad in [
        "seconds=0",
        "seconds=61",
        "seconds=999",
        "seconds=",
        "seconds=2.5",
        "seconds=-1",
    ] {
        let err = profile::seconds(Some(bad)).expect_err(bad);
        assert!(err.contains("1 to 60"), "{bad}: {err}");
    }
}

#[tokio::test]
async fn a_second_profile_while_one_runs_is_refused_at_once() {
    // Holding the process-wide flag stands in for a running profile; `take` must refuse without
    // starting the profiler.
    let held = profile::Running::acquire().expect("no profile runs in unit tests");
    assert!(profile::profile_running());
    let second = profile::take(1, Format::Pprof).await;
    assert!(matches!(second, Err(ProfileError::Busy)), "{second:?}");
    drop(held);
    assert!(!profile::profile_running());
}
