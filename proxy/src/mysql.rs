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
pub mod tidb;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use sidepool_config::{ClientAuth, PoolConfig, Protocol};
use sidepool_pool::Pool;
use sidepool_protocol::mysql::handshake::Greeting;

use self::backend::MyConnector;
use crate::service::PoolCore;
use crate::session::ClientInfo;
use crate::settings::pool_settings;
use crate::telemetry::{Role, Telemetry};
use crate::tls::{ClientTls, ServerTls, TlsError};

/// The pool type of a MySQL backend.
pub type MyPool = Pool<MyConnector, Arc<ClientInfo>>;

/// Everything a MySQL client session of one pool needs. The protocol-neutral part (name,
/// counters, metrics, sessions) is its [`PoolCore`], reachable through `Deref`.
#[derive(Debug)]
pub struct MyService {
    /// Name, mode, counters and metrics shared with admin, leaks and console.
    pub core: PoolCore,
    /// How clients authenticate: `password` = caching_sha2_password, `native` =
    /// mysql_native_password, `trust`.
    pub client_auth: ClientAuth,
    /// Cleartext password per configured user.
    pub users: HashMap<String, String>,
    /// The primary's pool.
    pub primary: MyPool,
    /// One pool per replica, at the indexes of `core.replicas`.
    pub replicas: Vec<MyPool>,
    /// The key replica checks log in with: the last client login's.
    pub check_key: Arc<Mutex<Option<backend::ConnKey>>>,
    /// The last greeting a server sent: version and capabilities offered to clients.
    pub greeting: Arc<Mutex<Option<Greeting>>>,
    /// (user, schema) pairs a server accepted, so later logins need no server connection.
    pub known_schemas: Mutex<HashSet<(String, String)>>,
    /// Statements kept prepared per server connection before the least recently used closes.
    pub prepared_per_connection: usize,
    /// TLS offered to clients (`[pools.tls] client_mode`).
    pub client_tls: ClientTls,
    /// The primary's service state (TiDB status port); always in service without one.
    pub health: Arc<tidb::Health>,
    /// Polls the primary's TiDB status port (`tidb_status_port`) while the service lives.
    pub status_watch: Option<tidb::StatusWatch>,
}

crate::pool_service!(MyService, client::serve);

impl MyService {
    /// The service of a `mysql`/`tidb` pool. Starts the TiDB status watch when configured, so
    /// it must run inside the runtime.
    ///
    /// # Errors
    /// `[pools.tls]` material that does not load.
    pub fn new(p: &PoolConfig, telemetry: &Telemetry) -> Result<MyService, TlsError> {
        let client_tls = ClientTls::for_mysql(p.tls.as_ref())?;
        let server_tls = ServerTls::for_mysql(p.tls.as_ref(), &p.primary.host)?;
        let health = Arc::new(tidb::Health::default());
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
            tls: server_tls,
            health: health.clone(),
            tidb: p.protocol == Protocol::Tidb,
            replica_read: None,
        };
        let metrics =
            Arc::new(telemetry.pool_metrics(&p.name, &p.primary.to_string(), Role::Primary));
        let primary = MyPool::with_observer(connector, pool_settings(&p.limits), metrics.clone());
        let backend: Arc<dyn crate::backend::Backend> = Arc::new(primary.clone());
        let status_watch = match (p.protocol, p.tidb_status_port) {
            (Protocol::Tidb, Some(port)) => Some(tidb::watch(
                p.name.as_str().into(),
                p.primary.to_string(),
                p.primary.host.clone(),
                port,
                health.clone(),
                backend.clone(),
            )),
            _ => None,
        };
        let mut core = PoolCore::new(p, backend, metrics);
        let tidb = p.protocol == Protocol::Tidb;
        // TiDB: every server can write, so replicas are replica-read backends, one per TiDB
        // server, the primary's first when reads are split (`route::tidb_replica_reads`).
        let primary_reads = crate::route::tidb_replica_reads(p);
        let servers = primary_reads.then_some(&p.primary).into_iter();
        let mut replicas = Vec::new();
        let mut service_states = Vec::new();
        for (i, addr) in servers.chain(&p.replicas).enumerate() {
            // The status port is watched on the primary only.
            let state = match primary_reads && i == 0 {
                true => health.clone(),
                false => Arc::new(tidb::Health::default()),
            };
            let connector = MyConnector {
                addr: addr.to_string(),
                passwords: users.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                // Clients are greeted with the primary's greeting only.
                greeting: Arc::new(Mutex::new(None)),
                tls: ServerTls::for_mysql(p.tls.as_ref(), &addr.host)?,
                health: state.clone(),
                tidb,
                replica_read: tidb.then(|| core.routing.clone()),
            };
            // TiDB: a label of its own, as the primary's series carry the same address.
            let label = match tidb {
                true => tidb::replica_read::label(&addr.to_string()),
                false => addr.to_string(),
            };
            let metrics = Arc::new(telemetry.pool_metrics(&p.name, &label, Role::Replica));
            let pool = MyPool::with_observer(connector, pool_settings(&p.limits), metrics.clone());
            core.replicas.push(Arc::new(crate::route::Replica::new(
                label,
                Arc::new(pool.clone()),
                metrics,
            )));
            replicas.push(pool);
            service_states.push(state);
        }
        let check_key = Arc::new(Mutex::new(None));
        for ((replica, pool), state) in core.replicas.iter().zip(&replicas).zip(service_states) {
            let (name, routing) = (core.name.clone(), core.routing.clone());
            let check: crate::backend::BoxFuture<'static, ()> = if tidb {
                let probe = tidb::replica_read::TidbProbe { health: state };
                // Nothing to wait for: in rotation from the start, as the primary is.
                let max_lag = routing.get().max_replica_lag;
                crate::route::health::apply(&name, replica, max_lag, probe.outcome());
                Box::pin(crate::route::health::run(
                    name,
                    replica.clone(),
                    routing,
                    probe,
                ))
            } else {
                let probe = relay::routing::MyProbe {
                    pool: pool.clone(),
                    key: check_key.clone(),
                    pool_name: core.name.clone(),
                };
                Box::pin(crate::route::health::run(
                    name,
                    replica.clone(),
                    routing,
                    probe,
                ))
            };
            core.checks.lock().spawn(check);
        }
        Ok(MyService {
            core,
            client_auth: p.client_auth,
            users,
            primary,
            replicas,
            check_key,
            greeting,
            known_schemas: Mutex::default(),
            prepared_per_connection: p.limits.prepared_statements_per_connection as usize,
            client_tls,
            health,
            status_watch,
        })
    }
}
