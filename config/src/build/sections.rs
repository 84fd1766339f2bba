//! The sub-tables of a pool: `limits`, `leaks`, `routing`, `tls`, `users`.

use std::path::PathBuf;
use std::time::Duration;

use crate::keyword::TIDB_REPLICA_READ;
use crate::secret::{SecretSource, expand_env};
use crate::tree::{Ctx, Field, Section, suggest};
use crate::{ClientTlsMode, Leaks, Limits, ProblemKind, Protocol, Routing, Secret, ServerTlsMode};
use crate::{Fleet, Tcp, TcpOptions, Tls, User};

/// `[pools.limits]`; `None` = all defaults.
pub(super) fn limits(ctx: &mut Ctx<'_>, s: Option<&Section<'_>>) -> Limits {
    let mut limits = Limits::default();
    let Some(s) = s else { return limits };
    s.check_keys(
        ctx,
        &[
            "max_open",
            "max_idle",
            "min_idle",
            "max_lifetime",
            "max_idle_time",
            "wait_timeout",
            "max_waiting",
            "max_clients",
            "connect_timeout",
            "prepared_statements_per_connection",
            "query_timeout",
        ],
    );
    let u32_of = |ctx: &mut Ctx<'_>, key, min| s.get(key).and_then(|f| f.u32(ctx, min));
    let dur_of = |ctx: &mut Ctx<'_>, key| s.get(key).and_then(|f| f.duration(ctx));

    if let Some(n) = u32_of(ctx, "max_open", 1) {
        limits.max_open = n;
    }
    // Like Go's database/sql, an unset max_idle follows a lower max_open.
    limits.max_idle = limits.max_idle.min(limits.max_open);
    let max_idle = u32_of(ctx, "max_idle", 0);
    if let Some(n) = max_idle {
        limits.max_idle = n;
        if n > limits.max_open {
            let message = format!("max_idle ({n}) exceeds max_open ({})", limits.max_open);
            ctx.report(
                s.at_of("max_idle"),
                &s.key_path("max_idle"),
                ProblemKind::Conflict,
                message,
            );
        }
    }
    if let Some(n) = u32_of(ctx, "min_idle", 0) {
        limits.min_idle = n;
        if n > limits.max_idle {
            let which = if max_idle.is_some() {
                ""
            } else {
                ", the default"
            };
            let message = format!(
                "min_idle ({n}) exceeds max_idle ({}{which})",
                limits.max_idle
            );
            ctx.report(
                s.at_of("min_idle"),
                &s.key_path("min_idle"),
                ProblemKind::Conflict,
                message,
            );
        }
    }
    // "0s" = unlimited.
    if let Some(d) = dur_of(ctx, "max_lifetime") {
        limits.max_lifetime = (!d.is_zero()).then_some(d);
    }
    if let Some(d) = dur_of(ctx, "max_idle_time") {
        limits.max_idle_time = (!d.is_zero()).then_some(d);
    }
    if let Some(d) = dur_of(ctx, "wait_timeout") {
        limits.wait_timeout = d;
    }
    if let Some(n) = u32_of(ctx, "max_waiting", 0) {
        limits.max_waiting = n;
    }
    if let Some(n) = u32_of(ctx, "max_clients", 1) {
        limits.max_clients = n;
    }
    if let Some(d) = s.get("connect_timeout").and_then(|f| positive(ctx, &f)) {
        limits.connect_timeout = d;
    }
    if let Some(n) = u32_of(ctx, "prepared_statements_per_connection", 1) {
        limits.prepared_statements_per_connection = n;
    }
    if let Some(d) = dur_of(ctx, "query_timeout") {
        limits.query_timeout = (!d.is_zero()).then_some(d);
    }
    limits
}

/// `[pools.fleet]`; `None` when it is invalid (problems reported). `name` is the pool's name,
/// the default key.
pub(super) fn fleet(
    ctx: &mut Ctx<'_>,
    s: &Section<'_>,
    name: Option<&str>,
    protocol: Option<Protocol>,
) -> Option<Fleet> {
    s.check_keys(ctx, &["max_open_total", "min_share", "key"]);
    if protocol == Some(Protocol::Dameng) {
        let message = "a fleet budget needs advisory locks or GET_LOCK: not for dameng pools";
        ctx.report(s.at, &s.path, ProblemKind::Conflict, message.to_owned());
        return None;
    }
    let total = match s.get("max_open_total") {
        Some(f) => f.u32(ctx, 1)?,
        None => {
            let message = "missing required key `max_open_total`".to_owned();
            ctx.report(
                s.at,
                &s.key_path("max_open_total"),
                ProblemKind::Missing,
                message,
            );
            return None;
        }
    };
    let min_share = match s.get("min_share") {
        Some(f) => {
            let n = f.u32(ctx, 1)?;
            if n > total {
                f.problem(
                    ctx,
                    format!("min_share ({n}) exceeds max_open_total ({total})"),
                );
                return None;
            }
            n
        }
        None => 1,
    };
    let key = match s.get("key") {
        Some(f) => {
            let key = f.str(ctx)?;
            if key.trim().is_empty() || key.len() > 200 {
                f.problem(ctx, "fleet key must be 1 to 200 characters");
                return None;
            }
            key.to_owned()
        }
        None => name?.to_owned(),
    };
    Some(Fleet {
        max_open_total: total,
        min_share,
        key,
    })
}

