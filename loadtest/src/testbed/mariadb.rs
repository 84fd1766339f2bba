//! Throwaway MariaDB servers: `mariadb-install-db` into a temp dir, `mariadbd` as our child on
//! a free port, killed and removed on drop.
//!
//! Layout of one server's temp dir: `<dir>/my.cnf` (the only option file read:
//! `--defaults-file`), `<dir>/mariadb.sock`, `<dir>/data/` with `mariadb.log`. As root,
//! `mariadbd --user=root` runs as root; otherwise everything runs as us.
//!
//! Every server writes a row-based binary log from its first start, with a `server_id` unique
//! in this process, and has a replication account, so any server can be a primary: a replica
//! ([`MariaDbServer::start_replica`], in `replica.rs`) is a fresh server of the same shape that
//! replays the primary's whole binlog from the beginning (GTID, `CHANGE MASTER TO`). The
//! testbed's own setup statements (root passwords, the replication account) stay out of the
//! binlog; everything a test does on the primary, before or after the replica starts, is in it.

mod replica;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::free_port;
use super::process::{RunAs, is_root, run, run_status};
use crate::error::{INSTALL_HINT_MARIADB, Result, TestbedError};

/// Environment variable naming a directory holding `mariadbd` and `mariadb-install-db`.
pub const MARIADB_BIN_ENV: &str = "SIDEPOOL_MARIADB_BIN";
/// Where Debian puts the server and the client tools.
const SEARCH_DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"];
const SUPERUSER: &str = "root";
/// `root@127.0.0.1`'s password; `root@localhost` (unix socket) has none.
const SUPERUSER_PASSWORD: &str = "root";
const LOG_FILE: &str = "mariadb.log";
const START_ATTEMPTS: usize = 3;
const INSTALL_TIMEOUT: Duration = Duration::from_secs(120);
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const READY_POLL: Duration = Duration::from_millis(20);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// The account replicas log in to their primary with (`REPLICATION SLAVE` only).
const REPLICATION_USER: &str = "repl";
const REPLICATION_PASSWORD: &str = "repl";
/// The next `server_id`: unique among the servers of this process, which is what replication
/// between them needs.
static NEXT_SERVER_ID: AtomicU32 = AtomicU32::new(1);

pub use self::replica::MariaDbReplica;

/// How to set up a MariaDB server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MariaDbOptions {
    /// `max_connections`. Default: 300.
    pub max_connections: u32,
    /// Extra `[mariadbd]` option lines for `my.cnf`, appended last.
    pub extra_conf: Vec<String>,
}

impl Default for MariaDbOptions {
    fn default() -> Self {
        MariaDbOptions {
            max_connections: 300,
            extra_conf: Vec::new(),
        }
    }
}

impl MariaDbOptions {
    /// These options with TLS on: `ssl_cert` and `ssl_key` point at PEM files the caller keeps
    /// for the server's lifetime. Clients choose TLS with an SSLRequest; plaintext logins
    /// still work (`require_secure_transport` stays off).
    pub fn with_tls(mut self, cert_pem_file: &Path, key_pem_file: &Path) -> Self {
        self.extra_conf
            .push(format!("ssl_cert={}", cert_pem_file.display()));
        self.extra_conf
            .push(format!("ssl_key={}", key_pem_file.display()));
        self
    }
}

/// A running throwaway MariaDB server on `127.0.0.1:<port>` and a unix socket in its temp dir.
/// Dropping it kills the server and removes the temp dir. All methods block.
#[derive(Debug)]
pub struct MariaDbServer {
    server_bin: PathBuf,
    tool_dirs: Vec<PathBuf>,
    run_as: RunAs,
    as_root: bool,
    data_dir: PathBuf,
    port: u16,
    server_id: u32,
    /// `read_only=1` in `my.cnf` (replicas).
    read_only: bool,
    opts: MariaDbOptions,
    child: Option<Child>,
    /// Last field: removed after `Drop::drop` has killed the server.
    dir: TempDir,
}

impl MariaDbServer {
    /// Initialises a data dir and starts `mariadbd` on a free port (retrying on another port if
    /// the chosen one is taken first). Password logins use `mysql_native_password`.
    ///
    /// # Errors
    /// [`TestbedError::BinariesNotFound`] (ending with an install hint) when the server is not
    /// installed; `Command`, `Timeout` or `Io` when a step fails (start failures include the
    /// server log's tail).
    pub fn start(opts: &MariaDbOptions) -> Result<MariaDbServer> {
        Self::launch(opts, false)
    }

