//! Read/write split hooks of the MySQL relay (docs/design.md §6, transaction mode only), and the
//! MySQL replica check.
//!
//! The classic protocol runs one command at a time, so a command that finds no server
//! connection attached starts a transaction or autocommit statement: [`Relay::route_target`]
//! picks a replica for reads (`COM_QUERY` by its text, `COM_STMT_PREPARE`/`COM_STMT_EXECUTE` by
//! the statement's text classified at prepare) when autocommit is on, the client has not written
//! within `read_your_writes`, and a replica is in rotation; [`crate::lifecycle::attach`] checks
//! the connection out, falling back to the primary when the replica cannot be reached.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sidepool_protocol::mysql::command as com;
use sidepool_protocol::sql::{self, Dialect, Route, WriteFunctions};

use super::Relay;
use crate::backend::BoxFuture;
use crate::error::chain;
use crate::lifecycle;
use crate::mysql::backend::{ConnKey, Reply};
use crate::mysql::effects::effects;
use crate::mysql::service::{MyPool, MyService};
use crate::route;
use crate::route::health::{Checked, Probe};

/// What routing needs to know of one MySQL text: may it start a transaction on a replica, and
/// may it write.
pub fn sql_route(text: &[u8], functions: &WriteFunctions) -> (bool, bool) {
    let c = sql::classify(text, Dialect::MySql, functions);
    // Pins, `SET TRANSACTION` for the next statement and schema changes stay on the primary.
    let stateful = !effects(&String::from_utf8_lossy(text)).is_empty();
    (
        route::wanted(&c) == Route::Replica && !stateful,
        route::writes(c.kind),
    )
}

impl Relay {
    /// The replica (index) a command that finds no server attached should run on, or `None`
    /// for the primary.
    pub(super) fn route_target(&self, code: u8, payload: &[u8]) -> Option<usize> {
        if self.session_mode
            || self.pinned.is_some()
            || self.autocommit_off()
            || self.svc.core.replicas.is_empty()
        {
            return None;
        }
        let s = self.svc.core.routing.get();
        if !s.split || self.ryw.holds(s.read_your_writes) {
            return None;
        }
        let read = match code {
            com::QUERY | com::STMT_PREPARE => sql_route(com::text(payload), &s.write_functions).0,
            com::STMT_EXECUTE => {
                let cursor = com::execute_flags(payload)
                    .is_some_and(|f| f & com::CURSOR_TYPE_READ_ONLY != 0);
                !cursor
                    && com::statement_id(payload)
                        .and_then(|id| self.statements.get(&id))
                        .is_some_and(|st| st.read)
            }
            _ => false,
        };
        if read {
            self.svc.core.pick_replica()
        } else {
            None
        }
    }

    /// Records that a command sent to the primary may write (read-your-writes).
    /// Called before the command runs; a write routed anywhere but the primary fails there.
    pub(super) fn note_write(&mut self, code: u8, payload: &[u8]) {
        if self.svc.core.replicas.is_empty() {
            return;
        }
        let writes = match code {
            com::QUERY => {
                let functions = &self.svc.core.routing.get().write_functions;
                sql_route(com::text(payload), functions).1
            }
            com::STMT_EXECUTE => com::statement_id(payload)
                .and_then(|id| self.statements.get(&id))
                .is_none_or(|st| st.writes),
            _ => false,
        };
        if writes {
            self.ryw.wrote();
        }
    }

    /// Metric handles of the attached connection's backend.
    pub(super) fn backend_metrics(&self) -> &crate::telemetry::PoolMetrics {
        match self.server.as_ref().and_then(|a| a.replica.as_ref()) {
            Some(lease) => &lease.replica().metrics,
            None => &self.svc.metrics,
        }
    }
}

/// `SHOW SLAVE STATUS` column of `Seconds_Behind_Master` (MySQL 5.x and 8, MariaDB; MySQL's
/// `SHOW REPLICA STATUS` has `Seconds_Behind_Source` at the same place). sidepool's own
/// queries get rows without column names, so the check relies on this documented layout and
/// checks the two running columns before trusting it.
const SECONDS_BEHIND: usize = 32;
const IO_RUNNING: usize = 10;
const SQL_RUNNING: usize = 11;

