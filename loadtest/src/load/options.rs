//! Parsing and checking what the command line asks for: `NAME=DSN` targets, `NAME=PID`
//! pooler processes, durations like `10s`, and the caps that keep a run bounded.

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;
use tokio_postgres::config::Host;

use super::{RunSpec, Scenario, Target};

/// The most active clients one run may open.
pub const MAX_CLIENTS: usize = 10_000;
/// The most idle clients one run may open.
pub const MAX_IDLE_CLIENTS: usize = 20_000;
/// The longest measured duration (and warmup) of one round.
pub const MAX_DURATION: Duration = Duration::from_secs(600);
/// The most rounds of one run.
pub const MAX_ROUNDS: u32 = 20;

/// A command-line value that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum OptionError {
    /// Not `NAME=VALUE`, or an empty name.
    #[error("expected NAME=VALUE, got {0:?}")]
    NotNameValue(String),
    /// Not a duration such as `500ms`, `10s`, `2m`.
    #[error("invalid duration {0:?}: use a number with ms, s or m, e.g. 10s")]
    Duration(String),
    /// Not a process id.
    #[error("invalid pid {0:?}")]
    Pid(String),
    /// The DSN does not parse as a libpq-style connection string or URL.
    #[error("target {name}: invalid DSN: {reason}")]
    Dsn {
        /// The target's name.
        name: String,
        /// What tokio-postgres said.
        reason: String,
    },
    /// The DSN names a host that is not loopback; the load generator only loads this machine.
    #[error(
        "target {name}: host {host:?} is not a loopback address (127.0.0.1, ::1, localhost, or a unix socket)"
    )]
    NotLoopback {
        /// The target's name.
        name: String,
        /// The offending host.
        host: String,
    },
    /// Two targets (or two pids) with the same name.
    #[error("{0} given twice")]
    Duplicate(String),
    /// A `--pid` for a name that no `--target` has.
    #[error("--pid {0}: no --target of that name")]
    UnknownPidTarget(String),
    /// No target at all.
    #[error("at least one --target NAME=DSN is needed")]
    NoTargets,
    /// A count or duration outside its bounds.
    #[error("{what} must be between {min} and {max}, got {got}")]
    OutOfRange {
        /// The option.
        what: &'static str,
        /// Smallest allowed.
        min: String,
        /// Largest allowed.
        max: String,
        /// Given.
        got: String,
    },
}

/// Splits `NAME=VALUE` at the first `=`; the name must be non-empty and have no spaces.
///
/// # Errors
/// [`OptionError::NotNameValue`].
pub fn parse_name_value(arg: &str) -> Result<(String, String), OptionError> {
    match arg.split_once('=') {
        Some((name, value)) if !name.is_empty() && !name.contains(char::is_whitespace) => {
            Ok((name.to_owned(), value.to_owned()))
        }
        _ => Err(OptionError::NotNameValue(arg.to_owned())),
    }
}

/// Parses `NAME=PID`.
///
/// # Errors
/// [`OptionError::NotNameValue`] or [`OptionError::Pid`].
pub fn parse_pid(arg: &str) -> Result<(String, u32), OptionError> {
    let (name, pid) = parse_name_value(arg)?;
    let pid = pid
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or(OptionError::Pid(pid))?;
    Ok((name, pid))
}

/// Parses `1.5s`, `500ms`, `2m`, or a bare number of seconds.
///
/// # Errors
/// [`OptionError::Duration`] for anything else, negative or non-finite values.
pub fn parse_duration(arg: &str) -> Result<Duration, OptionError> {
    let bad = || OptionError::Duration(arg.to_owned());
    let s = arg.trim();
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let value = f64::from_str(number.trim()).map_err(|_| bad())?;
    Duration::try_from_secs_f64(value * scale).map_err(|_| bad())
}

