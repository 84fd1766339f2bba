use std::time::Duration;

use super::*;

#[test]
fn percentiles_of_one_to_a_thousand_ms_match_the_exact_ranks() {
    let mut h = LatencyHistogram::new();
    for ms in 1..=1000u64 {
        h.record(Duration::from_millis(ms));
    }
    let p = h.percentiles();
    // 3 significant digits: within 0.1 % of the exact rank value.
    let close = |got: u64, want: u64| got.abs_diff(want) * 1000 <= want;
    assert!(close(p.p50_us, 500_000), "{p:?}");
    assert!(close(p.p99_us, 990_000), "{p:?}");
    assert!(close(p.p999_us, 999_000), "{p:?}");
    assert!(close(p.max_us, 1_000_000), "{p:?}");
    assert_eq!(h.len(), 1000);
}

#[test]
fn empty_histogram_has_zero_percentiles() {
    let h = LatencyHistogram::new();
    assert!(h.is_empty());
    assert_eq!(h.percentiles(), Percentiles::default());
}

#[test]
fn record_clamps_sub_microsecond_and_over_a_minute() {
    let mut h = LatencyHistogram::new();
    h.record(Duration::from_nanos(10));
    h.record(Duration::from_secs(3600));
    let p = h.percentiles();
    assert_eq!(p.p50_us, 1);
    assert!(p.max_us >= 59_000_000 && p.max_us <= 60_100_000, "{p:?}");
}

#[test]
fn merge_adds_counts_and_moves_percentiles() {
    let mut fast = LatencyHistogram::new();
    let mut slow = LatencyHistogram::new();
    for _ in 0..99 {
        fast.record(Duration::from_micros(100));
    }
    slow.record(Duration::from_millis(50));
    fast.merge(&slow);
    assert_eq!(fast.len(), 100);
    let p = fast.percentiles();
    assert_eq!(p.p50_us, 100);
    assert!(p.p999_us >= 49_900, "{p:?}");
}

#[test]
fn median_of_odd_even_empty_and_nan() {
    assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    assert_eq!(median(&[7.5]), Some(7.5));
    assert_eq!(median(&[]), None);
    assert_eq!(median(&[1.0, f64::NAN]), None);
}

#[test]
fn ratio_divides_and_refuses_zero_base() {
    assert_eq!(ratio(1200.0, 1000.0), Some(1.2));
    assert_eq!(ratio(0.0, 5.0), Some(0.0));
    assert_eq!(ratio(5.0, 0.0), None);
    assert_eq!(ratio(f64::INFINITY, 1.0), None);
}

#[test]
fn cpu_us_per_tx_converts_ticks_to_microseconds() {
    // 190 ticks at 100 Hz = 1.9 s of CPU over 100,000 transactions = 19 µs each.
    let got = cpu_us_per_tx(190, 100, 100_000).unwrap();
    assert!((got - 19.0).abs() < 1e-9, "{got}");
    // 250 Hz kernels count ticks of 4 ms.
    let got = cpu_us_per_tx(5, 250, 1_000).unwrap();
    assert!((got - 20.0).abs() < 1e-9, "{got}");
    assert_eq!(cpu_us_per_tx(10, 100, 0), None);
    assert_eq!(cpu_us_per_tx(10, 0, 10), None);
}

#[test]
fn tps_divides_by_elapsed_seconds() {
    assert_eq!(tps(5_000, Duration::from_millis(2_500)), 2_000.0);
    assert_eq!(tps(5, Duration::ZERO), 0.0);
}
