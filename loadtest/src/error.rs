//! What the testbed reports when a throwaway server cannot be set up, driven or torn down.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use thiserror::Error;

/// `Result` with [`TestbedError`] as the default error.
pub type Result<T, E = TestbedError> = std::result::Result<T, E>;

/// The install hint every "not installed" error ends with.
pub const INSTALL_HINT_PG: &str = "install the server: apt-get install postgresql (or run `make test`, which installs what is missing)";

/// The install hint of MariaDB "not installed" errors.
pub const INSTALL_HINT_MARIADB: &str = "install the server: apt-get install mariadb-server mariadb-client \
     (or run `make test`, which installs what is missing)";

/// Coarse classes of [`TestbedError`], for tests and for deciding whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Server binaries or the account that must run them are missing: install, then rerun.
    NotInstalled,
    /// A server tool (`initdb`, `pg_ctl`, `psql`, …) ran and failed, or printed nonsense.
    Command,
    /// The operating system refused something (temp dir, spawning, file writes).
    Io,
    /// A process or a server did not finish or become ready within its deadline.
    Timeout,
}

/// Why a testbed operation failed. `Display` is written for a developer reading a failed test:
/// it names the command and includes the tool's stderr (and the server log tail where useful).
#[derive(Debug, Error)]
pub enum TestbedError {
    /// The installed server binaries were not found. `Display` ends with `hint`.
    #[error("{what} not found (looked in {}); {hint}", join_paths(.looked_in))]
    BinariesNotFound {
        /// What was searched for, e.g. "PostgreSQL server binaries (postgres, initdb)".
        what: String,
        /// Every directory or pattern that was tried.
        looked_in: Vec<PathBuf>,
        /// How to install what is missing.
        hint: String,
    },
    /// We run as root, the server refuses to, and the account to run it as does not exist.
    #[error("system user `{user}` not found; {hint}")]
    ServiceUserMissing {
        /// The account name, e.g. `postgres`.
        user: String,
        /// How to create it.
        hint: String,
    },
    /// A tool exited unsuccessfully.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        /// The command line (never contains passwords: secrets go over stdin).
        cmd: String,
        /// How it exited.
        status: ExitStatus,
        /// Its stderr, trimmed; for server starts followed by the tail of the server log.
        stderr: String,
    },
    /// A tool succeeded but its output was not what the query must produce.
    #[error("unexpected output from {what}: {output:?}")]
    UnexpectedOutput {
        /// What was asked.
        what: String,
        /// What came back.
        output: String,
    },
    /// A tool could not be started at all.
    #[error("could not run `{cmd}`")]
    Spawn {
        /// The command line.
        cmd: String,
        /// Why `exec` failed.
        #[source]
        source: io::Error,
    },
    /// Any other I/O failure (temp dir, config file, ownership change).
    #[error("testbed I/O failed")]
    Io(#[from] io::Error),
    /// `.0` (a command or a readiness condition) did not finish within `.1`.
    #[error("timed out after {1:?} waiting for {0}")]
    Timeout(String, Duration),
}

impl TestbedError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::BinariesNotFound { .. } | Self::ServiceUserMissing { .. } => {
                ErrorKind::NotInstalled
            }
            Self::Command { .. } | Self::UnexpectedOutput { .. } => ErrorKind::Command,
            Self::Spawn { .. } | Self::Io(_) => ErrorKind::Io,
            Self::Timeout(..) => ErrorKind::Timeout,
        }
    }

    /// `Display` of this error followed by each `source()` cause, joined with `: `. This is
    /// what `must_*` helpers panic with, so a failed test shows the whole story.
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(err) = cause {
            out.push_str(": ");
            out.push_str(&err.to_string());
            cause = err.source();
        }
        out
    }
}

fn join_paths(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    shown.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_not_found_display_ends_with_install_hint() {
        let err = TestbedError::BinariesNotFound {
            what: "PostgreSQL server binaries (postgres, initdb)".into(),
            looked_in: vec!["/usr/lib/postgresql/*/bin".into(), "/usr/bin".into()],
            hint: INSTALL_HINT_PG.into(),
        };
        let shown = err.to_string();
        assert!(shown.ends_with(INSTALL_HINT_PG), "{shown}");
        assert!(
            shown.contains("/usr/lib/postgresql/*/bin, /usr/bin"),
            "{shown}"
        );
        assert_eq!(err.kind(), ErrorKind::NotInstalled);
    }

    #[test]
    fn report_appends_source_chain() {
        let err = TestbedError::Spawn {
            cmd: "initdb -D x".into(),
            source: io::Error::new(io::ErrorKind::NotFound, "No such file"),
        };
        assert_eq!(err.report(), "could not run `initdb -D x`: No such file");
        assert_eq!(err.kind(), ErrorKind::Io);
    }
}
