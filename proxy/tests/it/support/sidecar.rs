//! The `sidepool` binary as a pod runs it: a child process started from a config file, with
//! known ports and its log in a file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::harness::*;
use sidepool_loadtest::testbed::{PgServer, free_port};

/// A `sidepool` child process with known ports and its log in a file.
pub struct Sidecar {
    pub child: tokio::process::Child,
    config: PathBuf,
    log: PathBuf,
    pub admin: SocketAddr,
    pub pool: SocketAddr,
}

impl Sidecar {
    /// Starts `sidepool --config <dir>/sidepool.toml` and waits until `/readyz` answers 200.
    pub async fn must_start(dir: &Path, pg: &PgServer, spec: &PoolSpec, extra: &str) -> Sidecar {
        let primary = format!("{}:{}", pg.host(), pg.port());
        Self::must_start_config(dir, &format!("{}\n{extra}", config_text(&primary, spec))).await
    }

    /// Like [`Sidecar::must_start`] with a whole config `text` whose first two
    /// `listen = "127.0.0.1:0"` (admin, then the pool) get free ports.
    pub async fn must_start_config(dir: &Path, text: &str) -> Sidecar {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let pool: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.join("sidepool.toml");
        let log = dir.join("sidepool.log");
        write_text(&config, admin, pool, text);
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
    pub fn write_config(&self, pg: &PgServer, spec: &PoolSpec, extra: &str) {
        write_config(&self.config, self.admin, self.pool, pg, spec, extra);
    }

    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("sidepool still running");
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid}");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={USER} password={PASSWORD} dbname={DB} connect_timeout=10",
            self.pool.port()
        )
    }
}

/// Writes a one-pool config in front of `pg` listening on `admin` and `pool`.
fn write_config(
    path: &Path,
    admin: SocketAddr,
    pool: SocketAddr,
    pg: &PgServer,
    spec: &PoolSpec,
    extra: &str,
) {
    let text = config_text(&format!("{}:{}", pg.host(), pg.port()), spec);
    write_text(path, admin, pool, &format!("{text}\n{extra}\n"));
}

/// Writes `text` with its first two `listen = "127.0.0.1:0"` set to `admin` and `pool`, by
/// write and rename as an editor or a ConfigMap update does: never a half file.
fn write_text(path: &Path, admin: SocketAddr, pool: SocketAddr, text: &str) {
    let listen0 = "listen = \"127.0.0.1:0\"";
    let text = text
        .replacen(listen0, &format!("listen = \"{admin}\""), 1)
        .replacen(listen0, &format!("listen = \"{pool}\""), 1);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{text}\n")).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `/readyz`'s status, or `None` while nothing listens.
pub async fn ready_status(admin: SocketAddr) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(admin).await.ok()?;
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: sidepool\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    std::str::from_utf8(buf.get(9..12)?).ok()?.parse().ok()
}
