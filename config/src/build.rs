//! The validation pass: the spanned tree in, a typed [`Config`] out, every problem recorded in
//! [`Ctx`]. Values that fail validation fall back to defaults so the walk can go on; the caller
//! discards the `Config` when any problem was recorded.

mod pool;
mod sections;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;

use toml_edit::Table;

use crate::tree::{Ctx, Section};
use crate::{Admin, Config, Log, ProblemKind, Runtime, Shutdown};

const ROOT_KEYS: &[&str] = &["admin", "log", "shutdown", "runtime", "pools"];

/// Upper bound of `runtime.workers`: beyond it a typo, not a machine.
const MAX_WORKERS: i64 = 4096;

/// Builds a `Config` from the document's root table.
pub(crate) fn build(ctx: &mut Ctx<'_>, root: &Table) -> Config {
    let root = Section::root(root);
    root.check_keys(ctx, ROOT_KEYS);

    let mut admin = Admin::default();
    if let Some(s) = root.section(ctx, "admin") {
        s.check_keys(ctx, &["listen"]);
        if let Some(listen) = s.get("listen").and_then(|f| f.socket_addr(ctx)) {
            admin.listen = listen;
        }
    }

    let mut log = Log::default();
    if let Some(s) = root.section(ctx, "log") {
        s.check_keys(ctx, &["level", "format"]);
        if let Some(level) = s.get("level").and_then(|f| f.keyword(ctx)) {
            log.level = level;
        }
        if let Some(format) = s.get("format").and_then(|f| f.keyword(ctx)) {
            log.format = format;
        }
    }

    let mut shutdown = Shutdown::default();
    if let Some(s) = root.section(ctx, "shutdown") {
        s.check_keys(ctx, &["timeout"]);
        if let Some(timeout) = s.get("timeout").and_then(|f| f.duration(ctx)) {
            shutdown.timeout = timeout;
        }
    }

    let mut runtime = Runtime::default();
    if let Some(s) = root.section(ctx, "runtime") {
        s.check_keys(ctx, &["workers"]);
        if let Some(workers) = s.get("workers").and_then(|f| f.int(ctx, 0, MAX_WORKERS)) {
            // In 0..=MAX_WORKERS, so it fits.
            runtime.workers = workers as usize;
        }
    }

    let pools = pools(ctx, &root, admin.listen);
    Config {
        admin,
        log,
        shutdown,
        runtime,
        pools,
        source: None,
    }
}

/// Builds every `[[pools]]` entry, then checks names and listen addresses across pools.
fn pools(
    ctx: &mut Ctx<'_>,
    root: &Section<'_>,
    admin_listen: SocketAddr,
) -> Vec<crate::PoolConfig> {
    // `None`: `pools` has the wrong type, already reported.
    let entries = match root.get("pools") {
        Some(field) => field.tables(ctx),
        None => Some(Vec::new()),
    };
    if entries.as_ref().is_some_and(Vec::is_empty) {
        let message = "no pools configured; add at least one [[pools]] entry";
        ctx.report(root.at_of("pools"), "pools", ProblemKind::Missing, message);
    }
    let entries = entries.unwrap_or_default();

    let built: Vec<pool::Built> = entries.iter().map(|s| pool::build(ctx, s)).collect();

    for (i, pool) in built.iter().enumerate() {
        let earlier = &built[..i];
        if let Some((name, at)) = &pool.name
            && let Some((_, other_at)) = earlier
                .iter()
                .filter_map(|p| p.name.as_ref())
                .find(|(n, _)| n == name)
        {
            let (line, _) = ctx.position(*other_at);
            let message = format!("pool name `{name}` is already used at line {line}");
            let key = format!("{}.name", pool.path);
            ctx.report(*at, &key, ProblemKind::Conflict, message);
        }
        let Some((listen, at)) = pool.listen else {
            continue;
        };
        let key = format!("{}.listen", pool.path);
        if overlaps(listen, admin_listen) {
            let message = format!("{listen} overlaps admin.listen ({admin_listen})");
            ctx.report(at, &key, ProblemKind::Conflict, message);
        }
        let clash = earlier
            .iter()
            .filter_map(|p| p.listen)
            .find(|(other, _)| overlaps(listen, *other));
        if let Some((other, other_at)) = clash {
            let (line, _) = ctx.position(other_at);
            let message = format!("{listen} overlaps the listen address {other} at line {line}");
            ctx.report(at, &key, ProblemKind::Conflict, message);
        }
    }
    built.into_iter().filter_map(|b| b.config).collect()
}

/// Whether two listeners would fight over a port. Port 0 (any free port) never conflicts; an
/// unspecified IP (`0.0.0.0`, `[::]`) covers every address.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}