/// A duration above zero.
fn positive(ctx: &mut Ctx<'_>, f: &Field<'_>) -> Option<Duration> {
    let d = f.duration(ctx)?;
    if d.is_zero() {
        f.problem(ctx, "must be above 0s");
        return None;
    }
    Some(d)
}

/// Linux's ceiling of `TCP_KEEPIDLE` and `TCP_KEEPINTVL` (`MAX_TCP_KEEPIDLE`), in seconds.
const MAX_KEEPALIVE_SECS: u64 = 32_767;
/// Linux's ceiling of `TCP_KEEPCNT` (`MAX_TCP_KEEPCNT`).
const MAX_KEEPALIVE_COUNT: u32 = 127;
/// `TCP_USER_TIMEOUT` is an `int` of milliseconds.
const MAX_USER_TIMEOUT_MS: u128 = i32::MAX as u128;

/// `[pools.tcp]`; `None` = all defaults.
pub(super) fn tcp(ctx: &mut Ctx<'_>, s: Option<&Section<'_>>) -> Tcp {
    let mut tcp = Tcp::default();
    let Some(s) = s else { return tcp };
    s.check_keys(
        ctx,
        &[
            "server_keepalive_idle",
            "server_keepalive_interval",
            "server_keepalive_count",
            "server_user_timeout",
            "client_keepalive_idle",
            "client_keepalive_interval",
            "client_keepalive_count",
            "client_user_timeout",
        ],
    );
    tcp_side(ctx, s, "server", &mut tcp.server);
    tcp_side(ctx, s, "client", &mut tcp.client);
    tcp
}

/// The `<side>_*` keys of `[pools.tcp]` into `o`.
fn tcp_side(ctx: &mut Ctx<'_>, s: &Section<'_>, side: &str, o: &mut TcpOptions) {
    let key = |option: &str| format!("{side}_{option}");
    if let Some(f) = s.get(&key("keepalive_idle")) {
        match f.duration(ctx) {
            Some(d) if d.is_zero() => o.keepalive_idle = None,
            Some(_) => {
                if let Some(d) = keepalive_secs(ctx, &f) {
                    o.keepalive_idle = Some(d);
                }
            }
            None => {}
        }
    }
    if let Some(d) = s
        .get(&key("keepalive_interval"))
        .and_then(|f| keepalive_secs(ctx, &f))
    {
        o.keepalive_interval = d;
    }
    if let Some(f) = s.get(&key("keepalive_count"))
        && let Some(n) = f.u32(ctx, 1)
    {
        if n <= MAX_KEEPALIVE_COUNT {
            o.keepalive_count = n;
        } else {
            f.problem(
                ctx,
                format!("must be at most {MAX_KEEPALIVE_COUNT}, found {n}"),
            );
        }
    }
    if let Some(f) = s.get(&key("user_timeout"))
        && let Some(d) = f.duration(ctx)
    {
        if d.subsec_nanos() % 1_000_000 != 0 {
            f.problem(ctx, "TCP_USER_TIMEOUT takes whole milliseconds");
        } else if d.as_millis() > MAX_USER_TIMEOUT_MS {
            f.problem(
                ctx,
                "must be at most 24 days (TCP_USER_TIMEOUT is an int of milliseconds)",
            );
        } else {
            o.user_timeout = (!d.is_zero()).then_some(d);
        }
    }
}

/// A keepalive time: whole seconds from 1s to Linux's ceiling.
fn keepalive_secs(ctx: &mut Ctx<'_>, f: &Field<'_>) -> Option<Duration> {
    let d = f.duration(ctx)?;
    if d.subsec_nanos() != 0 {
        f.problem(ctx, "keepalive times are whole seconds; write e.g. \"15s\"");
    } else if d.is_zero() {
        f.problem(ctx, "must be at least 1s");
    } else if d.as_secs() > MAX_KEEPALIVE_SECS {
        f.problem(
            ctx,
            format!("must be at most {MAX_KEEPALIVE_SECS}s (the kernel's limit)"),
        );
    } else {
        return Some(d);
    }
    None
}

