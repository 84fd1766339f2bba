//! The fleet census in MySQL and MariaDB (docs/fleet-budget.md §3): `GET_LOCK` names, which
//! are server-wide, under `sidepool/<fleet>/` — `r0`–`r63` reservations, `m0`–`m255`
//! membership and `h0`–`h255` hunger — counted with `IS_USED_LOCK` (MySQL cannot list a
//! server's lock names), and the sessions of the pool's users counted in
//! `information_schema.PROCESSLIST`, always after the reservations. Several statements, each
//! a round trip: server connections do not enable multi-statements.
//!
//! Without the `PROCESS` privilege the processlist shows only the user's own sessions, so a
//! pool with several users needs `PROCESS` for its census to see them all.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::{Ask, Dialect, JOIN_WAIT, Reading, Spec};
use crate::backend::BoxFuture;
use crate::error::BackendError;
use crate::mysql::backend::{MyConnector, Reply, ServerConn};

/// Reservation names per fleet.
const RESERVATIONS: u32 = 64;
/// Membership (and hunger) names per fleet: at most this many members are told apart.
const MEMBERS: u32 = 256;
/// Reservation names a census tries before it gives up on reserving this time.
const RESERVE_TRIES: u32 = 4;

/// The census SQL of one backend of a MySQL/MariaDB fleet.
#[derive(Debug)]
pub struct MyDialect {
    /// `sidepool/<fleet id in hex>/`.
    prefix: String,
    /// This member's slot among the `m`/`h` names, `MEMBERS` until the first census picks one.
    slot: AtomicU32,
    /// The reservation name the last census took.
    reserved: AtomicU32,
    /// Counts the sessions of the pool's users.
    sessions: String,
    total: u32,
    /// Where the member's slot search starts.
    start: u32,
}

impl MyDialect {
    /// The SQL for `spec`.
    pub fn new(spec: &Spec) -> Self {
        let prefix = format!("sidepool/{:x}/", spec.fleet_id);
        let users = if spec.users.is_empty() {
            "SUBSTRING_INDEX(USER(), '@', 1)".to_owned()
        } else {
            format!("SUBSTRING_INDEX(USER(), '@', 1), {}", spec.users_sql(true))
        };
        MyDialect {
            slot: AtomicU32::new(MEMBERS),
            reserved: AtomicU32::new(0),
            sessions: format!(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER IN ({users})"
            ),
            total: spec.total,
            start: spec.member % MEMBERS,
            prefix,
        }
    }

    /// Counts reservations, members, and hungry members other than `slot`.
    fn counts(&self, slot: u32) -> String {
        let p = &self.prefix;
        format!(
            "WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < {last}) \
             SELECT COUNT(IF(n < {RESERVATIONS}, IS_USED_LOCK(CONCAT('{p}r', n)), NULL)), \
             COUNT(IS_USED_LOCK(CONCAT('{p}m', n))), \
             COUNT(IF(n <> {slot}, IS_USED_LOCK(CONCAT('{p}h', n)), NULL)) FROM s",
            last = MEMBERS - 1
        )
    }

    fn name(&self, kind: char, i: u32) -> String {
        format!("{}{kind}{i}", self.prefix)
    }

    /// This member's slot: the one it has, else the first free one from its start.
    async fn slot(&self, conn: &mut ServerConn) -> Result<u32, BackendError> {
        let have = self.slot.load(Ordering::Relaxed);
        if have < MEMBERS {
            return Ok(have);
        }
        let p = &self.prefix;
        let sql = format!(
            "WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < {last}) \
             SELECT MIN((n + {start}) % {MEMBERS}) FROM s \
             WHERE IS_FREE_LOCK(CONCAT('{p}m', (n + {start}) % {MEMBERS}))",
            last = MEMBERS - 1,
            start = self.start
        );
        let slot = first_int(conn.query_must(&sql).await?).unwrap_or(self.start);
        self.slot.store(slot, Ordering::Relaxed);
        Ok(slot)
    }

    /// `GET_LOCK(name, 0)`: whether this session holds it now.
    async fn take(&self, conn: &mut ServerConn, name: &str) -> Result<bool, BackendError> {
        let reply = conn
            .query_must(&format!("SELECT GET_LOCK('{name}', 0)"))
            .await?;
        Ok(first_int(reply) == Some(1))
    }

