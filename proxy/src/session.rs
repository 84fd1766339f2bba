//! Protocol-neutral facts about one client session, shared with the pool (as the checkout's
//! owner), the cancel registry, the leak watcher and, later, the console.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Bytes of the last statement kept for leak reports.
pub const STATEMENT_SNIPPET: usize = 200;

/// Who a client is and what it did last. Attached to every checkout the client makes, so
/// whoever reads the pool's checkouts (leak reports, `SHOW SERVERS`) can name the client
/// holding a connection.
#[derive(Debug)]
pub struct ClientInfo {
    /// Process-unique session id.
    pub id: u64,
    /// Pool name.
    pub pool: Arc<str>,
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
    /// Milliseconds after `connected_at` of the last sign of life: a client message, or the
    /// server finishing everything the client asked.
    last_activity_ms: AtomicU64,
    /// The server is working on something the client asked (not idle).
    busy: AtomicBool,
    /// The start of the last statement the client sent (truncated).
    last_statement: Mutex<String>,
    /// Wakes the session to end it (leak `action = "terminate"`, console `KILL`).
    kill: Notify,
    /// Why the session is being ended, for the client's error.
    kill_reason: Mutex<Option<String>>,
    /// How it is to end: [`NOT_ENDING`], [`END_GRACEFULLY`] or [`END_NOW`].
    ending: AtomicU8,
    /// The session holds its server connection by design and no transaction is open (Dameng
    /// session passthrough): holding it while idle is not a suspected leak.
    hold_expected: AtomicBool,
}

const NOT_ENDING: u8 = 0;
const END_GRACEFULLY: u8 = 1;
const END_NOW: u8 = 2;

impl ClientInfo {
    /// A new session's facts.
    pub fn new(
        pool: Arc<str>,
        addr: SocketAddr,
        user: String,
        database: String,
        application_name: String,
    ) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ClientInfo {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            pool,
            addr,
            user,
            database,
            application_name,
            connected_at: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            last_statement: Mutex::new(String::new()),
            kill: Notify::new(),
            kill_reason: Mutex::new(None),
            ending: AtomicU8::new(NOT_ENDING),
            hold_expected: AtomicBool::new(false),
        }
    }

    /// The same session under another login (MySQL COM_CHANGE_USER): same id, pool, address
    /// and connect time, the new user, database and application name, nothing recorded yet.
    /// An end already asked of `self` carries over (see [`ClientInfo::carry_ending_from`]).
    pub fn with_identity(&self, user: String, database: String, application_name: String) -> Self {
        let info = ClientInfo {
            id: self.id,
            pool: self.pool.clone(),
            addr: self.addr,
            user,
            database,
            application_name,
            connected_at: self.connected_at,
            last_activity_ms: AtomicU64::new(self.connected_at.elapsed().as_millis() as u64),
            busy: AtomicBool::new(false),
            last_statement: Mutex::new(String::new()),
            kill: Notify::new(),
            kill_reason: Mutex::new(None),
            ending: AtomicU8::new(NOT_ENDING),
            hold_expected: AtomicBool::new(self.hold_expected()),
        };
        info.carry_ending_from(self);
        info
    }

    /// Asks `self` to end the way `old` was asked to, if it was and `self` was not (an end
    /// asked of a session's previous [`ClientInfo`] while it was being replaced).
    pub fn carry_ending_from(&self, old: &ClientInfo) {
        let ending = old.ending.load(Ordering::Relaxed);
        if ending == NOT_ENDING || self.ending.load(Ordering::Relaxed) != NOT_ENDING {
            return;
        }
        let reason = old.kill_reason().unwrap_or_default();
        if ending == END_NOW {
            self.kill(reason);
        } else {
            self.end_gracefully(reason);
        }
    }

    /// Records a sign of life now; `busy`: whether the server now works for the client.
    pub fn touch(&self, busy: bool) {
        let ms = self.connected_at.elapsed().as_millis() as u64;
        self.last_activity_ms.store(ms, Ordering::Relaxed);
        self.busy.store(busy, Ordering::Relaxed);
    }

    /// How long neither the client nor its server has done anything, at `now`; zero while the
    /// server works for the client.
    pub fn idle_for(&self, now: Instant) -> Duration {
        if self.busy.load(Ordering::Relaxed) {
            return Duration::ZERO;
        }
        let last = self.connected_at
            + Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }

    /// Marks whether holding the server connection while idle is expected (see
    /// [`ClientInfo::hold_expected`]).
    pub fn set_hold_expected(&self, expected: bool) {
        self.hold_expected.store(expected, Ordering::Relaxed);
    }

    /// Whether the session holds its server connection by design with no transaction open, so
    /// that leak detection skips it (Dameng pools, outside a transaction).
    pub fn hold_expected(&self) -> bool {
        self.hold_expected.load(Ordering::Relaxed)
    }

    /// Keeps the start of a statement for leak reports (no allocation once warmed up).
    pub fn set_statement(&self, sql: &[u8]) {
        let cut = &sql[..sql.len().min(STATEMENT_SNIPPET)];
        let mut s = self.last_statement.lock();
        s.clear();
        s.push_str(&String::from_utf8_lossy(cut));
    }

    /// The start of the last statement.
    pub fn last_statement(&self) -> String {
        self.last_statement.lock().clone()
    }

    /// Asks the session to end; `reason` is told to the client.
    pub fn kill(&self, reason: String) {
        *self.kill_reason.lock() = Some(reason);
        self.ending.store(END_NOW, Ordering::Relaxed);
        self.kill.notify_one();
    }

    /// Asks the session to end once its current transaction is over (drain, pool removed by a
    /// reload); `reason` is told to the client. Does nothing if an end was already asked for.
    pub fn end_gracefully(&self, reason: String) {
        let asked = self.ending.compare_exchange(
            NOT_ENDING,
            END_GRACEFULLY,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        if asked.is_ok() {
            *self.kill_reason.lock() = Some(reason);
            self.kill.notify_one();
        }
    }

    /// Whether the session was asked to end after its transaction rather than at once.
    pub fn ends_gracefully(&self) -> bool {
        self.ending.load(Ordering::Relaxed) == END_GRACEFULLY
    }

    /// Why [`ClientInfo::kill`] was called.
    pub fn kill_reason(&self) -> Option<String> {
        self.kill_reason.lock().clone()
    }

    /// Completes when [`ClientInfo::kill`] was called.
    pub async fn killed(&self) {
        self.kill.notified().await;
    }
}
