//! Turns a validated `Config` into running listeners and pools; reloads a new config into the
//! running ones; drains and shuts them down.
//!
//! Every pool runs as an accept loop and a leak watcher around its protocol's [`Service`].
//! A reload (SIGHUP, console `RELOAD`, or a change of the config file) applies what it can to
//! live pools (limits, leaks) and rebuilds pools whose identity changed (listener, backend,
//! users, TLS, mode); see docs/decisions.md for what a rebuild does to connected clients.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use sidepool_config::{Config, ConfigDiff, PoolConfig, PoolField, Protocol};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{error, info, warn};

use crate::admin::{self, AdminPool, AdminState};
use crate::console::{Hub, ReloadRequest};
use crate::context::Context;
use crate::error::{ReloadError, StartError};
use crate::pg::cancel::CancelRegistry;
use crate::service::Service;
use crate::settings::{LeakSettings, pool_settings};
use crate::telemetry::Telemetry;

/// How often the config file is looked at for changes.
pub const CONFIG_POLL: Duration = Duration::from_secs(1);

/// After `shutdown.timeout`, how long sessions still get to roll back before the pools close.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Services built for a reload, by pool name, with a listener for those whose address moved.
type Fresh = HashMap<String, (Arc<dyn Service>, Option<TcpListener>)>;

/// One pool being served.
#[derive(Debug)]
struct Running {
    config: PoolConfig,
    service: Arc<dyn Service>,
    addr: SocketAddr,
    /// Ends this pool's accept loop and leak watcher.
    stop: watch::Sender<bool>,
    /// The accept loop; gives the listener back when stopped, so a rebuild keeps the socket.
    /// `None` once stopped and collected.
    accept: Option<JoinHandle<TcpListener>>,
    leaks: JoinHandle<()>,
}

/// The config in force and the pools serving it.
#[derive(Debug)]
struct State {
    config: Arc<Config>,
    pools: Vec<Running>,
}

#[derive(Debug)]
struct Shared {
    ctx: Context,
    /// PostgreSQL cancel-key routing, shared by every PostgreSQL pool and kept across reloads.
    cancels: Arc<CancelRegistry>,
    hub: Arc<Hub>,
    admin: Arc<AdminState>,
    state: tokio::sync::Mutex<State>,
    /// Listener addresses by pool name (readable without the state lock).
    addrs: RwLock<HashMap<String, SocketAddr>>,
    draining: Arc<AtomicBool>,
}

/// A running sidepool: listeners accepting, pools open.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    admin_addr: SocketAddr,
}

impl Server {
    /// Binds every pool's listener and then the admin HTTP listener (all or nothing), and
    /// starts accepting. With `config.source` set, the file is watched and reloaded on change.
    ///
    /// # Errors
    /// A bind failure, TLS files that do not load, or an unsupported protocol; nothing is left
    /// listening.
    pub async fn start(config: &Config) -> Result<Server, StartError> {
        let config = Arc::new(config.clone());
        let mut bound = Vec::new();
        for p in &config.pools {
            bound.push((p, bind(p).await?));
        }
        let admin_listener = TcpListener::bind(config.admin.listen)
            .await
            .map_err(|source| StartError::AdminBind {
                addr: config.admin.listen,
                source,
            })?;
        let admin_addr = admin_listener.local_addr().unwrap_or(config.admin.listen);
        let telemetry = Arc::new(Telemetry::new());
        let (reload_tx, reload_rx) = mpsc::channel::<ReloadRequest>(4);
        let hub = Arc::new(Hub::new(config.clone(), reload_tx));
        let ctx = Context {
            telemetry: telemetry.clone(),
            hub: Arc::downgrade(&hub),
        };
        let cancels = Arc::new(CancelRegistry::default());
        let draining = Arc::new(AtomicBool::new(false));
        let mut pools = Vec::new();
        for (p, listener) in bound {
            let service = new_service(p, &ctx, &cancels)?;
            pools.push(run_pool(p, service, listener));
        }
        let admin = Arc::new(AdminState::new(telemetry.clone(), draining.clone()));
        let shared = Arc::new(Shared {
            ctx,
            cancels,
            hub,
            admin: admin.clone(),
            state: tokio::sync::Mutex::new(State {
                config: config.clone(),
                pools,
            }),
            addrs: RwLock::new(HashMap::new()),
            draining,
        });
        shared.publish(&*shared.state.lock().await);
        let (stop, _) = watch::channel(false);
        let mut tasks = JoinSet::new();
        info!(listen = %admin_addr, "admin HTTP listening");
        tasks.spawn(admin::serve(admin_listener, admin, stop.subscribe()));
        tasks.spawn(metrics_upkeep(telemetry, stop.subscribe()));
        tasks.spawn(serve_reloads(shared.clone(), reload_rx, stop.subscribe()));
        if let Some(path) = config.source.clone() {
            // Read now, not in the task: a change right after start must not become the baseline.
            let seen = tokio::fs::read(&path).await.ok();
            tasks.spawn(watch_file(shared.clone(), path, seen, stop.subscribe()));
        }
        Ok(Server {
            shared,
            stop,
            tasks,
            admin_addr,
        })
    }

