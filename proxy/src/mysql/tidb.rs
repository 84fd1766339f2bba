//! TiDB specifics: the status-port watch (`tidb_status_port`). Before a TiDB server is taken
//! out of service (graceful shutdown, rolling upgrade) its status HTTP server answers 500 on
//! `/status`; sidepool polls it and, while it does, stops handing out that backend's
//! connections: new connections are refused by the connector, idle ones count as dead at
//! checkout and are closed by the pool, connections in use finish their transaction and are
//! closed when returned. A 200 puts the backend back in service.
//!
//! Replica reads of the read/write split are in [`replica_read`]. Everything else about TiDB
//! is the MySQL path; TiDB is recognised by its version string
//! ([`Greeting::is_tidb`](sidepool_protocol::mysql::handshake::Greeting::is_tidb)).

pub mod replica_read;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sidepool_pool::PoolSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::backend::Backend;

/// How often the status port is asked.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long one status request may take before it counts as no answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Cap on the status response sidepool reads (only its status line matters).
const MAX_RESPONSE: usize = 8 * 1024;

/// Whether a backend is in service. Shared by the connector, its connections and the watch.
#[derive(Debug, Default)]
pub struct Health {
    /// `Some(message)` while out of service: the whole error text a client gets.
    out: Mutex<Option<Arc<str>>>,
}

impl Health {
    /// `Some(why)` while the backend is out of service.
    pub fn out_of_service(&self) -> Option<Arc<str>> {
        self.out.lock().clone()
    }

    /// Marks the backend out of service (`Some(why)`) or back in service (`None`). Returns
    /// whether that changed anything.
    pub fn set(&self, out: Option<Arc<str>>) -> bool {
        let mut now = self.out.lock();
        let changed = now.is_some() != out.is_some();
        *now = out;
        changed
    }
}

/// What one poll of `/status` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 2xx: in service.
    Up,
    /// Any other HTTP status (TiDB answers 500 while shutting down).
    Draining(u16),
    /// No HTTP answer (refused, timed out, garbage): left to the pool's own connect errors.
    NoAnswer,
}

/// Asks `http://host:port/status` once.
pub async fn poll(host: &str, port: u16) -> Status {
    match tokio::time::timeout(REQUEST_TIMEOUT, get_status(host, port)).await {
        Ok(Some(code)) if (200..300).contains(&code) => Status::Up,
        Ok(Some(code)) => Status::Draining(code),
        Ok(None) | Err(_) => Status::NoAnswer,
    }
}

/// One `GET /status` over HTTP/1.1 with `Connection: close`: the response's status code.
async fn get_status(host: &str, port: u16) -> Option<u16> {
    let mut tcp = TcpStream::connect((host, port)).await.ok()?;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let request = format!(
        "GET /status HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: sidepool\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.ok()?;
    let mut head = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < MAX_RESPONSE {
        let n = tcp.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    status_code(&head)
}

/// The status code of an HTTP/1.x status line (`HTTP/1.1 500 Internal Server Error`).
pub fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_ascii_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3).then_some(())?;
    code.parse().ok()
}

/// A running status watch; stops when dropped.
#[derive(Debug)]
pub struct StatusWatch {
    task: JoinHandle<()>,
}

impl Drop for StatusWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watches `host:status_port` for pool `pool`'s backend `backend` (`host:port`, for logs)
/// and applies the answers to `health` and `pool`.
pub fn watch(
    pool: Arc<str>,
    backend: String,
    host: String,
    status_port: u16,
    health: Arc<Health>,
    pool_handle: Arc<dyn Backend>,
) -> StatusWatch {
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The pool's own limits while they are overridden to keep no idle connection.
        let mut saved: Option<PoolSettings> = None;
        loop {
            tick.tick().await;
            match poll(&host, status_port).await {
                Status::Up => {
                    if health.set(None) {
                        info!(pool = %pool, backend = %backend, "TiDB back in service; handing out its connections again");
                    }
                    if let Some(s) = saved.take() {
                        restore(&*pool_handle, s);
                    }
                }
                Status::Draining(code) => {
                    let why = format!(
                        "sidepool: Can't connect to MySQL server on '{backend}' (pool \"{pool}\"): \
                         TiDB is going out of service (its status port {host}:{status_port} \
                         answered {code}); retry shortly: sidepool hands out its connections \
                         again once /status answers 200"
                    );
                    if health.set(Some(why.into())) {
                        warn!(pool = %pool, backend = %backend, status = code, "TiDB going out of service; no new checkouts, open transactions may finish");
                    }
                    if saved.is_none() {
                        saved = Some(keep_no_idle(&*pool_handle));
                    }
                }
                Status::NoAnswer => {
                    debug!(pool = %pool, backend = %backend, "TiDB status port did not answer")
                }
            }
        }
    });
    StatusWatch { task }
}

/// Closes the backend's idle connections and keeps none while it is out of service (returned
/// connections close at check-in). Returns the settings to put back.
fn keep_no_idle(pool: &dyn Backend) -> PoolSettings {
    let before = pool.settings();
    pool.set_settings(no_idle(&before));
    before
}

fn no_idle(s: &PoolSettings) -> PoolSettings {
    PoolSettings {
        max_idle: 0,
        min_idle: 0,
        ..s.clone()
    }
}

/// Puts `saved` back unless a reload replaced the override meanwhile (then the reload's
/// settings stand).
fn restore(pool: &dyn Backend, saved: PoolSettings) {
    let now = pool.settings();
    if now.max_idle == 0 && now.min_idle == 0 && now.max_open == saved.max_open {
        pool.set_settings(saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_strictly() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            status_code(b"HTTP/1.0 500 Internal Server Error\r\nx"),
            Some(500)
        );
        assert_eq!(status_code(b"HTTP/2 200\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 20 OK\r\n"), None);
        assert_eq!(status_code(b"garbage"), None);
        assert_eq!(status_code(b""), None);
    }

    /// A one-shot HTTP server answering every connection with `reply`; its port.
    async fn must_serve(reply: &'static [u8]) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut req = [0u8; 1024];
                let _ = tcp.read(&mut req).await;
                let _ = tcp.write_all(reply).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn poll_reads_up_draining_and_no_answer() {
        let up = must_serve(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").await;
        assert_eq!(poll("127.0.0.1", up).await, Status::Up);
        let down = must_serve(b"HTTP/1.1 500 Internal Server Error\r\n\r\n").await;
        assert_eq!(poll("127.0.0.1", down).await, Status::Draining(500));
        let junk = must_serve(b"SSH-2.0-OpenSSH\r\n").await;
        assert_eq!(poll("127.0.0.1", junk).await, Status::NoAnswer);
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        assert_eq!(poll("127.0.0.1", closed).await, Status::NoAnswer);
    }

    #[test]
    fn health_reports_changes_only() {
        let h = Health::default();
        assert!(h.out_of_service().is_none());
        assert!(h.set(Some("down".into())));
        assert!(!h.set(Some("still down".into())));
        assert_eq!(h.out_of_service().as_deref(), Some("still down"));
        assert!(h.set(None));
        assert!(!h.set(None));
    }
}
