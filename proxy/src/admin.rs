//! The admin HTTP listener (`[admin] listen`, docs/design.md §7): `/metrics`, `/healthz`,
//! `/readyz`, `/pools` and the CPU profiles under `/debug/pprof/`.
//!
//! It only reads shared state (pool snapshots, service counters, the draining flag); the one
//! thing it writes is the scrape-time gauges and readiness probe outcomes in
//! [`crate::telemetry::PoolMetrics`]. It must not log per request above debug: Prometheus and
//! kubelet call it every few seconds.

mod profile;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use sidepool_config::Limits;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::debug;

use crate::service::Service;
use crate::telemetry::{Reachability, Telemetry, saturation};

pub use profile::{DEFAULT_SECONDS, FREQUENCY, Format, MAX_SECONDS, ProfileError, profile_running};

#[cfg(test)]
mod tests;

/// The longest a readiness probe waits for a TCP connect to a backend (kubelet's default probe
/// timeout is 1 s); `connect_timeout` caps it further.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// What the admin listener knows of one pool.
#[derive(Debug)]
pub struct AdminPool {
    /// The pool's service: name, mode, primary pool, counters, metrics.
    pub service: Arc<dyn Service>,
    /// `protocol` as configured.
    pub protocol: &'static str,
    /// The address its listener is bound to.
    pub listen: SocketAddr,
    /// `[pools.limits]` in force.
    pub limits: Limits,
}

/// Shared state behind the admin listener.
#[derive(Debug)]
pub struct AdminState {
    /// The registry `/metrics` renders.
    pub telemetry: Arc<Telemetry>,
    /// Every pool, in config order; replaced on reload.
    pools: parking_lot::RwLock<Arc<Vec<AdminPool>>>,
    /// Set while draining: `/readyz` answers 503.
    pub draining: Arc<AtomicBool>,
}

impl AdminState {
    /// State with no pools yet.
    pub fn new(telemetry: Arc<Telemetry>, draining: Arc<AtomicBool>) -> Self {
        AdminState {
            telemetry,
            pools: Default::default(),
            draining,
        }
    }

    /// Replaces the pool list (start, reload).
    pub fn set_pools(&self, pools: Vec<AdminPool>) {
        *self.pools.write() = Arc::new(pools);
    }

    /// The pools now.
    pub fn pools(&self) -> Arc<Vec<AdminPool>> {
        self.pools.read().clone()
    }
}

/// Serves HTTP/1.1 on `listener` until `stop` changes; open connections end then too.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, stop: watch::Receiver<bool>) {
    let mut accept_stop = stop.clone();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = accept_stop.changed() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                debug!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req).await) }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    debug!(error = %e, "admin connection failed");
                },
                _ = stop.changed() => {}
            }
        });
    }
}

