//! sidepool's configuration: the TOML schema of docs/design.md §7, defaults, `${ENV}` and file
//! secrets, validation into a typed [`Config`], and the [`diff`] between two configs for hot
//! reload.
//!
//! Parsing has two stages. The raw stage parses the file into a spanned TOML tree
//! (`toml_edit`), where every key and value keeps its position. The validation pass then walks
//! that tree once against the schema and turns it into typed values, collecting *every* problem
//! (unknown keys at any depth, wrong types, bad values, contradictions, unresolvable secrets)
//! with `file:line:column` and key path. (Serde's `deny_unknown_fields` would stop at the
//! first problem, which is why the schema is walked by hand.) Only TOML syntax errors stop
//! early: the file cannot be read past them.
//!
//! Secrets: `password = "${APP_PASSWORD}"` expands environment variables (whole value or
//! embedded; `$${` is a literal `${`); expansion applies to `password` only, no other key.
//! `password_file` is read with trailing newlines trimmed.
//!
//! This crate must not: open sockets, log, hold global state, or know about the proxy's
//! settings structs (`proxy` maps `Config` onto them). It reads files only for `load` and
//! `password_file` (and looks at the loaded file's permissions for
//! [`Config::inline_password_exposure`]); TLS files are merely named here and opened by the proxy.

mod addr;
mod build;
mod diff;
mod duration;
mod error;
mod exposure;
mod keyword;
mod model;
mod render;
mod secret;
#[cfg(test)]
mod testutil;
mod tree;

use std::path::Path;
use std::sync::Arc;

pub use addr::BackendAddr;
pub use diff::{ConfigDiff, PoolChange, PoolField, diff};
pub use duration::{format_duration, parse_duration};
pub use error::{ConfigErrors, Problem, ProblemKind};
pub use exposure::InlinePasswordExposure;
pub use keyword::{
    ClientAuth, ClientTlsMode, Keyword, LeakAction, LogFormat, LogLevel, PoolMode, Protocol,
    ServerTlsMode, UnknownKeyword,
};
pub use model::{
    Admin, Config, Fleet, Leaks, Limits, Log, PoolConfig, Routing, Runtime, Shutdown, Tcp,
    TcpOptions, Tls, User,
};
pub use render::SecretRendering;
pub use secret::{Secret, SecretSource};

/// Reads and validates the config file at `path`, taking `${ENV}` values from the process
/// environment. Relative `password_file` and TLS paths are resolved against the file's
/// directory. The result's `source` is `path`.
///
/// # Errors
/// Every problem found, or a single [`ProblemKind::Read`] problem if the file cannot be read.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with_env(path, &|name| std::env::var(name).ok())
}

/// As [`load`], resolving `${NAME}` with `env` instead of the process environment (tests,
/// `sidepool check` with an overlay).
///
/// # Errors
/// As [`load`].
pub fn load_with_env(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|err| ConfigErrors {
        problems: vec![Problem {
            origin: origin.clone(),
            line: 1,
            column: 1,
            key: String::new(),
            message: format!("cannot read config file: {err}"),
            kind: ProblemKind::Read,
            source: Some(Arc::new(err)),
        }],
    })?;
    let base_dir = path.parent().filter(|dir| !dir.as_os_str().is_empty());
    let mut config = parse_in(&text, &origin, env, base_dir)?;
    config.source = Some(path.to_path_buf());
    Ok(config)
}

/// Validates config `text`; `origin` names it in problems, `env` resolves `${NAME}`. Relative
/// paths stay relative (to the working directory). The result's `source` is `None`.
///
/// # Errors
/// Every problem found, in file order.
pub fn parse(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    parse_in(text, origin, env, None)
}

fn parse_in(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
    base_dir: Option<&Path>,
) -> Result<Config, ConfigErrors> {
    let mut ctx = tree::Ctx::new(text, origin, env, base_dir);
    let config = match toml_edit::ImDocument::parse(text) {
        Ok(doc) => Some(build::build(&mut ctx, doc.as_table())),
        Err(err) => {
            let at = err.span().map_or(0, |span| span.start);
            let message = format!("invalid TOML: {}", err.message().trim_end());
            ctx.report(at, "", ProblemKind::Syntax, message);
            None
        }
    };
    let problems = ctx.finish();
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(ConfigErrors { problems }),
    }
}
