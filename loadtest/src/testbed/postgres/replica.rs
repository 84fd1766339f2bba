//! Streaming replicas of a testbed primary: `pg_basebackup -R -c fast` over the primary's unix
//! socket into a new temp dir, then the primary's configure-and-start path on a free port.
//!
//! The base backup connects as the superuser over the unix socket, which `initdb
//! --auth-local=trust` trusts for replication too (`local replication all trust` in
//! `pg_hba.conf`), so `primary_conninfo` (written by `-R`) holds no password and the replica
//! works with every [`super::PgAuth`]. Roles, passwords and databases replicate like any data.

use std::fs;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::text::quote_literal;
use super::{PSQL_TIMEOUT, PgServer, SUPERUSER, run};
use crate::error::{Result, TestbedError};

/// `pg_basebackup` copies the whole (small, fresh) cluster; this bounds a stuck one.
const BASEBACKUP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long [`PgReplica::wait_caught_up`] and [`PgReplica::wait_received`] wait.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
const CATCH_UP_POLL: Duration = Duration::from_millis(20);

/// A running streaming replica (hot standby) of a [`PgServer`] primary. It derefs to its own
/// [`PgServer`] (`dsn`, `psql`, `stop`, `start_again`, …; read-only, as every standby) and adds
/// what only a replica has: waiting for replay and pausing it. Dropping it stops the replica
/// and removes its temp dir; the primary is not affected.
///
/// The replica knows its primary by socket dir and port, not by reference, so both can live
/// side by side in a test's struct; waiting for replay fails (with psql's error) once the
/// primary is gone.
#[derive(Debug)]
pub struct PgReplica {
    server: PgServer,
    primary_socket_dir: PathBuf,
    primary_port: u16,
}

impl PgServer {
    /// Starts a streaming replica of this server: `pg_basebackup -R -c fast` into a new temp
    /// dir, then the same options as this server on a free port. The replica is a hot standby
    /// streaming from this server without a replication slot (the primary keeps
    /// `wal_keep_size = 64MB` of WAL for a replica that is down for a while).
    ///
    /// # Errors
    /// `Command` when `pg_basebackup` or the start fails (with the replica's log tail),
    /// `Timeout` or `Io`.
    pub fn start_replica(&self) -> Result<PgReplica> {
        let dir = super::super::temp_dir("sidepool-pg-replica-", &self.run_as)?;
        let data_dir = dir.path().join("data");
        let mut backup = self.run_as.command(&self.bin("pg_basebackup"), dir.path());
        backup
            .arg("-D")
            .arg(&data_dir)
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-U", SUPERUSER])
            .args([
                "-R",
                "-c",
                "fast",
                "-X",
                "stream",
                "--no-sync",
                "--no-manifest",
                "-w",
            ]);
        run(backup, None, BASEBACKUP_TIMEOUT)?;
        let replica = PgServer {
            bin_dir: self.bin_dir.clone(),
            run_as: self.run_as.clone(),
            data_dir,
            port: 0,
            auth: self.auth,
            opts: self.opts.clone(),
            dir,
        };
        // The backup copied the primary's log; the replica's own starts empty.
        fs::write(replica.log_file(), "")?;
        let server = replica.configure_and_start(None)?;
        tracing::info!(
            port = server.port,
            primary_port = self.port,
            "testbed postgres replica started"
        );
        Ok(PgReplica {
            server,
            primary_socket_dir: self.socket_dir().to_owned(),
            primary_port: self.port,
        })
    }

    /// [`PgServer::start_replica`], panicking with the error and its causes.
    pub fn must_start_replica(&self) -> PgReplica {
        match self.start_replica() {
            Ok(replica) => replica,
            Err(err) => panic!("starting a PostgreSQL testbed replica: {}", err.report()),
        }
    }
}

impl PgReplica {
    /// The primary's TCP port.
    pub fn primary_port(&self) -> u16 {
        self.primary_port
    }

    /// Waits until the replica has replayed everything committed on the primary so far
    /// (`pg_last_wal_replay_lsn()` reaches the primary's WAL position), so rows committed
    /// before the call are visible on the replica afterwards.
    ///
    /// # Errors
    /// `Timeout` after 30 s (e.g. replay is paused), `Command` when psql fails on either side.
    pub fn wait_caught_up(&self) -> Result<()> {
        self.wait_for_lsn("pg_last_wal_replay_lsn()", "replay")
    }

