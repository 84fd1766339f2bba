use std::time::Duration;

use super::*;
use crate::load::{RunSpec, Scenario, Target};

fn target(name: &str, pid: Option<u32>) -> Target {
    Target {
        name: name.into(),
        dsn: "host=127.0.0.1".into(),
        pid,
    }
}

/// A round of `tx` transactions in 10 s, every latency `latency_us`.
fn round(name: &str, n: u32, tx: u64, latency_us: u64, cpu_ticks: Option<u64>) -> RoundResult {
    let mut latency = LatencyHistogram::new();
    for _ in 0..100 {
        latency.record(Duration::from_micros(latency_us));
    }
    RoundResult {
        target: name.into(),
        round: n,
        transactions: tx,
        errors: u64::from(n == 2),
        elapsed: Duration::from_secs(10),
        latency,
        cpu_ticks,
        rss_peak_kib: cpu_ticks.map(|_| 4096 * u64::from(n)),
        hwm_kib: cpu_ticks.map(|_| 9000 + u64::from(n)),
        idle_rss_delta_kib: cpu_ticks.map(|_| 1500 * i64::from(n)),
    }
}

fn fixture() -> ScenarioReport {
    let spec = RunSpec {
        rounds: 3,
        idle_clients: 1000,
        ..RunSpec::new(Scenario::Idle)
    };
    let targets = [target("direct", None), target("sidepool", Some(42))];
    // direct: 100k, 120k, 110k tx → median 11,000 tps. sidepool: 60k, 90k, 80k → 8,000 tps.
    // sidepool CPU: 120/90/160 ticks at 100 Hz → 20, 10, 20 µs/tx → median 20.
    let rounds = [
        round("direct", 1, 100_000, 100, None),
        round("sidepool", 1, 60_000, 200, Some(120)),
        round("direct", 2, 120_000, 100, None),
        round("sidepool", 2, 90_000, 200, Some(90)),
        round("direct", 3, 110_000, 100, None),
        round("sidepool", 3, 80_000, 200, Some(160)),
    ];
    summarize(&spec, &targets, &rounds, 100)
}

#[test]
fn summarize_takes_medians_sums_and_ratios_vs_the_first_target() {
    let run = fixture();
    assert_eq!(run.label, "idle, 1000 idle + 10 active clients");
    let [direct, sidepool] = &run.targets[..] else {
        panic!("two targets expected: {run:?}")
    };
    assert_eq!(direct.tps, 11_000.0);
    assert_eq!(direct.tps_rounds, vec![10_000.0, 12_000.0, 11_000.0]);
    assert_eq!(direct.tps_ratio, Some(1.0));
    assert_eq!(direct.cpu_us_per_tx, None);
    assert_eq!(direct.peak_rss_kib, None);
    assert_eq!(sidepool.tps, 8_000.0);
    let r = sidepool.tps_ratio.unwrap();
    assert!((r - 8.0 / 11.0).abs() < 1e-12, "{r}");
    assert_eq!(sidepool.cpu_us_per_tx, Some(20.0));
    // The first target has no pid, so CPU is compared with the first one that has.
    assert_eq!(sidepool.cpu_ratio, Some(1.0));
    assert_eq!((direct.errors, sidepool.errors), (1, 1));
    assert_eq!(sidepool.transactions, 230_000);
    assert_eq!(sidepool.latency.p50_us, 200);
    assert_eq!(sidepool.peak_rss_kib, Some(3 * 4096));
    assert_eq!(sidepool.hwm_kib, Some(9003));
    // Largest per-round growth: 4500 KiB over 1000 idle clients.
    assert_eq!(sidepool.idle_kib_per_client, Some(4.5));
}

#[test]
fn markdown_has_a_heading_a_header_a_rule_and_a_row_per_target() {
    let report = Report {
        runs: vec![fixture()],
    };
    let md = report.to_markdown();
    let lines: Vec<&str> = md.lines().collect();
    assert_eq!(lines[0], "### idle, 1000 idle + 10 active clients");
    assert!(
        lines[2].ends_with("tps vs direct, CPU vs sidepool."),
        "{md}"
    );
    let table: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with('|'))
        .collect();
    assert_eq!(table.len(), 4, "{md}");
    let columns = table[0].matches('|').count();
    assert!(
        table.iter().all(|l| l.matches('|').count() == columns),
        "{md}"
    );
    assert!(table[0].contains("KiB per idle client"));
    assert!(table[1].starts_with("|---|---:"));
    assert_eq!(
        table[2],
        "| direct | 11000 | 1.00x | 0.10 | 0.10 | 0.10 | 1 | – | – | – | – |"
    );
    assert_eq!(
        table[3],
        "| sidepool | 8000 | 0.73x | 0.20 | 0.20 | 0.20 | 1 | 20.0 | 1.00x | 12.0 | 4.50 |"
    );
}

#[test]
fn markdown_without_idle_clients_has_no_idle_column() {
    let mut run = fixture();
    run.idle_clients = 0;
    let md = Report { runs: vec![run] }.to_markdown();
    assert!(!md.contains("idle client"), "{md}");
    let header = md.lines().find(|l| l.starts_with("| target")).unwrap();
    assert_eq!(header.matches('|').count(), 11);
}

#[test]
fn json_round_trips() {
    let report = Report {
        runs: vec![fixture(), fixture()],
    };
    let back = Report::from_json(&report.to_json()).unwrap();
    assert_eq!(back, report);
    assert!(Report::from_json("{\"runs\": 3}").is_err());
}
