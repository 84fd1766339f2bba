//! The fleet census in PostgreSQL (docs/fleet-budget.md §3): session advisory locks in the
//! int4-pair space of the fleet — `(F, 0)` reservations, `(F, m)` membership and
//! `(F, 2^30 + m)` hunger, all shared — counted in `pg_locks`, and the backends of the pool's
//! users counted in `pg_stat_activity`. One simple-query round trip, so one implicit
//! transaction whose `pg_stat_activity` snapshot is taken at its first use, after the locks.

use super::{Ask, Dialect, JOIN_WAIT, Reading, Spec};
use crate::backend::BoxFuture;
use crate::error::BackendError;
use crate::pg::backend::{PgConnector, ServerConn};

/// Where hunger marks start in the second key of the pair.
const HUNGER: u32 = 1 << 30;
/// The message of the joiner's statement when it finds no room.
const NO_ROOM: &str = "sidepool fleet: no room";

/// The census SQL of one backend of a PostgreSQL fleet.
#[derive(Debug)]
pub struct PgDialect {
    fleet: u32,
    member: u32,
    /// `usename IN (…)`: the connection's own user and the pool's users.
    users: String,
    /// The joiner's statement.
    join: String,
    total: u32,
}

impl PgDialect {
    /// The SQL for `spec`.
    pub fn new(spec: &Spec) -> Self {
        let users = if spec.users.is_empty() {
            "current_user".to_owned()
        } else {
            format!("current_user, {}", spec.users_sql(false))
        };
        let fleet = spec.fleet_id;
        let rounds = JOIN_WAIT.as_millis() / 50;
        let join = format!(
            "DO $sidepool$ DECLARE r bigint; b bigint; BEGIN \
             FOR i IN 1..{rounds} LOOP \
             PERFORM pg_stat_clear_snapshot(); \
             SELECT count(*) INTO r FROM pg_locks WHERE locktype = 'advisory' \
             AND classid::int8 = {fleet} AND objid::int8 = 0 AND objsubid = 2 AND granted; \
             SELECT count(*) INTO b FROM pg_stat_activity {backends}; \
             IF r + b <= {total} THEN RETURN; END IF; \
             PERFORM pg_sleep(0.05); \
             END LOOP; \
             RAISE EXCEPTION '{NO_ROOM}'; \
             END $sidepool$",
            backends = backends_where(&users),
            total = spec.total,
        );
        PgDialect {
            fleet,
            member: spec.member,
            users,
            join,
            total: spec.total,
        }
    }

    /// The census statements for `ask`.
    fn census_sql(&self, ask: Ask) -> String {
        let (f, m) = (self.fleet, self.member);
        let hunger = HUNGER + m;
        let mark = if ask.hungry {
            format!("SELECT pg_advisory_lock_shared({f}, {hunger}); ")
        } else {
            String::new()
        };
        let reserve = if ask.reserve {
            format!("pg_try_advisory_lock_shared({f}, 0)")
        } else {
            "false".to_owned()
        };
        // Unlocking everything first is safe: an idle pooled connection holds no lock of a
        // client's (a client taking a session advisory lock pins its connection, and
        // session-mode connections come back after DISCARD ALL).
        format!(
            "SELECT pg_advisory_unlock_all(); \
             SELECT pg_advisory_lock_shared({f}, {m}); {mark}\
             SELECT {reserve}; \
             SELECT count(*) FILTER (WHERE objid::int8 = 0), \
             count(DISTINCT objid) FILTER (WHERE objid::int8 > 0 AND objid::int8 < {HUNGER}), \
             count(DISTINCT objid) FILTER (WHERE objid::int8 >= {HUNGER} AND objid::int8 <> {hunger}) \
             FROM pg_locks WHERE locktype = 'advisory' AND classid::int8 = {f} \
             AND objsubid = 2 AND granted; \
             SELECT count(*) FROM pg_stat_activity {}",
            backends_where(&self.users)
        )
    }

