//! Throwaway PostgreSQL clusters: `initdb` into a temp dir, `pg_ctl start` on a free port,
//! `pg_ctl stop -m immediate` and removal on drop.
//!
//! Layout of one server's temp dir (mode 0700, owned by the service account when we are root):
//! `<dir>/` is the unix socket directory, `<dir>/data/` the cluster, `<dir>/data/postgres.log`
//! the server log. A streaming replica ([`PgServer::start_replica`], in `replica.rs`:
//! `pg_basebackup -R` into a new temp dir, then the same configure-and-start path as a primary)
//! gets its own temp dir of the same shape.

mod install;
mod replica;
mod text;

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use self::text::{ConfSettings, dsn_value, quote_ident, quote_literal, render_conf};
use super::free_port;
use super::process::{RunAs, run, run_status};
use crate::error::{Result, TestbedError};

pub use self::install::{PG_BIN_ENV, pg_bin_dir};
pub use self::replica::PgReplica;

/// Account that owns clusters when we run as root (the Debian package creates it).
const SERVICE_USER: &str = "postgres";
const SERVICE_USER_HINT: &str = "initdb and postgres refuse to run as root, so the testbed runs \
    them as that user: create it with `useradd --system --home-dir /var/lib/postgresql \
    --shell /bin/bash postgres` (apt-get install postgresql does this)";
/// Role created by `initdb -U`; trusted over the unix socket.
const SUPERUSER: &str = "postgres";
/// Password given to [`SUPERUSER`] so it can also log in over TCP when auth is not trust.
const SUPERUSER_PASSWORD: &str = "postgres";
const LOG_FILE: &str = "postgres.log";
/// Where [`PgOptions::tls`] material goes, in the data dir (PostgreSQL's default file names).
const TLS_CERT_FILE: &str = "server.crt";
const TLS_KEY_FILE: &str = "server.key";
/// How many start attempts (each on a new free port) survive a port stolen between
/// [`free_port`] and the server's bind.
const START_ATTEMPTS: usize = 3;

const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
/// `pg_ctl -t`; the process deadline adds a margin over it.
const PG_CTL_WAIT_SECS: u64 = 60;
const PG_CTL_TIMEOUT: Duration = Duration::from_secs(PG_CTL_WAIT_SECS + 15);
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const READY_POLL: Duration = Duration::from_millis(20);
const PSQL_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How clients authenticate over TCP (`initdb --auth-host`). Unix-socket connections are
/// always trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PgAuth {
    /// No password asked.
    Trust,
    /// `md5` challenge; passwords are stored md5-hashed by default on such a server.
    Md5,
    /// `scram-sha-256` (PostgreSQL's default since 14).
    #[default]
    Scram,
}

impl PgAuth {
    /// The `pg_hba.conf` method name.
    pub fn hba_method(self) -> &'static str {
        match self {
            PgAuth::Trust => "trust",
            PgAuth::Md5 => "md5",
            PgAuth::Scram => "scram-sha-256",
        }
    }

    /// The `password_encryption` that makes a stored password usable with this method
    /// (trust needs none and keeps the server default).
    fn password_encryption(self) -> &'static str {
        match self {
            PgAuth::Md5 => "md5",
            PgAuth::Trust | PgAuth::Scram => "scram-sha-256",
        }
    }
}

/// How to set up a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// TCP authentication method. Default: [`PgAuth::Scram`].
    pub auth: PgAuth,
    /// `max_connections`. Default: 300.
    pub max_connections: u32,
    /// Extra `postgresql.conf` lines, appended last so they override the testbed's settings.
    pub extra_conf: Vec<String>,
    /// TLS over TCP: `Some` writes the certificate and key into the data dir and sets
    /// `ssl = on`; clients may then choose TLS with an SSLRequest (`host` rules in
    /// `pg_hba.conf` match both). Default: `None` (`ssl = off`: SSLRequest is answered `N`).
    /// Set it with [`PgOptions::with_tls`].
    pub tls: Option<PgTls>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            auth: PgAuth::default(),
            max_connections: 300,
            extra_conf: Vec::new(),
            tls: None,
        }
    }
}