    /// The address the admin HTTP listener is bound to (useful with port 0).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Marks the server as draining (or not): `/readyz` answers 503 while it is.
    pub fn set_draining(&self, draining: bool) {
        self.shared.draining.store(draining, Ordering::Relaxed);
    }

    /// The address a pool's listener is bound to (useful with port 0).
    pub fn local_addr(&self, pool: &str) -> Option<SocketAddr> {
        self.shared.addrs.read().get(pool).copied()
    }

    /// The config in force (the last one applied).
    pub fn config(&self) -> Arc<Config> {
        self.shared.hub.config()
    }

    /// A running pool by name.
    pub fn pool(&self, pool: &str) -> Option<Arc<dyn Service>> {
        self.shared
            .hub
            .services()
            .into_iter()
            .find(|s| &*s.core().name == pool)
    }

    /// A statistics snapshot of a pool's primary backend.
    pub fn pool_stats(&self, pool: &str) -> Option<sidepool_pool::Stats> {
        self.pool(pool).map(|s| s.core().backend.stats())
    }

    /// Suspected leaks of a pool: (now, ever reported) and clients that left a transaction open.
    pub fn leaks(&self, pool: &str) -> Option<(u64, u64, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        let svc = self.pool(pool)?;
        let c = svc.core();
        Some((
            c.leaked_now.load(Relaxed),
            c.leaks_total.load(Relaxed),
            c.abandoned_total.load(Relaxed),
        ))
    }

    /// Pinned clients of a pool: (pinned now, ever pinned). Transaction mode only.
    pub fn pinned(&self, pool: &str) -> Option<(u64, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        let svc = self.pool(pool)?;
        let c = svc.core();
        Some((c.pinned.load(Relaxed), c.pins_total.load(Relaxed)))
    }

    /// Re-reads the config file the server was started from and applies it (SIGHUP).
    ///
    /// # Errors
    /// Why nothing was applied: the file has problems (all listed), or a listener could not be
    /// bound. The running config stays in force either way.
    pub async fn reload(&self) -> Result<String, ReloadError> {
        self.shared.reload_file().await
    }

    /// Applies `new` to the running pools (as a reload from a file would).
    ///
    /// # Errors
    /// As [`Server::reload`].
    pub async fn apply(&self, new: Config) -> Result<String, ReloadError> {
        self.shared.apply(new).await
    }

