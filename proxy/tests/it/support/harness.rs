//! Shared set-up for the proxy's integration tests: a real PostgreSQL from the testbed and an
//! in-process sidepool in front of it on a free port. Helpers that panic are named `must_*`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sidepool::Server;
use sidepool_loadtest::testbed::{PgAuth, PgOptions, PgServer};

pub const USER: &str = "app";
pub const PASSWORD: &str = "app-secret";
pub const DB: &str = "app";

/// A PostgreSQL whose host auth is `auth`, with role `app` (password `app-secret`, stored as
/// `auth` asks, SCRAM for trust) owning database `app`.
pub fn must_start_pg(auth: PgAuth) -> PgServer {
    let pg = PgServer::must_start(&PgOptions {
        auth,
        ..PgOptions::default()
    });
    let stored = if matches!(auth, PgAuth::Md5) {
        PgAuth::Md5
    } else {
        PgAuth::Scram
    };
    pg.create_user(USER, PASSWORD, stored).expect("create user");
    pg.create_database(DB, USER).expect("create database");
    pg
}

/// How to configure the pool under test.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    pub mode: &'static str,
    pub client_auth: &'static str,
    /// Lines of `[pools.limits]`.
    pub limits: String,
    /// Lines of `[pools.tls]`, if any.
    pub tls: Option<String>,
    /// Lines of `[pools.leaks]`, if any.
    pub leaks: Option<String>,
    /// `replicas`, as `host:port`.
    pub replicas: Vec<String>,
    /// Lines of `[pools.routing]`, if any.
    pub routing: Option<String>,
}

impl PoolSpec {
    pub fn transaction(limits: &str) -> Self {
        Self {
            mode: "transaction",
            client_auth: "password",
            limits: limits.to_owned(),
            tls: None,
            leaks: None,
            replicas: Vec::new(),
            routing: None,
        }
    }
    pub fn session(limits: &str) -> Self {
        Self {
            mode: "session",
            client_auth: "password",
            limits: limits.to_owned(),
            tls: None,
            leaks: None,
            replicas: Vec::new(),
            routing: None,
        }
    }
    pub fn leaks(mut self, lines: &str) -> Self {
        self.leaks = Some(lines.to_owned());
        self
    }

    /// Read/write split onto `replicas` with `routing` lines (`split = true` is added).
    pub fn split(mut self, replicas: &[String], routing: &str) -> Self {
        self.replicas = replicas.to_vec();
        self.routing = Some(format!("split = true\n{routing}"));
        self
    }

    pub fn tls(mut self, lines: String) -> Self {
        self.tls = Some(lines);
        self
    }

    pub fn auth(mut self, client_auth: &'static str) -> Self {
        self.client_auth = client_auth;
        self
    }
}

/// sidepool running in this process.
pub struct Proxy {
    server: Option<Server>,
    pub addr: SocketAddr,
}

/// The TOML of a one-pool config in front of `primary`.
pub fn config_text(primary: &str, spec: &PoolSpec) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[pools]]
name = "test"
protocol = "postgres"
listen = "127.0.0.1:0"
mode = "{mode}"
primary = "{primary}"
replicas = [{replicas}]
client_auth = "{auth}"

[pools.limits]
{limits}
{tls}
{leaks}
{routing}

[[pools.users]]
name = "{USER}"
password = "{PASSWORD}"
"#,
        mode = spec.mode,
        auth = spec.client_auth,
        limits = spec.limits,
        tls = spec
            .tls
            .as_ref()
            .map(|t| format!("[pools.tls]\n{t}\n"))
            .unwrap_or_default(),
        leaks = spec
            .leaks
            .as_ref()
            .map(|t| format!("[pools.leaks]\n{t}\n"))
            .unwrap_or_default(),
        replicas = spec
            .replicas
            .iter()
            .map(|r| format!("\"{r}\""))
            .collect::<Vec<_>>()
            .join(", "),
        routing = spec
            .routing
            .as_ref()
            .map(|t| format!("[pools.routing]\n{t}\n"))
            .unwrap_or_default(),
    )
}

impl Proxy {
    pub async fn must_start(pg: &PgServer, spec: &PoolSpec) -> Proxy {
        Self::must_start_to(&format!("{}:{}", pg.host(), pg.port()), spec).await
    }

