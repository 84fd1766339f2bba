//! The ledger scenario: proof that no acknowledged commit is lost while the database (or the
//! pooler) fails underneath the clients.
//!
//! Each client inserts rows with keys of its own (`client`, `seq`) in autocommit and records a
//! key only once the server acknowledged its commit. Errors (the database restarting, a pooler
//! refusing) are counted and the client reconnects and goes on with the next key; a key whose
//! outcome is unknown (the connection broke before the answer) is recorded as such, since it
//! may or may not have committed. [`Ledger::verify`] then checks, straight against the database,
//! that every acknowledged key exists.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_postgres::NoTls;
use tokio_postgres::types::Type;

/// The table the ledger writes; [`Ledger::create_table`] makes it.
pub const TABLE: &str = "sidepool_ledger";

/// The longest one insert may take before its outcome counts as unknown.
const INSERT_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause before a client reconnects after an error, so a restarting database is not hammered.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// What the clients saw.
#[derive(Debug, Default, Clone)]
pub struct LedgerOutcome {
    /// Keys whose commit the server acknowledged.
    pub acknowledged: BTreeSet<(i32, i32)>,
    /// Keys whose insert was sent but not answered (may or may not exist).
    pub unknown: BTreeSet<(i32, i32)>,
    /// Failed inserts and connects.
    pub errors: u64,
    /// The first few error messages, for the report.
    pub sample_errors: Vec<String>,
}

/// The outcome of [`Ledger::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerCheck {
    /// Acknowledged keys.
    pub acknowledged: usize,
    /// Acknowledged keys that are missing from the table: lost commits.
    pub lost: Vec<(i32, i32)>,
    /// Rows in the table whose insert was never sent by any client (should be none).
    pub phantom: Vec<(i32, i32)>,
}

/// A running ledger load.
#[derive(Debug)]
pub struct Ledger {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    outcome: Arc<Mutex<LedgerOutcome>>,
}

impl Ledger {
    /// Creates the ledger table through `dsn` (idempotent).
    ///
    /// # Errors
    /// Connecting or the DDL failed.
    pub async fn create_table(dsn: &str) -> anyhow::Result<()> {
        let (client, conn) = tokio_postgres::connect(dsn, NoTls).await?;
        let driver = tokio::spawn(conn);
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (client int NOT NULL, seq int NOT NULL, \
                 PRIMARY KEY (client, seq))"
            ))
            .await?;
        drop(client);
        let _ = driver.await;
        Ok(())
    }

    /// Starts `clients` writers against `dsn`.
    pub fn start(dsn: &str, clients: i32) -> Ledger {
        let (stop, _) = watch::channel(false);
        let outcome = Arc::new(Mutex::new(LedgerOutcome::default()));
        let mut tasks = JoinSet::new();
        for id in 0..clients {
            tasks.spawn(writer(
                dsn.to_owned(),
                id,
                outcome.clone(),
                stop.subscribe(),
            ));
        }
        Ledger {
            stop,
            tasks,
            outcome,
        }
    }

    /// Acknowledged commits so far.
    pub fn acknowledged(&self) -> usize {
        self.outcome.lock().acknowledged.len()
    }

    /// Stops the writers (each finishes its insert in flight) and returns what they saw.
    pub async fn stop(mut self) -> LedgerOutcome {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        self.outcome.lock().clone()
    }

    /// Reads the table through `dsn` (the database directly) and compares.
    ///
    /// # Errors
    /// Connecting or reading failed.
    pub async fn verify(dsn: &str, outcome: &LedgerOutcome) -> anyhow::Result<LedgerCheck> {
        let (client, conn) = tokio_postgres::connect(dsn, NoTls).await?;
        let driver = tokio::spawn(conn);
        let rows = client
            .query(&format!("SELECT client, seq FROM {TABLE}"), &[])
            .await?;
        let stored: BTreeSet<(i32, i32)> = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()?;
        drop(client);
        let _ = driver.await;
        let lost = outcome.acknowledged.difference(&stored).copied().collect();
        let phantom = stored
            .iter()
            .filter(|k| !outcome.acknowledged.contains(k) && !outcome.unknown.contains(k))
            .copied()
            .collect();
        Ok(LedgerCheck {
            acknowledged: outcome.acknowledged.len(),
            lost,
            phantom,
        })
    }
}

async fn writer(
    dsn: String,
    id: i32,
    outcome: Arc<Mutex<LedgerOutcome>>,
    mut stop: watch::Receiver<bool>,
) {
    let sql = format!("INSERT INTO {TABLE} (client, seq) VALUES ($1, $2)");
    let mut seq = 0i32;
    let mut session: Option<(tokio_postgres::Client, tokio::task::JoinHandle<()>)> = None;
    let fail = |msg: String| {
        let mut o = outcome.lock();
        o.errors += 1;
        if o.sample_errors.len() < 10 {
            o.sample_errors.push(msg);
        }
    };
    while !*stop.borrow() {
        if session.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            match tokio_postgres::connect(&dsn, NoTls).await {
                Ok((client, conn)) => {
                    let driver = tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    session = Some((client, driver));
                }
                Err(e) => {
                    fail(format!("connect: {e}"));
                    pause(&mut stop).await;
                    continue;
                }
            }
        }
        let Some((client, _)) = session.as_ref() else {
            continue;
        };
        seq += 1;
        let params = [(&id as _, Type::INT4), (&seq as _, Type::INT4)];
        let insert = client.query_typed(&sql, &params);
        match tokio::time::timeout(INSERT_TIMEOUT, insert).await {
            Ok(Ok(_)) => {
                outcome.lock().acknowledged.insert((id, seq));
            }
            Ok(Err(e)) => {
                // An error from the server means the statement did not commit, unless the
                // connection broke before the answer: then it may have.
                if e.as_db_error().is_none() {
                    outcome.lock().unknown.insert((id, seq));
                }
                fail(format!("insert: {e}"));
                if client.is_closed() {
                    session = None;
                }
                pause(&mut stop).await;
            }
            Err(_) => {
                outcome.lock().unknown.insert((id, seq));
                fail(format!("insert: no answer within {INSERT_TIMEOUT:?}"));
                if let Some((_, driver)) = session.take() {
                    driver.abort();
                }
            }
        }
    }
    if let Some((client, driver)) = session {
        drop(client);
        let _ = driver.await;
    }
}

async fn pause(stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        () = tokio::time::sleep(RECONNECT_PAUSE) => {}
        _ = stop.changed() => {}
    }
}
