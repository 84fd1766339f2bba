//! Server connections: opening and authenticating a connection to PostgreSQL for the pool, and
//! the small request/response exchanges the proxy runs itself (parameter sync, reset).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sidepool_config::TcpOptions;
use sidepool_protocol::pg::auth::{self, ScramClient};
use sidepool_protocol::pg::backend::{self as be, Authentication};
use sidepool_protocol::pg::{TransactionStatus, frame, frontend, startup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::BackendError;
use crate::net::SharedTcp;
use crate::tls::{ServerTls, Stream};

/// Cap on a server message sidepool reads whole while it runs its own exchanges.
const MAX_SERVER_MESSAGE: usize = 1 << 20;

/// Which server connections are interchangeable: PostgreSQL logs a connection in as one user to
/// one database for its whole life.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Role name.
    pub user: Arc<str>,
    /// Database name.
    pub database: Arc<str>,
}

/// Opens server connections for one backend of one pool. `Debug` names the users, not their
/// passwords.
pub struct PgConnector {
    /// `host:port` of the backend, resolved on every connect (DNS may move in Kubernetes).
    pub addr: String,
    /// Password per user name, for the server's auth request.
    pub passwords: BTreeMap<String, String>,
    /// TLS to the server (`[pools.tls] server_mode`).
    pub tls: ServerTls,
    /// `[pools.tcp]` of the pool; its `server_*` options go on every new socket.
    pub tcp: SharedTcp,
}

impl std::fmt::Debug for PgConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnector")
            .field("addr", &self.addr)
            .field("users", &self.passwords.keys().collect::<Vec<_>>())
            .field("tls", &self.tls)
            .finish()
    }
}

impl sidepool_pool::Connector for PgConnector {
    type Conn = ServerConn;
    type Key = ConnKey;
    type Error = BackendError;

    async fn connect(&self, key: &ConnKey) -> Result<ServerConn, BackendError> {
        let password = self.passwords.get(&*key.user).map(String::as_str);
        let tcp = self.tcp.read().server;
        ServerConn::connect(&self.addr, &self.tls, &tcp, key, password).await
    }
}

/// The key a server gave us for cancelling its current query.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    /// Address the connection was made to.
    pub addr: SocketAddr,
    /// Server process id.
    pub pid: i32,
    /// Server secret.
    pub secret: Bytes,
}

/// One authenticated server connection.
#[derive(Debug)]
pub struct ServerConn {
    /// The socket.
    pub stream: Stream,
    /// Current values of the session parameters the server reports (ParameterStatus), plus
    /// those sidepool set itself.
    pub params: BTreeMap<String, String>,
    /// Values right after login: what `DISCARD ALL` (`RESET ALL`) returns to.
    pub startup_params: BTreeMap<String, String>,
    /// How to cancel this connection's running query.
    pub cancel: CancelTarget,
    /// Read buffer, kept with the connection so a checkout allocates nothing.
    pub buf: BytesMut,
    /// Named statements prepared on this connection by sidepool (transaction mode).
    pub prepared: super::statements::Prepared,
    /// The client settings `params` were last brought in line with
    /// ([`super::replay::sync_settings`]); whoever changes `params` clears it.
    pub synced: Option<Arc<BTreeMap<String, String>>>,
}

impl Drop for ServerConn {
    fn drop(&mut self) {
        // Say goodbye so the server does not log an unexpected EOF; best effort, never blocks.
        // Over TLS nothing can be written without blocking; the server sees EOF instead.
        if let Stream::Plain(tcp) = &self.stream {
            let _ = tcp.try_write(&frontend::terminate());
        }
    }
}

