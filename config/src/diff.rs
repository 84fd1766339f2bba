//! What changed between two configs, for hot reload.

use crate::{Config, PoolConfig};

/// The differences between an old and a new [`Config`]; see [`diff`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigDiff {
    /// Names of pools only in the new config, in its order: start their listeners.
    pub pools_added: Vec<String>,
    /// Names of pools only in the old config, in its order: drain and close them.
    pub pools_removed: Vec<String>,
    /// Pools in both whose settings differ, in the new config's order.
    pub pools_changed: Vec<PoolChange>,
    /// `[admin]` changed: rebind the admin listener.
    pub admin_changed: bool,
    /// `[log]` changed: swap the log filter/format.
    pub log_changed: bool,
    /// `[shutdown]` changed: applies to the next drain.
    pub shutdown_changed: bool,
    /// `[runtime]` changed: the worker count is fixed at start; needs a restart.
    pub runtime_changed: bool,
}

impl ConfigDiff {
    /// Whether nothing that the proxy acts on changed.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether some change takes effect only after a restart (`[runtime]`).
    pub fn needs_restart(&self) -> bool {
        self.runtime_changed
    }
}

/// One pool present in both configs whose settings differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolChange {
    /// The pool's name (unchanged, by definition).
    pub name: String,
    /// The settings that differ, in [`PoolField`] order; never empty.
    pub fields: Vec<PoolField>,
}

impl PoolChange {
    /// Whether every change can be pushed into the running pool (limits, leaks, routing, tcp).
    pub fn is_live(&self) -> bool {
        self.fields.iter().all(|f| f.is_live())
    }

    /// Whether the listener or backends must be rebuilt (the opposite of [`Self::is_live`]).
    pub fn needs_rebuild(&self) -> bool {
        !self.is_live()
    }
}

/// A group of pool settings, as compared by [`diff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolField {
    /// `protocol`: rebuild.
    Protocol,
    /// `listen`: rebuild the listener.
    Listen,
    /// `mode`: rebuild (sessions are handled differently).
    Mode,
    /// `primary`: rebuild the backends.
    Primary,
    /// `replicas`, and `routing.split` of a tidb pool (its replica-read backends): rebuild the
    /// backends.
    Replicas,
    /// `client_auth`: rebuild the listener's handshake.
    ClientAuth,
    /// `[pools.limits]`: live.
    Limits,
    /// `[pools.leaks]`: live.
    Leaks,
    /// `[pools.routing]`: live.
    Routing,
    /// `[pools.tcp]`: live; sockets opened or accepted after the reload get the new options,
    /// open ones keep theirs.
    Tcp,
    /// `[pools.fleet]`: rebuild (the new backends join the fleet as a new sidecar would, while
    /// the old ones drain and stay counted).
    Fleet,
    /// `[pools.tls]`: rebuild.
    Tls,
    /// `[[pools.users]]` (names or passwords): rebuild.
    Users,
    /// `tidb_status_port`: rebuild (the status watch belongs to the backend).
    TidbStatusPort,
}

impl PoolField {
    /// Whether a change of this group can be applied to a running pool without rebuilding.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Limits | Self::Leaks | Self::Routing | Self::Tcp)
    }

    /// The TOML key of this group.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Protocol => "protocol",
            Self::Listen => "listen",
            Self::Mode => "mode",
            Self::Primary => "primary",
            Self::Replicas => "replicas",
            Self::ClientAuth => "client_auth",
            Self::Limits => "limits",
            Self::Leaks => "leaks",
            Self::Routing => "routing",
            Self::Tcp => "tcp",
            Self::Fleet => "fleet",
            Self::Tls => "tls",
            Self::Users => "users",
            Self::TidbStatusPort => "tidb_status_port",
        }
    }
}

/// Compares two configs. Pools are matched by name; their order does not matter. `source` is
/// ignored.
pub fn diff(old: &Config, new: &Config) -> ConfigDiff {
    let pools_added = new
        .pools
        .iter()
        .filter(|p| old.pool(&p.name).is_none())
        .map(|p| p.name.clone())
        .collect();
    let pools_removed = old
        .pools
        .iter()
        .filter(|p| new.pool(&p.name).is_none())
        .map(|p| p.name.clone())
        .collect();
    let pools_changed = new
        .pools
        .iter()
        .filter_map(|n| {
            let fields = pool_fields(old.pool(&n.name)?, n);
            (!fields.is_empty()).then(|| PoolChange {
                name: n.name.clone(),
                fields,
            })
        })
        .collect();
    ConfigDiff {
        pools_added,
        pools_removed,
        pools_changed,
        admin_changed: old.admin != new.admin,
        log_changed: old.log != new.log,
        shutdown_changed: old.shutdown != new.shutdown,
        runtime_changed: old.runtime != new.runtime,
    }
}

/// Whether `p` reads from replica-read connections to its TiDB servers.
fn tidb_reads(p: &PoolConfig) -> bool {
    p.protocol == crate::Protocol::Tidb && p.routing.split
}

fn pool_fields(a: &PoolConfig, b: &PoolConfig) -> Vec<PoolField> {
    [
        (PoolField::Protocol, a.protocol != b.protocol),
        (PoolField::Listen, a.listen != b.listen),
        (PoolField::Mode, a.mode != b.mode),
        (PoolField::Primary, a.primary != b.primary),
        // A tidb pool's `split` decides whether its primary has a replica-read backend.
        (
            PoolField::Replicas,
            a.replicas != b.replicas || tidb_reads(a) != tidb_reads(b),
        ),
        (PoolField::ClientAuth, a.client_auth != b.client_auth),
        (PoolField::Limits, a.limits != b.limits),
        (PoolField::Leaks, a.leaks != b.leaks),
        (PoolField::Routing, a.routing != b.routing),
        (PoolField::Tcp, a.tcp != b.tcp),
        (PoolField::Fleet, a.fleet != b.fleet),
        (PoolField::Tls, a.tls != b.tls),
        (PoolField::Users, a.users != b.users),
        (
            PoolField::TidbStatusPort,
            a.tidb_status_port != b.tidb_status_port,
        ),
    ]
    .into_iter()
    .filter_map(|(field, changed)| changed.then_some(field))
    .collect()
}

#[cfg(test)]
mod tests;