/// `[pools.leaks]`; `None` = all defaults.
pub(super) fn leaks(ctx: &mut Ctx<'_>, s: Option<&Section<'_>>) -> Leaks {
    let mut leaks = Leaks::default();
    let Some(s) = s else { return leaks };
    s.check_keys(ctx, &["threshold", "action", "terminate_after"]);
    if let Some(d) = s.get("threshold").and_then(|f| positive(ctx, &f)) {
        leaks.threshold = d;
    }
    if let Some(action) = s.get("action").and_then(|f| f.keyword(ctx)) {
        leaks.action = action;
    }
    if let Some(d) = s.get("terminate_after").and_then(|f| f.duration(ctx)) {
        leaks.terminate_after = d;
    }
    leaks
}

/// `[pools.routing]`; `None` = all defaults. `protocol` is `None` when it was invalid.
pub(super) fn routing(
    ctx: &mut Ctx<'_>,
    s: Option<&Section<'_>>,
    protocol: Option<Protocol>,
) -> Routing {
    let mut routing = Routing::default();
    let Some(s) = s else { return routing };
    s.check_keys(
        ctx,
        &[
            "split",
            "max_replica_lag",
            "read_your_writes",
            "write_functions",
            "tidb_replica_read",
            "tidb_read_staleness",
        ],
    );
    if let Some(f) = s.get("split")
        && let Some(split) = f.bool(ctx)
    {
        routing.split = split;
        if split && protocol == Some(Protocol::Dameng) {
            let message = "dameng pools are session passthrough and cannot split reads";
            ctx.report(f.at, &f.path, ProblemKind::Conflict, message);
        }
    }
    if let Some(d) = s.get("max_replica_lag").and_then(|f| f.duration(ctx)) {
        routing.max_replica_lag = d;
    }
    if let Some(d) = s.get("read_your_writes").and_then(|f| f.duration(ctx)) {
        routing.read_your_writes = d;
    }
    for elem in s
        .get("write_functions")
        .and_then(|f| f.strings(ctx))
        .unwrap_or_default()
    {
        if elem.text.trim().is_empty() {
            let message = "function name must not be empty";
            ctx.report(elem.at, &elem.path, ProblemKind::Value, message);
        } else {
            routing.write_functions.push(elem.text.to_owned());
        }
    }
    if let Some(f) = s.get("tidb_replica_read")
        && let Some(text) = f.str(ctx)
    {
        if TIDB_REPLICA_READ.contains(&text) {
            routing.tidb_replica_read = text.to_owned();
        } else {
            let message = match suggest(text, TIDB_REPLICA_READ.iter().copied()) {
                Some(near) => format!("unknown tidb_replica_read `{text}`; did you mean `{near}`?"),
                None => format!(
                    "unknown tidb_replica_read `{text}`; expected one of: {}",
                    TIDB_REPLICA_READ.join(", ")
                ),
            };
            f.problem(ctx, message);
        }
    }
    if let Some(f) = s.get("tidb_read_staleness")
        && let Some(d) = f.duration(ctx)
    {
        if d.subsec_nanos() == 0 {
            routing.tidb_read_staleness = d;
        } else {
            f.problem(ctx, "TiDB takes whole seconds; write e.g. \"5s\"");
        }
    }
    routing
}

/// `[pools.tls]`.
pub(super) fn tls(ctx: &mut Ctx<'_>, s: &Section<'_>) -> Tls {
    s.check_keys(
        ctx,
        &[
            "client_cert",
            "client_key",
            "client_mode",
            "server_mode",
            "server_ca",
        ],
    );
    let mut tls = Tls {
        client_cert: path(ctx, s, "client_cert"),
        client_key: path(ctx, s, "client_key"),
        server_ca: path(ctx, s, "server_ca"),
        ..Tls::default()
    };
    if let Some(mode) = s.get("client_mode").and_then(|f| f.keyword(ctx)) {
        tls.client_mode = mode;
    }
    if let Some(mode) = s.get("server_mode").and_then(|f| f.keyword(ctx)) {
        tls.server_mode = mode;
    }

    let missing: Vec<&str> = [
        ("client_cert", &tls.client_cert),
        ("client_key", &tls.client_key),
    ]
    .into_iter()
    .filter(|(key, value)| value.is_none() && s.get(key).is_none())
    .map(|(key, _)| key)
    .collect();
    if tls.client_mode != ClientTlsMode::Disable && !missing.is_empty() {
        let message = format!(
            "client_mode = \"{}\" needs {}",
            tls.client_mode,
            missing.join(" and ")
        );
        ctx.report(
            s.at_of("client_mode"),
            &s.key_path("client_mode"),
            ProblemKind::Conflict,
            message,
        );
    } else if missing.len() == 1 {
        let (present, absent) = match missing[0] {
            "client_cert" => ("client_key", "client_cert"),
            _ => ("client_cert", "client_key"),
        };
        let message = format!("{present} is given without {absent}");
        ctx.report(
            s.at_of(present),
            &s.key_path(present),
            ProblemKind::Conflict,
            message,
        );
    }
    if matches!(
        tls.server_mode,
        ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull
    ) && tls.server_ca.is_none()
        && s.get("server_ca").is_none()
    {
        let message = format!("server_mode = \"{}\" needs server_ca", tls.server_mode);
        ctx.report(
            s.at_of("server_mode"),
            &s.key_path("server_mode"),
            ProblemKind::Conflict,
            message,
        );
    }
    tls
}

