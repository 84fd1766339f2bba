//! What a pooler process costs, read from `/proc/PID/stat` (utime + stime of the whole thread
//! group, in clock ticks) and `/proc/PID/status` (`VmRSS`, `VmHWM`, in KiB).
//!
//! The clock tick rate comes from `getconf CLK_TCK`, run once: `sysconf` would need `unsafe`,
//! which the workspace forbids.

use std::io;
use std::process::Command;
use std::sync::OnceLock;

/// One reading of a process's CPU time and memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// utime + stime so far, in clock ticks (see [`clock_ticks_per_second`]).
    pub cpu_ticks: u64,
    /// Resident set size now, KiB.
    pub rss_kib: u64,
    /// Peak resident set size since the process started, KiB.
    pub hwm_kib: u64,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`.
///
/// # Errors
/// The process is gone or the files do not have the expected fields.
pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("pid {pid}: {what}"));
    Ok(ProcSample {
        cpu_ticks: parse_stat_cpu_ticks(&stat).ok_or_else(|| bad("no utime/stime in stat"))?,
        rss_kib: parse_status_kib(&status, "VmRSS").ok_or_else(|| bad("no VmRSS in status"))?,
        hwm_kib: parse_status_kib(&status, "VmHWM").ok_or_else(|| bad("no VmHWM in status"))?,
    })
}

/// utime + stime (fields 14 and 15 of `proc(5)` stat). The command name (field 2) may contain
/// spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ")": field 3 (state) is index 0, so utime (14) is index 11 and stime (15) index 12.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The value of a `Key:   123 kB` line of `/proc/PID/status`.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Clock ticks per second (`getconf CLK_TCK`), read once; 100 (Linux's USER_HZ) when
/// `getconf` is unavailable or prints nonsense.
pub fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_ticks_sum_utime_and_stime_after_a_tricky_comm() {
        let stat = "4242 (pg) bouncer) S 1 4242 4242 0 -1 4194560 1203 0 0 0 \
                    1500 250 0 0 20 0 3 0 12345 1000000 2000 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(1750));
        assert_eq!(parse_stat_cpu_ticks("4242 (x) S 1 2"), None);
    }

    #[test]
    fn status_kib_reads_the_named_line_only() {
        let status =
            "Name:\tpgbouncer\nVmPeak:\t   20000 kB\nVmHWM:\t    9876 kB\nVmRSS:\t    5432 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(5432));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(9876));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn sampling_our_own_process_sees_memory_and_a_sane_tick_rate() {
        let me = sample(std::process::id()).unwrap();
        assert!(me.rss_kib > 0 && me.hwm_kib >= me.rss_kib, "{me:?}");
        let ticks = clock_ticks_per_second();
        assert!((10..=10_000).contains(&ticks), "{ticks}");
    }
}