    /// The budget this dialect was built for.
    pub fn total(&self) -> u32 {
        self.total
    }
}

/// The `WHERE` that picks the client backends of `users` (parallel workers and background
/// processes excluded; rows a plain role may not see in detail have a NULL type and count).
fn backends_where(users: &str) -> String {
    format!(
        "WHERE usename IN ({users}) AND (backend_type = 'client backend' OR backend_type IS NULL)"
    )
}

impl Dialect for PgDialect {
    type Connector = PgConnector;

    fn census<'a>(
        &'a self,
        conn: &'a mut ServerConn,
        ask: Ask,
    ) -> BoxFuture<'a, Result<Reading, BackendError>> {
        Box::pin(async move {
            let (_, rows) = conn.run_rows(&self.census_sql(ask), 8).await?;
            let n = rows.len();
            let bad = || BackendError::Unexpected {
                addr: String::new(),
                what: "fleet census result",
            };
            if n < 3 {
                return Err(bad());
            }
            let int = |row: &[Option<String>], i: usize| -> Result<u32, BackendError> {
                row.get(i)
                    .and_then(|v| v.as_deref())
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(bad)
            };
            let reserved = rows[n - 3].first().and_then(|v| v.as_deref()) == Some("t");
            let locks = &rows[n - 2];
            Ok(Reading {
                reserved,
                reservations: int(locks, 0)?,
                members: int(locks, 1)?,
                hungry_others: int(locks, 2)?,
                backends: int(&rows[n - 1], 0)?,
            })
        })
    }

    fn unreserve<'a>(
        &'a self,
        conn: &'a mut ServerConn,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let sql = format!("SELECT pg_advisory_unlock_shared({}, 0)", self.fleet);
            conn.run(&sql).await.map(|_| ())
        })
    }

    fn join<'a>(&'a self, conn: &'a mut ServerConn) -> BoxFuture<'a, Result<bool, BackendError>> {
        Box::pin(async move {
            match conn.run(&self.join).await {
                Ok(_) => Ok(true),
                Err(BackendError::Server { fields, .. }) if fields.message == NO_ROOM => Ok(false),
                Err(e) => Err(e),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(users: &[&str]) -> Spec {
        Spec {
            pool: "app".into(),
            backend: "db:5432".into(),
            total: 12,
            min_share: 1,
            fleet_id: 77,
            member: 5,
            users: users.iter().map(|u| (*u).to_owned()).collect(),
        }
    }

    #[test]
    fn the_census_takes_its_reservation_before_it_counts_locks_and_then_backends() {
        let d = PgDialect::new(&spec(&["app", "o'hara"]));
        let sql = d.census_sql(Ask {
            reserve: true,
            hungry: true,
        });
        let at = |needle: &str| {
            sql.find(needle)
                .unwrap_or_else(|| panic!("{needle} in {sql}"))
        };
        assert!(at("pg_advisory_unlock_all") < at("pg_advisory_lock_shared(77, 5)"));
        assert!(
            at("pg_advisory_lock_shared(77, 1073741829)")
                < at("pg_try_advisory_lock_shared(77, 0)")
        );
        assert!(at("pg_try_advisory_lock_shared(77, 0)") < at("FROM pg_locks"));
        assert!(at("FROM pg_locks") < at("FROM pg_stat_activity"));
        assert!(
            sql.contains("usename IN (current_user, 'app', 'o''hara')"),
            "{sql}"
        );
        let calm = d.census_sql(Ask::default());
        assert!(!calm.contains("pg_try_advisory"), "{calm}");
        assert!(!calm.contains("lock_shared(77, 1073741829)"), "{calm}");
    }

    #[test]
    fn without_users_the_census_counts_the_connections_own_user() {
        let d = PgDialect::new(&spec(&[]));
        assert!(d.join.contains("usename IN (current_user)"), "{}", d.join);
        assert!(d.join.contains("r + b <= 12"), "{}", d.join);
    }
}
