//! The one place that maps `sidepool_config::Config` onto the plain settings the pool and the
//! sessions take (docs/design.md §1: only `proxy` knows both sides), among them the leak
//! watcher's [`LeakSettings`].

use std::time::Duration;

use sidepool_config::Limits;
use sidepool_pool::PoolSettings;

/// How often the reaper closes expired idle connections and tops up `min_idle`
/// (docs/design.md §3).
pub const REAP_INTERVAL: Duration = Duration::from_secs(1);
/// Up to this fraction is cut from each connection's `max_lifetime`, so that connections opened
/// together do not all reconnect at the same moment.
pub const LIFETIME_JITTER: f64 = 0.1;

/// Pool settings for one backend from a pool's `[pools.limits]`.
pub fn pool_settings(limits: &Limits) -> PoolSettings {
    PoolSettings {
        max_open: limits.max_open,
        max_idle: limits.max_idle,
        min_idle: limits.min_idle,
        max_lifetime: limits.max_lifetime,
        max_idle_time: limits.max_idle_time,
        wait_timeout: limits.wait_timeout,
        max_waiting: limits.max_waiting,
        connect_timeout: limits.connect_timeout,
        reap_interval: REAP_INTERVAL,
        lifetime_jitter: LIFETIME_JITTER,
    }
}

/// Logs a warning when the config file holds passwords and others can read it (at start and
/// after every reload).
pub fn warn_inline_passwords(config: &sidepool_config::Config) {
    if let Some(e) = config.inline_password_exposure() {
        tracing::warn!(
            config = %e.path.display(),
            mode = %format_args!("{:03o}", e.mode),
            users = ?e.users,
            "config file holding inline passwords is readable by other users; chmod 600 it, \
             or use password = \"${{ENV}}\" or password_file"
        );
    }
}

/// What counts as a leak and what to do about it (from `[pools.leaks]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeakSettings {
    /// Held and idle this long: a suspected leak.
    pub threshold: Duration,
    /// End the session when idle this long (`action = "terminate"`); `None` = only warn.
    pub terminate_after: Option<Duration>,
}

impl LeakSettings {
    /// Leak detection settings from a pool's `[pools.leaks]`.
    pub fn from_config(l: &sidepool_config::Leaks) -> LeakSettings {
        LeakSettings {
            threshold: l.threshold,
            terminate_after: (l.action == sidepool_config::LeakAction::Terminate)
                .then_some(l.terminate_after),
        }
    }
}

/// Tokio worker threads for `[runtime] workers`: the configured number, or for 0 the
/// container's CPU quota (cgroup v2 `cpu.max`), falling back to the visible cores; at least 1.
pub fn worker_threads(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let quota = std::fs::read_to_string("/sys/fs/cgroup/cpu.max")
        .ok()
        .and_then(|s| cpu_quota(&s));
    quota.map_or(cores, |q| q.min(cores)).max(1)
}

/// Parses cgroup v2 `cpu.max` ("<quota> <period>" or "max <period>") into whole CPUs, rounded up.
pub fn cpu_quota(cpu_max: &str) -> Option<usize> {
    let mut parts = cpu_max.split_whitespace();
    let quota: u64 = parts.next()?.parse().ok()?;
    let period: u64 = parts.next()?.parse().ok()?;
    if period == 0 {
        return None;
    }
    Some(quota.div_ceil(period).max(1) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quota_reads_cgroup_v2_cpu_max() {
        assert_eq!(cpu_quota("max 100000\n"), None);
        assert_eq!(cpu_quota("200000 100000\n"), Some(2));
        assert_eq!(cpu_quota("150000 100000"), Some(2), "1.5 CPUs round up");
        assert_eq!(cpu_quota("50000 100000"), Some(1));
        assert_eq!(cpu_quota("garbage"), None);
        assert_eq!(cpu_quota("100 0"), None);
    }

    #[test]
    fn explicit_worker_count_wins() {
        assert_eq!(worker_threads(3), 3);
        assert!(worker_threads(0) >= 1);
    }
}
