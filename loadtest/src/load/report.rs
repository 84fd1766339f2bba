//! Summaries over rounds (medians, merged latency, ratios against the first target) and their
//! Markdown and JSON forms.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::stats::{self, LatencyHistogram, Percentiles};
use super::{RunSpec, Target};
use crate::load::run::RoundResult;

/// Everything one or more runs measured; what `--json` writes and `report` reads back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// One entry per run (scenario and client counts).
    pub runs: Vec<ScenarioReport>,
}

/// One run: a scenario at one client count, every target, all rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioReport {
    /// Heading and chart label, e.g. `select, 10 clients`.
    pub label: String,
    /// The scenario's name.
    pub scenario: String,
    /// Active clients.
    pub clients: usize,
    /// Idle clients held open.
    pub idle_clients: usize,
    /// Measured seconds per round and target.
    pub duration_s: f64,
    /// Warmup seconds per round and target.
    pub warmup_s: f64,
    /// Rounds.
    pub rounds: u32,
    /// Per target, in command-line order; ratios are against the first.
    pub targets: Vec<TargetSummary>,
}

/// One target's figures over all rounds of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetSummary {
    /// The target's name.
    pub name: String,
    /// Median over rounds of transactions per second.
    pub tps: f64,
    /// Each round's transactions per second.
    pub tps_rounds: Vec<f64>,
    /// `tps` / the first target's `tps`.
    pub tps_ratio: Option<f64>,
    /// Measured transactions, all rounds.
    pub transactions: u64,
    /// Failed connects and transactions, all rounds.
    pub errors: u64,
    /// Percentiles of all rounds' latencies together, µs.
    pub latency: Percentiles,
    /// Median over rounds of pooler CPU µs per transaction; `None` without a pid.
    pub cpu_us_per_tx: Option<f64>,
    /// `cpu_us_per_tx` / that of the first target with a pid.
    pub cpu_ratio: Option<f64>,
    /// Largest pooler VmRSS sampled in any round, KiB.
    pub peak_rss_kib: Option<u64>,
    /// Pooler VmHWM at the end of the last round, KiB.
    pub hwm_kib: Option<u64>,
    /// Largest over rounds of (VmRSS growth while the idle clients connected) / idle clients,
    /// KiB; the largest because later rounds may reuse memory the allocator kept.
    pub idle_kib_per_client: Option<f64>,
}

/// Summarises `rounds` (any order) per target: median tps and CPU, merged latency, summed
/// errors; tps ratios against `targets[0]`, CPU ratios against the first target with a pid. `clk_tck` converts `/proc` ticks to seconds.
pub fn summarize(
    spec: &RunSpec,
    targets: &[Target],
    rounds: &[RoundResult],
    clk_tck: u64,
) -> ScenarioReport {
    let mut summaries: Vec<TargetSummary> = targets
        .iter()
        .map(|target| {
            let mine: Vec<&RoundResult> =
                rounds.iter().filter(|r| r.target == target.name).collect();
            summarize_target(&target.name, &mine, clk_tck, spec.idle_clients)
        })
        .collect();
    // tps against the first target; CPU against the first target that has a pid (the first
    // is often the server itself, whose many processes have no single pid).
    let base_tps = summaries.first().map(|s| s.tps);
    let base_cpu = summaries.iter().find_map(|s| s.cpu_us_per_tx);
    for s in &mut summaries {
        s.tps_ratio = base_tps.and_then(|b| stats::ratio(s.tps, b));
        s.cpu_ratio = s
            .cpu_us_per_tx
            .zip(base_cpu)
            .and_then(|(v, b)| stats::ratio(v, b));
    }
    ScenarioReport {
        label: spec.label(),
        scenario: spec.scenario.to_string(),
        clients: spec.clients,
        idle_clients: spec.idle_clients,
        duration_s: spec.duration.as_secs_f64(),
        warmup_s: spec.warmup.as_secs_f64(),
        rounds: spec.rounds,
        targets: summaries,
    }
}

