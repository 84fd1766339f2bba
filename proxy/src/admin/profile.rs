//! CPU profiles on demand with the `pprof` crate: a pprof protobuf (`go tool pprof` reads it) or
//! an SVG flamegraph of the whole process, sampled at [`FREQUENCY`] Hz for N seconds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pprof::protos::Message;
use thiserror::Error;

/// Sampling frequency in Hz: 99, not 100, so samples do not line up with periodic work.
pub const FREQUENCY: i32 = 99;
/// Profile length when `seconds` is not given.
pub const DEFAULT_SECONDS: u64 = 30;
/// The longest profile accepted.
pub const MAX_SECONDS: u64 = 60;

/// Frames of these libraries are not unwound through (the `pprof` crate's advice: unwinding
/// inside them from a signal handler can crash).
const BLOCKLIST: &[&str] = &["libc", "libgcc", "pthread", "vdso"];

/// Whether a profile is running. The profiler is process-wide (one SIGPROF timer), so this is
/// one flag for the process, not per server.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// What a profile is rendered as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// pprof protobuf (uncompressed; `go tool pprof` accepts it as is).
    Pprof,
    /// SVG flamegraph.
    Flamegraph,
}

impl Format {
    /// The response's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Pprof => "application/octet-stream",
            Format::Flamegraph => "image/svg+xml",
        }
    }
}

/// Why no profile came back.
#[derive(Debug, Error)]
pub enum ProfileError {
    /// Another profile is running (the profiler is process-wide).
    #[error("a profile is already being taken")]
    Busy,
    /// The profiler could not start, or its report could not be built.
    #[error("the profiler failed")]
    Profiler(#[from] pprof::Error),
    /// The profiling thread panicked.
    #[error("the profiling thread failed")]
    Thread(#[from] tokio::task::JoinError),
}

/// True while a profile is being taken (tests wait on it to provoke a 409).
pub fn profile_running() -> bool {
    RUNNING.load(Ordering::Acquire)
}

/// The `seconds` parameter of a query string: [`DEFAULT_SECONDS`] when absent, else an integer
/// in `1..=MAX_SECONDS`.
///
/// # Errors
/// The reason for a 400 response, as text.
pub fn seconds(query: Option<&str>) -> Result<u64, String> {
    let value = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("seconds="));
    let Some(value) = value else {
        return Ok(DEFAULT_SECONDS);
    };
    match value.parse::<u64>() {
        Ok(n) if (1..=MAX_SECONDS).contains(&n) => Ok(n),
        _ => Err(format!(
            "sidepool: seconds must be a whole number from 1 to {MAX_SECONDS}, got \"{value}\"\n"
        )),
    }
}

/// Clears [`RUNNING`] when the profile is over, even if the profiling thread panics.
pub(super) struct Running;

impl Running {
    pub(super) fn acquire() -> Option<Running> {
        RUNNING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Running)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::Release);
    }
}

/// Profiles the process for `seconds` and renders the result as `format`.
///
/// The sampling runs on a blocking thread that sleeps through the profile, so that no runtime
/// worker is held; a dropped request does not stop it early, and the next profile can start
/// only once it is done.
///
/// # Errors
/// [`ProfileError::Busy`] at once when a profile is running; otherwise profiler failures.
pub async fn take(seconds: u64, format: Format) -> Result<Vec<u8>, ProfileError> {
    let running = Running::acquire().ok_or(ProfileError::Busy)?;
    tokio::task::spawn_blocking(move || {
        let _running = running;
        collect(Duration::from_secs(seconds), format)
    })
    .await?
}

fn collect(length: Duration, format: Format) -> Result<Vec<u8>, ProfileError> {
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY)
        .blocklist(BLOCKLIST)
        .build()?;
    std::thread::sleep(length);
    let report = guard.report().build()?;
    drop(guard);
    render(&report, format)
}

/// The report as `format`. A profile with no samples (an idle process: the timer counts CPU
/// time) is still a file its viewer opens: an empty pprof profile, or an SVG that says so
/// (inferno refuses to draw an empty flamegraph).
fn render(report: &pprof::Report, format: Format) -> Result<Vec<u8>, ProfileError> {
    match format {
        Format::Pprof => Ok(report.pprof()?.encode_to_vec()),
        Format::Flamegraph if report.data.is_empty() => Ok(NO_SAMPLES_SVG.as_bytes().to_vec()),
        Format::Flamegraph => {
            let mut svg = Vec::new();
            report.flamegraph(&mut svg)?;
            Ok(svg)
        }
    }
}

/// The flamegraph of a profile without samples.
const NO_SAMPLES_SVG: &str = concat!(
    r#"<?xml version="1.0" standalone="no"?>"#,
    "\n",
    r#"<svg version="1.1" width="1200" height="60" viewBox="0 0 1200 60" "#,
    r#"xmlns="http://www.w3.org/2000/svg">"#,
    r#"<text x="600" y="35" text-anchor="middle" font-family="Verdana" font-size="17">"#,
    "Flame Graph: no samples (the process used no CPU time while it was profiled)",
    "</text></svg>\n",
);

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_report() -> pprof::Report {
        pprof::Report {
            data: Default::default(),
            timing: Default::default(),
        }
    }

    #[test]
    fn a_flamegraph_without_samples_is_an_svg_that_says_so() {
        let svg = String::from_utf8(render(&empty_report(), Format::Flamegraph).unwrap()).unwrap();
        assert!(
            svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"),
            "{svg}"
        );
        assert!(svg.contains("no samples"), "{svg}");
        assert_eq!(Format::Flamegraph.content_type(), "image/svg+xml");
    }

    #[test]
    fn a_pprof_profile_without_samples_decodes() {
        let body = render(&empty_report(), Format::Pprof).unwrap();
        assert!(!body.is_empty());
        let profile = pprof::protos::Profile::decode(&body[..]).expect("a pprof protobuf");
        assert!(profile.sample.is_empty());
        assert!(
            !profile.sample_type.is_empty(),
            "it still says what it counts"
        );
    }
}
