//! One `[[pools]]` entry.

use std::net::SocketAddr;

use super::sections;
use crate::tree::{Ctx, Section};
use crate::{BackendAddr, ClientAuth, PoolConfig, PoolMode, ProblemKind, Protocol};

const POOL_KEYS: &[&str] = &[
    "name",
    "protocol",
    "listen",
    "mode",
    "primary",
    "replicas",
    "client_auth",
    "limits",
    "leaks",
    "routing",
    "tcp",
    "fleet",
    "tls",
    "users",
    "tidb_status_port",
];

/// A built pool plus what the cross-pool checks need: the name and listen address with their
/// offsets, present whenever they are valid even if the pool as a whole is not.
pub(super) struct Built {
    pub path: String,
    pub name: Option<(String, usize)>,
    pub listen: Option<(SocketAddr, usize)>,
    pub config: Option<PoolConfig>,
}

pub(super) fn build(ctx: &mut Ctx<'_>, s: &Section<'_>) -> Built {
    s.check_keys(ctx, POOL_KEYS);

    let name = required(ctx, s, "name").and_then(|f| {
        let name = f.str(ctx)?;
        if name.trim().is_empty() {
            f.problem(ctx, "pool name must not be empty");
            return None;
        }
        Some((name.to_owned(), f.at))
    });
    let protocol = required(ctx, s, "protocol").and_then(|f| f.keyword::<Protocol>(ctx));
    let listen = required(ctx, s, "listen").and_then(|f| Some((f.socket_addr(ctx)?, f.at)));

    let mode = mode(ctx, s, protocol);

    // With an unknown protocol the address syntax is still checked, with any default port.
    let default_port = protocol.map_or(Protocol::Postgres.default_port(), Protocol::default_port);
    let primary = required(ctx, s, "primary").and_then(|f| {
        let text = f.str(ctx)?;
        BackendAddr::parse(text, default_port)
            .map_err(|m| f.problem(ctx, m))
            .ok()
    });
    let replicas = replicas(ctx, s, default_port, primary.as_ref());

    let client_auth = client_auth(ctx, s, protocol);

    let limits = s.section(ctx, "limits");
    let limits = sections::limits(ctx, limits.as_ref());
    let leaks = s.section(ctx, "leaks");
    let leaks = sections::leaks(ctx, leaks.as_ref());
    let routing = s.section(ctx, "routing");
    let routing = sections::routing(ctx, routing.as_ref(), protocol);
    let tcp = s.section(ctx, "tcp");
    let tcp = sections::tcp(ctx, tcp.as_ref());
    let fleet = s.section(ctx, "fleet").and_then(|f| {
        let name = name.as_ref().map(|(n, _)| n.as_str());
        sections::fleet(ctx, &f, name, protocol)
    });
    let tls = s.section(ctx, "tls").map(|t| sections::tls(ctx, &t));
    let trust = client_auth == Some(ClientAuth::Trust);
    let users = sections::users(ctx, s, trust);
    let tidb_status_port = tidb_status_port(ctx, s, protocol);

    let config = match (name.clone(), protocol, listen, mode, primary, client_auth) {
        (
            Some((name, _)),
            Some(protocol),
            Some((listen, _)),
            Some(mode),
            Some(primary),
            Some(client_auth),
        ) => Some(PoolConfig {
            name,
            protocol,
            listen,
            mode,
            primary,
            replicas,
            client_auth,
            limits,
            leaks,
            routing,
            tcp,
            fleet,
            tls,
            users,
            tidb_status_port,
        }),
        _ => None,
    };
    Built {
        path: s.path.clone(),
        name,
        listen,
        config,
    }
}

/// The field `key`, or a `Missing` problem at the pool's header.
fn required<'d>(ctx: &mut Ctx<'_>, s: &Section<'d>, key: &str) -> Option<crate::tree::Field<'d>> {
    let field = s.get(key);
    if field.is_none() {
        let message = format!("missing required key `{key}`");
        ctx.report(s.at, &s.key_path(key), ProblemKind::Missing, message);
    }
    field
}

fn replicas(
    ctx: &mut Ctx<'_>,
    s: &Section<'_>,
    default_port: u16,
    primary: Option<&BackendAddr>,
) -> Vec<BackendAddr> {
    let Some(elems) = s.get("replicas").and_then(|f| f.strings(ctx)) else {
        return Vec::new();
    };
    let mut out: Vec<BackendAddr> = Vec::new();
    for elem in elems {
        let addr = match BackendAddr::parse(elem.text, default_port) {
            Ok(addr) => addr,
            Err(message) => {
                ctx.report(elem.at, &elem.path, ProblemKind::Value, message);
                continue;
            }
        };
        if primary == Some(&addr) {
            let message = format!("replica {addr} is also the primary");
            ctx.report(elem.at, &elem.path, ProblemKind::Conflict, message);
        } else if out.contains(&addr) {
            let message = format!("replica {addr} is listed twice");
            ctx.report(elem.at, &elem.path, ProblemKind::Conflict, message);
        } else {
            out.push(addr);
        }
    }
    out
}

/// `mode`, defaulting by protocol; dameng allows only session.
fn mode(ctx: &mut Ctx<'_>, s: &Section<'_>, protocol: Option<Protocol>) -> Option<PoolMode> {
    match s.get("mode") {
        Some(f) => f.keyword::<PoolMode>(ctx).inspect(|&mode| {
            if protocol == Some(Protocol::Dameng) && mode != PoolMode::Session {
                let message =
                    "dameng pools support only mode = \"session\" (header-aware passthrough)";
                ctx.report(f.at, &f.path, ProblemKind::Conflict, message);
            }
        }),
        None if protocol == Some(Protocol::Dameng) => Some(PoolMode::Session),
        None => Some(PoolMode::Transaction),
    }
}

/// `tidb_status_port`: a TCP port, on tidb pools only.
fn tidb_status_port(ctx: &mut Ctx<'_>, s: &Section<'_>, protocol: Option<Protocol>) -> Option<u16> {
    let f = s.get("tidb_status_port")?;
    let port = f
        .int(ctx, 1, u16::MAX.into())
        .and_then(|n| u16::try_from(n).ok())?;
    match protocol {
        Some(Protocol::Tidb) | None => Some(port),
        Some(p) => {
            let message =
                format!("tidb_status_port applies to protocol = \"tidb\" only, not {p}; remove it");
            ctx.report(f.at, &f.path, ProblemKind::Conflict, message);
            None
        }
    }
}

/// `client_auth`, which must exist in the pool's protocol.
fn client_auth(
    ctx: &mut Ctx<'_>,
    s: &Section<'_>,
    protocol: Option<Protocol>,
) -> Option<ClientAuth> {
    match s.get("client_auth") {
        Some(f) => f.keyword::<ClientAuth>(ctx).inspect(|auth| match protocol {
            Some(p) if !auth.supported_by(p) => {
                let message = format!("client_auth `{auth}` does not exist in the {p} protocol");
                ctx.report(f.at, &f.path, ProblemKind::Conflict, message);
            }
            _ => {}
        }),
        None => Some(ClientAuth::Password),
    }
}