    /// Drains (SIGTERM): stops accepting, turns `/readyz` to 503, ends idle clients with the
    /// protocol's shutdown error at once and the others when their transaction is over, waits
    /// up to `timeout` for them, ends the rest (rolling back), then shuts down.
    pub async fn drain(self, timeout: Duration) {
        self.set_draining(true);
        let services = {
            let mut state = self.shared.state.lock().await;
            for p in &mut state.pools {
                let _ = p.stop.send(true);
                // The accept loop hands its listener back; dropping it closes the socket, so
                // new connects are refused rather than left in the backlog.
                if let Some(accept) = p.accept.take() {
                    drop(accept.await);
                }
            }
            state
                .pools
                .iter()
                .map(|p| p.service.clone())
                .collect::<Vec<_>>()
        };
        let reason = "sidepool: shutting down (the pod is terminating); reconnect";
        for s in &services {
            for client in s.core().sessions.list() {
                client.end_gracefully(reason.into());
            }
        }
        let connected = || -> usize { services.iter().map(|s| s.core().sessions.len()).sum() };
        let left = wait_until(timeout, || connected() == 0).await;
        if !left {
            warn!(
                clients = connected(),
                ?timeout,
                "shutdown.timeout reached; ending the remaining sessions"
            );
            for s in &services {
                for client in s.core().sessions.list() {
                    client.kill(format!(
                        "sidepool: shutting down; transaction rolled back after shutdown.timeout \
                         ({timeout:?})"
                    ));
                }
            }
            wait_until(DRAIN_GRACE, || connected() == 0).await;
        }
        info!("drained");
        self.shutdown().await;
    }

    /// Stops accepting and closes every pool. Sessions in flight end as their sockets close.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        let mut state = self.shared.state.lock().await;
        for p in state.pools.drain(..) {
            retire(p, None).await;
        }
    }
}

