//! What one client does in each scenario, over tokio-postgres for PostgreSQL targets and
//! mysql_async for `mysql://` targets (MySQL, MariaDB, TiDB). Every transaction is bounded by
//! [`TX_TIMEOUT`]; a client whose connection broke or timed out reconnects before its next one.
//!
//! The SQL is pgbench's (`pgbench -S` and the built-in TPC-B script) on its tables, so a
//! PostgreSQL database initialised with `pgbench -i -s N` serves every scenario; a MySQL one
//! needs the same four tables (`scripts/bench.sh` creates them). On MySQL, `select` sends the
//! key as text (`COM_QUERY`, like sysbench's point select without prepared statements) and
//! `prepared` runs one server-side prepared statement per connection (`COM_STMT_EXECUTE`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use tokio::task::JoinHandle;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, Statement};

use super::Scenario;
use super::run::Round;

/// The longest one transaction (or one connect) may take before it counts as an error.
pub const TX_TIMEOUT: Duration = Duration::from_secs(30);

/// pgbench -S's statement.
pub const SELECT_SQL: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";

/// pgbench -S's statement in MySQL's placeholder syntax.
const MY_SELECT_SQL: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = ?";

const TPCB_SQL: [&str; 5] = [
    "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
    "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
    "UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2",
    "UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
     VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
];

/// Whether `dsn` names a MySQL-protocol target.
pub fn is_mysql(dsn: &str) -> bool {
    dsn.starts_with("mysql://")
}

/// A small, fast, per-client random number generator (splitmix64); statistical quality is all
/// a key choice needs.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `1..=n` (`n` ≥ 1; 0 is treated as 1).
    pub fn one_to(&mut self, n: u32) -> i32 {
        let n = u64::from(n.max(1));
        i32::try_from(self.next_u64() % n + 1).unwrap_or(1)
    }

    /// Uniform in `-5000..=5000`, pgbench's delta.
    fn delta(&mut self) -> i32 {
        i32::try_from(self.next_u64() % 10_001).unwrap_or(0) - 5_000
    }
}

/// One open connection of a client.
#[derive(Debug)]
pub struct Session(Conn);

#[derive(Debug)]
enum Conn {
    Pg {
        client: Client,
        driver: JoinHandle<()>,
        /// The `prepared` scenario's named statement, prepared once per connection.
        statement: Option<Statement>,
    },
    My {
        conn: mysql_async::Conn,
        /// The `prepared` scenario's server-side statement.
        statement: Option<mysql_async::Statement>,
        /// A call failed for another reason than a server error: the connection's state is
        /// unknown and it must not be reused.
        broken: bool,
    },
}

impl Session {
    /// Connects (bounded by [`TX_TIMEOUT`]) and, for `prepared`, prepares [`SELECT_SQL`].
    ///
    /// # Errors
    /// Connect, authentication or prepare failed, or took longer than [`TX_TIMEOUT`].
    pub async fn open(dsn: &str, scenario: Scenario) -> anyhow::Result<Session> {
        if is_mysql(dsn) {
            let opts = mysql_async::Opts::from_url(dsn)?;
            let mut conn = tokio::time::timeout(TX_TIMEOUT, mysql_async::Conn::new(opts)).await??;
            let statement = if scenario == Scenario::Prepared {
                Some(tokio::time::timeout(TX_TIMEOUT, conn.prep(MY_SELECT_SQL)).await??)
            } else {
                None
            };
            return Ok(Session(Conn::My {
                conn,
                statement,
                broken: false,
            }));
        }
        let (client, connection) =
            tokio::time::timeout(TX_TIMEOUT, tokio_postgres::connect(dsn, NoTls)).await??;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let statement = if scenario == Scenario::Prepared {
            match tokio::time::timeout(TX_TIMEOUT, client.prepare(SELECT_SQL)).await {
                Ok(Ok(s)) => Some(s),
                Ok(Err(e)) => {
                    driver.abort();
                    return Err(e.into());
                }
                Err(e) => {
                    driver.abort();
                    return Err(e.into());
                }
            }
        } else {
            None
        };
        Ok(Session(Conn::Pg {
            client,
            driver,
            statement,
        }))
    }

    /// Says goodbye (`Terminate` / `COM_QUIT`) and waits, bounded, for the connection to end.
    pub async fn close(self) {
        match self.0 {
            Conn::Pg { client, driver, .. } => {
                drop(client);
                let _ = tokio::time::timeout(TX_TIMEOUT, driver).await;
            }
            Conn::My { conn, .. } => {
                let _ = tokio::time::timeout(TX_TIMEOUT, conn.disconnect()).await;
            }
        }
    }