impl PgOptions {
    /// These options with TLS on, serving `cert_pem` with `key_pem` (see [`PgTls`]).
    pub fn with_tls(self, cert_pem: impl Into<String>, key_pem: impl Into<String>) -> Self {
        PgOptions {
            tls: Some(PgTls {
                cert_pem: cert_pem.into(),
                key_pem: key_pem.into(),
            }),
            ..self
        }
    }
}

/// A server's TLS identity, written as `server.crt` and `server.key` (mode 0600, owned by the
/// cluster's account, as PostgreSQL demands) into the data dir.
#[derive(Clone, PartialEq, Eq)]
pub struct PgTls {
    /// Certificate chain, PEM, server certificate first.
    pub cert_pem: String,
    /// The certificate's private key, PEM (PKCS#8, RSA or EC), unencrypted.
    pub key_pem: String,
}

impl fmt::Debug for PgTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTls")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A running throwaway PostgreSQL server, listening on `127.0.0.1:<port>` and on a unix socket
/// in its temp dir. Dropping it stops the server (`-m immediate`) and removes the temp dir.
///
/// All methods block; they are fine to call inside `#[tokio::test]`.
#[derive(Debug)]
pub struct PgServer {
    bin_dir: PathBuf,
    run_as: RunAs,
    data_dir: PathBuf,
    port: u16,
    auth: PgAuth,
    /// What the server was set up with; a replica is configured with its primary's options.
    opts: PgOptions,
    /// Last field: removed after `Drop::drop` has stopped the server.
    dir: TempDir,
}

impl PgServer {
    /// Creates a cluster with `opts` in a new temp dir and starts it on a free port, retrying
    /// on another port if the chosen one is taken before the server binds it.
    ///
    /// # Errors
    /// [`TestbedError::BinariesNotFound`] / [`TestbedError::ServiceUserMissing`] when the
    /// installation is incomplete; `Command`, `Timeout` or `Io` when a step fails (server
    /// start errors include the server log's tail).
    pub fn start(opts: &PgOptions) -> Result<PgServer> {
        Self::launch(opts, None)
    }

    /// Like [`PgServer::start`] but on `port` exactly, without retrying elsewhere.
    ///
    /// # Errors
    /// As [`PgServer::start`]; a taken port is a `Command` error naming the bind failure.
    pub fn start_on_port(opts: &PgOptions, port: u16) -> Result<PgServer> {
        Self::launch(opts, Some(port))
    }

    /// [`PgServer::start`], panicking with the error and its causes (including the install
    /// hint when binaries are missing).
    pub fn must_start(opts: &PgOptions) -> PgServer {
        match Self::start(opts) {
            Ok(server) => server,
            Err(err) => panic!("starting a PostgreSQL testbed server: {}", err.report()),
        }
    }

    fn launch(opts: &PgOptions, fixed_port: Option<u16>) -> Result<PgServer> {
        let bin_dir = pg_bin_dir()?;
        let run_as = RunAs::service(SERVICE_USER, SERVICE_USER_HINT)?;
        let dir = super::temp_dir("sidepool-pg-", &run_as)?;
        let data_dir = dir.path().join("data");
        let server = PgServer {
            bin_dir,
            run_as,
            data_dir,
            port: 0,
            auth: opts.auth,
            opts: opts.clone(),
            dir,
        };
        server.initdb()?;
        let server = server.configure_and_start(fixed_port)?;
        let set_password = format!(
            "ALTER ROLE {} PASSWORD {};",
            quote_ident(SUPERUSER),
            quote_literal(SUPERUSER_PASSWORD)
        );
        server.psql("postgres", &set_password)?;
        Ok(server)
    }

    fn initdb(&self) -> Result<()> {
        let mut cmd = self.tool_command("initdb");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-U", SUPERUSER, "--auth-local=trust"])
            .arg(format!("--auth-host={}", self.auth.hba_method()))
            .args(["--no-sync", "-E", "UTF8", "--locale=C"]);
        run(cmd, None, INITDB_TIMEOUT).map(drop)
    }