/// One request to its response.
pub async fn route(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    let query = req.uri().query();
    match req.uri().path() {
        "/metrics" => metrics(state),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => readyz(state).await,
        "/pools" => pools(state),
        "/debug/pprof/profile" => profile(query, Format::Pprof).await,
        "/debug/pprof/flamegraph" => profile(query, Format::Flamegraph).await,
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn metrics(state: &AdminState) -> Response<Full<Bytes>> {
    for p in state.pools().iter() {
        let s = p.service.core();
        let (mut active, mut waiting) = (0u64, 0u64);
        for b in s.backends() {
            let st = b.backend.stats();
            b.metrics.observe_backend(&st);
            active += u64::from(st.in_use);
            waiting += u64::from(st.waiting);
        }
        s.metrics.observe_clients(
            active,
            waiting,
            s.clients.load(Relaxed),
            s.pinned.load(Relaxed),
        );
    }
    respond(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        state.telemetry.render(),
    )
}

/// Ready when not draining and every pool's primary is reachable: connections are open, or a
/// TCP connect succeeds now. Every listener is bound before the admin listener starts, so that
/// part holds by construction.
async fn readyz(state: &AdminState) -> Response<Full<Bytes>> {
    let mut problems = Vec::new();
    if state.draining.load(Relaxed) {
        problems.push("draining".to_owned());
    }
    let mut probes = tokio::task::JoinSet::new();
    let pools = state.pools();
    for (i, p) in pools.iter().enumerate() {
        let s = p.service.core();
        let stats = s.backend.stats();
        if stats.idle + stats.in_use > 0 {
            // Open connections prove it; no probe needed.
            continue;
        }
        // Nothing open: the last connect may be long ago, so look now. This also lets a
        // backend that was down come back without waiting for a client to try.
        let addr = s.primary_addr.clone();
        let timeout = p.limits.connect_timeout.min(PROBE_TIMEOUT);
        let dameng = p.protocol == "dameng";
        probes.spawn(async move {
            let ok = if dameng {
                // docs/design.md §8: a STARTUP exchange, no credentials.
                crate::dm::probe::startup(&addr, timeout).await.is_ok()
            } else {
                reachable(&addr, timeout).await
            };
            (i, ok)
        });
    }
    let mut down: Vec<usize> = Vec::new();
    while let Some(joined) = probes.join_next().await {
        let Ok((i, ok)) = joined else { continue };
        pools[i].service.core().metrics.probed(ok);
        if !ok {
            down.push(i);
        }
    }
    down.sort_unstable();
    for i in down {
        let s = pools[i].service.core();
        problems.push(format!(
            "pool \"{}\": primary {} unreachable",
            s.name, s.primary_addr
        ));
    }
    if problems.is_empty() {
        text(StatusCode::OK, "ready\n")
    } else {
        let mut body = problems.join("\n");
        body.push('\n');
        text(StatusCode::SERVICE_UNAVAILABLE, body)
    }
}

async fn reachable(addr: &str, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

fn pools(state: &AdminState) -> Response<Full<Bytes>> {
    let pools: Vec<serde_json::Value> = state.pools().iter().map(pool_json).collect();
    let body = json!({ "pools": pools }).to_string();
    respond(StatusCode::OK, "application/json", body)
}

/// The `/pools` entry of one pool. Durations are in seconds.
pub fn pool_json(p: &AdminPool) -> serde_json::Value {
    let s = p.service.core();
    let st = s.backend.stats();
    let l = &p.limits;
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    json!({
        "name": &*s.name,
        "protocol": p.protocol,
        "mode": s.mode.as_str(),
        "listen": p.listen.to_string(),
        "backend": s.primary_addr,
        "limits": {
            "max_open": l.max_open,
            "max_idle": l.max_idle,
            "min_idle": l.min_idle,
            "max_lifetime_seconds": secs(l.max_lifetime),
            "max_idle_time_seconds": secs(l.max_idle_time),
            "wait_timeout_seconds": l.wait_timeout.as_secs_f64(),
            "max_waiting": l.max_waiting,
            "max_clients": l.max_clients,
            "connect_timeout_seconds": l.connect_timeout.as_secs_f64(),
        },
        "stats": stats_json(&st),
        "clients": s.clients.load(Relaxed),
        "waiting": st.waiting,
        "pinned": s.pinned.load(Relaxed),
        "pins_total": s.pins_total.load(Relaxed),
        "backend_up": s.metrics.reachability(&st) != Reachability::Down,
        "backends": s.backends().iter().map(backend_json).collect::<Vec<_>>(),
        "fleet": s.fleets.lock().iter().map(|f| {
            let mut v = f.snapshot().json();
            v["backend"] = json!(f.backend);
            v
        }).collect::<Vec<_>>(),
    })
}

/// One backend of a pool in `/pools`: role, address, health (replicas) and statistics.
fn backend_json(b: &crate::service::BackendView<'_>) -> serde_json::Value {
    let st = b.backend.stats();
    let mut v = json!({
        "role": b.role.as_str(),
        "backend": b.addr,
        "up": b.metrics.reachability(&st) != Reachability::Down,
        "stats": stats_json(&st),
    });
    if let Some(r) = b.replica {
        v["state"] = json!(r.state().as_str());
        v["in_rotation"] = json!(r.in_rotation());
        v["lag_seconds"] = json!(r.lag().map(|d| d.as_secs_f64()));
        v["outstanding"] = json!(r.outstanding());
    }
    v
}

fn stats_json(st: &sidepool_pool::Stats) -> serde_json::Value {
    json!({
            "max_open": st.max_open,
            "open": st.open,
            "in_use": st.in_use,
            "idle": st.idle,
            "opening": st.opening,
            "closing": st.closing,
            "waiting": st.waiting,
            "saturation_ratio": saturation(st),
            "wait_count": st.wait_count,
            "wait_duration_seconds": st.wait_duration.as_secs_f64(),
            "max_idle_closed": st.max_idle_closed,
            "max_idle_time_closed": st.max_idle_time_closed,
            "max_lifetime_closed": st.max_lifetime_closed,
            "broken_closed": st.broken_closed,
            "rebalance_closed": st.rebalance_closed,
            "reload_closed": st.reload_closed,
            "shutdown_closed": st.shutdown_closed,
            "opened": st.opened,
            "connect_errors": st.connect_errors,
            "wait_timeouts": st.wait_timeouts,
            "rejected": st.rejected,
    })
}

async fn profile(query: Option<&str>, format: Format) -> Response<Full<Bytes>> {
    let seconds = match profile::seconds(query) {
        Ok(s) => s,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    match profile::take(seconds, format).await {
        Ok(body) => {
            let mut r = respond(StatusCode::OK, format.content_type(), body);
            if let Format::Pprof = format {
                r.headers_mut().insert(
                    header::CONTENT_DISPOSITION,
                    HeaderValue::from_static("attachment; filename=\"profile.pb\""),
                );
            }
            r
        }
        Err(ProfileError::Busy) => text(
            StatusCode::CONFLICT,
            "sidepool: a profile is already being taken; retry when it is done\n",
        ),
        Err(e) => {
            let msg = crate::error::chain(&e);
            debug!(error = %msg, "profile failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("sidepool: {msg}\n"),
            )
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body)
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
