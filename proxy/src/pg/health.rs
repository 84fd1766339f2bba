//! The PostgreSQL replica check ([`crate::route::health::Probe`]): recovery state and replay
//! lag, asked over a connection of the replica's own pool (so the check counts against the
//! replica's `max_open` like everything else, docs/design.md §3).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::backend::ConnKey;
use super::service::{PgPool, PgService};
use crate::backend::BoxFuture;
use crate::lifecycle;
use crate::route::health::{Checked, Probe};

/// Recovery state and lag in seconds. When everything received has been replayed the lag is 0,
/// so an idle primary (no new WAL, an old last-replay timestamp) does not read as a growing lag;
/// otherwise it is the age of the last replayed transaction.
pub const LAG_QUERY: &str = "SELECT pg_is_in_recovery(), \
     CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 \
     ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END";

/// Checks one PostgreSQL replica.
#[derive(Debug)]
pub struct PgProbe {
    /// The replica's pool.
    pub pool: PgPool,
    /// The (user, database) the check logs in as: the last client login of the pool, at first
    /// the first configured user and database `postgres`.
    pub key: Arc<Mutex<ConnKey>>,
    /// Pool name, for the checkout's owner.
    pub pool_name: Arc<str>,
}

impl Probe for PgProbe {
    fn check(&self) -> BoxFuture<'_, Result<Checked, String>> {
        Box::pin(async move {
            let key = self.key.lock().clone();
            let mut conn = lifecycle::checkout_for_check::<PgService>(
                &self.pool,
                &self.pool_name,
                &key,
                key.user.to_string(),
                key.database.to_string(),
            )
            .await?;
            match conn.run_returning(LAG_QUERY).await {
                Ok((_, row)) => {
                    conn.release();
                    Ok(interpret(&row))
                }
                Err(e) => {
                    conn.discard();
                    Err(crate::error::chain(&e))
                }
            }
        })
    }
}

/// The meaning of [`LAG_QUERY`]'s row (text values).
pub fn interpret(row: &[Option<String>]) -> Checked {
    match row {
        [Some(recovery), lag] if recovery == "t" => {
            match lag.as_deref().and_then(|l| l.parse::<f64>().ok()) {
                Some(secs) if secs.is_finite() => {
                    Checked::Lag(Duration::from_secs_f64(secs.max(0.0)))
                }
                _ => Checked::NotReplicating("replay lag unknown (nothing replayed yet)"),
            }
        }
        [Some(_), _] => Checked::NotReplicating("not in recovery: this server is no replica"),
        _ => Checked::NotReplicating("unexpected answer to the lag query"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(a: Option<&str>, b: Option<&str>) -> Vec<Option<String>> {
        vec![a.map(str::to_owned), b.map(str::to_owned)]
    }

    #[test]
    fn lag_row_is_read_as_recovery_state_and_seconds() {
        assert_eq!(
            interpret(&row(Some("t"), Some("0"))),
            Checked::Lag(Duration::ZERO)
        );
        assert_eq!(
            interpret(&row(Some("t"), Some("2.5"))),
            Checked::Lag(Duration::from_millis(2500))
        );
        // Clock skew between primary and replica can make the age slightly negative.
        assert_eq!(
            interpret(&row(Some("t"), Some("-0.01"))),
            Checked::Lag(Duration::ZERO)
        );
        assert!(matches!(
            interpret(&row(Some("t"), None)),
            Checked::NotReplicating(_)
        ));
        assert!(matches!(
            interpret(&row(Some("f"), Some("0"))),
            Checked::NotReplicating(_)
        ));
        assert!(matches!(interpret(&[]), Checked::NotReplicating(_)));
        assert!(matches!(
            interpret(&row(Some("t"), Some("NaN"))),
            Checked::NotReplicating(_)
        ));
    }
}