impl ServerConn {
    /// Connects with the socket options `tcp` and logs in as `key.user` to `key.database`.
    ///
    /// # Errors
    /// Unreachable address, an auth method sidepool cannot answer, a wrong password, or any
    /// ErrorResponse the server sends during startup (kept whole for the client).
    pub async fn connect(
        addr: &str,
        tls: &ServerTls,
        tcp: &TcpOptions,
        key: &ConnKey,
        password: Option<&str>,
    ) -> Result<ServerConn, BackendError> {
        let io = |e| BackendError::Io {
            addr: addr.to_owned(),
            source: e,
        };
        let tcp = crate::net::connect(addr, tcp).await.map_err(io)?;
        let peer = tcp.peer_addr().map_err(io)?;
        let mut stream = tls.connect(tcp).await?;
        let mut conn = Handshake {
            stream: &mut stream,
            buf: BytesMut::with_capacity(1024),
            addr,
        };
        let hello = startup::startup_message(&[("user", &key.user), ("database", &key.database)]);
        conn.stream.write_all(&hello).await.map_err(io)?;
        conn.authenticate(&key.user, password).await?;

        let mut params = BTreeMap::new();
        let mut cancel = None;
        loop {
            let msg = conn.next().await?;
            match msg[0] {
                be::tag::PARAMETER_STATUS => {
                    let (k, v) = be::parse_parameter_status(&msg)?;
                    params.insert(k, v);
                }
                be::tag::BACKEND_KEY_DATA => {
                    let (pid, secret) = be::parse_backend_key_data(&msg)?;
                    cancel = Some(CancelTarget {
                        addr: peer,
                        pid,
                        secret,
                    });
                }
                be::tag::READY_FOR_QUERY => break,
                be::tag::ERROR_RESPONSE => return Err(BackendError::server(msg)?),
                _ => {} // NoticeResponse and the like during startup
            }
        }
        let cancel = cancel.ok_or(BackendError::NoBackendKey {
            addr: addr.to_owned(),
        })?;
        if !conn.buf.is_empty() {
            return Err(BackendError::Unexpected {
                addr: addr.to_owned(),
                what: "bytes after ReadyForQuery",
            });
        }
        Ok(ServerConn {
            stream,
            startup_params: params.clone(),
            params,
            cancel,
            buf: BytesMut::with_capacity(8 * 1024),
            prepared: Default::default(),
            synced: None,
        })
    }

    /// True when the idle socket shows the connection is gone (EOF) or the server said something
    /// unasked (typically a FATAL before it closed). Cheap: one non-blocking read.
    pub fn is_dead(&mut self) -> bool {
        self.stream.is_dead()
    }

    /// Runs one simple-protocol statement sidepool needs itself (SET, ROLLBACK, DISCARD ALL)
    /// and reads to ReadyForQuery, tracking reported parameters.
    ///
    /// # Errors
    /// I/O failures, malformed replies, or an ErrorResponse to the statement.
    pub async fn run(&mut self, sql: &str) -> Result<TransactionStatus, BackendError> {
        self.run_returning(sql).await.map(|(status, _)| status)
    }

    /// Like [`ServerConn::run`], also returning the text values of the first row, if any.
    ///
    /// # Errors
    /// As [`ServerConn::run`].
    pub async fn run_returning(
        &mut self,
        sql: &str,
    ) -> Result<(TransactionStatus, Vec<Option<String>>), BackendError> {
        let (status, mut rows) = self.run_rows(sql, 1).await?;
        Ok((status, rows.pop().unwrap_or_default()))
    }

    /// Like [`ServerConn::run`], also returning the text values of the first `max_rows` rows
    /// of all its statements' results together, in order (the fleet census asks several
    /// single-row statements in one round trip).
    ///
    /// # Errors
    /// As [`ServerConn::run`].
    pub async fn run_rows(
        &mut self,
        sql: &str,
        max_rows: usize,
    ) -> Result<(TransactionStatus, Vec<Vec<Option<String>>>), BackendError> {
        let addr = self.cancel.addr.to_string();
        let io = |e| BackendError::Io {
            addr: addr.clone(),
            source: e,
        };
        self.stream
            .write_all(&frontend::query(sql))
            .await
            .map_err(io)?;
        let mut reader = Handshake {
            stream: &mut self.stream,
            buf: BytesMut::new(),
            addr: &addr,
        };
        let (mut failure, mut rows) = (None, Vec::new());
        loop {
            let msg = reader.next().await?;
            match msg[0] {
                be::tag::PARAMETER_STATUS => {
                    let (k, v) = be::parse_parameter_status(&msg)?;
                    self.params.insert(k, v);
                    self.synced = None;
                }
                be::tag::DATA_ROW if rows.len() < max_rows => {
                    let values = be::parse_data_row(&msg)?;
                    let text =
                        |v: Option<&[u8]>| v.map(|b| String::from_utf8_lossy(b).into_owned());
                    rows.push(values.into_iter().map(text).collect());
                }
                be::tag::ERROR_RESPONSE => failure = Some(BackendError::server(msg)?),
                be::tag::READY_FOR_QUERY => {
                    let status = be::parse_ready_for_query(&msg)?;
                    return match failure {
                        Some(e) => Err(e),
                        None => Ok((status, rows)),
                    };
                }
                _ => {}
            }
        }
    }
}

