//! What `load`/`parse` report when a file cannot be turned into a [`Config`](crate::Config).

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

/// Coarse classes of [`Problem`]s, for tests, metrics (`sidepool_config_reloads_total`) and
/// deciding how to word an exit message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The file could not be read.
    Read,
    /// The file is not valid TOML (the parser stops at the first such error).
    Syntax,
    /// A key that the schema does not know.
    UnknownKey,
    /// A required key is absent.
    Missing,
    /// A value of the wrong TOML type (e.g. an integer where a duration string belongs).
    Type,
    /// A value of the right type that is not acceptable (bad enum name, bad address, range).
    Value,
    /// Two or more settings contradict each other (limits, duplicate names or addresses, TLS).
    Conflict,
    /// A secret could not be resolved (unset `${ENV}`, unreadable `password_file`).
    Secret,
}

/// One thing wrong with a config file, located by line and column (both 1-based) and by the
/// dotted key path (`pools[0].limits.max_idle`; empty for whole-file problems).
#[derive(Debug, Clone, Error)]
#[error("{origin}:{line}:{column}: {}{message}", key_prefix(.key))]
pub struct Problem {
    /// The file name (or whatever the caller passed as `origin`).
    pub origin: String,
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// Dotted key path, e.g. `pools[1].users[0].password`; empty when the whole file is at fault.
    pub key: String,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
    /// The class of problem.
    pub kind: ProblemKind,
    /// The I/O error behind a [`ProblemKind::Read`] or an unreadable `password_file`.
    #[source]
    pub source: Option<Arc<std::io::Error>>,
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

impl Problem {
    /// The class of this problem.
    pub fn kind(&self) -> ProblemKind {
        self.kind
    }
}

/// Every problem found in one config file. `load`/`parse` never return an empty list.
///
/// `Display` prints one line per problem: `origin:line:col: key.path: message`.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    /// The problems, in the order they occur in the file.
    pub problems: Vec<Problem>,
}

impl ConfigErrors {
    /// The kinds of the problems, in order (handy in tests and for metric labels).
    pub fn kinds(&self) -> Vec<ProblemKind> {
        self.problems.iter().map(Problem::kind).collect()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

// No `source()`: every problem is already printed in full by `Display`, and a chain through the
// first problem would print it twice.
impl std::error::Error for ConfigErrors {}
