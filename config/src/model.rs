//! The typed configuration that validation produces. Every field states its TOML key, unit and
//! default; `Default` impls hold the defaults of docs/design.md §7.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::{
    BackendAddr, ClientAuth, ClientTlsMode, LeakAction, LogFormat, LogLevel, PoolMode, Protocol,
    Secret, ServerTlsMode,
};

/// A whole, valid `sidepool.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[admin]`: the HTTP admin listener.
    pub admin: Admin,
    /// `[log]`.
    pub log: Log,
    /// `[shutdown]`.
    pub shutdown: Shutdown,
    /// `[runtime]`.
    pub runtime: Runtime,
    /// `[[pools]]`, in file order; at least one, names and listen addresses unique.
    pub pools: Vec<PoolConfig>,
    /// The file this was loaded from (`None` from [`parse`](crate::parse)).
    pub source: Option<PathBuf>,
}

impl Config {
    /// The pool named `name`.
    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|p| p.name == name)
    }
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// `listen`: IP:port of the HTTP admin listener (metrics, health, pools, pprof).
    /// Default `127.0.0.1:9930`.
    pub listen: SocketAddr,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 9930)),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// `level`: least severe level written. Default `info`.
    pub level: LogLevel,
    /// `format`: line format. Default `text`.
    pub format: LogFormat,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            level: LogLevel::Info,
            format: LogFormat::Text,
        }
    }
}

/// `[shutdown]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shutdown {
    /// `timeout`: drain budget after SIGTERM/SIGINT before everything is closed. Default 30s.
    pub timeout: Duration,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
        }
    }
}

/// `[runtime]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Runtime {
    /// `workers`: tokio worker threads, at most 4096. Default 0 = auto: the proxy resolves it to
    /// the container's CPU quota (cgroup `cpu.max`), at least 1.
    pub workers: usize,
}

/// One `[[pools]]` entry: a listener and the backends it pools for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// `name`: metric/log label; non-empty, unique. Required.
    pub name: String,
    /// `protocol`: wire protocol on both sides. Required.
    pub protocol: Protocol,
    /// `listen`: IP:port applications connect to; unique across pools and distinct from
    /// `admin.listen` (port 0 = any free port, never a conflict). Required.
    pub listen: SocketAddr,
    /// `mode`: pooling mode. Default `transaction` (`session` for dameng, which allows only that).
    pub mode: PoolMode,
    /// `primary`: the read-write server, `host:port` (port defaults by protocol). Required.
    pub primary: BackendAddr,
    /// `replicas`: read-only servers for the read/write split. Default none.
    pub replicas: Vec<BackendAddr>,
    /// `client_auth`: how applications authenticate to sidepool. Default `password`.
    pub client_auth: ClientAuth,
    /// `[pools.limits]`: hard limits, per backend.
    pub limits: Limits,
    /// `[pools.leaks]`: leak detection.
    pub leaks: Leaks,
    /// `[pools.routing]`: read/write split.
    pub routing: Routing,
    /// `[pools.tcp]`: keepalive and `TCP_USER_TIMEOUT` of server and client sockets.
    pub tcp: Tcp,
    /// `[pools.fleet]`: optional; one budget of server connections shared by every sidepool
    /// that serves this pool (docs/fleet-budget.md). Absent = each sidecar's own limits only.
    pub fleet: Option<Fleet>,
    /// `[pools.tls]`: optional; absent = no TLS on either side.
    pub tls: Option<Tls>,
    /// `[[pools.users]]`: who may connect, with the passwords sidepool checks and uses upstream.
    /// Default none; names unique.
    pub users: Vec<User>,
    /// `tidb_status_port`: TCP port (1–65535) of the TiDB status HTTP server on the primary's
    /// host (TiDB's default is 10080). When set, sidepool polls `/status` about once a second
    /// and stops handing out the backend's connections while it answers other than 2xx (TiDB
    /// answers 500 before it is taken out of service). tidb pools only. Default none (no
    /// polling).
    pub tidb_status_port: Option<u16>,
}

impl PoolConfig {
    /// The user named `name`.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }
}

