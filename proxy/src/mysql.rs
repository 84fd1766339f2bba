//! MySQL, MariaDB and TiDB pools: one listener per `[[pools]]` entry with `protocol = "mysql"`
//! or `"tidb"`.
//!
//! Stages (docs/design.md §2): [`client`] greets the application and authenticates it against
//! `[[pools.users]]`, [`relay`] checks a server connection out at the first command of a
//! transaction (or holds one for the session) and forwards packets until the server reports
//! no transaction, [`backend`] opens and logs in server connections, [`effects`] finds what a
//! statement does to session state, [`replay`] moves that state between server connections.

pub mod attach;
pub mod auth;
pub mod backend;
pub mod client;
pub mod effects;
pub mod errors;
pub mod login;
pub mod relay;
pub mod replay;
pub mod service;
pub mod tidb;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use sidepool_config::{PoolConfig, Protocol};

use self::backend::{ConnKey, MyConnector};
pub use self::service::{MyPool, MyService};
use crate::backend::{Backend, BoxFuture};
use crate::context::Context;
use crate::error::StartError;
use crate::route::Replica;
use crate::service::{PoolCore, Service};
use crate::settings::pool_settings;
use crate::telemetry::{Role, Telemetry};
use crate::tls::{ClientTls, ServerTls, TlsError};

impl std::ops::Deref for MyService {
    type Target = PoolCore;

    fn deref(&self) -> &PoolCore {
        &self.core
    }
}

/// The session stage of a `protocol = "mysql"` or `"tidb"` pool. Starts the TiDB status watch
/// when configured, so it must run inside the runtime.
///
/// # Errors
/// [`StartError::Tls`] when `[pools.tls]` files do not load.
pub fn service(p: &PoolConfig, ctx: &Context) -> Result<Arc<dyn Service>, StartError> {
    build(p, &ctx.telemetry)
        .map(|svc| Arc::new(svc) as Arc<dyn Service>)
        .map_err(|source| StartError::tls(&p.name, source))
}

fn build(p: &PoolConfig, telemetry: &Telemetry) -> Result<MyService, TlsError> {
    let client_tls = ClientTls::for_mysql(p.tls.as_ref())?;
    let server_tls = ServerTls::for_mysql(p.tls.as_ref(), &p.primary.host)?;
    let health = Arc::new(tidb::Health::default());
    let users: HashMap<String, String> = p
        .users
        .iter()
        .map(|u| (u.name.clone(), u.password.expose().to_owned()))
        .collect();
    let greeting = Arc::new(Mutex::new(None));
    let tcp = crate::net::shared(&p.tcp);
    let connector = MyConnector {
        addr: p.primary.to_string(),
        tcp: tcp.clone(),
        passwords: users.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        greeting: greeting.clone(),
        tls: server_tls,
        health: health.clone(),
        tidb: p.protocol == Protocol::Tidb,
        replica_read: None,
    };
    let metrics = Arc::new(telemetry.pool_metrics(&p.name, &p.primary.to_string(), Role::Primary));
    let primary = MyPool::with_observer(connector, pool_settings(&p.limits), metrics.clone());
    let backend: Arc<dyn Backend> = Arc::new(primary.clone());
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
    let mut core = PoolCore::new(p, backend, metrics, tcp);
    let (replicas, service_states) = replica_pools(p, telemetry, &users, &health, &mut core)?;
    let check_key = Arc::new(Mutex::new(None));
    spawn_checks(
        &core,
        &replicas,
        service_states,
        &check_key,
        p.protocol == Protocol::Tidb,
    );
    crate::fleet::join_all(
        &core,
        p,
        &primary,
        &replicas,
        crate::fleet::mysql::MyDialect::new,
        telemetry,
    );
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

/// One pool per replica backend, each also listed in `core.replicas` at the same index, with
/// the service state its health check follows.
fn replica_pools(
    p: &PoolConfig,
    telemetry: &Telemetry,
    users: &HashMap<String, String>,
    health: &Arc<tidb::Health>,
    core: &mut PoolCore,
) -> Result<(Vec<MyPool>, Vec<Arc<tidb::Health>>), TlsError> {
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
            tcp: core.tcp.clone(),
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
        core.replicas.push(Arc::new(Replica::new(
            label,
            Arc::new(pool.clone()),
            metrics,
        )));
        replicas.push(pool);
        service_states.push(state);
    }
    Ok((replicas, service_states))
}

/// Starts each replica's health check: TiDB's status-port state, or MySQL's lag query.
fn spawn_checks(
    core: &PoolCore,
    replicas: &[MyPool],
    service_states: Vec<Arc<tidb::Health>>,
    check_key: &Arc<Mutex<Option<ConnKey>>>,
    tidb: bool,
) {
    for ((replica, pool), state) in core.replicas.iter().zip(replicas).zip(service_states) {
        let (name, routing) = (core.name.clone(), core.routing.clone());
        let check: BoxFuture<'static, ()> = if tidb {
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
}