    pub async fn must_start_to(primary: &str, spec: &PoolSpec) -> Proxy {
        let text = config_text(primary, spec);
        let config = sidepool_config::parse(&text, "test.toml", &|_| None)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{text}"));
        let server = Server::start(&config).await.expect("sidepool starts");
        let addr = server.local_addr("test").expect("pool bound");
        Proxy {
            server: Some(server),
            addr,
        }
    }

    pub fn dsn(&self, user: &str, password: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={DB} connect_timeout=10",
            self.addr.port()
        )
    }

    pub fn app_dsn(&self) -> String {
        self.dsn(USER, PASSWORD)
    }

    /// A tokio-postgres client through sidepool, its connection task spawned.
    pub async fn must_connect(&self) -> tokio_postgres::Client {
        must_connect(&self.app_dsn()).await
    }

    /// The pool's statistics snapshot.
    pub fn stats(&self) -> sidepool_pool::Stats {
        self.server
            .as_ref()
            .and_then(|s| s.pool_stats("test"))
            .expect("pool exists")
    }

    /// Suspected leaks: (now, ever reported).
    pub fn leaks(&self) -> (u64, u64) {
        let (now, ever, _) = self.leaks_all();
        (now, ever)
    }

    /// Suspected leaks now, ever, and clients that left a transaction open.
    pub fn leaks_all(&self) -> (u64, u64, u64) {
        self.server
            .as_ref()
            .and_then(|s| s.leaks("test"))
            .expect("pool exists")
    }

    /// The running server (admin address, draining flag).
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    /// Pinned clients: (now, ever).
    pub fn pinned(&self) -> (u64, u64) {
        self.server
            .as_ref()
            .and_then(|s| s.pinned("test"))
            .expect("pool exists")
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    /// Takes the server out (for `drain`, which consumes it).
    pub fn take_server(&mut self) -> Server {
        self.server.take().expect("server running")
    }

    /// sidepool started from a config file (so reloads read it), written into `dir`.
    pub async fn must_start_from_file(
        dir: &std::path::Path,
        primary: &str,
        spec: &PoolSpec,
    ) -> Proxy {
        let path = dir.join("sidepool.toml");
        std::fs::write(&path, config_text(primary, spec)).expect("write config");
        let config =
            sidepool_config::load(&path).unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        let server = Server::start(&config).await.expect("sidepool starts");
        let addr = server.local_addr("test").expect("pool bound");
        Proxy {
            server: Some(server),
            addr,
        }
    }

    /// A DSN for the admin console (database `sidepool`) on this pool's listener.
    pub fn console_dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={USER} password={PASSWORD} dbname=sidepool connect_timeout=10",
            self.addr.port()
        )
    }
}

/// Connects with `dsn` and also returns how the connection ended (a FATAL from the server
/// arrives there, not at the next query).
pub async fn connect_watched(
    dsn: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::oneshot::Receiver<Result<(), tokio_postgres::Error>>,
) {
    let (client, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {dsn}: {}", db_message(&e)));
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = tx.send(conn.await);
    });
    (client, rx)
}

/// Rows of a console command as strings, by column name.
pub async fn must_console(
    c: &tokio_postgres::Client,
    sql: &str,
) -> Vec<std::collections::HashMap<String, Option<String>>> {
    let msgs = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", db_message(&e)));
    msgs.into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, col)| (col.name().to_owned(), r.get(i).map(str::to_owned)))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

pub async fn connect(dsn: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

pub async fn must_connect(dsn: &str) -> tokio_postgres::Client {
    connect(dsn)
        .await
        .unwrap_or_else(|e| panic!("connect {dsn}: {}", db_message(&e)))
}

/// A superuser client straight to the server (for pg_stat_activity and set-up).
pub async fn must_connect_direct(pg: &PgServer) -> tokio_postgres::Client {
    must_connect(&pg.dsn(USER, PASSWORD, DB)).await
}

/// Server connections of `app` as the server sees them, excluding `except_pid` (the sampler's own).
pub async fn server_connections(direct: &tokio_postgres::Client) -> i64 {
    direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
            &[&USER],
        )
        .await
        .expect("sample pg_stat_activity")
        .get(0)
}