/// Polls `done` every 20 ms until it holds (true) or `timeout` passes (false).
async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Shared {
    /// Tells the hub, the admin listener and `addrs` which pools run now.
    fn publish(&self, state: &State) {
        self.hub
            .set_services(state.pools.iter().map(|p| p.service.clone()).collect());
        self.hub.set_config(state.config.clone());
        self.admin.set_pools(
            state
                .pools
                .iter()
                .map(|p| AdminPool {
                    service: p.service.clone(),
                    protocol: p.config.protocol.as_str(),
                    listen: p.addr,
                    limits: p.config.limits.clone(),
                })
                .collect(),
        );
        *self.addrs.write() = state
            .pools
            .iter()
            .map(|p| (p.config.name.clone(), p.addr))
            .collect();
    }

    async fn reload_file(&self) -> Result<String, ReloadError> {
        let path = self.state.lock().await.config.source.clone();
        let Some(path) = path else {
            return Err(ReloadError::NoConfigFile);
        };
        match sidepool_config::load(&path) {
            Ok(new) => {
                crate::settings::warn_inline_passwords(&new);
                self.apply(new).await
            }
            Err(errors) => {
                self.ctx.telemetry.config_reloaded(false);
                error!(problems = %errors, file = %path.display(), "config reload failed; the running config stays");
                Err(ReloadError::Invalid {
                    path,
                    source: errors,
                })
            }
        }
    }

    async fn apply(&self, new: Config) -> Result<String, ReloadError> {
        let result = self.apply_inner(new).await;
        self.ctx.telemetry.config_reloaded(result.is_ok());
        match &result {
            Ok(summary) => info!(%summary, "config reloaded"),
            Err(why) => error!(%why, "config reload failed; the running config stays"),
        }
        result
    }

    async fn apply_inner(&self, new: Config) -> Result<String, ReloadError> {
        let mut state = self.state.lock().await;
        let d: ConfigDiff = sidepool_config::diff(&state.config, &new);
        if d.is_empty() {
            state.config = Arc::new(new);
            self.publish(&state);
            return Ok("no changes".into());
        }
        let mut notes = Vec::new();
        if d.needs_restart() {
            notes.push("[runtime] changes take effect at the next restart".to_owned());
        }
        if d.admin_changed || d.log_changed {
            notes.push("[admin] and [log] changes take effect at the next restart".to_owned());
        }
        // Phase 1: everything that can fail, before anything changes.
        let mut fresh = self.prepare(&state, &d, &new).await?;
        // Phase 2: apply.
        let mut old_pools = std::mem::take(&mut state.pools);
        let mut pools = Vec::new();
        for p in &new.pools {
            let old = old_pools
                .iter()
                .position(|r| r.config.name == p.name)
                .map(|i| old_pools.swap_remove(i));
            match (old, fresh.remove(&p.name)) {
                (Some(mut running), None) => {
                    if let Some(change) = d.pools_changed.iter().find(|c| c.name == p.name) {
                        apply_live(&running, p, &change.fields);
                        notes.push(format!(
                            "pool \"{}\": {} applied",
                            p.name,
                            fields(&change.fields)
                        ));
                    }
                    running.config = p.clone();
                    pools.push(running);
                }
                (old, Some((service, listener))) => {
                    let kept = match old {
                        Some(running) => {
                            let why = format!(
                                "sidepool: pool \"{}\" was reconfigured by a config reload; reconnect",
                                p.name
                            );
                            retire(running, Some(why)).await
                        }
                        None => None,
                    };
                    let Some(listener) = listener.or(kept) else {
                        // Cannot happen: an unmoved listener comes back from its accept loop.
                        warn!(pool = %p.name, "no listener for a rebuilt pool; it stays down");
                        continue;
                    };
                    let what = match d.pools_changed.iter().find(|c| c.name == p.name) {
                        Some(c) => format!("pool \"{}\" rebuilt ({})", p.name, fields(&c.fields)),
                        None => format!("pool \"{}\" added", p.name),
                    };
                    notes.push(what);
                    pools.push(run_pool(p, service, listener));
                }
                (None, None) => {}
            }
        }
        for running in old_pools {
            notes.push(format!("pool \"{}\" removed", running.config.name));
            let why = format!(
                "sidepool: pool \"{}\" was removed by a config reload",
                running.config.name
            );
            retire(running, Some(why)).await;
        }
        state.pools = pools;
        state.config = Arc::new(new);
        self.publish(&state);
        Ok(notes.join("; "))
    }

    /// The services of the pools `d` adds or rebuilds, each with its listener when its address
    /// moves (else the running one is kept): all of them or, if any fails, every failure.
    async fn prepare(
        &self,
        state: &State,
        d: &ConfigDiff,
        new: &Config,
    ) -> Result<Fresh, ReloadError> {
        let rebuilt: Vec<&str> = d
            .pools_changed
            .iter()
            .filter(|c| c.needs_rebuild())
            .map(|c| c.name.as_str())
            .collect();
        let mut fresh = Fresh::new();
        let mut problems = Vec::new();
        for name in d
            .pools_added
            .iter()
            .map(String::as_str)
            .chain(rebuilt.iter().copied())
        {
            let Some(p) = new.pool(name) else { continue };
            let moves = state
                .pools
                .iter()
                .find(|r| r.config.name == name)
                .is_none_or(|r| r.config.listen != p.listen);
            let listener = if moves {
                match bind(p).await {
                    Ok(l) => Some(l),
                    Err(e) => {
                        problems.push(e);
                        continue;
                    }
                }
            } else {
                None
            };
            match new_service(p, &self.ctx, &self.cancels) {
                Ok(s) => {
                    fresh.insert(name.to_owned(), (s, listener));
                }
                Err(e) => problems.push(e),
            }
        }
        if !problems.is_empty() {
            return Err(ReloadError::Pools(problems));
        }
        Ok(fresh)
    }
}

