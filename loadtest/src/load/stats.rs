//! The numbers of a run: latency histograms, medians, ratios and CPU time per transaction.
//! Pure arithmetic, no I/O, so every formula is unit-tested with fixed inputs.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The largest latency a histogram records, in µs (60 s); longer ones are clamped to it. A
/// transaction that slow has already hit the per-transaction timeout and counts as an error.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Latencies of completed transactions, in microseconds, with 3 significant digits.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    hist: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram covering 1 µs to 60 s.
    pub fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
            .unwrap_or_else(|_| unreachable!("1..60e6 with 3 digits are valid bounds"));
        LatencyHistogram { hist }
    }

    /// Records one latency; below 1 µs counts as 1 µs, above 60 s as 60 s.
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.hist.saturating_record(us.clamp(1, MAX_LATENCY_US));
    }

    /// Adds every value of `other` to this histogram.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        // Both have the same bounds, so `add` cannot fail; saturate anyway rather than panic.
        let _ = self.hist.add(&other.hist);
    }

    /// How many latencies were recorded.
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// p50, p99, p99.9 and max in µs; all zero when empty.
    pub fn percentiles(&self) -> Percentiles {
        if self.hist.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50_us: self.hist.value_at_quantile(0.50),
            p99_us: self.hist.value_at_quantile(0.99),
            p999_us: self.hist.value_at_quantile(0.999),
            max_us: self.hist.max(),
        }
    }
}

/// Latency percentiles of a histogram, in microseconds (within 0.1 % of the exact values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median latency, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// Largest latency seen, µs.
    pub max_us: u64,
}

/// The median of `values` (mean of the middle two for an even count); `None` when empty or
/// when a value is NaN.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

/// `value / base`; `None` when `base` is zero or either is not finite.
pub fn ratio(value: f64, base: f64) -> Option<f64> {
    let r = value / base;
    (base != 0.0 && value.is_finite() && base.is_finite() && r.is_finite()).then_some(r)
}

/// CPU microseconds per transaction from a `/proc/PID/stat` utime+stime delta in clock ticks:
/// `ticks / clk_tck * 1e6 / transactions`. `None` when nothing completed or `clk_tck` is 0.
pub fn cpu_us_per_tx(cpu_ticks: u64, clk_tck: u64, transactions: u64) -> Option<f64> {
    if transactions == 0 || clk_tck == 0 {
        return None;
    }
    Some(cpu_ticks as f64 * 1e6 / clk_tck as f64 / transactions as f64)
}

/// Transactions per second over `elapsed`; 0 when `elapsed` is zero.
pub fn tps(transactions: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        transactions as f64 / secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests;