/// Checks one MySQL/MariaDB replica over a connection of its own pool.
#[derive(Debug)]
pub struct MyProbe {
    /// The replica's pool.
    pub pool: MyPool,
    /// The key of the last client login (capabilities and collation are part of a MySQL key);
    /// `None` until a client logged in, and nothing is checked before.
    pub key: Arc<Mutex<Option<ConnKey>>>,
    /// Pool name, for the checkout's owner.
    pub pool_name: Arc<str>,
}

impl Probe for MyProbe {
    fn check(&self) -> BoxFuture<'_, Result<Checked, String>> {
        Box::pin(async move {
            let Some(key) = self.key.lock().clone() else {
                return Ok(Checked::Skipped);
            };
            let mut conn = lifecycle::checkout_for_check::<MyService>(
                &self.pool,
                &self.pool_name,
                &key,
                key.user.to_string(),
                String::new(),
            )
            .await?;
            match conn.query("SHOW SLAVE STATUS").await {
                Ok(Reply::Rows(rows)) => {
                    conn.release();
                    Ok(interpret(&rows))
                }
                Ok(Reply::Err(_)) => {
                    conn.release();
                    Err("SHOW SLAVE STATUS was refused (the check needs REPLICATION CLIENT / SLAVE MONITOR)".to_owned())
                }
                Ok(_) => {
                    conn.release();
                    Ok(Checked::NotReplicating("not a replica"))
                }
                Err(e) => {
                    conn.discard();
                    Err(chain(&e))
                }
            }
        })
    }
}

/// The meaning of `SHOW SLAVE STATUS` rows.
pub fn interpret(rows: &[Vec<Option<String>>]) -> Checked {
    let Some(row) = rows.first() else {
        return Checked::NotReplicating("not a replica (SHOW SLAVE STATUS is empty)");
    };
    let running = |i: usize| row.get(i).and_then(|v| v.as_deref());
    let known = |v: Option<&str>| matches!(v, Some("Yes" | "No" | "Connecting" | "Preparing"));
    if row.len() <= SECONDS_BEHIND || !known(running(IO_RUNNING)) || !known(running(SQL_RUNNING)) {
        return Checked::NotReplicating("unexpected SHOW SLAVE STATUS layout");
    }
    if running(SQL_RUNNING) != Some("Yes") {
        return Checked::NotReplicating("replication SQL thread not running");
    }
    match row[SECONDS_BEHIND].as_deref().map(str::parse::<u64>) {
        Some(Ok(secs)) => Checked::Lag(Duration::from_secs(secs)),
        _ => Checked::NotReplicating("Seconds_Behind_Master is NULL (replication stopped)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(io: &str, sql: &str, behind: Option<&str>) -> Vec<Vec<Option<String>>> {
        let mut r: Vec<Option<String>> = (0..54).map(|_| Some(String::new())).collect();
        r[IO_RUNNING] = Some(io.into());
        r[SQL_RUNNING] = Some(sql.into());
        r[SECONDS_BEHIND] = behind.map(str::to_owned);
        vec![r]
    }

    #[test]
    fn slave_status_rows_give_lag_or_say_why_not() {
        assert_eq!(
            interpret(&row("Yes", "Yes", Some("0"))),
            Checked::Lag(Duration::ZERO)
        );
        assert_eq!(
            interpret(&row("Yes", "Yes", Some("7"))),
            Checked::Lag(Duration::from_secs(7))
        );
        assert!(matches!(
            interpret(&row("No", "No", None)),
            Checked::NotReplicating(_)
        ));
        assert!(matches!(
            interpret(&row("Yes", "Yes", None)),
            Checked::NotReplicating(_)
        ));
        assert!(matches!(interpret(&[]), Checked::NotReplicating(_)));
        assert!(matches!(
            interpret(&[vec![Some("x".into()); 5]]),
            Checked::NotReplicating(_)
        ));
    }

    #[test]
    fn mysql_reads_want_a_replica_and_stateful_statements_do_not() {
        let f = WriteFunctions::none();
        assert_eq!(sql_route(b"SELECT @@server_id", &f), (true, false));
        assert!(sql_route(b"START TRANSACTION READ ONLY", &f).0);
        assert_eq!(sql_route(b"INSERT INTO t VALUES (1)", &f), (false, true));
        assert!(!sql_route(b"SELECT LAST_INSERT_ID()", &f).0);
        assert!(!sql_route(b"SET TRANSACTION READ ONLY", &f).0);
        assert_eq!(sql_route(b"SET NAMES utf8mb4", &f), (false, false));
    }
}