    /// Writes the testbed section of `postgresql.conf` and starts the server, on a new free
    /// port per attempt unless `fixed_port` is given; then waits for TCP readiness.
    fn configure_and_start(mut self, fixed_port: Option<u16>) -> Result<Self> {
        let opts = &self.opts.clone();
        let attempts = if fixed_port.is_some() {
            1
        } else {
            START_ATTEMPTS
        };
        self.write_tls_files(opts)?;
        for attempt in 1..=attempts {
            self.port = fixed_port.unwrap_or_else(free_port);
            self.write_conf(opts)?;
            let log_from = fs::metadata(self.log_file()).map_or(0, |m| m.len());
            match self.pg_ctl(&["start"]) {
                Ok(()) => break,
                Err(err) if attempt < attempts && self.port_was_taken(log_from) => {
                    tracing::debug!(port = self.port, error = %err, "testbed port taken, retrying");
                }
                Err(err) => return Err(err),
            }
        }
        self.wait_ready()?;
        tracing::info!(port = self.port, data_dir = %self.data_dir.display(), "testbed postgres started");
        Ok(self)
    }

    fn write_conf(&self, opts: &PgOptions) -> Result<()> {
        let path = self.data_dir.join("postgresql.conf");
        let base = fs::read_to_string(&path)?;
        let mut extra = Vec::new();
        if opts.tls.is_some() {
            extra.push("ssl = on".to_owned());
            extra.push(format!("ssl_cert_file = {}", quote_literal(TLS_CERT_FILE)));
            extra.push(format!("ssl_key_file = {}", quote_literal(TLS_KEY_FILE)));
        }
        // The caller's lines come last so they can still override ours.
        extra.extend(opts.extra_conf.iter().cloned());
        let conf = render_conf(
            &base,
            &ConfSettings {
                port: self.port,
                socket_dir: self.socket_dir(),
                max_connections: opts.max_connections,
                password_encryption: self.auth.password_encryption(),
                extra: &extra,
            },
        );
        // Truncating the existing file keeps its owner (the service account).
        fs::write(&path, conf)?;
        Ok(())
    }

    /// Writes [`PgOptions::tls`]'s certificate and key into the data dir (nothing without it).
    /// The postmaster refuses a key file that others can read or that is not its own.
    fn write_tls_files(&self, opts: &PgOptions) -> Result<()> {
        let Some(tls) = &opts.tls else {
            return Ok(());
        };
        for (name, pem) in [(TLS_CERT_FILE, &tls.cert_pem), (TLS_KEY_FILE, &tls.key_pem)] {
            let path = self.data_dir.join(name);
            // Created 0600 from the start: the key is never readable by others, not even briefly.
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            file.write_all(pem.as_bytes())?;
            self.run_as.give(&path)?;
        }
        Ok(())
    }

    /// Whether the server log, from byte `from` on, reports that the TCP port was in use.
    fn port_was_taken(&self, from: u64) -> bool {
        let log = fs::read(self.log_file()).unwrap_or_default();
        let new = String::from_utf8_lossy(log.get(from as usize..).unwrap_or_default());
        new.contains("Address already in use") || new.contains("could not bind")
    }

    /// `pg_ctl <action> -D … -l … -w -t …`; a failure carries the server log's tail.
    fn pg_ctl(&self, action: &[&str]) -> Result<()> {
        let mut cmd = self.tool_command("pg_ctl");
        cmd.args(action)
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-s", "-t", &PG_CTL_WAIT_SECS.to_string()]);
        run(cmd, None, PG_CTL_TIMEOUT)
            .map(drop)
            .map_err(|err| match err {
                TestbedError::Command {
                    cmd,
                    status,
                    stderr,
                } => TestbedError::Command {
                    cmd,
                    status,
                    stderr: format!("{stderr}\n--- {}:\n{}", LOG_FILE, self.log_tail(20)),
                },
                other => other,
            })
    }