    /// Waits until the replica has received (and flushed) the primary's WAL up to its position
    /// now (`pg_last_wal_receive_lsn()`), whether or not it has replayed it: with replay
    /// paused, this proves the new WAL is there and only replay holds rows back.
    ///
    /// # Errors
    /// As [`PgReplica::wait_caught_up`].
    pub fn wait_received(&self) -> Result<()> {
        self.wait_for_lsn("pg_last_wal_receive_lsn()", "receipt")
    }

    /// `pg_wal_replay_pause()`: no WAL record is replayed after this returns, so rows the
    /// primary commits from now on stay invisible here (WAL still streams in) until
    /// [`PgReplica::resume_replay`].
    ///
    /// # Errors
    /// `Command` if psql fails.
    pub fn pause_replay(&self) -> Result<()> {
        self.psql("postgres", "SELECT pg_wal_replay_pause()")
            .map(drop)
    }

    /// `pg_wal_replay_resume()`.
    ///
    /// # Errors
    /// `Command` if psql fails.
    pub fn resume_replay(&self) -> Result<()> {
        self.psql("postgres", "SELECT pg_wal_replay_resume()")
            .map(drop)
    }

    /// Whether replay has actually stopped (`pg_get_wal_replay_pause_state() = 'paused'`).
    /// A requested pause takes effect at the next WAL record, so this may stay false on an
    /// idle primary.
    ///
    /// # Errors
    /// `Command` if psql fails, `UnexpectedOutput` otherwise.
    pub fn is_replay_paused(&self) -> Result<bool> {
        self.psql_bool("SELECT pg_get_wal_replay_pause_state() = 'paused'")
    }

    /// Takes the primary's WAL position, then polls `replica_lsn_fn` on the replica until it
    /// reaches that position.
    fn wait_for_lsn(&self, replica_lsn_fn: &str, what: &str) -> Result<()> {
        let target = self.primary_wal_position()?;
        let check = format!("SELECT coalesce({replica_lsn_fn} >= {target}::pg_lsn, false)");
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        while !self.psql_bool(&check)? {
            if Instant::now() >= deadline {
                return Err(TestbedError::Timeout(
                    format!(
                        "replica on port {} to reach WAL {what} of {target} (primary on port {})",
                        self.port, self.primary_port
                    ),
                    CATCH_UP_TIMEOUT,
                ));
            }
            std::thread::sleep(CATCH_UP_POLL);
        }
        Ok(())
    }

    /// The primary's WAL write position, as a quoted `pg_lsn` literal, after making sure it
    /// covers every commit so far. The testbed commits with `synchronous_commit = off`, so a
    /// committed row's WAL may still sit in the primary's buffers (unsent) for up to
    /// `wal_writer_delay`. One synchronously committed transaction flushes all WAL before it;
    /// it must write WAL itself (a transactional logical message, which nothing decodes), as
    /// a commit that wrote nothing skips the flush.
    fn primary_wal_position(&self) -> Result<String> {
        let sql = "SET synchronous_commit = on;\n\
                   SELECT pg_logical_emit_message(true, 'sidepool-testbed', 'flush');\n\
                   SELECT pg_current_wal_lsn();\n";
        let mut cmd = self.tool_command("psql");
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.primary_socket_dir)
            .args(["-p", &self.primary_port.to_string(), "-U", SUPERUSER])
            .args(["-d", "postgres", "-f", "-"]);
        let out = run(cmd, Some(sql), PSQL_TIMEOUT)?;
        let lsn = out.lines().last().unwrap_or_default().trim();
        if !is_lsn(lsn) {
            return Err(TestbedError::UnexpectedOutput {
                what: "pg_current_wal_lsn() on the primary".into(),
                output: out,
            });
        }
        Ok(quote_literal(lsn))
    }
}

/// `X/Y` with hex `X` and `Y`, as PostgreSQL prints a `pg_lsn`.
fn is_lsn(text: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.len() <= 8 && s.chars().all(|c| c.is_ascii_hexdigit());
    text.split_once('/')
        .is_some_and(|(hi, lo)| hex(hi) && hex(lo))
}

impl Deref for PgReplica {
    type Target = PgServer;

    fn deref(&self) -> &PgServer {
        &self.server
    }
}

impl DerefMut for PgReplica {
    fn deref_mut(&mut self) -> &mut PgServer {
        &mut self.server
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_is_two_hex_halves() {
        assert!(is_lsn("0/3000148"));
        assert!(is_lsn("1A/FFFFFFFF"));
        assert!(!is_lsn("0/"));
        assert!(!is_lsn("3000148"));
        assert!(!is_lsn("0/30'0"));
        assert!(!is_lsn("0/123456789"));
    }
}
