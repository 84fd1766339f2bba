//! MySQL set-up for the proxy's integration tests: a real MariaDB from the testbed and an
//! in-process sidepool MySQL pool in front of it on a free port. Helpers that panic are named
//! `must_*`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use sidepool::mysql::{MyService, accept_loop};
use sidepool::telemetry::Telemetry;
use sidepool_loadtest::testbed::{MariaDbOptions, MariaDbServer};
use tokio::sync::watch;

pub const USER: &str = "app";
pub const PASSWORD: &str = "app-secret";
pub const DB: &str = "app";

/// A MariaDB with user `app` (password `app-secret`) and database `app`. Blocking.
pub fn must_start_mariadb() -> MariaDbServer {
    let db = MariaDbServer::must_start(&MariaDbOptions::default());
    db.create_user(USER, PASSWORD).expect("create user");
    db.create_database(DB, USER).expect("create database");
    db
}

/// The TOML of a one-pool MySQL config in front of `primary`.
pub fn config_text(primary: &str, mode: &str, client_auth: &str, limits: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[pools]]
name = "test"
protocol = "mysql"
listen = "127.0.0.1:0"
mode = "{mode}"
primary = "{primary}"
client_auth = "{client_auth}"

[pools.limits]
{limits}

[[pools.users]]
name = "{USER}"
password = "{PASSWORD}"
"#
    )
}

/// sidepool's MySQL stage running in this process.
pub struct MyProxy {
    pub addr: SocketAddr,
    pub svc: Arc<MyService>,
    stop: watch::Sender<bool>,
}

impl MyProxy {
    /// A transaction-mode pool with `client_auth = "password"`.
    pub async fn must_start(db: &MariaDbServer, limits: &str) -> MyProxy {
        Self::must_start_with(db, "transaction", "password", limits).await
    }

    pub async fn must_start_with(
        db: &MariaDbServer,
        mode: &str,
        auth: &str,
        limits: &str,
    ) -> MyProxy {
        let primary = format!("{}:{}", db.host(), db.port());
        let text = config_text(&primary, mode, auth, limits);
        let config = sidepool_config::parse(&text, "test.toml", &|_| None)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{text}"));
        let telemetry = Telemetry::new();
        let svc = Arc::new(MyService::new(&config.pools[0], &telemetry));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, rx) = watch::channel(false);
        tokio::spawn(accept_loop(listener, svc.clone(), rx));
        MyProxy { addr, svc, stop }
    }

    /// `mysql://app:app-secret@127.0.0.1:port/app` with extra URL options.
    pub fn url(&self, options: &str) -> String {
        format!(
            "mysql://{USER}:{PASSWORD}@127.0.0.1:{}/{DB}?{options}",
            self.addr.port()
        )
    }

    /// One mysql_async connection through sidepool.
    pub async fn must_connect(&self) -> mysql_async::Conn {
        let opts = mysql_async::Opts::from_url(&self.url("prefer_socket=false")).expect("url");
        mysql_async::Conn::new(opts)
            .await
            .expect("connect through sidepool")
    }

    /// The pool's statistics snapshot.
    pub fn stats(&self) -> sidepool_pool::Stats {
        self.svc.primary.stats()
    }
}

impl Drop for MyProxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// `connections_of(app)` without blocking the runtime.
pub async fn must_count_connections(db: &Arc<MariaDbServer>) -> usize {
    let db = db.clone();
    tokio::task::spawn_blocking(move || db.connections_of(USER).expect("processlist"))
        .await
        .expect("join")
}