/// Message reader for the exchanges sidepool runs itself (login, SET, ROLLBACK, DISCARD ALL).
struct Handshake<'a> {
    stream: &'a mut Stream,
    buf: BytesMut,
    addr: &'a str,
}

impl Handshake<'_> {
    async fn next(&mut self) -> Result<Bytes, BackendError> {
        loop {
            if let Some(h) = frame::check(&self.buf, MAX_SERVER_MESSAGE)? {
                return Ok(self.buf.split_to(h.total_len).freeze());
            }
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| BackendError::Io {
                    addr: self.addr.to_owned(),
                    source: e,
                })?;
            if n == 0 {
                return Err(BackendError::Closed {
                    addr: self.addr.to_owned(),
                });
            }
        }
    }

    async fn send(&mut self, msg: &[u8]) -> Result<(), BackendError> {
        self.stream
            .write_all(msg)
            .await
            .map_err(|e| BackendError::Io {
                addr: self.addr.to_owned(),
                source: e,
            })
    }

    async fn authenticate(
        &mut self,
        user: &str,
        password: Option<&str>,
    ) -> Result<(), BackendError> {
        let need_password = || BackendError::NoPassword {
            user: user.to_owned(),
        };
        let mut scram: Option<ScramClient> = None;
        loop {
            let msg = self.next().await?;
            if msg[0] == be::tag::ERROR_RESPONSE {
                return Err(BackendError::server(msg)?);
            }
            if msg[0] != be::tag::AUTHENTICATION {
                return Err(BackendError::Unexpected {
                    addr: self.addr.to_owned(),
                    what: "message during authentication",
                });
            }
            match be::parse_authentication(&msg)? {
                Authentication::Ok => return Ok(()),
                Authentication::Cleartext => {
                    let p = password.ok_or_else(need_password)?;
                    self.send(&frontend::password_message(p.as_bytes())).await?;
                }
                Authentication::Md5 { salt } => {
                    let p = password.ok_or_else(need_password)?;
                    let response = auth::md5_response(user, p, salt);
                    self.send(&frontend::password_message(response.as_bytes()))
                        .await?;
                }
                Authentication::Sasl { mechanisms } => {
                    if !mechanisms.iter().any(|m| m == auth::SCRAM_SHA_256) {
                        return Err(BackendError::UnsupportedAuth {
                            what: mechanisms.join(","),
                        });
                    }
                    let p = password.ok_or_else(need_password)?;
                    let (client, first) = ScramClient::new(p.as_bytes());
                    scram = Some(client);
                    self.send(&frontend::sasl_initial_response(
                        auth::SCRAM_SHA_256,
                        &first,
                    ))
                    .await?;
                }
                Authentication::SaslContinue(data) => {
                    let client = scram.as_mut().ok_or(BackendError::Unexpected {
                        addr: self.addr.to_owned(),
                        what: "SASLContinue before SASL",
                    })?;
                    let reply = client.server_first(&data)?;
                    self.send(&frontend::sasl_response(&reply)).await?;
                }
                Authentication::SaslFinal(data) => {
                    let client = scram.take().ok_or(BackendError::Unexpected {
                        addr: self.addr.to_owned(),
                        what: "SASLFinal before SASL",
                    })?;
                    client.server_final(&data)?;
                }
                Authentication::Unsupported(code) => {
                    return Err(BackendError::UnsupportedAuth {
                        what: format!("method code {code}"),
                    });
                }
            }
        }
    }
}