    /// Reservations plus sessions, as a joiner counts them (itself included).
    async fn used(&self, conn: &mut ServerConn) -> Result<u32, BackendError> {
        let counts = conn.query_must(&self.counts(MEMBERS)).await?;
        let reservations = first_int(counts).unwrap_or(0);
        let sessions = first_int(conn.query_must(&self.sessions).await?).unwrap_or(0);
        Ok(reservations + sessions)
    }
}

/// The first column of the first row, as a number.
fn first_int(reply: Reply) -> Option<u32> {
    ints(reply).into_iter().next()
}

/// The first row's columns as numbers (NULL and non-numbers skipped).
fn ints(reply: Reply) -> Vec<u32> {
    match reply {
        Reply::Rows(rows) => rows
            .into_iter()
            .next()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| v.and_then(|v| v.parse().ok()))
            .collect(),
        _ => Vec::new(),
    }
}

impl Dialect for MyDialect {
    type Connector = MyConnector;

    fn census<'a>(
        &'a self,
        conn: &'a mut ServerConn,
        ask: Ask,
    ) -> BoxFuture<'a, Result<Reading, BackendError>> {
        Box::pin(async move {
            // An idle pooled connection holds no lock of a client's: GET_LOCK pins a client
            // to its connection, and COM_RESET_CONNECTION releases them in session mode.
            conn.query_must("SELECT RELEASE_ALL_LOCKS()").await?;
            let slot = self.slot(conn).await?;
            self.take(conn, &self.name('m', slot)).await?;
            if ask.hungry {
                self.take(conn, &self.name('h', slot)).await?;
            }
            let mut reserved = false;
            if ask.reserve {
                let first = rand::Rng::gen_range(&mut rand::thread_rng(), 0..RESERVATIONS);
                for i in (0..RESERVE_TRIES).map(|k| (first + k) % RESERVATIONS) {
                    if self.take(conn, &self.name('r', i)).await? {
                        self.reserved.store(i, Ordering::Relaxed);
                        reserved = true;
                        break;
                    }
                }
            }
            let counts = ints(conn.query_must(&self.counts(slot)).await?);
            let sessions = first_int(conn.query_must(&self.sessions).await?);
            let (Some(&reservations), Some(&members), Some(&hungry_others), Some(backends)) =
                (counts.first(), counts.get(1), counts.get(2), sessions)
            else {
                return Err(BackendError::Unexpected {
                    addr: String::new(),
                    what: "fleet census result",
                });
            };
            Ok(Reading {
                reserved,
                reservations,
                members,
                hungry_others,
                backends,
            })
        })
    }

    fn unreserve<'a>(
        &'a self,
        conn: &'a mut ServerConn,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let name = self.name('r', self.reserved.load(Ordering::Relaxed));
            conn.query_must(&format!("SELECT RELEASE_LOCK('{name}')"))
                .await
                .map(|_| ())
        })
    }

    fn join<'a>(&'a self, conn: &'a mut ServerConn) -> BoxFuture<'a, Result<bool, BackendError>> {
        Box::pin(async move {
            let deadline = Instant::now() + JOIN_WAIT;
            loop {
                if self.used(conn).await? <= self.total {
                    return Ok(true);
                }
                if Instant::now() >= deadline {
                    return Ok(false);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_within_mysqls_64_characters_and_users_are_escaped() {
        let spec = Spec {
            pool: "app".into(),
            backend: "db:3306".into(),
            total: 12,
            min_share: 1,
            fleet_id: 0x7fff_ffff,
            member: 1 << 29,
            users: vec!["o'hara\\x".into()],
        };
        let d = MyDialect::new(&spec);
        assert!(d.name('r', RESERVATIONS - 1).len() <= 64);
        assert_eq!(d.name('h', 255), "sidepool/7fffffff/h255");
        assert!(d.sessions.contains("'o''hara\\\\x'"), "{}", d.sessions);
        let counts = d.counts(3);
        assert!(
            counts.contains("n < 255") && counts.contains("n <> 3"),
            "{counts}"
        );
    }
}