/// `[pools.limits]`: per backend (the primary and each replica separately). Invariant:
/// `1 <= max_open`, `min_idle <= max_idle <= max_open`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `max_open`: server connections (idle + in use + opening), at least 1. Default 20.
    pub max_open: u32,
    /// `max_idle`: idle server connections kept. Default 10, or `max_open` if that is lower.
    pub max_idle: u32,
    /// `min_idle`: idle server connections kept warm. Default 0.
    pub min_idle: u32,
    /// `max_lifetime`: a server connection's age at which it is closed (when idle).
    /// Default 30m; `"0s"` = unlimited (`None`).
    pub max_lifetime: Option<Duration>,
    /// `max_idle_time`: idle time after which a server connection is closed.
    /// Default 5m; `"0s"` = unlimited (`None`).
    pub max_idle_time: Option<Duration>,
    /// `wait_timeout`: longest a checkout waits in the queue. Default 5s; 0 = never wait.
    pub wait_timeout: Duration,
    /// `max_waiting`: clients queued at once before new ones are rejected. Default 1000.
    pub max_waiting: u32,
    /// `max_clients`: client connections accepted by this pool's listener, at least 1.
    /// Default 5000.
    pub max_clients: u32,
    /// `connect_timeout`: opening one server connection, auth included; above 0. Default 5s.
    pub connect_timeout: Duration,
    /// `prepared_statements_per_connection`: named statements sidepool keeps prepared on one
    /// server connection in transaction mode before closing the least recently used; at
    /// least 1. Default 200.
    pub prepared_statements_per_connection: u32,
    /// `query_timeout`: longest a server may take to answer one client request, from the
    /// request's first byte sent to the answer's last byte received. When it passes, the
    /// client gets the protocol's own timeout error (PostgreSQL 57014, MySQL 3024), its session
    /// ends and the server connection is closed, never returned to the pool (PostgreSQL also
    /// gets a CancelRequest). Applies to requests that start after a reload.
    /// Default `"0s"` = off (`None`).
    pub query_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_open: 20,
            max_idle: 10,
            min_idle: 0,
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            max_idle_time: Some(Duration::from_secs(5 * 60)),
            wait_timeout: Duration::from_secs(5),
            max_waiting: 1000,
            max_clients: 5000,
            connect_timeout: Duration::from_secs(5),
            prepared_statements_per_connection: 200,
            query_timeout: None,
        }
    }
}

/// `[pools.leaks]`: see docs/design.md §5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaks {
    /// `threshold`: hold time with a silent client that makes a checkout a suspected leak;
    /// above 0. Default 30s.
    pub threshold: Duration,
    /// `action`: what to do about a suspected leak. Default `warn`.
    pub action: LeakAction,
    /// `terminate_after`: with `action = "terminate"`, how long after detection the client's
    /// transaction is ended. Default 5m.
    pub terminate_after: Duration,
}

impl Default for Leaks {
    fn default() -> Self {
        Self {
            threshold: Duration::from_secs(30),
            action: LeakAction::Warn,
            terminate_after: Duration::from_secs(5 * 60),
        }
    }
}

/// `[pools.routing]`: see docs/design.md §6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// `split`: send eligible reads to replicas; on tidb pools to replica-read connections
    /// (`tidb_replica_read`) of every TiDB server, the primary's included, so `replicas` may
    /// be empty. Default false; must be false for dameng.
    pub split: bool,
    /// `max_replica_lag`: a replica lagging more is taken out of rotation. Default 5s.
    pub max_replica_lag: Duration,
    /// `read_your_writes`: after a client writes, its reads go to the primary this long.
    /// Default 1s.
    pub read_your_writes: Duration,
    /// `write_functions`: function names that make a read go to the primary, added to the
    /// built-in list. Default none.
    pub write_functions: Vec<String>,
    /// `tidb_replica_read`: the `tidb_replica_read` session value of replica connections (tidb
    /// pools only; accepted and unused elsewhere). One of TiDB's documented values.
    /// Default `closest-replicas`.
    pub tidb_replica_read: String,
    /// `tidb_read_staleness`: stale-read window for replica connections, whole seconds (tidb
    /// pools only). Default 0s = off.
    pub tidb_read_staleness: Duration,
}

impl Default for Routing {
    fn default() -> Self {
        Self {
            split: false,
            max_replica_lag: Duration::from_secs(5),
            read_your_writes: Duration::from_secs(1),
            write_functions: Vec::new(),
            tidb_replica_read: "closest-replicas".to_owned(),
            tidb_read_staleness: Duration::ZERO,
        }
    }
}

