//! GTID replicas of a testbed MariaDB primary: a fresh server of the same shape (`read_only=1`)
//! told `CHANGE MASTER TO … MASTER_USE_GTID=slave_pos; START SLAVE`. Its `gtid_slave_pos`
//! starts empty, so it replays the primary's binlog from the very beginning: no dump needed,
//! because every testbed server logs from its first start (see `mariadb.rs`).

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{MariaDbServer, READY_POLL, REPLICATION_PASSWORD, REPLICATION_USER, quote_literal};
use crate::error::{Result, TestbedError};

/// How long [`MariaDbReplica::wait_caught_up`] and [`MariaDbReplica::wait_received`] wait.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running MariaDB replica of a [`MariaDbServer`] primary. It derefs to its own
/// [`MariaDbServer`] (`dsn`, `sql`, `stop`, `start_again`, `server_id`, …) and adds what only a
/// replica has: waiting for the primary's transactions and stopping the applier. Dropping it
/// kills the replica and removes its temp dir; the primary is not affected.
///
/// The replica knows its primary by socket and port, not by reference, so both can live side
/// by side in a test's struct; waiting fails once the primary is gone.
#[derive(Debug)]
pub struct MariaDbReplica {
    server: MariaDbServer,
    primary_socket: PathBuf,
    primary_port: u16,
}

impl MariaDbServer {
    /// Starts a replica of this server: a new server with the same options, its own
    /// `server_id` and `read_only=1`, replicating over TCP with GTID from the beginning of
    /// this server's binlog. Returns once the replica has applied everything this server had
    /// committed when it was called.
    ///
    /// # Errors
    /// As [`MariaDbServer::start`]; `Command` if `CHANGE MASTER TO` fails; `Timeout` if the
    /// replica does not catch up within 30 s (the error shows its replication status).
    pub fn start_replica(&self) -> Result<MariaDbReplica> {
        let server = MariaDbServer::launch(&self.opts, true)?;
        server.sql(&format!(
            "CHANGE MASTER TO MASTER_HOST={host}, MASTER_PORT={port}, MASTER_USER={user}, \
             MASTER_PASSWORD={password}, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1;\n\
             START SLAVE;\n",
            host = quote_literal(self.host()),
            port = self.port,
            user = quote_literal(REPLICATION_USER),
            password = quote_literal(REPLICATION_PASSWORD),
        ))?;
        let replica = MariaDbReplica {
            server,
            primary_socket: self.socket(),
            primary_port: self.port,
        };
        replica.wait_caught_up()?;
        tracing::info!(
            port = replica.port(),
            primary_port = self.port,
            "testbed mariadb replica started"
        );
        Ok(replica)
    }

    /// [`MariaDbServer::start_replica`], panicking with the error and its causes.
    pub fn must_start_replica(&self) -> MariaDbReplica {
        match self.start_replica() {
            Ok(replica) => replica,
            Err(err) => panic!("starting a MariaDB testbed replica: {}", err.report()),
        }
    }
}

impl MariaDbReplica {
    /// The primary's TCP port.
    pub fn primary_port(&self) -> u16 {
        self.primary_port
    }

    /// Waits until the replica has applied every transaction the primary has committed so far
    /// (`MASTER_GTID_WAIT` for the primary's `@@gtid_binlog_pos`).
    ///
    /// # Errors
    /// `Timeout` after 30 s (e.g. the SQL thread is stopped; the error shows the replication
    /// status), `Command` when a client fails on either side.
    pub fn wait_caught_up(&self) -> Result<()> {
        let target = self.primary_gtid_pos()?;
        let waited = self.sql(&format!(
            "SELECT MASTER_GTID_WAIT({}, {})",
            quote_literal(&target),
            CATCH_UP_TIMEOUT.as_secs()
        ))?;
        match waited.trim() {
            "0" => Ok(()),
            "-1" => Err(self.lagging(&target, "apply")),
            _ => Err(TestbedError::UnexpectedOutput {
                what: "MASTER_GTID_WAIT on the replica".into(),
                output: waited,
            }),
        }
    }

