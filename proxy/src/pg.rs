//! PostgreSQL pools: one listener per `[[pools]]` entry with `protocol = "postgres"`.
//!
//! Stages (docs/design.md §2): [`client`] logs the application in (startup, TLS as
//! `[pools.tls] client_mode` says, auth against `[[pools.users]]`), [`relay`] checks a server
//! connection out of the pool at the first message of a transaction (or of the session) and
//! forwards bytes until the server is idle again, [`backend`] opens and logs in server
//! connections, [`cancel`] routes CancelRequests, [`console`] serves the admin console's wire
//! side. [`service()`] builds a pool's [`PgService`] from its config.

pub mod attach;
pub mod backend;
pub mod cancel;
pub mod client;
pub mod console;
pub mod effects;
pub mod errors;
pub mod health;
pub mod login;
pub mod relay;
pub mod replay;
pub mod service;
pub mod statements;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sidepool_config::PoolConfig;
use sidepool_protocol::pg::auth::ScramSecret;

use self::backend::{ConnKey, PgConnector};
use self::cancel::CancelRegistry;
pub use self::service::{LoginParams, PgPool, PgService, PgUser};
use crate::context::Context;
use crate::error::StartError;
use crate::route::Replica;
use crate::service::{PoolCore, Service};
use crate::settings::pool_settings;
use crate::telemetry::Role;
use crate::tls::{ClientTls, ServerTls};

impl std::ops::Deref for PgService {
    type Target = PoolCore;

    fn deref(&self) -> &PoolCore {
        &self.core
    }
}

/// The session stage of a `protocol = "postgres"` pool: its pools (primary and replicas), the
/// replicas' health checks, and the users clients log in as. `cancels` is the process's
/// CancelRequest routing, shared by every PostgreSQL pool.
///
/// # Errors
/// [`StartError::Tls`] when `[pools.tls]` files do not load.
pub fn service(
    p: &PoolConfig,
    ctx: &Context,
    cancels: &Arc<CancelRegistry>,
) -> Result<Arc<dyn Service>, StartError> {
    let tls_error = |source| StartError::tls(&p.name, source);
    let client_tls = ClientTls::from_config(p.tls.as_ref()).map_err(tls_error)?;
    let server_tls = ServerTls::from_config(p.tls.as_ref(), &p.primary.host).map_err(tls_error)?;
    let users: HashMap<String, PgUser> = p
        .users
        .iter()
        .map(|u| {
            let password = u.password.expose().to_owned();
            let scram = ScramSecret::from_password(&password);
            (u.name.clone(), PgUser { password, scram })
        })
        .collect();
    let passwords: BTreeMap<String, String> = users
        .iter()
        .map(|(k, u)| (k.clone(), u.password.clone()))
        .collect();
    let tcp = crate::net::shared(&p.tcp);
    let connector = PgConnector {
        addr: p.primary.to_string(),
        passwords: passwords.clone(),
        tls: server_tls,
        tcp: tcp.clone(),
    };
    let metrics = Arc::new(ctx.telemetry.pool_metrics(
        &p.name,
        &p.primary.to_string(),
        Role::Primary,
    ));
    let primary = PgPool::with_observer(connector, pool_settings(&p.limits), metrics.clone());
    let mut core = PoolCore::new(p, Arc::new(primary.clone()), metrics, tcp);
    let replicas = replica_pools(p, ctx, &passwords, &mut core)?;
    // Replica checks log in as the first configured user to `postgres` until a client logs in.
    let first_user = p.users.first().map_or("postgres", |u| u.name.as_str());
    let check_key = Arc::new(parking_lot::Mutex::new(ConnKey {
        user: first_user.into(),
        database: "postgres".into(),
    }));
    spawn_replica_checks(&core, &replicas, &check_key);
    crate::fleet::join_all(
        &core,
        p,
        &primary,
        &replicas,
        crate::fleet::pg::PgDialect::new,
        &ctx.telemetry,
    );
    Ok(Arc::new(PgService {
        core,
        client_tls,
        client_auth: p.client_auth,
        mock_key: rand::random(),
        users,
        primary,
        replicas,
        check_key,
        cancels: cancels.clone(),
        hub: ctx.hub.clone(),
        login_params: Default::default(),
        statement_names: Default::default(),
        startup_settings: Default::default(),
        prepared_per_connection: p.limits.prepared_statements_per_connection as usize,
    }))
}

/// Starts the health check of each replica (its pool at the same index as in `core`).
fn spawn_replica_checks(
    core: &PoolCore,
    replicas: &[PgPool],
    check_key: &Arc<parking_lot::Mutex<ConnKey>>,
) {
    for (replica, pool) in core.replicas.iter().zip(replicas) {
        let probe = health::PgProbe {
            pool: pool.clone(),
            key: check_key.clone(),
            pool_name: core.name.clone(),
        };
        core.checks.lock().spawn(crate::route::health::run(
            core.name.clone(),
            replica.clone(),
            core.routing.clone(),
            probe,
        ));
    }
}

/// One pool per configured replica, each also listed in `core.replicas` at the same index.
fn replica_pools(
    p: &PoolConfig,
    ctx: &Context,
    passwords: &BTreeMap<String, String>,
    core: &mut PoolCore,
) -> Result<Vec<PgPool>, StartError> {
    let mut replicas = Vec::new();
    for addr in &p.replicas {
        let connector = PgConnector {
            addr: addr.to_string(),
            passwords: passwords.clone(),
            tls: ServerTls::from_config(p.tls.as_ref(), &addr.host)
                .map_err(|source| StartError::tls(&p.name, source))?,
            tcp: core.tcp.clone(),
        };
        let metrics = Arc::new(ctx.telemetry.pool_metrics(
            &p.name,
            &addr.to_string(),
            Role::Replica,
        ));
        let pool = PgPool::with_observer(connector, pool_settings(&p.limits), metrics.clone());
        core.replicas.push(Arc::new(Replica::new(
            addr.to_string(),
            Arc::new(pool.clone()),
            metrics,
        )));
        replicas.push(pool);
    }
    Ok(replicas)
}