fn fields(fields: &[PoolField]) -> String {
    fields
        .iter()
        .map(|f| f.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Pushes live-changeable settings into a running pool.
fn apply_live(running: &Running, p: &PoolConfig, changed: &[PoolField]) {
    let core = running.service.core();
    if changed.contains(&PoolField::Limits) {
        core.set_limits(pool_settings(&p.limits));
    }
    if changed.contains(&PoolField::Routing) {
        crate::route::reconfigure(&core.routing, &core.replicas, p);
    }
    if changed.contains(&PoolField::Limits) || changed.contains(&PoolField::Tcp) {
        core.set_network(&p.tcp, p.limits.query_timeout);
    }
    if changed.contains(&PoolField::Leaks) {
        core.leaks.send_replace(LeakSettings::from_config(&p.leaks));
    }
}

/// Stops a pool: its accept loop and leak watcher end, its clients are asked to end after
/// their transaction (`why`, if given), and its pool closes (idle connections now, the rest as
/// they come back). Returns the listener for reuse.
async fn retire(running: Running, why: Option<String>) -> Option<TcpListener> {
    let _ = running.stop.send(true);
    let listener = match running.accept {
        Some(accept) => accept.await.ok(),
        None => None,
    };
    let _ = running.leaks.await;
    let core = running.service.core();
    if let Some(why) = why {
        for client in core.sessions.list() {
            client.end_gracefully(why.clone());
        }
    }
    core.close().await;
    listener
}

async fn bind(p: &PoolConfig) -> Result<TcpListener, StartError> {
    TcpListener::bind(p.listen)
        .await
        .map_err(|source| StartError::Bind {
            pool: p.name.clone(),
            addr: p.listen,
            source,
        })
}

/// Starts serving `service` on `listener`.
fn run_pool(p: &PoolConfig, service: Arc<dyn Service>, listener: TcpListener) -> Running {
    let addr = listener.local_addr().unwrap_or(p.listen);
    info!(pool = %p.name, listen = %addr, primary = %p.primary, mode = p.mode.as_str(), "pool listening");
    let (stop, _) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(p.limits.max_clients as usize));
    let leaks = tokio::spawn(crate::leaks::watch(service.clone(), stop.subscribe()));
    let accept = Some(tokio::spawn(accept_loop(
        listener,
        service.clone(),
        permits,
        stop.subscribe(),
    )));
    Running {
        config: p.clone(),
        service,
        addr,
        stop,
        accept,
        leaks,
    }
}

/// Answers reload requests from the console.
async fn serve_reloads(
    shared: Arc<Shared>,
    mut requests: mpsc::Receiver<ReloadRequest>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let reply = tokio::select! {
            r = requests.recv() => match r {
                Some(reply) => reply,
                None => return,
            },
            _ = stop.changed() => return,
        };
        let _ = reply.send(shared.reload_file().await);
    }
}

/// Reloads when the config file's content changes. Polling the content (through any symlinks)
/// rather than watching inotify events is immune to how the file is replaced: editors' rename
/// dances, Kubernetes' ConfigMap symlink swap, and access events all look the same. A change is
/// applied once two polls in a row read the same new content (debounce).
async fn watch_file(
    shared: Arc<Shared>,
    path: PathBuf,
    mut applied: Option<Vec<u8>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut candidate: Option<Vec<u8>> = None;
    let mut tick = tokio::time::interval(CONFIG_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        // A missing file (mid-swap) is not a change; the next poll looks again.
        let Ok(now) = tokio::fs::read(&path).await else {
            continue;
        };
        if applied.as_ref() == Some(&now) {
            candidate = None;
            continue;
        }
        if candidate.as_ref() != Some(&now) {
            candidate = Some(now);
            continue;
        }
        info!(file = %path.display(), "config file changed; reloading");
        let _ = shared.reload_file().await;
        applied = candidate.take();
    }
}

/// The session stage of `p`'s protocol, built by the protocol's module.
fn new_service(
    p: &PoolConfig,
    ctx: &Context,
    cancels: &Arc<CancelRegistry>,
) -> Result<Arc<dyn Service>, StartError> {
    match p.protocol {
        Protocol::Postgres => crate::pg::service(p, ctx, cancels),
        Protocol::Mysql | Protocol::Tidb => crate::mysql::service(p, ctx),
        Protocol::Dameng => crate::dm::service(p, ctx),
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

async fn accept_loop(
    listener: TcpListener,
    svc: Arc<dyn Service>,
    permits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> TcpListener {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return listener,
        };
        match accepted {
            Ok((stream, addr)) => {
                let permit = permits.clone().try_acquire_owned().ok();
                tokio::spawn(svc.clone().serve(stream, addr, permit));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off briefly instead of spinning.
                warn!(pool = %svc.core().name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