    /// Gives up on the connection at once (after a timeout, its state is unknown).
    fn abort(self) {
        match self.0 {
            Conn::Pg { driver, .. } => driver.abort(),
            // Dropping a mysql_async connection closes its socket.
            Conn::My { .. } => {}
        }
    }

    /// Whether the connection is still usable.
    pub fn is_open(&self) -> bool {
        match &self.0 {
            Conn::Pg { client, .. } => !client.is_closed(),
            Conn::My { broken, .. } => !broken,
        }
    }

    /// The single integer a query like `SELECT count(*) …` returns.
    ///
    /// # Errors
    /// The query failed or returned something else.
    pub async fn query_count(&mut self, sql: &str) -> anyhow::Result<i64> {
        match &mut self.0 {
            Conn::Pg { client, .. } => {
                // Unnamed statement: a named one would not survive transaction pooling in
                // PgBouncer.
                let rows = tokio::time::timeout(TX_TIMEOUT, client.query_typed(sql, &[])).await??;
                let row = rows
                    .first()
                    .ok_or_else(|| anyhow::anyhow!("no row from {sql}"))?;
                Ok(row.try_get(0)?)
            }
            Conn::My { conn, .. } => {
                let n: Option<i64> =
                    tokio::time::timeout(TX_TIMEOUT, conn.query_first(sql)).await??;
                n.ok_or_else(|| anyhow::anyhow!("no row from {sql}"))
            }
        }
    }

    /// One `SELECT 1`, to make sure a pooler has finished logging the client in.
    ///
    /// # Errors
    /// The query failed.
    pub async fn ping(&mut self) -> anyhow::Result<()> {
        match &mut self.0 {
            Conn::Pg { client, .. } => {
                tokio::time::timeout(TX_TIMEOUT, client.query_typed("SELECT 1", &[])).await??;
            }
            Conn::My { conn, .. } => {
                tokio::time::timeout(TX_TIMEOUT, conn.query_drop("SELECT 1")).await??;
            }
        }
        Ok(())
    }
}

/// Runs one transaction of `round.scenario` on `session` (opening one first when needed, and
/// closing it afterwards for `storm`).
///
/// # Errors
/// Any failure; the caller counts it and drops the session when it is no longer open.
pub async fn transaction(
    round: &Arc<Round>,
    session: &mut Option<Session>,
    rng: &mut Rng,
) -> anyhow::Result<()> {
    let scenario = round.spec.scenario;
    if session.is_none() {
        *session = Some(Session::open(&round.target.dsn, scenario).await?);
    }
    let Some(open) = session.as_mut() else {
        unreachable!("just opened")
    };
    let bound = TX_TIMEOUT + round.spec.leak_hold;
    let result = match &mut open.0 {
        Conn::Pg {
            client, statement, ..
        } => tokio::time::timeout(
            bound,
            pg_transaction(round, client, statement.as_ref(), rng),
        )
        .await
        .map_err(|_| ()),
        Conn::My {
            conn,
            statement,
            broken,
        } => {
            let done =
                tokio::time::timeout(bound, my_transaction(round, conn, statement.as_ref(), rng))
                    .await;
            if let Ok(Err(e)) = &done {
                // A server error leaves the connection usable; anything else does not.
                *broken = !matches!(e, mysql_async::Error::Server(_));
            }
            done.map(|r| r.map_err(anyhow::Error::from)).map_err(|_| ())
        }
    };
    let result = match result {
        Ok(result) => result,
        Err(()) => {
            // Unknown state on the server side: never reuse this connection.
            if let Some(s) = session.take() {
                s.abort();
            }
            anyhow::bail!("transaction timed out after {TX_TIMEOUT:?}");
        }
    };
    if scenario == Scenario::Storm
        && let Some(s) = session.take()
    {
        s.close().await;
    }
    result
}

/// One transaction of `round`'s scenario over tokio-postgres.
async fn pg_transaction(
    round: &Round,
    client: &Client,
    statement: Option<&Statement>,
    rng: &mut Rng,
) -> anyhow::Result<()> {
    let accounts = round.scale.saturating_mul(100_000);
    match round.spec.scenario {
        Scenario::Select | Scenario::Idle | Scenario::Storm => {
            let aid = rng.one_to(accounts);
            client
                .query_typed(SELECT_SQL, &[(&aid, Type::INT4)])
                .await?;
        }
        Scenario::Prepared => {
            let aid = rng.one_to(accounts);
            let Some(statement) = statement else {
                anyhow::bail!("prepared statement missing on this session");
            };
            client.query(statement, &[&aid]).await?;
        }
        Scenario::Tpcb => tpcb(client, rng, round.scale).await?,
        Scenario::Leaky => {
            client.query_typed("BEGIN", &[]).await?;
            let aid = rng.one_to(accounts);
            client
                .query_typed(SELECT_SQL, &[(&aid, Type::INT4)])
                .await?;
            sit_idle(round).await;
            client.query_typed("COMMIT", &[]).await?;
        }
    }
    Ok(())
}