    /// Polls `pg_isready` over TCP until the server accepts connections.
    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let mut cmd = self.tool_command("pg_isready");
            cmd.args(["-q", "-t", "2", "-h", self.host(), "-U", SUPERUSER])
                .args(["-d", "postgres", "-p", &self.port.to_string()]);
            let (_, status, _, _) = run_status(cmd, None, Duration::from_secs(5))?;
            if status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(TestbedError::Timeout(
                    format!(
                        "postgres to accept connections on {}:{}",
                        self.host(),
                        self.port
                    ),
                    READY_TIMEOUT,
                ));
            }
            std::thread::sleep(READY_POLL);
        }
    }

    /// `"127.0.0.1"`: the only TCP address the server listens on.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// The TCP port; stable across [`PgServer::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The role that owns the cluster (`postgres`); trusted over the unix socket, and able to
    /// log in over TCP with [`PgServer::superuser_password`].
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// The superuser's password, stored with the server's `password_encryption`.
    pub fn superuser_password(&self) -> &str {
        SUPERUSER_PASSWORD
    }

    /// The TCP authentication method the server was created with.
    pub fn auth(&self) -> PgAuth {
        self.auth
    }

    /// `CREATE ROLE name LOGIN CREATEDB PASSWORD password`, the password stored for `method`:
    /// md5-hashed for [`PgAuth::Md5`], SCRAM-SHA-256 otherwise (a SCRAM verifier also works
    /// with `md5` in `pg_hba.conf`; an md5 hash does not work with `scram-sha-256`).
    ///
    /// # Errors
    /// `Command` with psql's stderr (e.g. the role exists).
    pub fn create_user(&self, name: &str, password: &str, method: PgAuth) -> Result<()> {
        let sql = format!(
            "SET password_encryption = {};\nCREATE ROLE {} LOGIN CREATEDB PASSWORD {};\n",
            quote_literal(method.password_encryption()),
            quote_ident(name),
            quote_literal(password),
        );
        self.psql("postgres", &sql).map(drop)
    }

    /// `CREATE DATABASE name OWNER owner`.
    ///
    /// # Errors
    /// `Command` with psql's stderr.
    pub fn create_database(&self, name: &str, owner: &str) -> Result<()> {
        let sql = format!(
            "CREATE DATABASE {} OWNER {};\n",
            quote_ident(name),
            quote_ident(owner)
        );
        self.psql("postgres", &sql).map(drop)
    }

    /// Runs `sql` (one or more statements, each in its own implicit transaction) as the
    /// superuser over the unix socket in `db`, stopping at the first error. Returns psql's
    /// unaligned, tuples-only (`-At`) output without the final newline.
    ///
    /// # Errors
    /// `Command` whose `stderr` holds the server's error message.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let mut cmd = self.tool_command("psql");
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                db,
                "-f",
                "-",
            ]);
        let out = run(cmd, Some(sql), PSQL_TIMEOUT)?;
        Ok(out.strip_suffix('\n').unwrap_or(&out).to_owned())
    }

    /// How many client backends `user` has open now, per `pg_stat_activity` (the psql session
    /// asking is not counted). Backends of closed clients vanish asynchronously: poll.
    ///
    /// # Errors
    /// `Command` if psql fails, `UnexpectedOutput` if the count does not parse.
    pub fn connections_of(&self, user: &str) -> Result<usize> {
        let sql = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' \
             AND usename = {} AND pid <> pg_backend_pid();",
            quote_literal(user)
        );
        let out = self.psql("postgres", &sql)?;
        out.trim()
            .parse()
            .map_err(|_| TestbedError::UnexpectedOutput {
                what: format!("connection count of {user}"),
                output: out,
            })
    }

    /// `host=127.0.0.1 port=… user=… password=… dbname=…`, values quoted where libpq needs it.
    pub fn dsn(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "host={} port={} user={} password={} dbname={}",
            self.host(),
            self.port,
            dsn_value(user),
            dsn_value(password),
            dsn_value(db)
        )
    }

    /// `tool` (`psql`, `pgbench`, `pg_basebackup`, …) from the server's installation.
    pub fn bin(&self, tool: &str) -> PathBuf {
        self.bin_dir.join(tool)
    }

    /// The cluster directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The unix socket directory (pass as `host` to libpq tools).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server log (in the data dir).
    pub fn log_file(&self) -> PathBuf {
        self.data_dir.join(LOG_FILE)
    }

    /// The last `lines` lines of the server log (empty if unreadable).
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(self.log_file()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `pg_ctl restart -m fast`: ends all sessions, keeps data and port, waits for readiness.
    ///
    /// # Errors
    /// `Command` (with the log tail) or `Timeout`.
    pub fn restart(&mut self) -> Result<()> {
        self.pg_ctl(&["restart", "-m", "fast"])?;
        self.wait_ready()
    }

    /// `pg_ctl stop -m fast`: ends all sessions and shuts the server down, keeping its data,
    /// port and temp dir, to simulate a server that is down. [`PgServer::start_again`] brings
    /// it back; dropping a stopped server just removes its dir.
    ///
    /// # Errors
    /// `Command` (with the log tail) or `Timeout`; stopping a stopped server is a `Command`
    /// error from pg_ctl.
    pub fn stop(&mut self) -> Result<()> {
        self.pg_ctl(&["stop", "-m", "fast"])
    }

    /// Starts a server stopped by [`PgServer::stop`] on the same port and waits until it
    /// accepts connections (a replica then reconnects to its primary and catches up).
    ///
    /// # Errors
    /// `Command` (with the log tail, e.g. when the port was taken meanwhile) or `Timeout`.
    pub fn start_again(&mut self) -> Result<()> {
        self.pg_ctl(&["start"])?;
        self.wait_ready()
    }

    /// Whether the server is up (its `postmaster.pid` exists): false after [`PgServer::stop`].
    pub fn is_running(&self) -> bool {
        self.data_dir.join("postmaster.pid").exists()
    }

    /// `pg_is_in_recovery()`: true on a streaming replica, false on a primary.
    ///
    /// # Errors
    /// `Command` if psql fails (e.g. the server is stopped), `UnexpectedOutput` otherwise.
    pub fn is_in_recovery(&self) -> Result<bool> {
        self.psql_bool("SELECT pg_is_in_recovery()")
    }

    /// Runs a query answering one boolean, as the superuser in `postgres`.
    fn psql_bool(&self, sql: &str) -> Result<bool> {
        let out = self.psql("postgres", sql)?;
        match out.trim() {
            "t" => Ok(true),
            "f" => Ok(false),
            _ => Err(TestbedError::UnexpectedOutput {
                what: sql.to_owned(),
                output: out,
            }),
        }
    }

    /// A command for one of the installation's tools, run as the cluster's account.
    fn tool_command(&self, tool: &str) -> Command {
        self.run_as.command(&self.bin(tool), self.dir.path())
    }

    /// Stops the server without waiting for sessions; kills the postmaster if pg_ctl fails.
    fn stop_immediately(&self) {
        let pid_file = self.data_dir.join("postmaster.pid");
        if !pid_file.exists() {
            return;
        }
        let mut cmd = self.tool_command("pg_ctl");
        cmd.arg("stop").arg("-D").arg(&self.data_dir).args([
            "-m",
            "immediate",
            "-w",
            "-s",
            "-t",
            "20",
        ]);
        if let Err(err) = run(cmd, None, STOP_TIMEOUT) {
            tracing::warn!(error = %err.report(), "testbed pg_ctl stop failed, killing postmaster");
            let pid = fs::read_to_string(&pid_file).unwrap_or_default();
            if let Some(pid) = pid.lines().next().filter(|p| p.parse::<u32>().is_ok()) {
                let mut kill = Command::new("kill");
                kill.args(["-KILL", pid]);
                let _ = run(kill, None, STOP_TIMEOUT);
            }
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop_immediately();
        tracing::debug!(port = self.port, "testbed postgres stopped");
        // `dir` (TempDir) removes the whole tree when the fields drop, ignoring errors.
    }
}

#[cfg(test)]
mod tests;