    fn launch(opts: &MariaDbOptions, read_only: bool) -> Result<MariaDbServer> {
        let (server_bin, install_db) = locate()?;
        let mut tool_dirs: Vec<PathBuf> = [&server_bin, &install_db]
            .iter()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        tool_dirs.dedup();
        let run_as = RunAs::current();
        let as_root = is_root()?;
        let dir = super::temp_dir("sidepool-mariadb-", &run_as)?;
        let data_dir = dir.path().join("data");
        let mut server = MariaDbServer {
            server_bin,
            tool_dirs,
            run_as,
            as_root,
            data_dir,
            port: 0,
            server_id: NEXT_SERVER_ID.fetch_add(1, Ordering::Relaxed),
            read_only,
            opts: opts.clone(),
            child: None,
            dir,
        };
        server.install_db(&install_db)?;
        for attempt in 1..=START_ATTEMPTS {
            server.port = free_port();
            server.write_conf()?;
            match server.spawn_and_wait_ready() {
                Ok(()) => break,
                Err(err) if attempt < START_ATTEMPTS && server.port_was_taken() => {
                    server.kill_child();
                    tracing::debug!(port = server.port, error = %err, "testbed port taken, retrying");
                }
                Err(err) => return Err(err),
            }
        }
        tracing::info!(port = server.port, data_dir = %server.data_dir.display(), "testbed mariadb started");
        // Kept out of the binlog: a replica sets up the same accounts itself, and replaying
        // them would fail there (the account exists).
        server.sql(&format!(
            "SET sql_log_bin = 0;\n\
             ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY {pw};\n\
             ALTER USER 'root'@'::1' IDENTIFIED BY {pw};\n\
             CREATE USER {repl}@'%' IDENTIFIED BY {repl_pw};\n\
             GRANT REPLICATION SLAVE ON *.* TO {repl}@'%';\n",
            pw = quote_literal(SUPERUSER_PASSWORD),
            repl = quote_literal(REPLICATION_USER),
            repl_pw = quote_literal(REPLICATION_PASSWORD),
        ))?;
        Ok(server)
    }

    /// [`MariaDbServer::start`], panicking with the error and its causes.
    pub fn must_start(opts: &MariaDbOptions) -> MariaDbServer {
        match Self::start(opts) {
            Ok(server) => server,
            Err(err) => panic!("starting a MariaDB testbed server: {}", err.report()),
        }
    }

