//! CancelRequest routing. Clients get a BackendKeyData of sidepool's own at login; a cancel that
//! names it is forwarded to whichever server connection serves that client at that moment, and
//! is dropped when none does (a cancel can then never hit another client's query).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use parking_lot::Mutex;
use sidepool_protocol::pg::startup;
use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::backend::CancelTarget;

/// Per-session slot naming the server connection currently serving the client.
#[derive(Debug, Default)]
pub struct CancelSlot(Mutex<Option<CancelTarget>>);

impl CancelSlot {
    /// Records the server connection now serving the client (`None` when released).
    pub fn set(&self, target: Option<CancelTarget>) {
        *self.0.lock() = target;
    }
}

/// Live sessions by the key sidepool handed them.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    next_pid: AtomicI32,
    sessions: Mutex<HashMap<i32, (i32, Arc<CancelSlot>)>>,
}

/// A registration that removes itself when the session ends.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<CancelRegistry>,
    /// The key given to the client.
    pub pid: i32,
    /// The secret given to the client.
    pub secret: i32,
    /// The session's slot.
    pub slot: Arc<CancelSlot>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.sessions.lock().remove(&self.pid);
    }
}

impl CancelRegistry {
    /// Registers a new session and returns the key to give its client.
    pub fn register(self: &Arc<Self>) -> Registration {
        let slot = Arc::new(CancelSlot::default());
        let secret: i32 = rand::random();
        let mut sessions = self.sessions.lock();
        let pid = loop {
            let pid = self.next_pid.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff;
            if pid != 0 && !sessions.contains_key(&pid) {
                break pid;
            }
        };
        sessions.insert(pid, (secret, slot.clone()));
        Registration {
            registry: self.clone(),
            pid,
            secret,
            slot,
        }
    }

    /// Forwards a client's CancelRequest to the server connection serving that session now.
    /// Unknown keys, wrong secrets and idle sessions are ignored, as PostgreSQL does.
    pub async fn cancel(&self, pid: i32, secret: &[u8]) {
        let target = {
            let sessions = self.sessions.lock();
            let Some((expected, slot)) = sessions.get(&pid) else {
                return;
            };
            if !bool::from(expected.to_be_bytes().ct_eq(secret)) {
                return;
            }
            slot.0.lock().clone()
        };
        if let Some(target) = target {
            send(&target).await;
        }
    }
}

/// Sends a CancelRequest for `target`'s running query on a connection of its own; failures
/// are logged, not returned (a cancel is best effort, as in PostgreSQL).
pub async fn send(target: &CancelTarget) {
    match TcpStream::connect(target.addr).await {
        Ok(mut s) => {
            let _ = s
                .write_all(&startup::cancel_request(target.pid, &target.secret))
                .await;
            let _ = s.shutdown().await;
            tracing::debug!(server.addr = %target.addr, "forwarded cancel request");
        }
        Err(e) => {
            tracing::warn!(server.addr = %target.addr, error = %e, "cannot forward cancel request")
        }
    }
}
