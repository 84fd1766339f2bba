//! Turns a validated `Config` into running listeners and pools, and shuts them down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sidepool_config::{Config, PoolConfig, Protocol};
use sidepool_protocol::pg::auth::ScramSecret;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::admin::{self, AdminPool, AdminState};
use crate::pg::backend::PgConnector;
use crate::pg::cancel::CancelRegistry;
use crate::pg::{PgPool, PgService, PgUser, client};
use crate::settings::pool_settings;
use crate::telemetry::{Role, Telemetry};
use crate::tls::{ClientTls, ServerTls};

/// Why sidepool could not start serving.
#[derive(Debug, Error)]
pub enum StartError {
    /// A listener address could not be bound.
    #[error("pool \"{pool}\": cannot listen on {addr}")]
    Bind {
        pool: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The admin HTTP listener (`[admin] listen`) could not be bound.
    #[error("cannot listen on {addr} for the admin HTTP listener ([admin] listen)")]
    AdminBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// TLS files could not be loaded.
    #[error("pool \"{pool}\": TLS set-up failed")]
    Tls {
        pool: String,
        #[source]
        source: Box<crate::tls::TlsError>,
    },
    /// The config asks for a protocol this build does not serve yet.
    #[error(
        "pool \"{pool}\": protocol \"{protocol}\" is not supported by this version of sidepool"
    )]
    Unsupported {
        pool: String,
        protocol: &'static str,
    },
}

/// A running sidepool: listeners accepting, pools open.
#[derive(Debug)]
pub struct Server {
    addrs: HashMap<String, SocketAddr>,
    pools: Vec<(String, PgPool)>,
    services: Vec<Arc<PgService>>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    admin_addr: SocketAddr,
    draining: Arc<AtomicBool>,
}

impl Server {
    /// Binds every pool's listener and then the admin HTTP listener (all or nothing), and
    /// starts accepting.
    ///
    /// # Errors
    /// A bind failure or an unsupported protocol; nothing is left listening.
    pub async fn start(config: &Config) -> Result<Server, StartError> {
        for p in &config.pools {
            if p.protocol != Protocol::Postgres {
                return Err(StartError::Unsupported {
                    pool: p.name.clone(),
                    protocol: p.protocol.as_str(),
                });
            }
        }
        let mut bound = Vec::new();
        for p in &config.pools {
            let listener =
                TcpListener::bind(p.listen)
                    .await
                    .map_err(|source| StartError::Bind {
                        pool: p.name.clone(),
                        addr: p.listen,
                        source,
                    })?;
            bound.push((p, listener));
        }
        let admin_listener = TcpListener::bind(config.admin.listen)
            .await
            .map_err(|source| StartError::AdminBind {
                addr: config.admin.listen,
                source,
            })?;
        let admin_addr = admin_listener.local_addr().unwrap_or(config.admin.listen);
        let telemetry = Arc::new(Telemetry::new());
        let mut admin_pools = Vec::new();
        let (stop, _) = watch::channel(false);
        let cancels = Arc::new(CancelRegistry::default());
        let mut server = Server {
            addrs: HashMap::new(),
            pools: Vec::new(),
            services: Vec::new(),
            stop,
            tasks: JoinSet::new(),
            admin_addr,
            draining: Default::default(),
        };
        for (p, listener) in bound {
            let addr = listener.local_addr().unwrap_or(p.listen);
            let svc = Arc::new(pg_service(p, cancels.clone(), &telemetry)?);
            admin_pools.push(AdminPool {
                service: svc.clone(),
                protocol: p.protocol.as_str(),
                listen: addr,
                limits: p.limits.clone(),
            });
            server.services.push(svc.clone());
            server.pools.push((p.name.clone(), svc.primary.clone()));
            info!(pool = %p.name, listen = %addr, primary = %p.primary, mode = p.mode.as_str(), "pool listening");
            server.addrs.insert(p.name.clone(), addr);
            let permits = Arc::new(Semaphore::new(p.limits.max_clients as usize));
            server.tasks.spawn(crate::leaks::watch(
                svc.clone(),
                leak_settings(&p.leaks),
                server.stop.subscribe(),
            ));
            server
                .tasks
                .spawn(accept_loop(listener, svc, permits, server.stop.subscribe()));
        }
        let admin = Arc::new(AdminState {
            telemetry: telemetry.clone(),
            pools: admin_pools,
            draining: server.draining.clone(),
        });
        info!(listen = %admin_addr, "admin HTTP listening");
        let stop = server.stop.subscribe();
        server
            .tasks
            .spawn(admin::serve(admin_listener, admin, stop));
        server
            .tasks
            .spawn(metrics_upkeep(telemetry, server.stop.subscribe()));
        Ok(server)
    }

