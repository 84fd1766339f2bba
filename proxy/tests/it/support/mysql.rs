//! MySQL set-up for the proxy's integration tests: a real MariaDB from the testbed and an
//! in-process sidepool MySQL pool in front of it on a free port. Helpers that panic are named
//! `must_*`.

use std::net::SocketAddr;
use std::sync::Arc;

use sidepool::Server;
use sidepool::service::Service;
use sidepool_loadtest::testbed::{MariaDbOptions, MariaDbServer};

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

/// `host:port` of a testbed server.
pub fn primary(db: &MariaDbServer) -> String {
    format!("{}:{}", db.host(), db.port())
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

/// [`config_text`] with more `[[pools.users]]` entries after `app`.
pub fn config_text_with_users(
    primary: &str,
    mode: &str,
    client_auth: &str,
    limits: &str,
    users: &[(&str, &str)],
) -> String {
    let mut text = config_text(primary, mode, client_auth, limits);
    for (name, password) in users {
        text.push_str(&format!(
            "\n[[pools.users]]\nname = \"{name}\"\npassword = \"{password}\"\n"
        ));
    }
    text
}

/// sidepool with one MySQL pool running in this process.
pub struct MyProxy {
    pub addr: SocketAddr,
    server: Option<Server>,
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
        Self::must_start_at(&primary, mode, auth, limits).await
    }

    /// A pool in front of `primary` (`host:port`), e.g. a [`Trickle`] in front of MariaDB.
    pub async fn must_start_at(primary: &str, mode: &str, auth: &str, limits: &str) -> MyProxy {
        Self::must_start_config(&config_text(primary, mode, auth, limits)).await
    }

    /// sidepool running `text` (a config with one pool named `test`).
    pub async fn must_start_config(text: &str) -> MyProxy {
        let config = sidepool_config::parse(text, "test.toml", &|_| None)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{text}"));
        let server = Server::start(&config).await.expect("sidepool starts");
        let addr = server.local_addr("test").expect("pool bound");
        MyProxy {
            addr,
            server: Some(server),
        }
    }

    /// The running server.
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    /// The pool's service (counters, sessions).
    pub fn pool(&self) -> Arc<dyn Service> {
        self.server().pool("test").expect("pool exists")
    }

    /// Takes the server out (for `drain`, which consumes it).
    pub fn take_server(&mut self) -> Server {
        self.server.take().expect("server running")
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

    /// Suspected leaks now, ever, and clients that left a transaction open.
    pub fn leaks(&self) -> (u64, u64, u64) {
        self.server().leaks("test").expect("pool exists")
    }

    /// The admin HTTP listener (metrics, health).
    pub fn admin_addr(&self) -> SocketAddr {
        self.server().admin_addr()
    }

    /// The pool's statistics snapshot.
    pub fn stats(&self) -> sidepool_pool::Stats {
        self.server().pool_stats("test").expect("pool exists")
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

/// `connections_of(app)` without blocking the runtime.
pub async fn must_count_connections(db: &Arc<MariaDbServer>) -> usize {
    let db = db.clone();
    tokio::task::spawn_blocking(move || db.connections_of(USER).expect("processlist"))
        .await
        .expect("join")
}

/// A TCP relay in front of a real server that hands the server's bytes on in small pieces with
/// a short pause between them, so that sidepool reads responses split at arbitrary points
/// (inside headers, inside packets), as a loaded network or server produces now and then.
/// Client-to-server bytes pass unchanged.
pub struct Trickle {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Trickle {
    /// Bytes per piece handed on.
    pub const PIECE: usize = 5;

    /// Listens on a free port and relays every connection to `upstream`.
    pub async fn must_start(upstream: String) -> Trickle {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the trickle relay");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(server) = tokio::net::TcpStream::connect(&upstream).await {
                        trickle(client, server).await;
                    }
                });
            }
        });
        Trickle { addr, task }
    }
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn trickle(client: tokio::net::TcpStream, server: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let up = tokio::io::copy(&mut client_rx, &mut server_tx);
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            for piece in buf[..n].chunks(Trickle::PIECE) {
                if client_tx.write_all(piece).await.is_err() {
                    return;
                }
                // Pacing, not waiting for a state: the pause makes the pieces arrive as
                // separate reads on sidepool's side.
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        () = down => {}
    }
}