/// `[pools.tcp]`: TCP options of the pool's sockets, so that a peer that vanished without a
/// FIN or RST (a node gone, packets dropped by a firewall) is noticed in seconds rather than
/// after the kernel's ~15 minutes of retransmissions. Keys are `server_<option>` for the
/// connections sidepool opens to the primary and the replicas, `client_<option>` for the
/// connections it accepts. A reload applies them to connections opened after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcp {
    /// `server_*`. Defaults: keepalive after 15s idle, every 5s, 3 probes (a silent server is
    /// dropped 30s after its last packet); user timeout 30s (unacknowledged data for 30s drops
    /// the connection).
    pub server: TcpOptions,
    /// `client_*`. Defaults: keepalive after 60s idle, every 10s, 6 probes (a vanished client
    /// frees its server connection 2 minutes after its last packet); no user timeout (a client
    /// may be slow to read a large result).
    pub client: TcpOptions,
}

impl Default for Tcp {
    fn default() -> Self {
        Self {
            server: TcpOptions {
                keepalive_idle: Some(Duration::from_secs(15)),
                keepalive_interval: Duration::from_secs(5),
                keepalive_count: 3,
                user_timeout: Some(Duration::from_secs(30)),
            },
            client: TcpOptions {
                keepalive_idle: Some(Duration::from_secs(60)),
                keepalive_interval: Duration::from_secs(10),
                keepalive_count: 6,
                user_timeout: None,
            },
        }
    }
}

/// The options of one side of `[pools.tcp]` (key prefix `server_` or `client_`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpOptions {
    /// `<side>_keepalive_idle`: silence before the first keepalive probe (`TCP_KEEPIDLE`);
    /// whole seconds, 1s to 32767s. `"0s"` = no keepalive (`None`).
    pub keepalive_idle: Option<Duration>,
    /// `<side>_keepalive_interval`: between unanswered probes (`TCP_KEEPINTVL`); whole seconds,
    /// 1s to 32767s.
    pub keepalive_interval: Duration,
    /// `<side>_keepalive_count`: unanswered probes before the connection is dropped
    /// (`TCP_KEEPCNT`); 1 to 127.
    pub keepalive_count: u32,
    /// `<side>_user_timeout`: longest sent data may stay unacknowledged before the connection
    /// is dropped (`TCP_USER_TIMEOUT`, Linux); whole milliseconds, at most 24 days. Also bounds
    /// keepalive: it should not be below idle + interval x count. `"0s"` = the kernel's
    /// retransmission limits (`None`).
    pub user_timeout: Option<Duration>,
}

/// `[pools.fleet]`: a budget of server connections for all sidecars of a pool together, per
/// backend, kept by a census through the database itself (docs/fleet-budget.md). Not for
/// dameng pools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// `max_open_total`: most server connections of the pool's users that the server lists,
    /// summed over every sidecar (and any other session of those users), per backend.
    /// Required, at least 1.
    pub max_open_total: u32,
    /// `min_share`: a sidecar with waiting clients is not kept below this many connections.
    /// Default 1; at least 1 and at most `max_open_total`.
    pub min_share: u32,
    /// `key`: sidecars whose pools have the same key share one budget. Default: the pool's
    /// name.
    pub key: String,
}

/// `[pools.tls]`. Relative paths are resolved against the config file's directory by
/// [`load`](crate::load); the files are opened by the proxy, not checked here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// `client_cert`: certificate (PEM) offered to applications. Required when `client_mode`
    /// is `allow` or `require`. Default none.
    pub client_cert: Option<PathBuf>,
    /// `client_key`: private key (PEM) of `client_cert`; given together with it. Default none.
    pub client_key: Option<PathBuf>,
    /// `client_mode`: TLS towards applications. Default `disable`.
    pub client_mode: ClientTlsMode,
    /// `server_mode`: TLS towards the database. Default `prefer`.
    pub server_mode: ServerTlsMode,
    /// `server_ca`: CA bundle (PEM) for verifying the database; required by `verify-ca` and
    /// `verify-full`. Default none.
    pub server_ca: Option<PathBuf>,
}

impl Default for Tls {
    fn default() -> Self {
        Self {
            client_cert: None,
            client_key: None,
            client_mode: ClientTlsMode::Disable,
            server_mode: ServerTlsMode::Prefer,
            server_ca: None,
        }
    }
}

/// `[[pools.users]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// `name`: the database user name; non-empty, unique within the pool. Required.
    pub name: String,
    /// From `password` (with `${ENV}` expansion) or `password_file` (trailing newlines trimmed);
    /// exactly one of them. Both may be omitted only with `client_auth = "trust"`, which gives
    /// an empty secret.
    pub password: Secret,
}