/// Sits idle in an open transaction, holding its server connection (`leaky`).
async fn sit_idle(round: &Round) {
    let hold_until = Instant::now() + round.spec.leak_hold;
    tokio::time::sleep_until(hold_until.min(round.window_end()).into()).await;
}

/// One transaction of `round`'s scenario over mysql_async. Keys go into the text as integers
/// (no quoting involved), as sysbench's point select does without prepared statements.
async fn my_transaction(
    round: &Round,
    conn: &mut mysql_async::Conn,
    statement: Option<&mysql_async::Statement>,
    rng: &mut Rng,
) -> Result<(), mysql_async::Error> {
    let accounts = round.scale.saturating_mul(100_000);
    let select = |aid: i32| format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid}");
    match round.spec.scenario {
        Scenario::Select | Scenario::Idle | Scenario::Storm => {
            conn.query_drop(select(rng.one_to(accounts))).await?;
        }
        Scenario::Prepared => match statement {
            Some(statement) => conn.exec_drop(statement, (rng.one_to(accounts),)).await?,
            None => {
                conn.exec_drop(MY_SELECT_SQL, (rng.one_to(accounts),))
                    .await?
            }
        },
        Scenario::Tpcb => {
            let aid = rng.one_to(accounts);
            let tid = rng.one_to(round.scale.saturating_mul(10));
            let bid = rng.one_to(round.scale);
            let delta = rng.delta();
            conn.query_drop("BEGIN").await?;
            let body = format!(
                "UPDATE pgbench_accounts SET abalance = abalance + {delta} WHERE aid = {aid}; \
                 SELECT abalance FROM pgbench_accounts WHERE aid = {aid}; \
                 UPDATE pgbench_tellers SET tbalance = tbalance + {delta} WHERE tid = {tid}; \
                 UPDATE pgbench_branches SET bbalance = bbalance + {delta} WHERE bid = {bid}; \
                 INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
                 VALUES ({tid}, {bid}, {aid}, {delta}, CURRENT_TIMESTAMP)"
            );
            let mut done = Ok(());
            for statement in body.split("; ") {
                done = conn.query_drop(statement).await;
                if done.is_err() {
                    break;
                }
            }
            match done {
                Ok(()) => conn.query_drop("COMMIT").await?,
                Err(e) => {
                    let _ = conn.query_drop("ROLLBACK").await;
                    return Err(e);
                }
            }
        }
        Scenario::Leaky => {
            conn.query_drop("BEGIN").await?;
            conn.query_drop(select(rng.one_to(accounts))).await?;
            sit_idle(round).await;
            conn.query_drop("COMMIT").await?;
        }
    }
    Ok(())
}

/// pgbench's built-in TPC-B-like transaction.
async fn tpcb(client: &Client, rng: &mut Rng, scale: u32) -> anyhow::Result<()> {
    let aid = rng.one_to(scale.saturating_mul(100_000));
    let tid = rng.one_to(scale.saturating_mul(10));
    let bid = rng.one_to(scale);
    let delta = rng.delta();
    let int = Type::INT4;
    client.query_typed("BEGIN", &[]).await?;
    let body = async {
        client
            .query_typed(TPCB_SQL[0], &[(&delta, int.clone()), (&aid, int.clone())])
            .await?;
        client
            .query_typed(TPCB_SQL[1], &[(&aid, int.clone())])
            .await?;
        client
            .query_typed(TPCB_SQL[2], &[(&delta, int.clone()), (&tid, int.clone())])
            .await?;
        client
            .query_typed(TPCB_SQL[3], &[(&delta, int.clone()), (&bid, int.clone())])
            .await?;
        client
            .query_typed(
                TPCB_SQL[4],
                &[
                    (&tid, int.clone()),
                    (&bid, int.clone()),
                    (&aid, int.clone()),
                    (&delta, int.clone()),
                ],
            )
            .await?;
        client.query_typed("COMMIT", &[]).await?;
        Ok::<_, tokio_postgres::Error>(())
    };
    if let Err(err) = body.await {
        let _ = client.query_typed("ROLLBACK", &[]).await;
        return Err(err.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_one_to_stays_in_range_and_covers_it() {
        let mut rng = Rng::new(7);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let v = rng.one_to(10);
            assert!((1..=10).contains(&v), "{v}");
            seen[usize::try_from(v - 1).unwrap()] = true;
        }
        assert!(seen.iter().all(|&s| s), "{seen:?}");
        assert_eq!(rng.one_to(0), 1);
    }

    #[test]
    fn rng_delta_stays_within_pgbench_bounds() {
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            assert!((-5000..=5000).contains(&rng.delta()));
        }
    }
}