fn summarize_target(
    name: &str,
    rounds: &[&RoundResult],
    clk_tck: u64,
    idle_clients: usize,
) -> TargetSummary {
    let tps_rounds: Vec<f64> = rounds
        .iter()
        .map(|r| stats::tps(r.transactions, r.elapsed))
        .collect();
    let mut latency = LatencyHistogram::new();
    for r in rounds {
        latency.merge(&r.latency);
    }
    let cpu: Vec<f64> = rounds
        .iter()
        .filter_map(|r| stats::cpu_us_per_tx(r.cpu_ticks?, clk_tck, r.transactions))
        .collect();
    let idle: Vec<f64> = rounds
        .iter()
        .filter_map(|r| {
            let n = idle_clients as f64;
            (idle_clients > 0).then_some(r.idle_rss_delta_kib? as f64 / n)
        })
        .collect();
    TargetSummary {
        name: name.to_owned(),
        tps: stats::median(&tps_rounds).unwrap_or(0.0),
        tps_rounds,
        tps_ratio: None,
        transactions: rounds.iter().map(|r| r.transactions).sum(),
        errors: rounds.iter().map(|r| r.errors).sum(),
        latency: latency.percentiles(),
        cpu_us_per_tx: stats::median(&cpu),
        cpu_ratio: None,
        peak_rss_kib: rounds.iter().filter_map(|r| r.rss_peak_kib).max(),
        hwm_kib: rounds.iter().filter_map(|r| r.hwm_kib).next_back(),
        idle_kib_per_client: idle.into_iter().reduce(f64::max),
    }
}

impl Report {
    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|err| format!("{{\"error\":\"{err}\"}}"))
    }

    /// Parses what [`Report::to_json`] wrote.
    ///
    /// # Errors
    /// Not JSON of this shape.
    pub fn from_json(text: &str) -> serde_json::Result<Report> {
        serde_json::from_str(text)
    }

    /// One `###` heading and table per run. Columns: target, tps (median), ratio, latency
    /// p50/p99/p99.9 in ms, errors, pooler CPU µs/tx and its ratio to the first pooler's, peak RSS in MiB, and for runs
    /// with idle clients KiB per idle client. Unmeasured cells are `–`.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        for run in &self.runs {
            run.write_markdown(&mut out);
        }
        out
    }
}

impl ScenarioReport {
    fn write_markdown(&self, out: &mut String) {
        let first = self.targets.first().map_or("–", |t| t.name.as_str());
        let first_cpu = self
            .targets
            .iter()
            .find(|t| t.cpu_us_per_tx.is_some())
            .map_or("–", |t| t.name.as_str());
        let idle = self.idle_clients > 0;
        let _ = writeln!(
            out,
            "### {}\n\n{} round(s) × {} s per target, interleaved, after {} s warmup; tps vs {first}, CPU vs {first_cpu}.\n",
            self.label,
            self.rounds,
            trim_float(self.duration_s),
            trim_float(self.warmup_s),
        );
        out.push_str("| target | tps | tps ratio | p50 ms | p99 ms | p99.9 ms | errors | CPU µs/tx | CPU ratio | peak RSS MiB |");
        out.push_str(if idle {
            " KiB per idle client |\n"
        } else {
            "\n"
        });
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        out.push_str(if idle { "---:|\n" } else { "\n" });
        for t in &self.targets {
            let _ = write!(
                out,
                "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
                t.name,
                t.tps,
                opt(t.tps_ratio, |r| format!("{r:.2}x")),
                ms(t.latency.p50_us),
                ms(t.latency.p99_us),
                ms(t.latency.p999_us),
                t.errors,
                opt(t.cpu_us_per_tx, |c| format!("{c:.1}")),
                opt(t.cpu_ratio, |r| format!("{r:.2}x")),
                opt(t.peak_rss_kib, |k| format!("{:.1}", k as f64 / 1024.0)),
            );
            if idle {
                let _ = write!(
                    out,
                    " {} |",
                    opt(t.idle_kib_per_client, |k| format!("{k:.2}"))
                );
            }
            out.push('\n');
        }
        out.push('\n');
    }
}

fn opt<T>(value: Option<T>, show: impl FnOnce(T) -> String) -> String {
    value.map_or_else(|| "–".to_owned(), show)
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests;
