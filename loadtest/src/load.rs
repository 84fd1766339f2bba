//! The load generator: scenarios run by many tokio-postgres clients against one or more
//! targets (a server directly, sidepool, PgBouncer, …), interleaved A B A B for a number of
//! rounds, with latency percentiles, errors, and the CPU time and memory of each target's
//! pooler process; reported as a Markdown table, JSON, and an SVG chart.
//!
//! - `options.rs`: parsing `NAME=DSN`, `NAME=PID`, durations; the caps that bound a run.
//! - `scenario.rs`: what one client does per transaction.
//! - `run.rs`: one round against one target (connect, warm up, measure, sample `/proc`).
//! - `procfs.rs`, `stats.rs`: `/proc` readings and the arithmetic.
//! - `report.rs`, `chart.rs`: medians and ratios over rounds; Markdown, JSON, SVG.
//!
//! Must not: connect anywhere but loopback addresses, run unbounded (clients, durations and
//! every transaction are capped), or report a number it did not measure (a target without a
//! pid has no CPU or memory figures, not zeros).

mod chart;
mod options;
pub mod procfs;
mod report;
mod run;
mod scenario;
pub mod stats;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

pub use self::chart::write_svg;
pub use self::options::{
    MAX_CLIENTS, MAX_DURATION, MAX_IDLE_CLIENTS, MAX_ROUNDS, OptionError, build_targets,
    check_loopback, parse_duration, parse_name_value, parse_pid,
};
pub use self::report::{Report, ScenarioReport, TargetSummary, summarize};
pub use self::run::{Progress, RoundResult, run_round};
pub use self::scenario::{SELECT_SQL, TX_TIMEOUT};

/// What each active client does, one transaction after another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// `pgbench -S`: one random-`aid` point select per transaction, extended protocol with an
    /// unnamed statement (`query_typed`).
    Select,
    /// pgbench's built-in TPC-B-like transaction (3 updates, a select, an insert).
    Tpcb,
    /// The select through a named prepared statement, prepared once per connection.
    Prepared,
    /// Connect, one select, disconnect: every transaction is a new connection.
    Storm,
    /// `idle_clients` connections held open and idle while the active clients run `select`.
    Idle,
    /// BEGIN, one select, then idle in the open transaction for `leak_hold`, then COMMIT.
    Leaky,
}

impl Scenario {
    /// Every scenario, in the order `--help` lists them.
    pub const ALL: [Scenario; 6] = [
        Scenario::Select,
        Scenario::Tpcb,
        Scenario::Prepared,
        Scenario::Storm,
        Scenario::Idle,
        Scenario::Leaky,
    ];

    /// The command-line name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Select => "select",
            Scenario::Tpcb => "tpcb",
            Scenario::Prepared => "prepared",
            Scenario::Storm => "storm",
            Scenario::Idle => "idle",
            Scenario::Leaky => "leaky",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.as_str() == s)
            .ok_or_else(|| {
                format!("unknown scenario {s:?}: select, tpcb, prepared, storm, idle or leaky")
            })
    }
}

/// One thing to load: a name for the report, a libpq-style DSN (loopback only), and
/// optionally the pid of the pooler process whose CPU and memory the report shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Report label, e.g. `direct`, `sidepool`, `pgbouncer`.
    pub name: String,
    /// `host=127.0.0.1 port=6432 user=… password=… dbname=…` or a `postgres://` URL.
    pub dsn: String,
    /// The pooler process to sample in `/proc`.
    pub pid: Option<u32>,
}

/// How one run loads each target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// What the active clients do.
    pub scenario: Scenario,
    /// Active clients, 1..=[`MAX_CLIENTS`].
    pub clients: usize,
    /// Idle connections held open during the round (the `idle` scenario), ≤ [`MAX_IDLE_CLIENTS`].
    pub idle_clients: usize,
    /// Measured time per round and target.
    pub duration: Duration,
    /// Unmeasured time before it, on the same connections.
    pub warmup: Duration,
    /// Rounds; each runs every target once, in order.
    pub rounds: u32,
    /// How long a `leaky` client sits in its open transaction.
    pub leak_hold: Duration,
    /// pgbench scale (accounts = 100,000 × scale); `None`: counted from `pgbench_branches`.
    pub scale: Option<u32>,
    /// Heading and chart label; `None`: e.g. `select, 10 clients`.
    pub label: Option<String>,
}

impl RunSpec {
    /// A spec with the defaults of the command line: 10 clients, 10 s, 1 s warmup, 1 round.
    pub fn new(scenario: Scenario) -> Self {
        RunSpec {
            scenario,
            clients: 10,
            idle_clients: 0,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            rounds: 1,
            leak_hold: Duration::from_secs(1),
            scale: None,
            label: None,
        }
    }

    /// The label given, or one made of the scenario and client counts.
    pub fn label(&self) -> String {
        match &self.label {
            Some(label) => label.clone(),
            None if self.idle_clients > 0 => format!(
                "{}, {} idle + {} active clients",
                self.scenario, self.idle_clients, self.clients
            ),
            None => format!("{}, {} clients", self.scenario, self.clients),
        }
    }
}

/// Runs `spec` against every target, interleaved (round 1: A B …, round 2: A B …), and
/// summarises medians and ratios against the first target. `progress` is called about once a
/// second while a round runs.
///
/// # Errors
/// The spec is out of bounds, a target's pgbench scale cannot be read, or a round could not
/// start (its client-side errors are counted in the report instead).
pub async fn run(
    spec: &RunSpec,
    targets: &[Target],
    progress: &mut dyn FnMut(&Progress),
) -> anyhow::Result<ScenarioReport> {
    spec.validate()?;
    let mut scales = Vec::with_capacity(targets.len());
    for target in targets {
        let scale = match spec.scale {
            Some(scale) => scale,
            None => run::detect_scale(&target.dsn)
                .await
                .with_context(|| format!("reading the pgbench scale through {}", target.name))?,
        };
        scales.push(scale);
    }
    let mut rounds = Vec::new();
    for round in 1..=spec.rounds {
        for (target, &scale) in targets.iter().zip(&scales) {
            rounds.push(run_round(spec, target, scale, round, progress).await?);
        }
    }
    Ok(summarize(
        spec,
        targets,
        &rounds,
        procfs::clock_ticks_per_second(),
    ))
}
