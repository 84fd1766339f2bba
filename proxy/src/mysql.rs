//! MySQL, MariaDB and TiDB pools: one listener per `[[pools]]` entry with `protocol = "mysql"`
//! or `"tidb"`.
//!
//! Stages (DESIGN §2): [`client`] greets the application and authenticates it against
//! `[[pools.users]]`, [`relay`] checks a server connection out at the first command of a
//! transaction (or holds one for the session) and forwards packets until the server reports
//! no transaction, [`backend`] opens and logs in server connections, [`effects`] finds what a
//! statement does to session state, [`replay`] moves that state between server connections.

pub mod backend;
pub mod client;
pub mod effects;
pub mod errors;
pub mod relay;
pub mod replay;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use parking_lot::Mutex;
use sidepool_config::{ClientAuth, PoolConfig, PoolMode, Protocol};
use sidepool_pool::Pool;
use sidepool_protocol::mysql::handshake::Greeting;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::warn;

use self::backend::MyConnector;
use crate::session::ClientInfo;
use crate::settings::pool_settings;
use crate::telemetry::{Role, Telemetry};

/// The pool type of a MySQL backend.
pub type MyPool = Pool<MyConnector, Arc<ClientInfo>>;

/// Everything a MySQL client session of one pool needs.
#[derive(Debug)]
pub struct MyService {
    /// Pool name, for logs, metrics and client errors.
    pub name: Arc<str>,
    /// `mysql` or `tidb`.
    pub protocol: Protocol,
    /// Session or transaction pooling.
    pub mode: PoolMode,
    /// How clients authenticate: `password` = caching_sha2_password, `native` =
    /// mysql_native_password, `trust`.
    pub client_auth: ClientAuth,
    /// Cleartext password per configured user.
    pub users: HashMap<String, String>,
    /// The primary's pool.
    pub primary: MyPool,
    /// `host:port` of the primary, for error messages.
    pub primary_addr: String,
    /// The last greeting a server sent: version and capabilities offered to clients.
    pub greeting: Arc<Mutex<Option<Greeting>>>,
    /// (user, schema) pairs a server accepted, so later logins need no server connection.
    pub known_schemas: Mutex<HashSet<(String, String)>>,
    /// The `max_clients` limit, for the error text.
    pub max_clients: u32,
    /// Statements kept prepared per server connection before the least recently used closes.
    pub prepared_per_connection: usize,
    /// Metric handles of the primary backend (DESIGN §9).
    pub metrics: Arc<crate::telemetry::PoolMetrics>,
    /// Clients connected now.
    pub clients: AtomicU64,
    /// Clients pinned to their server connection now (transaction mode).
    pub pinned: AtomicU64,
    /// Clients ever pinned.
    pub pins_total: AtomicU64,
    /// Suspected leaks ever reported.
    pub leaks_total: AtomicU64,
    /// Suspected leaks now.
    pub leaked_now: AtomicU64,
    /// Clients that went away inside a transaction (rolled back or closed).
    pub abandoned_total: AtomicU64,
}

impl MyService {
    /// The service of a `mysql`/`tidb` pool.
    pub fn new(p: &PoolConfig, telemetry: &Telemetry) -> MyService {
        let users: HashMap<String, String> = p
            .users
            .iter()
            .map(|u| (u.name.clone(), u.password.expose().to_owned()))
            .collect();
        let greeting = Arc::new(Mutex::new(None));
        let connector = MyConnector {
            addr: p.primary.to_string(),
            passwords: users.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            greeting: greeting.clone(),
        };
        let metrics =
            Arc::new(telemetry.pool_metrics(&p.name, &p.primary.to_string(), Role::Primary));
        MyService {
            name: p.name.as_str().into(),
            protocol: p.protocol,
            mode: p.mode,
            client_auth: p.client_auth,
            users,
            primary: MyPool::with_observer(connector, pool_settings(&p.limits), metrics.clone()),
            primary_addr: p.primary.to_string(),
            greeting,
            known_schemas: Mutex::default(),
            max_clients: p.limits.max_clients,
            prepared_per_connection: p.limits.prepared_statements_per_connection as usize,
            metrics,
            clients: AtomicU64::default(),
            pinned: AtomicU64::default(),
            pins_total: AtomicU64::default(),
            leaks_total: AtomicU64::default(),
            leaked_now: AtomicU64::default(),
            abandoned_total: AtomicU64::default(),
        }
    }
}

/// Accepts clients of one MySQL pool until `stop` turns true, at most `max_clients` served.
pub async fn accept_loop(
    listener: TcpListener,
    svc: Arc<MyService>,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(svc.max_clients as usize));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        match accepted {
            Ok((stream, addr)) => {
                let permit = permits.clone().try_acquire_owned().ok();
                tokio::spawn(client::serve(svc.clone(), stream, addr, permit));
            }
            Err(e) => {
                warn!(pool = %svc.name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