/// The SQLSTATE of a tokio-postgres error, or a panic naming what it was instead.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.code().code().to_owned(),
        None => panic!("expected a database error, got: {e:?}"),
    }
}

/// One row of a statement run through sidepool with an unnamed statement (tokio-postgres'
/// `query_typed`: Parse/Bind/Execute/Sync in one cycle). Plain `query` prepares a *named*
/// statement in one cycle and executes it in another.
pub async fn one(
    c: &tokio_postgres::Client,
    sql: &str,
    params: &[(
        &(dyn tokio_postgres::types::ToSql + Sync),
        tokio_postgres::types::Type,
    )],
) -> Result<tokio_postgres::Row, tokio_postgres::Error> {
    let mut rows = c.query_typed(sql, params).await?;
    assert_eq!(rows.len(), 1, "{sql} returned {} rows", rows.len());
    Ok(rows.remove(0))
}

/// [`one`] without parameters, panicking on errors.
pub async fn must_one(c: &tokio_postgres::Client, sql: &str) -> tokio_postgres::Row {
    one(c, sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", db_message(&e)))
}

/// The message of a database error (tokio-postgres' Display says only "db error").
pub fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| format!("{e:?}"))
}

/// Polls `check` every 20 ms until it holds or `within` passes.
pub async fn must_eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A PostgreSQL client tool of the testbed's installation (psql, pgbench) aimed at `port` as
/// `app` on database `app` through libpq's environment variables.
pub fn pg_tool(pg: &PgServer, tool: &str, port: u16) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(pg.bin(tool));
    cmd.env("PGHOST", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGUSER", USER)
        .env("PGDATABASE", DB)
        .env("PGPASSWORD", PASSWORD)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs a command to the end feeding it `stdin`; panics with its stderr unless it succeeds.
pub async fn must_run(cmd: &mut tokio::process::Command, stdin: &[u8]) -> Vec<u8> {
    use tokio::io::AsyncWriteExt;
    let mut child = cmd.spawn().expect("spawn");
    let mut input = child.stdin.take().expect("stdin piped");
    let data = stdin.to_vec();
    let writer = tokio::spawn(async move {
        let _ = input.write_all(&data).await;
    });
    let out = child.wait_with_output().await.expect("wait");
    writer.await.expect("stdin writer");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `psql -c sql` through `port`, returning its output.
pub async fn must_psql(pg: &PgServer, port: u16, sql: &str, stdin: &[u8]) -> Vec<u8> {
    must_run(
        pg_tool(pg, "psql", port).args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql]),
        stdin,
    )
    .await
}

/// `pgbench -i -s 1`, straight to the server.
pub async fn must_pgbench_init(pg: &PgServer) {
    must_run(
        pg_tool(pg, "pgbench", pg.port()).args(["-i", "-q", "-s", "1"]),
        b"",
    )
    .await;
}

/// Waits until the server shows `sql` running.
pub async fn must_see_active(direct: &tokio_postgres::Client, sql: &str) {
    must_eventually(Duration::from_secs(10), sql, || async {
        let n: i64 = direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'",
                &[&sql],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        n == 1
    })
    .await;
}

/// Samples the server's count of `app` connections every 10 ms in the background.
pub struct PeakSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<i64>,
}

impl PeakSampler {
    pub fn start(direct: tokio_postgres::Client) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut peak = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(server_connections(&direct).await);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak
        });
        Self { stop, task }
    }

    /// Stops sampling and returns the most connections seen at once.
    pub async fn peak(self) -> i64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.expect("sampler")
    }
}

/// An HTTP response read to its end.
pub struct Http {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Http {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 GET with `Connection: close`, read to the end.
pub async fn http_get(addr: SocketAddr, path: &str) -> Http {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the admin listener");
    let request = format!("GET {path} HTTP/1.1\r\nHost: sidepool\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.expect("send request");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read response");
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(&buf)));
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    Http {
        status,
        head,
        body: buf[split + 4..].to_vec(),
    }
}

/// Everything sidepool logs at warn level or above in this test binary (installed as the global
/// subscriber on first use), for assertions on log lines.
pub fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || LogWriter(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("one subscriber per test binary");
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
