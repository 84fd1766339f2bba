//! Protocol-neutral facts about one client session, shared with the pool (as the checkout's
//! owner), the cancel registry and, later, the leak detector and console.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

/// Who a client is. Attached to every checkout the client makes, so whoever reads the pool's
/// checkouts (leak reports, `SHOW SERVERS`) can name the client holding a connection.
#[derive(Debug)]
pub struct ClientInfo {
    /// Process-unique session id.
    pub id: u64,
    /// Pool name.
    pub pool: std::sync::Arc<str>,
    /// The client's address.
    pub addr: SocketAddr,
    /// Database user.
    pub user: String,
    /// Database name.
    pub database: String,
    /// PostgreSQL `application_name` / MySQL `program_name`, empty if not sent.
    pub application_name: String,
    /// When the client connected.
    pub connected_at: Instant,
}

impl ClientInfo {
    /// Allocates the next session id.
    pub fn next_id() -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }
}