/// Checks that every host of `dsn` is loopback (or a unix socket directory).
///
/// # Errors
/// [`OptionError::Dsn`] when it does not parse, [`OptionError::NotLoopback`] otherwise.
pub fn check_loopback(name: &str, dsn: &str) -> Result<(), OptionError> {
    let bad_dsn = |reason: String| OptionError::Dsn {
        name: name.to_owned(),
        reason,
    };
    let not_loopback = |host: &str| OptionError::NotLoopback {
        name: name.to_owned(),
        host: host.to_owned(),
    };
    if super::scenario::is_mysql(dsn) {
        let opts = mysql_async::Opts::from_url(dsn).map_err(|err| bad_dsn(err.to_string()))?;
        let host = opts.ip_or_hostname();
        return if is_loopback_host(host) {
            Ok(())
        } else {
            Err(not_loopback(host))
        };
    }
    let config = tokio_postgres::Config::from_str(dsn).map_err(|err| bad_dsn(err.to_string()))?;
    for addr in config.get_hostaddrs() {
        if !addr.is_loopback() {
            return Err(not_loopback(&addr.to_string()));
        }
    }
    for host in config.get_hosts() {
        if let Host::Tcp(host) = host
            && !is_loopback_host(host)
        {
            return Err(not_loopback(host));
        }
    }
    Ok(())
}

/// `localhost` or a loopback address (IPv6 possibly in brackets).
fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Builds the targets in command-line order, attaching `pids` by name.
///
/// # Errors
/// No targets, a duplicate name, a pid for an unknown target, a bad or non-loopback DSN.
pub fn build_targets(
    targets: &[(String, String)],
    pids: &[(String, u32)],
) -> Result<Vec<Target>, OptionError> {
    if targets.is_empty() {
        return Err(OptionError::NoTargets);
    }
    let mut out: Vec<Target> = Vec::with_capacity(targets.len());
    for (name, dsn) in targets {
        if out.iter().any(|t| &t.name == name) {
            return Err(OptionError::Duplicate(format!("--target {name}")));
        }
        check_loopback(name, dsn)?;
        out.push(Target {
            name: name.clone(),
            dsn: dsn.clone(),
            pid: None,
        });
    }
    for (name, pid) in pids {
        let target = out
            .iter_mut()
            .find(|t| &t.name == name)
            .ok_or_else(|| OptionError::UnknownPidTarget(name.clone()))?;
        if target.pid.replace(*pid).is_some() {
            return Err(OptionError::Duplicate(format!("--pid {name}")));
        }
    }
    Ok(out)
}

impl RunSpec {
    /// Checks the counts and durations against the caps above.
    ///
    /// # Errors
    /// [`OptionError::OutOfRange`] naming the first offending option.
    pub fn validate(&self) -> Result<(), OptionError> {
        let range = |what, min: String, max: String, got: String| {
            Err(OptionError::OutOfRange {
                what,
                min,
                max,
                got,
            })
        };
        if self.clients == 0 || self.clients > MAX_CLIENTS {
            return range(
                "--clients",
                "1".into(),
                MAX_CLIENTS.to_string(),
                self.clients.to_string(),
            );
        }
        if self.idle_clients > MAX_IDLE_CLIENTS {
            return range(
                "--idle-clients",
                "0".into(),
                MAX_IDLE_CLIENTS.to_string(),
                self.idle_clients.to_string(),
            );
        }
        let min = Duration::from_millis(100);
        if self.duration < min || self.duration > MAX_DURATION {
            return range(
                "--duration",
                format!("{min:?}"),
                format!("{MAX_DURATION:?}"),
                format!("{:?}", self.duration),
            );
        }
        if self.warmup > MAX_DURATION || self.leak_hold > MAX_DURATION {
            return range(
                "--warmup/--leak-hold",
                "0s".into(),
                format!("{MAX_DURATION:?}"),
                format!("{:?}/{:?}", self.warmup, self.leak_hold),
            );
        }
        if self.scenario == Scenario::Idle && self.idle_clients == 0 {
            return range(
                "--idle-clients (for the idle scenario)",
                "1".into(),
                MAX_IDLE_CLIENTS.to_string(),
                "0".into(),
            );
        }
        if self.rounds == 0 || self.rounds > MAX_ROUNDS {
            return range(
                "--rounds",
                "1".into(),
                MAX_ROUNDS.to_string(),
                self.rounds.to_string(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