/// A non-empty path string, resolved against the config file's directory.
fn path(ctx: &mut Ctx<'_>, s: &Section<'_>, key: &str) -> Option<PathBuf> {
    let f = s.get(key)?;
    let text = f.str(ctx)?;
    if text.is_empty() {
        f.problem(ctx, "path must not be empty");
        return None;
    }
    Some(ctx.resolve_path(text))
}

/// `[[pools.users]]`; `trust` when the pool's client_auth allows users without a password.
pub(super) fn users(ctx: &mut Ctx<'_>, pool: &Section<'_>, trust: bool) -> Vec<User> {
    let entries = pool
        .get("users")
        .and_then(|f| f.tables(ctx))
        .unwrap_or_default();
    let mut users: Vec<(User, usize)> = Vec::new();
    for s in &entries {
        s.check_keys(ctx, &["name", "password", "password_file"]);
        let name = match s.get("name") {
            None => {
                let message = "missing required key `name`";
                ctx.report(s.at, &s.key_path("name"), ProblemKind::Missing, message);
                None
            }
            Some(f) => f.str(ctx).and_then(|name| {
                if name.is_empty() {
                    f.problem(ctx, "user name must not be empty");
                    return None;
                }
                if let Some((_, at)) = users.iter().find(|(u, _)| u.name == name) {
                    let (line, _) = ctx.position(*at);
                    let message = format!("user `{name}` is already defined at line {line}");
                    ctx.report(f.at, &f.path, ProblemKind::Conflict, message);
                }
                Some((name.to_owned(), f.at))
            }),
        };
        let password = password(ctx, s, trust);
        if let (Some((name, at)), Some(password)) = (name, password) {
            users.push((User { name, password }, at));
        }
    }
    users.into_iter().map(|(u, _)| u).collect()
}

/// The user's secret from `password` or `password_file`.
fn password(ctx: &mut Ctx<'_>, s: &Section<'_>, trust: bool) -> Option<Secret> {
    match (s.get("password"), s.get("password_file")) {
        (Some(_), Some(file)) => {
            let message = "give either password or password_file, not both";
            ctx.report(file.at, &file.path, ProblemKind::Conflict, message);
            None
        }
        (None, None) if trust => Some(Secret::new("")),
        (None, None) => {
            let message =
                "missing password or password_file (only client_auth = \"trust\" allows neither)";
            ctx.report(s.at, &s.key_path("password"), ProblemKind::Missing, message);
            None
        }
        (Some(f), None) => {
            let template = f.str(ctx)?;
            let expanded = match expand_env(template, ctx.env) {
                Ok(expanded) => expanded,
                Err(messages) => {
                    for message in messages {
                        ctx.report(f.at, &f.path, ProblemKind::Secret, message);
                    }
                    return None;
                }
            };
            if expanded.value.is_empty() {
                f.problem(ctx, "password is empty");
                return None;
            }
            let source = if expanded.referenced {
                SecretSource::Env(template.to_owned())
            } else {
                SecretSource::Inline
            };
            Some(Secret::with_source(expanded.value, source))
        }
        (None, Some(f)) => {
            let text = f.str(ctx)?;
            if text.is_empty() {
                f.problem(ctx, "path must not be empty");
                return None;
            }
            let path = ctx.resolve_path(text);
            match std::fs::read_to_string(&path) {
                Ok(contents) => {
                    let value = contents.trim_end_matches(['\n', '\r']);
                    if value.is_empty() {
                        f.problem(ctx, format!("password_file {} is empty", path.display()));
                        return None;
                    }
                    Some(Secret::with_source(
                        value.to_owned(),
                        SecretSource::File(path),
                    ))
                }
                Err(err) => {
                    let message = format!("cannot read password_file {}: {err}", path.display());
                    ctx.report_io(f.at, &f.path, message, err);
                    None
                }
            }
        }
    }
}