    /// The address the admin HTTP listener is bound to (useful with port 0).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Marks the server as draining (or not): `/readyz` answers 503 while it is.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    /// The address a pool's listener is bound to (useful with port 0).
    pub fn local_addr(&self, pool: &str) -> Option<SocketAddr> {
        self.addrs.get(pool).copied()
    }

    /// A statistics snapshot of a pool's primary backend.
    pub fn pool_stats(&self, pool: &str) -> Option<sidepool_pool::Stats> {
        self.pools
            .iter()
            .find(|(n, _)| n == pool)
            .map(|(_, p)| p.stats())
    }

    /// Suspected leaks of a pool: (now, ever reported) and clients that left a transaction open.
    pub fn leaks(&self, pool: &str) -> Option<(u64, u64, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        let svc = self.services.iter().find(|s| &*s.name == pool)?;
        Some((
            svc.leaked_now.load(Relaxed),
            svc.leaks_total.load(Relaxed),
            svc.abandoned_total.load(Relaxed),
        ))
    }

    /// Pinned clients of a pool: (pinned now, ever pinned). Transaction mode only.
    pub fn pinned(&self, pool: &str) -> Option<(u64, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        let svc = self.services.iter().find(|s| &*s.name == pool)?;
        Some((svc.pinned.load(Relaxed), svc.pins_total.load(Relaxed)))
    }

    /// Stops accepting and closes every pool. Sessions in flight end as their sockets close.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        for (_, pool) in &self.pools {
            pool.close().await;
        }
    }
}

fn leak_settings(l: &sidepool_config::Leaks) -> crate::leaks::LeakSettings {
    crate::leaks::LeakSettings {
        threshold: l.threshold,
        terminate_after: (l.action == sidepool_config::LeakAction::Terminate)
            .then_some(l.terminate_after),
    }
}

/// Moves histogram samples into buckets every few seconds, so they do not pile up unscraped.
async fn metrics_upkeep(telemetry: Arc<Telemetry>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => telemetry.run_upkeep(),
            _ = stop.changed() => return,
        }
    }
}

fn pg_service(
    p: &PoolConfig,
    cancels: Arc<CancelRegistry>,
    telemetry: &Telemetry,
) -> Result<PgService, StartError> {
    let tls_error = |source| StartError::Tls {
        pool: p.name.clone(),
        source: Box::new(source),
    };
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
    let connector = PgConnector {
        addr: p.primary.to_string(),
        passwords: users
            .iter()
            .map(|(k, u)| (k.clone(), u.password.clone()))
            .collect(),
        tls: server_tls,
    };
    let metrics = Arc::new(telemetry.pool_metrics(&p.name, &p.primary.to_string(), Role::Primary));
    Ok(PgService {
        client_tls,
        name: p.name.as_str().into(),
        mode: p.mode,
        client_auth: p.client_auth,
        mock_key: rand::random(),
        users,
        primary: PgPool::with_observer(connector, pool_settings(&p.limits), metrics.clone()),
        metrics,
        clients: Default::default(),
        primary_addr: p.primary.to_string(),
        cancels,
        login_params: Default::default(),
        max_clients: p.limits.max_clients,
        statement_names: Default::default(),
        prepared_per_connection: p.limits.prepared_statements_per_connection as usize,
        pinned: Default::default(),
        pins_total: Default::default(),
        leaks_total: Default::default(),
        leaked_now: Default::default(),
        abandoned_total: Default::default(),
    })
}

async fn accept_loop(
    listener: TcpListener,
    svc: Arc<PgService>,
    permits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
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
                // Out of file descriptors and the like: back off briefly instead of spinning.
                warn!(pool = %svc.name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