    /// The server's own temp dir. The default, /tmp, is shared by every server the tests
    /// start at once, and concurrent `mariadb-install-db` runs delete each other's temp files.
    fn tmp_dir(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    fn install_db(&self, install_db: &Path) -> Result<()> {
        fs::create_dir_all(self.tmp_dir())?;
        let mut cmd = self.run_as.command(install_db, self.dir.path());
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir.display()))
            .arg(format!("--tmpdir={}", self.tmp_dir().display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if self.as_root {
            cmd.arg("--user=root");
        }
        run(cmd, None, INSTALL_TIMEOUT).map(drop)
    }

    fn write_conf(&self) -> Result<()> {
        let opts = &self.opts;
        let mut conf = String::from("[mariadbd]\n");
        let settings = [
            ("datadir", self.data_dir.display().to_string()),
            ("socket", self.socket().display().to_string()),
            ("tmpdir", self.tmp_dir().display().to_string()),
            ("port", self.port.to_string()),
            ("bind-address", "127.0.0.1".into()),
            (
                "pid-file",
                self.dir.path().join("mariadb.pid").display().to_string(),
            ),
            ("log-error", self.log_file().display().to_string()),
            // Host names would make `user@host` matching depend on the machine's resolver.
            ("skip-name-resolve", "1".into()),
            ("max_connections", opts.max_connections.to_string()),
            // A throwaway server: durability costs time and buys nothing.
            ("innodb_buffer_pool_size", "32M".into()),
            ("innodb_flush_log_at_trx_commit", "0".into()),
            ("innodb_doublewrite", "0".into()),
            // Replication: every server can be a primary (see the module doc).
            ("server_id", self.server_id.to_string()),
            ("log_bin", "mariadb-bin".into()),
            ("binlog_format", "ROW".into()),
            ("relay_log", "relay-bin".into()),
            ("read_only", u8::from(self.read_only).to_string()),
            // With a binlog, users without SUPER may only create functions and triggers when
            // this is on (error 1419 otherwise), which a server without one never asks.
            ("log_bin_trust_function_creators", "1".into()),
        ];
        for (key, value) in settings {
            let _ = writeln!(conf, "{key}={value}");
        }
        for line in &opts.extra_conf {
            conf.push_str(line);
            conf.push('\n');
        }
        fs::write(self.conf_file(), conf)?;
        Ok(())
    }

    /// Spawns `mariadbd` and pings it over TCP until it answers or exits.
    fn spawn_and_wait_ready(&mut self) -> Result<()> {
        let mut cmd = self.run_as.command(&self.server_bin, self.dir.path());
        cmd.arg(format!("--defaults-file={}", self.conf_file().display()));
        if self.as_root {
            cmd.arg("--user=root");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|source| TestbedError::Spawn {
            cmd: self.server_bin.display().to_string(),
            source,
        })?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait()?,
                None => None,
            };
            if let Some(status) = exited {
                self.child = None;
                return Err(TestbedError::Command {
                    cmd: format!("{} --defaults-file=…", self.server_bin.display()),
                    status,
                    stderr: format!(
                        "exited during startup\n--- {LOG_FILE}:\n{}",
                        self.log_tail(20)
                    ),
                });
            }
            let mut ping = self.tool_command("mariadb-admin");
            ping.args(["--no-defaults", "-h", "127.0.0.1", "-u", SUPERUSER])
                .args(["-P", &self.port.to_string(), "--connect-timeout=2", "ping"]);
            if run_status(ping, None, Duration::from_secs(5))?.1.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(TestbedError::Timeout(
                    format!("mariadbd to accept connections on 127.0.0.1:{}", self.port),
                    READY_TIMEOUT,
                ));
            }
            std::thread::sleep(READY_POLL);
        }
    }

    fn port_was_taken(&self) -> bool {
        let log = fs::read_to_string(self.log_file()).unwrap_or_default();
        let last = log.rsplit("Starting MariaDB").next().unwrap_or_default();
        last.contains("Address already in use") || last.contains("Do you already have another")
    }

    /// `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// The TCP port; stable across [`MariaDbServer::stop`] and [`MariaDbServer::start_again`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `@@server_id`: unique among the testbed servers of this process.
    pub fn server_id(&self) -> u32 {
        self.server_id
    }

    /// Shuts the server down cleanly (`SHUTDOWN`) and waits for it to exit, keeping its data,
    /// port and temp dir, to simulate a server that is down. [`MariaDbServer::start_again`]
    /// brings it back.
    ///
    /// # Errors
    /// `Command` if the server is not running or refuses, `Timeout` if it does not exit within
    /// 30 s (it is then killed).
    pub fn stop(&mut self) -> Result<()> {
        if !self.is_running() {
            return Err(TestbedError::UnexpectedOutput {
                what: format!("a running mariadbd on port {} to stop", self.port),
                output: "not running".into(),
            });
        }
        self.sql("SHUTDOWN")?;
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        while self.is_running() {
            if Instant::now() >= deadline {
                self.kill_child();
                return Err(TestbedError::Timeout(
                    format!("mariadbd on port {} to shut down", self.port),
                    SHUTDOWN_TIMEOUT,
                ));
            }
            std::thread::sleep(READY_POLL);
        }
        self.child = None;
        Ok(())
    }

    /// Starts a server stopped by [`MariaDbServer::stop`] again on the same port and waits
    /// until it answers. A replica's replication threads start with it (both of them, even if
    /// [`MariaDbReplica::stop_replication`] had stopped one).
    ///
    /// # Errors
    /// `Command` (with the log tail, e.g. when the port was taken meanwhile) or `Timeout`.
    pub fn start_again(&mut self) -> Result<()> {
        self.spawn_and_wait_ready()
    }

    /// Whether our `mariadbd` child is running: false after [`MariaDbServer::stop`].
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) | None => false,
        }
    }

    /// `root`: passwordless over the unix socket, [`MariaDbServer::superuser_password`] over TCP.
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// `root@127.0.0.1`'s password.
    pub fn superuser_password(&self) -> &str {
        SUPERUSER_PASSWORD
    }

    /// `CREATE USER 'name'@'%' IDENTIFIED BY 'password'` (`mysql_native_password`) with all
    /// privileges on all databases (no grant option) except `READ_ONLY ADMIN`, so that on a
    /// `read_only` replica the user's writes fail (error 1290) as on a real one, instead of
    /// silently diverging from the primary.
    ///
    /// # Errors
    /// `Command` with the client's stderr (e.g. error 1396 when the user exists).
    pub fn create_user(&self, name: &str, password: &str) -> Result<()> {
        let account = format!("{}@'%'", quote_literal(name));
        self.sql(&format!(
            "CREATE USER {account} IDENTIFIED BY {};\n\
             GRANT ALL PRIVILEGES ON *.* TO {account};\n\
             REVOKE READ_ONLY ADMIN ON *.* FROM {account};\n",
            quote_literal(password)
        ))
        .map(drop)
    }

    /// `CREATE DATABASE name`, with all privileges on it granted to `owner@'%'`.
    ///
    /// # Errors
    /// `Command` with the client's stderr.
    pub fn create_database(&self, name: &str, owner: &str) -> Result<()> {
        self.sql(&format!(
            "CREATE DATABASE {db};\nGRANT ALL PRIVILEGES ON {db}.* TO {}@'%';\n",
            quote_literal(owner),
            db = quote_ident(name)
        ))
        .map(drop)
    }

    /// pgbench's four tables and their rows (`pgbench -i -s scale`: 100,000 accounts per
    /// unit) in `database`, filled from the SEQUENCE engine's `seq_1_to_N` tables, so the load
    /// generator's scenarios run against MariaDB as against PostgreSQL.
    ///
    /// # Errors
    /// `Command` with the client's stderr (e.g. the tables exist already).
    pub fn create_pgbench_tables(&self, database: &str, scale: u32) -> Result<()> {
        let scale = scale.max(1);
        self.sql(&format!(
            "USE {db};\n\
             CREATE TABLE pgbench_branches (bid INT PRIMARY KEY, bbalance INT, filler CHAR(88));\n\
             CREATE TABLE pgbench_tellers (tid INT PRIMARY KEY, bid INT, tbalance INT, \
             filler CHAR(84));\n\
             CREATE TABLE pgbench_accounts (aid INT PRIMARY KEY, bid INT, abalance INT, \
             filler CHAR(84));\n\
             CREATE TABLE pgbench_history (tid INT, bid INT, aid INT, delta INT, \
             mtime TIMESTAMP, filler CHAR(22));\n\
             INSERT INTO pgbench_branches SELECT seq, 0, '' FROM seq_1_to_{scale};\n\
             INSERT INTO pgbench_tellers SELECT seq, (seq - 1) DIV 10 + 1, 0, '' \
             FROM seq_1_to_{tellers};\n\
             INSERT INTO pgbench_accounts SELECT seq, (seq - 1) DIV 100000 + 1, 0, '' \
             FROM seq_1_to_{accounts};\n",
            db = quote_ident(database),
            tellers = u64::from(scale) * 10,
            accounts = u64::from(scale) * 100_000,
        ))
        .map(drop)
    }

    /// Runs `sql` as root over the unix socket with the `mariadb` client in batch mode
    /// (`-N -B`: tab-separated rows, no headers), stopping at the first error. Returns the
    /// output without the final newline.
    ///
    /// # Errors
    /// `Command` whose `stderr` holds the server's error (`ERROR 1146 (42S02) …`).
    pub fn sql(&self, sql: &str) -> Result<String> {
        self.sql_at(&self.socket(), sql, &["-N", "-B"])
    }

    /// Runs `sql` as root with the `mariadb` client and `format` options against the server
    /// listening on `socket` (this one, or a replica's primary).
    fn sql_at(&self, socket: &Path, sql: &str, format: &[&str]) -> Result<String> {
        let mut cmd = self.tool_command("mariadb");
        cmd.arg("--no-defaults")
            .arg(format!("--socket={}", socket.display()))
            .args(["-u", SUPERUSER])
            .args(format);
        let out = run(cmd, Some(sql), CLIENT_TIMEOUT)?;
        Ok(out.strip_suffix('\n').unwrap_or(&out).to_owned())
    }

    /// How many connections `user` has open now, per `information_schema.PROCESSLIST` (the
    /// asking session is not counted). Closed clients vanish asynchronously: poll.
    ///
    /// # Errors
    /// `Command` if the client fails, `UnexpectedOutput` if the count does not parse.
    pub fn connections_of(&self, user: &str) -> Result<usize> {
        let out = self.sql(&format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
             WHERE USER = {} AND ID <> CONNECTION_ID();",
            quote_literal(user)
        ))?;
        out.trim()
            .parse()
            .map_err(|_| TestbedError::UnexpectedOutput {
                what: format!("connection count of {user}"),
                output: out,
            })
    }

    /// `mysql://user:password@127.0.0.1:port/db`, percent-encoded (as `mysql_async` takes it).
    pub fn dsn(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "mysql://{}:{}@{}:{}/{}",
            percent_encode(user),
            percent_encode(password),
            self.host(),
            self.port,
            percent_encode(db)
        )
    }

    /// `tool` (`mariadb`, `mariadb-admin`, `mariadb-dump`, …) from the server's installation.
    pub fn bin(&self, tool: &str) -> PathBuf {
        let found = self
            .tool_dirs
            .iter()
            .map(|d| d.join(tool))
            .find(|p| p.is_file());
        found.unwrap_or_else(|| PathBuf::from(tool))
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The unix socket file.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("mariadb.sock")
    }

    /// The server's error log (in the data dir).
    pub fn log_file(&self) -> PathBuf {
        self.data_dir.join(LOG_FILE)
    }

    /// The last `lines` lines of the server log (empty if unreadable).
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(self.log_file()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGKILL, like PostgreSQL's immediate stop: nothing in a throwaway server is kept.
    fn kill_child(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn conf_file(&self) -> PathBuf {
        self.dir.path().join("my.cnf")
    }

    fn tool_command(&self, tool: &str) -> Command {
        self.run_as.command(&self.bin(tool), self.dir.path())
    }
}

impl Drop for MariaDbServer {
    fn drop(&mut self) {
        self.kill_child();
        tracing::debug!(port = self.port, "testbed mariadb stopped");
    }
}

/// `(mariadbd, mariadb-install-db)`: from `$SIDEPOOL_MARIADB_BIN` when set, else the first of
/// the usual directories and `$PATH` holding each.
fn locate() -> Result<(PathBuf, PathBuf)> {
    let dirs: Vec<PathBuf> = match std::env::var_os(MARIADB_BIN_ENV).filter(|v| !v.is_empty()) {
        Some(dir) => vec![PathBuf::from(dir)],
        None => {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut dirs: Vec<PathBuf> = SEARCH_DIRS.iter().map(PathBuf::from).collect();
            dirs.extend(std::env::split_paths(&path));
            dirs
        }
    };
    find_pair(&dirs).ok_or_else(|| TestbedError::BinariesNotFound {
        what: "MariaDB server binaries (mariadbd, mariadb-install-db)".into(),
        looked_in: dirs,
        hint: INSTALL_HINT_MARIADB.into(),
    })
}

fn find_pair(dirs: &[PathBuf]) -> Option<(PathBuf, PathBuf)> {
    let find = |tool: &str| dirs.iter().map(|d| d.join(tool)).find(|p| p.is_file());
    Some((find("mariadbd")?, find("mariadb-install-db")?))
}

/// `'text'` with `\` and `'` backslash-escaped (MariaDB's default `sql_mode`).
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `` `name` `` with embedded backticks doubled.
fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// RFC 3986 percent-encoding of everything but unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_what_mariadb_needs() {
        assert_eq!(quote_literal(r"it's\x"), r"'it\'s\\x'");
        assert_eq!(quote_ident("we`ird"), "`we``ird`");
        assert_eq!(percent_encode("p@ss w/ü"), "p%40ss%20w%2F%C3%BC");
    }

    #[test]
    fn both_binaries_may_live_in_different_dirs() {
        let root = tempfile::tempdir().unwrap();
        let (sbin, bin) = (root.path().join("sbin"), root.path().join("bin"));
        fs::create_dir_all(&sbin).unwrap();
        fs::create_dir_all(&bin).unwrap();
        fs::write(sbin.join("mariadbd"), "").unwrap();
        assert_eq!(find_pair(&[sbin.clone(), bin.clone()]), None);
        fs::write(bin.join("mariadb-install-db"), "").unwrap();
        assert_eq!(
            find_pair(&[sbin.clone(), bin.clone()]),
            Some((sbin.join("mariadbd"), bin.join("mariadb-install-db")))
        );
    }
}
