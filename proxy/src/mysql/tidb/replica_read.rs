//! TiDB replica reads (docs/design.md §6): every TiDB server can write, so a TiDB pool's "replicas"
//! are connections to TiDB servers whose session sets `tidb_replica_read` (and, when
//! configured, `tidb_read_staleness`) right after login, before the pool hands them out.
//! Autocommit reads routed to a replica run there and TiDB serves them from follower or
//! learner replicas of its storage (or as stale reads).
//!
//! The settings come from `[pools.routing]` and are live: a connection remembers what it
//! applied ([`Applied`]), is not reused once a reload changed them, and re-applies them after
//! COM_RESET_CONNECTION (which resets session variables).

use std::sync::Arc;
use std::time::Duration;

use super::Health;
use crate::backend::BoxFuture;
use crate::route::health::{Checked, Probe};
use crate::route::{Routing, RoutingSettings};

/// The statement a replica-read connection runs after login for settings `s`. One round trip
/// for both variables; `tidb_read_staleness` only when non-zero (TiDB takes it as a negative
/// number of seconds).
pub fn statement(s: &RoutingSettings) -> String {
    // The value was checked against TiDB's documented list at config load; quotes are
    // doubled anyway, so no value can end the literal.
    let value = s.tidb_replica_read.replace('\'', "''");
    let mut sql = format!("SET SESSION tidb_replica_read = '{value}'");
    let secs = s.tidb_read_staleness.as_secs();
    if secs > 0 {
        sql.push_str(&format!(", tidb_read_staleness = -{secs}"));
    }
    sql
}

/// What one server connection applied after login, and the live settings it came from.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The pool's routing settings (live on reload).
    pub routing: Arc<Routing>,
    /// The settings in force when the statement ran.
    pub settings: Arc<RoutingSettings>,
    /// The statement that ran; run again after COM_RESET_CONNECTION.
    pub sql: String,
}

impl Applied {
    /// What a connection opened now applies.
    pub fn now(routing: &Arc<Routing>) -> Applied {
        let settings = routing.get();
        Applied {
            routing: routing.clone(),
            sql: statement(&settings),
            settings,
        }
    }

    /// Whether a reload changed the settings since: the connection must not serve reads.
    pub fn stale(&self) -> bool {
        self.settings.replica_session_changed(&self.routing.get())
    }
}

/// The health of a TiDB replica-read backend: its server's service state (the status port,
/// when watched). There is no replication to measure, so the lag is always zero; a server
/// that stopped answering is caught by the pool's connect errors like any replica's.
#[derive(Debug)]
pub struct TidbProbe {
    /// The server's service state.
    pub health: Arc<Health>,
}

impl TidbProbe {
    /// The check's answer now (it needs no server round trip).
    ///
    /// # Errors
    /// The server is out of service: why, as clients are told.
    pub fn outcome(&self) -> Result<Checked, String> {
        match self.health.out_of_service() {
            None => Ok(Checked::Lag(Duration::ZERO)),
            Some(why) => Err(why.to_string()),
        }
    }
}

impl Probe for TidbProbe {
    fn check(&self) -> BoxFuture<'_, Result<Checked, String>> {
        let outcome = self.outcome();
        Box::pin(async move { outcome })
    }
}

/// The backend label (metrics, console, `/pools`, errors) of the replica-read backend at
/// `addr`: the primary's series already carry the bare address.
pub fn label(addr: &str) -> String {
    format!("{addr} (replica read)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(replica_read: &str, staleness: u64) -> RoutingSettings {
        RoutingSettings::from_config(
            &sidepool_config::Routing {
                split: true,
                tidb_replica_read: replica_read.to_owned(),
                tidb_read_staleness: Duration::from_secs(staleness),
                ..Default::default()
            },
            true,
        )
    }

    #[test]
    fn the_statement_sets_staleness_only_when_configured() {
        assert_eq!(
            statement(&settings("closest-replicas", 0)),
            "SET SESSION tidb_replica_read = 'closest-replicas'"
        );
        assert_eq!(
            statement(&settings("follower", 5)),
            "SET SESSION tidb_replica_read = 'follower', tidb_read_staleness = -5"
        );
        assert_eq!(
            statement(&settings("x'; DROP TABLE t; --", 0)),
            "SET SESSION tidb_replica_read = 'x''; DROP TABLE t; --'"
        );
    }

    #[test]
    fn a_connection_is_stale_once_the_tidb_settings_change_and_only_then() {
        let routing = Arc::new(Routing::new(settings("follower", 0)));
        let applied = Applied::now(&routing);
        assert!(!applied.stale());
        let mut other = settings("follower", 0);
        other.read_your_writes = Duration::from_secs(9);
        routing.set(other);
        assert!(
            !applied.stale(),
            "other routing keys leave connections alone"
        );
        routing.set(settings("follower", 3));
        assert!(applied.stale());
        let applied = Applied::now(&routing);
        routing.set(settings("leader", 3));
        assert!(applied.stale());
    }

    #[tokio::test]
    async fn the_probe_follows_the_servers_service_state_with_zero_lag() {
        let health = Arc::new(Health::default());
        let probe = TidbProbe {
            health: health.clone(),
        };
        assert_eq!(probe.check().await, Ok(Checked::Lag(Duration::ZERO)));
        health.set(Some("going out of service".into()));
        assert_eq!(probe.check().await, Err("going out of service".to_owned()));
    }
}
