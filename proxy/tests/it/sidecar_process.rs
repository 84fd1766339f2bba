//! The `sidepool` binary as a pod runs it: a child process started from a config file, driven by
//! signals, in front of a real PostgreSQL under pgbench load. In-process tests (`lifecycle.rs`)
//! cover the same logic in detail; these prove that the signals reach it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::harness::*;
use sidepool_loadtest::testbed::{PgAuth, PgServer, free_port};

/// A `sidepool` child process with known ports and its log in a file.
struct Sidecar {
    child: tokio::process::Child,
    config: PathBuf,
    log: PathBuf,
    admin: SocketAddr,
    pool: SocketAddr,
}

impl Sidecar {
    /// Starts `sidepool --config <dir>/sidepool.toml` and waits until `/readyz` answers 200.
    async fn must_start(dir: &Path, pg: &PgServer, spec: &PoolSpec, extra: &str) -> Sidecar {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let pool: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.join("sidepool.toml");
        let log = dir.join("sidepool.log");
        write_config(&config, admin, pool, pg, spec, extra);
        let sidecar = Sidecar {
            child: tokio::process::Command::new(env!("CARGO_BIN_EXE_sidepool"))
                .arg("--config")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn the sidepool binary"),
            config,
            log,
            admin,
            pool,
        };
        must_eventually(
            Duration::from_secs(20),
            "sidepool's /readyz answers 200",
            || {
                let admin = sidecar.admin;
                async move { ready_status(admin).await == Some(200) }
            },
        )
        .await;
        sidecar
    }

    /// Rewrites the config file with a new pool spec.
    fn write_config(&self, pg: &PgServer, spec: &PoolSpec, extra: &str) {
        write_config(&self.config, self.admin, self.pool, pg, spec, extra);
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().expect("sidepool still running");
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={USER} password={PASSWORD} dbname={DB} connect_timeout=10",
            self.pool.port()
        )
    }
}

/// Writes a one-pool config in front of `pg` listening on `admin` and `pool`, by write and
/// rename as an editor or a ConfigMap update does: never a half file.
fn write_config(
    path: &Path,
    admin: SocketAddr,
    pool: SocketAddr,
    pg: &PgServer,
    spec: &PoolSpec,
    extra: &str,
) {
    let listen0 = "listen = \"127.0.0.1:0\"";
    let text = config_text(&format!("{}:{}", pg.host(), pg.port()), spec)
        .replacen(listen0, &format!("listen = \"{admin}\""), 1)
        .replacen(listen0, &format!("listen = \"{pool}\""), 1);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{text}\n{extra}\n")).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `/readyz`'s status, or `None` while nothing listens.
async fn ready_status(admin: SocketAddr) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(admin).await.ok()?;
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: sidepool\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    std::str::from_utf8(buf.get(9..12)?).ok()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_lowering_max_open_from_10_to_3_under_pgbench_loses_no_client_and_caps_the_server() {
    let pg = must_start_pg(PgAuth::Scram);
    must_pgbench_init(&pg).await;
    let direct = must_connect_direct(&pg).await;
    let dir = tempfile::tempdir().unwrap();
    let limits = |n: u32| format!("max_open = {n}\nmax_idle = {n}\nwait_timeout = \"30s\"");
    let sidecar =
        Sidecar::must_start(dir.path(), &pg, &PoolSpec::transaction(&limits(10)), "").await;

    let bench = pg_tool(&pg, "pgbench", sidecar.pool.port())
        .args(["-n", "-c", "16", "-j", "2", "-T", "8"])
        .spawn()
        .expect("start pgbench");
    must_eventually(
        Duration::from_secs(10),
        "pgbench fills the pool",
        || async { server_connections(&direct).await >= 8 },
    )
    .await;

    sidecar.write_config(&pg, &PoolSpec::transaction(&limits(3)), "");
    sidecar.signal("HUP");
    must_eventually(
        Duration::from_secs(10),
        "the server is down to 3 of the pool's connections",
        || async { server_connections(&direct).await <= 3 },
    )
    .await;
    // The same session samples on: a second `app` session would count itself.
    let sampler = PeakSampler::start(direct);

    let out = tokio::time::timeout(Duration::from_secs(60), bench.wait_with_output())
        .await
        .expect("pgbench ends")
        .unwrap();
    let peak = sampler.peak().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pgbench failed:\n{stdout}\n{stderr}");
    assert!(
        !stderr.contains("error") && !stdout.contains("failed transactions: 1"),
        "a client saw an error:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "pgbench did not report zero failures:\n{stdout}"
    );
    assert!(
        peak <= 3,
        "server saw {peak} connections after the pool shrank; sidepool's log:\n{}",
        sidecar.log()
    );
    let log = sidecar.log();
    assert!(log.contains("SIGHUP: reloading"), "{log}");
    assert!(log.contains("config reloaded"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_open_transaction_commit_with_readyz_503_and_exits_0_in_time() {
    let pg = must_start_pg(PgAuth::Scram);
    let direct = must_connect_direct(&pg).await;
    direct
        .batch_execute("CREATE TABLE sigterm_tx (id int); GRANT ALL ON sigterm_tx TO app")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let budget = Duration::from_secs(10);
    let mut sidecar = Sidecar::must_start(
        dir.path(),
        &pg,
        &PoolSpec::transaction("max_open = 2"),
        &format!("[shutdown]\ntimeout = \"{}s\"", budget.as_secs()),
    )
    .await;
    let client = must_connect(&sidecar.dsn()).await;
    client
        .batch_execute("BEGIN; INSERT INTO sigterm_tx VALUES (1)")
        .await
        .unwrap();

    let sent = Instant::now();
    sidecar.signal("TERM");
    must_eventually(
        Duration::from_secs(5),
        "/readyz says 503 while draining",
        || {
            let admin = sidecar.admin;
            async move { ready_status(admin).await == Some(503) }
        },
    )
    .await;
    // Still draining: the open transaction goes on and commits.
    client
        .batch_execute("INSERT INTO sigterm_tx VALUES (2); COMMIT")
        .await
        .expect("the open transaction commits during the drain");
    let status = tokio::time::timeout(budget + Duration::from_secs(5), sidecar.child.wait())
        .await
        .expect("sidepool exits")
        .unwrap();
    let took = sent.elapsed();
    assert!(status.success(), "exit {status:?}\n{}", sidecar.log());
    assert!(
        took < budget,
        "exited {took:?} after SIGTERM, budget {budget:?}"
    );
    let rows: i64 = direct
        .query_one("SELECT count(*) FROM sigterm_tx", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        rows, 2,
        "both rows of the drained transaction are committed"
    );
}