    /// Waits until the replica's I/O thread has fetched the primary's binlog up to the
    /// primary's position now (`Gtid_IO_Pos`), whether or not the SQL thread applied it: with
    /// replication stopped, this proves the events are there and only the applier holds rows
    /// back.
    ///
    /// # Errors
    /// As [`MariaDbReplica::wait_caught_up`].
    pub fn wait_received(&self) -> Result<()> {
        let target = self.primary_gtid_pos()?;
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            let status = self.replica_status()?;
            let io_pos = status.get("Gtid_IO_Pos").map_or("", String::as_str);
            if gtid_pos_covers(io_pos, &target) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.lagging(&target, "fetch"));
            }
            std::thread::sleep(READY_POLL);
        }
    }

    /// `STOP SLAVE SQL_THREAD`: events keep arriving from the primary, none is applied, so
    /// the replica lags (`Seconds_Behind_Master` becomes NULL) until
    /// [`MariaDbReplica::start_replication`].
    ///
    /// # Errors
    /// `Command` if the client fails.
    pub fn stop_replication(&self) -> Result<()> {
        self.sql("STOP SLAVE SQL_THREAD").map(drop)
    }

    /// `START SLAVE SQL_THREAD`.
    ///
    /// # Errors
    /// `Command` if the client fails.
    pub fn start_replication(&self) -> Result<()> {
        self.sql("START SLAVE SQL_THREAD").map(drop)
    }

    /// `SHOW SLAVE STATUS` as field name → value (`Slave_IO_Running`, `Slave_SQL_Running`,
    /// `Seconds_Behind_Master` (`NULL` while the SQL thread is stopped), `Gtid_IO_Pos`,
    /// `Last_SQL_Error`, …; empty values as empty strings).
    ///
    /// # Errors
    /// `Command` if the client fails.
    pub fn replica_status(&self) -> Result<BTreeMap<String, String>> {
        self.sql_at(&self.socket(), "SHOW SLAVE STATUS", &["--vertical"])
            .map(|out| parse_vertical(&out))
    }

    /// The primary's `@@gtid_binlog_pos`: the last GTID it logged in each domain.
    fn primary_gtid_pos(&self) -> Result<String> {
        self.sql_at(
            &self.primary_socket,
            "SELECT @@gtid_binlog_pos",
            &["-N", "-B"],
        )
    }

    /// A `Timeout` naming the GTID position and showing the replication threads' state.
    fn lagging(&self, target: &str, what: &str) -> TestbedError {
        let status = self.replica_status().unwrap_or_default();
        let shown: Vec<String> = [
            "Slave_IO_Running",
            "Slave_SQL_Running",
            "Gtid_IO_Pos",
            "Last_IO_Error",
            "Last_SQL_Error",
        ]
        .iter()
        .map(|key| format!("{key}={}", status.get(*key).map_or("?", String::as_str)))
        .collect();
        TestbedError::Timeout(
            format!(
                "replica on port {} to {what} the primary's GTID {target} ({})",
                self.port(),
                shown.join(", ")
            ),
            CATCH_UP_TIMEOUT,
        )
    }
}

/// The `key: value` lines of the client's vertical (`\G`) output; a line without a `key:`
/// continues the previous value.
fn parse_vertical(out: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in out.lines() {
        if line.starts_with("***") {
            continue;
        }
        let field = line.split_once(':').and_then(|(key, value)| {
            let key = key.trim();
            let is_key =
                !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            is_key.then(|| (key.to_owned(), value.strip_prefix(' ').unwrap_or(value)))
        });
        match (field, &last) {
            (Some((key, value)), _) => {
                fields.insert(key.clone(), value.to_owned());
                last = Some(key);
            }
            (None, Some(key)) => {
                if let Some(value) = fields.get_mut(key) {
                    value.push('\n');
                    value.push_str(line);
                }
            }
            (None, None) => {}
        }
    }
    fields
}

/// Whether GTID position `have` (`domain-server-seq,…`) has reached `want` in every domain
/// of `want`. Sequence numbers grow per domain whichever server logs, so the server id does
/// not matter.
fn gtid_pos_covers(have: &str, want: &str) -> bool {
    let have = gtid_seqs(have);
    gtid_seqs(want)
        .iter()
        .all(|(domain, seq)| have.get(domain).is_some_and(|h| h >= seq))
}

/// Domain → sequence number of a GTID position; malformed entries are left out.
fn gtid_seqs(pos: &str) -> BTreeMap<u32, u64> {
    pos.split(',')
        .filter_map(|gtid| {
            let mut parts = gtid.trim().split('-');
            let domain = parts.next()?.parse().ok()?;
            let _server: u32 = parts.next()?.parse().ok()?;
            let seq = parts.next()?.parse().ok()?;
            parts.next().is_none().then_some((domain, seq))
        })
        .collect()
}

impl Deref for MariaDbReplica {
    type Target = MariaDbServer;

    fn deref(&self) -> &MariaDbServer {
        &self.server
    }
}

impl DerefMut for MariaDbReplica {
    fn deref_mut(&mut self) -> &mut MariaDbServer {
        &mut self.server
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vertical_output_becomes_fields_with_continuations() {
        let out = "*************************** 1. row ***************************\n\
                   \x20            Slave_IO_State: Waiting for master to send event\n\
                   \x20          Slave_IO_Running: Yes\n\
                   \x20     Seconds_Behind_Master: \n\
                   \x20               Gtid_IO_Pos: 0-1-5,\n\
                   1-2-9\n\
                   \x20            Last_SQL_Error: Error 'x: y' on query\n";
        let fields = parse_vertical(out);
        assert_eq!(fields["Slave_IO_Running"], "Yes");
        assert_eq!(fields["Seconds_Behind_Master"], "");
        assert_eq!(fields["Gtid_IO_Pos"], "0-1-5,\n1-2-9");
        assert_eq!(fields["Last_SQL_Error"], "Error 'x: y' on query");
        assert!(parse_vertical("").is_empty());
    }

    #[test]
    fn gtid_positions_compare_per_domain() {
        assert!(gtid_pos_covers("0-1-5", "0-1-5"));
        assert!(gtid_pos_covers("0-2-7,1-1-3", "0-1-6"));
        assert!(!gtid_pos_covers("0-1-4", "0-1-5"));
        assert!(!gtid_pos_covers("0-1-9", "0-1-5,1-1-1"));
        assert!(gtid_pos_covers("0-1-9,\n1-1-1", "1-1-1"));
        assert!(gtid_pos_covers("", ""));
        assert!(!gtid_pos_covers("", "0-1-1"));
    }
}
