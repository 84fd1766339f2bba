//! Server connections: opening and authenticating a connection to MySQL/MariaDB/TiDB for the
//! pool, and the small exchanges sidepool runs itself (settings, COM_INIT_DB, hidden prepares,
//! ROLLBACK, COM_RESET_CONNECTION).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use sidepool_config::TcpOptions;
use sidepool_protocol::mysql::handshake::{self, Greeting, HandshakeResponse41};
use sidepool_protocol::mysql::response::{self, Event, Expect, OkPacket, PrepareOk, Tracker};
use sidepool_protocol::mysql::{
    CapabilityFlags, StatusFlags, auth, command, lenenc_int, lenenc_str, packet,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::tidb::Health;
use super::tidb::replica_read::Applied;
use crate::error::BackendError;
use crate::net::SharedTcp;
use crate::tls::{ServerTls, Stream, TlsError};

/// Cap on a packet sidepool reads whole in its own exchanges.
const MAX_OWN_PACKET: usize = 16 << 20;

/// Capabilities every server connection uses.
pub const BASE_CAPABILITIES: CapabilityFlags = CapabilityFlags::CLIENT_LONG_PASSWORD
    .union(CapabilityFlags::CLIENT_LONG_FLAG)
    .union(CapabilityFlags::CLIENT_PROTOCOL_41)
    .union(CapabilityFlags::CLIENT_TRANSACTIONS)
    .union(CapabilityFlags::CLIENT_SECURE_CONNECTION)
    .union(CapabilityFlags::CLIENT_PLUGIN_AUTH)
    .union(CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA)
    .union(CapabilityFlags::CLIENT_CONNECT_ATTRS);

/// Capabilities that change what the server sends or accepts. A client's choice of these is
/// part of the connection key: it only ever gets server connections negotiated the same way,
/// so sidepool never rewrites result formats.
pub const KEYED_CAPABILITIES: CapabilityFlags = CapabilityFlags::CLIENT_FOUND_ROWS
    .union(CapabilityFlags::CLIENT_LOCAL_FILES)
    .union(CapabilityFlags::CLIENT_IGNORE_SPACE)
    .union(CapabilityFlags::CLIENT_INTERACTIVE)
    .union(CapabilityFlags::CLIENT_MULTI_STATEMENTS)
    .union(CapabilityFlags::CLIENT_MULTI_RESULTS)
    .union(CapabilityFlags::CLIENT_PS_MULTI_RESULTS)
    .union(CapabilityFlags::CLIENT_SESSION_TRACK)
    .union(CapabilityFlags::CLIENT_DEPRECATE_EOF);

/// Which server connections are interchangeable: one user, one set of format-changing
/// capabilities, one connection collation. The schema is session state (COM_INIT_DB).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// User name.
    pub user: Arc<str>,
    /// The client's [`KEYED_CAPABILITIES`].
    pub capabilities: CapabilityFlags,
    /// Collation id sent at login.
    pub collation: u8,
}

/// Session state that follows a client across server connections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionState {
    /// Current schema (`USE`, COM_INIT_DB, the login database).
    pub schema: Option<String>,
    /// Session variables the client changed: name → SQL literal.
    pub vars: BTreeMap<String, String>,
}

/// Opens server connections for one backend of one pool.
#[derive(Debug)]
pub struct MyConnector {
    /// `host:port`, resolved on every connect.
    pub addr: String,
    /// `[pools.tcp]` of the pool; its `server_*` options go on every new socket.
    pub tcp: SharedTcp,
    /// Password per user name.
    pub passwords: BTreeMap<String, String>,
    /// The last greeting a server sent, for the greeting sidepool sends clients.
    pub greeting: Arc<Mutex<Option<Greeting>>>,
    /// TLS towards the server (`[pools.tls] server_mode`).
    pub tls: ServerTls,
    /// Whether the backend is in service (TiDB's status port); always in service elsewhere.
    pub health: Arc<Health>,
    /// The pool is `protocol = "tidb"`: a server whose version string does not say TiDB (or
    /// a TiDB behind a `mysql` pool) is logged once.
    pub tidb: bool,
    /// TiDB replica-read backends: the pool's routing settings, whose `tidb_*` session
    /// settings every connection applies right after login. `None` elsewhere.
    pub replica_read: Option<Arc<crate::route::Routing>>,
}

impl sidepool_pool::Connector for MyConnector {
    type Conn = ServerConn;
    type Key = ConnKey;
    type Error = BackendError;

    async fn connect(&self, key: &ConnKey) -> Result<ServerConn, BackendError> {
        let password = self
            .passwords
            .get(&*key.user)
            .map(String::as_str)
            .unwrap_or("");
        if let Some(why) = self.health.out_of_service() {
            // Sent to the client as is, like a server's own refusal.
            let code = super::errors::CONN_HOST_ERROR;
            return Err(BackendError::MySqlServer {
                code,
                message: why.to_string(),
                payload: Bytes::from(response::err_packet(code, "HY000", &why)),
            });
        }
        let tcp = self.tcp.read().server;
        let mut conn = ServerConn::connect(&self.addr, &self.tls, &tcp, key, password).await?;
        conn.health = Some(self.health.clone());
        if let Some(routing) = &self.replica_read {
            let applied = Applied::now(routing);
            if let Err(e) = conn.query_must(&applied.sql).await {
                tracing::warn!(
                    backend = %self.addr,
                    error = %crate::error::chain(&e),
                    "TiDB refused the replica-read session settings; reads go to the primary. Check routing.tidb_replica_read and tidb_read_staleness against the server's version"
                );
                return Err(e);
            }
            conn.after_login = Some(applied);
        }
        let first = self
            .greeting
            .lock()
            .replace(conn.greeting.clone())
            .is_none();
        if first && conn.greeting.is_tidb() != self.tidb {
            tracing::warn!(
                backend = %self.addr,
                version = %conn.greeting.server_version,
                "server version does not match the pool's protocol (\"tidb\" pools expect TiDB, \"mysql\" pools MySQL or MariaDB); set [[pools]] protocol to match"
            );
        }
        Ok(conn)
    }
}

/// Statements prepared on one server connection, by SQL text.
#[derive(Debug, Default)]
pub struct Prepared {
    by_sql: HashMap<Bytes, (u32, u64)>,
    clock: u64,
}

impl Prepared {
    /// The server id of `sql`, marking it used.
    pub fn get(&mut self, sql: &Bytes) -> Option<u32> {
        self.clock += 1;
        let clock = self.clock;
        self.by_sql.get_mut(sql).map(|(id, used)| {
            *used = clock;
            *id
        })
    }

    /// Records `sql` as prepared under `id`. Returns server ids to close: one it replaces and
    /// the least recently used one when over `capacity`.
    pub fn insert(&mut self, sql: Bytes, id: u32, capacity: usize) -> Vec<u32> {
        self.clock += 1;
        let mut close: Vec<u32> = self
            .by_sql
            .insert(sql, (id, self.clock))
            .map(|(old, _)| old)
            .into_iter()
            .collect();
        if self.by_sql.len() > capacity.max(1)
            && let Some(victim) = self
                .by_sql
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            close.extend(self.by_sql.remove(&victim).map(|(id, _)| id));
        }
        close
    }

    /// Forgets everything (after COM_RESET_CONNECTION).
    pub fn clear(&mut self) {
        self.by_sql.clear();
    }
}

/// A server's ERR payload as an error that keeps it whole for the client.
fn refused(payload: Vec<u8>) -> BackendError {
    let e = response::parse_err(&payload).unwrap_or(response::ErrPacket {
        code: 0,
        state: "HY000".into(),
        message: "malformed ERR packet".into(),
    });
    BackendError::MySqlServer {
        code: e.code,
        message: e.message,
        payload: Bytes::from(payload),
    }
}

/// Reads one logical packet from `stream`: its last sequence id and payload.
async fn read_one(
    stream: &mut Stream,
    buf: &mut BytesMut,
    addr: &str,
) -> Result<(u8, Vec<u8>), BackendError> {
    loop {
        if let Some(l) = packet::read_logical(buf, MAX_OWN_PACKET)? {
            let _ = buf.split_to(l.consumed);
            return Ok((l.last_seq, l.payload));
        }
        let n = stream.read_buf(buf).await.map_err(|e| BackendError::Io {
            addr: addr.to_owned(),
            source: e,
        })?;
        if n == 0 {
            return Err(BackendError::Closed {
                addr: addr.to_owned(),
            });
        }
    }
}

/// The outcome of one exchange sidepool ran itself.
#[derive(Debug)]
pub enum Reply {
    /// OK.
    Ok(OkPacket),
    /// ERR, payload kept to forward.
    Err(Bytes),
    /// A text result set: its rows.
    Rows(Vec<Vec<Option<String>>>),
    /// COM_STMT_PREPARE_OK.
    Prepared(PrepareOk),
}

/// One authenticated server connection.
#[derive(Debug)]
pub struct ServerConn {
    /// The socket.
    pub stream: Stream,
    /// Read buffer.
    pub buf: BytesMut,
    /// Capabilities negotiated with the server.
    pub capabilities: CapabilityFlags,
    /// The server's greeting (version, thread id).
    pub greeting: Greeting,
    /// `host:port`, for errors.
    pub addr: String,
    /// Statements sidepool prepared here.
    pub prepared: Prepared,
    /// Session state set here.
    pub state: SessionState,
    /// Last status flags the server sent.
    pub status: StatusFlags,
    /// The backend's service state: an idle connection of a backend out of service counts
    /// as dead, so it is closed instead of handed out.
    pub health: Option<Arc<Health>>,
    /// TiDB replica-read connections: the session settings applied after login (again after
    /// every COM_RESET_CONNECTION). A connection whose settings a reload changed counts as dead.
    pub after_login: Option<Applied>,
}

impl Drop for ServerConn {
    fn drop(&mut self) {
        // COM_QUIT, best effort and never blocking, so the server logs no aborted connection.
        if let Stream::Plain(tcp) = &self.stream {
            let _ = tcp.try_write(&packet::encode(0, &[command::QUIT]));
        }
    }
}

impl ServerConn {
    /// Connects and logs in as `key.user` with `password`, over TLS when `tls` asks for it and
    /// the server offers it (CLIENT_SSL in its greeting): SSLRequest, TLS handshake, then the
    /// HandshakeResponse41 on the encrypted stream.
    ///
    /// # Errors
    /// Unreachable address, TLS refused (the server does not offer it and `server_mode`
    /// requires it) or failed, an unsupported auth plugin, or the server's ERR (kept whole).
    pub async fn connect(
        addr: &str,
        tls: &ServerTls,
        tcp: &TcpOptions,
        key: &ConnKey,
        password: &str,
    ) -> Result<ServerConn, BackendError> {
        let io = |e| BackendError::Io {
            addr: addr.to_owned(),
            source: e,
        };
        let tcp = crate::net::connect(addr, tcp).await.map_err(io)?;
        let mut stream = Stream::Plain(tcp);
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let (_, hello) = read_one(&mut stream, &mut buf, addr).await?;
        if hello.first() == Some(&response::ERR) {
            return Err(refused(hello));
        }
        let greeting = handshake::parse_greeting(&hello)?;
        let mut caps = (BASE_CAPABILITIES | key.capabilities) & greeting.capabilities;
        let mut seq = 1;
        if tls.wants_tls() {
            if greeting.capabilities.contains(CapabilityFlags::CLIENT_SSL) {
                if !buf.is_empty() {
                    // Bytes after the greeting, before our SSLRequest: they would be read as
                    // if they came over TLS (the CVE-2021-23222 class on MySQL).
                    return Err(BackendError::Unexpected {
                        addr: addr.to_owned(),
                        what: "data after the greeting",
                    });
                }
                caps |= CapabilityFlags::CLIENT_SSL;
                let request = packet::encode(seq, &handshake::ssl_request(caps, key.collation));
                stream.write_all(&request).await.map_err(io)?;
                seq += 1;
                stream = match stream {
                    Stream::Plain(tcp) => tls.handshake(tcp).await?,
                    already => already,
                };
            } else if !tls.allows_plaintext() {
                return Err(TlsError::Refused.into());
            }
        }
        let plugin = match greeting.auth_plugin.as_str() {
            "" => auth::NATIVE.to_owned(),
            p => p.to_owned(),
        };
        let scramble =
            auth::scramble(&plugin, &greeting.nonce, password.as_bytes()).ok_or_else(|| {
                BackendError::UnsupportedAuth {
                    what: plugin.clone(),
                }
            })?;
        let hello = HandshakeResponse41 {
            capabilities: caps,
            max_packet_size: handshake::MAX_PACKET_SIZE,
            collation: key.collation,
            user: key.user.to_string(),
            auth_response: scramble,
            database: None,
            auth_plugin: Some(plugin.clone()),
            attributes: vec![("program_name".to_owned(), "sidepool".to_owned())],
        };
        let mut conn = ServerConn {
            stream,
            buf,
            capabilities: caps,
            greeting,
            addr: addr.to_owned(),
            prepared: Prepared::default(),
            state: SessionState::default(),
            status: StatusFlags::SERVER_STATUS_AUTOCOMMIT,
            health: None,
            after_login: None,
        };
        conn.send(seq, &handshake::handshake_response(&hello))
            .await?;
        conn.authenticate(password).await?;
        Ok(conn)
    }

    /// Answers auth switches and caching_sha2 requests until OK or ERR.
    async fn authenticate(&mut self, password: &str) -> Result<(), BackendError> {
        let mut nonce = self.greeting.nonce.clone();
        loop {
            let (seq, msg) = self.read_packet().await?;
            let next = seq.wrapping_add(1);
            match msg.first().copied() {
                Some(response::OK) => return Ok(()),
                Some(response::ERR) => return Err(self.refused(msg)),
                Some(auth::AUTH_SWITCH) => {
                    let (plugin, data) = auth::parse_auth_switch(&msg)?;
                    nonce = data;
                    let reply =
                        auth::scramble(&plugin, &nonce, password.as_bytes()).ok_or_else(|| {
                            BackendError::UnsupportedAuth {
                                what: plugin.clone(),
                            }
                        })?;
                    self.send(next, &reply).await?;
                }
                Some(auth::AUTH_MORE_DATA) => match msg.get(1..) {
                    Some([auth::FAST_AUTH_SUCCESS]) => {}
                    Some([auth::PERFORM_FULL_AUTHENTICATION]) => {
                        if self.stream.is_tls() {
                            let mut p = password.as_bytes().to_vec();
                            p.push(0);
                            self.send(next, &p).await?;
                        } else {
                            self.send(next, &[auth::REQUEST_PUBLIC_KEY]).await?;
                        }
                    }
                    Some(pem) if pem.starts_with(b"-----BEGIN") => {
                        let secret = auth::rsa_encrypt_password(password.as_bytes(), &nonce, pem)?;
                        self.send(next, &secret).await?;
                    }
                    _ => return Err(self.unexpected("AuthMoreData")),
                },
                _ => return Err(self.unexpected("packet during authentication")),
            }
        }
    }

    fn refused(&self, payload: Vec<u8>) -> BackendError {
        refused(payload)
    }

    fn unexpected(&self, what: &'static str) -> BackendError {
        BackendError::Unexpected {
            addr: self.addr.clone(),
            what,
        }
    }

    fn io(&self, e: std::io::Error) -> BackendError {
        BackendError::Io {
            addr: self.addr.clone(),
            source: e,
        }
    }

    /// CLIENT_DEPRECATE_EOF was negotiated.
    pub fn deprecate_eof(&self) -> bool {
        self.capabilities
            .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF)
    }

    /// True when the idle socket shows the connection is gone or the server said something
    /// unasked (a shutdown ERR), its backend is out of service, or a reload changed the
    /// session settings it applied after login. One non-blocking read.
    pub fn is_dead(&mut self) -> bool {
        let out = self
            .health
            .as_ref()
            .is_some_and(|h| h.out_of_service().is_some());
        let stale = self.after_login.as_ref().is_some_and(Applied::stale);
        out || stale || !self.buf.is_empty() || self.stream.is_dead()
    }

    async fn send(&mut self, seq: u8, payload: &[u8]) -> Result<(), BackendError> {
        let bytes = packet::encode(seq, payload);
        self.stream.write_all(&bytes).await.map_err(|e| self.io(e))
    }

    /// Reads one logical packet: its last sequence id and payload.
    async fn read_packet(&mut self) -> Result<(u8, Vec<u8>), BackendError> {
        read_one(&mut self.stream, &mut self.buf, &self.addr).await
    }

    /// Sends a command packet (sequence 0) without waiting for anything.
    ///
    /// # Errors
    /// I/O failure.
    pub async fn send_command(&mut self, payload: &[u8]) -> Result<(), BackendError> {
        self.send(0, payload).await
    }

    /// Runs one command sidepool needs itself and reads its whole response.
    ///
    /// # Errors
    /// I/O failures or a malformed response. A server ERR is `Ok(Reply::Err)`.
    pub async fn command(&mut self, payload: &[u8], expect: Expect) -> Result<Reply, BackendError> {
        self.send_command(payload).await?;
        let mut tracker = Tracker::new(expect, self.deprecate_eof());
        let mut packets = Vec::new();
        loop {
            let (_, p) = self.read_packet().await?;
            let event = tracker.on_packet(&p, p.len(), false)?;
            packets.push(p);
            match event {
                Event::More => {}
                Event::LocalInfile => {
                    // Never asked for by sidepool's own statements; refuse with an empty file.
                    self.send(2, &[]).await?;
                }
                Event::Done { status, .. } => {
                    if let Some(s) = status {
                        self.status = s;
                    }
                    break;
                }
            }
        }
        let first = packets.first().cloned().unwrap_or_default();
        Ok(match (first.first().copied(), expect) {
            (Some(response::ERR), _) => Reply::Err(Bytes::from(first)),
            (_, Expect::Prepare) => Reply::Prepared(response::parse_prepare_ok(&first)?),
            (Some(response::OK), _) | (_, Expect::Ok) => {
                Reply::Ok(response::parse_ok(&first).unwrap_or(OkPacket {
                    affected_rows: 0,
                    last_insert_id: 0,
                    status: self.status,
                    warnings: 0,
                }))
            }
            _ => Reply::Rows(self.text_rows(&packets)),
        })
    }

    /// The rows of a text result set's packets (column count, definitions, [EOF], rows, end).
    fn text_rows(&self, packets: &[Vec<u8>]) -> Vec<Vec<Option<String>>> {
        let columns = packets
            .first()
            .and_then(|p| lenenc_int(p))
            .map_or(0, |(n, _)| n as usize);
        let skip = 1 + columns + usize::from(!self.deprecate_eof());
        let rows = packets
            .get(skip..packets.len().saturating_sub(1))
            .unwrap_or_default();
        rows.iter()
            .map(|row| {
                let mut at = 0;
                (0..columns)
                    .map(|_| {
                        let (v, n) = lenenc_str(row.get(at..).unwrap_or_default())
                            .unwrap_or((None, row.len()));
                        at += n;
                        v.map(|b| String::from_utf8_lossy(b).into_owned())
                    })
                    .collect()
            })
            .collect()
    }

    /// Runs a COM_QUERY of sidepool's own.
    ///
    /// # Errors
    /// As [`ServerConn::command`].
    pub async fn query(&mut self, sql: &str) -> Result<Reply, BackendError> {
        let mut payload = vec![command::QUERY];
        payload.extend_from_slice(sql.as_bytes());
        self.command(&payload, Expect::ResultSets).await
    }

    /// Runs a COM_QUERY of sidepool's own that must succeed.
    ///
    /// # Errors
    /// As [`ServerConn::must`].
    pub async fn query_must(&mut self, sql: &str) -> Result<Reply, BackendError> {
        let mut payload = vec![command::QUERY];
        payload.extend_from_slice(sql.as_bytes());
        self.must(&payload, Expect::ResultSets).await
    }

    /// Runs a statement that must succeed (ROLLBACK, SET of values read back earlier).
    ///
    /// # Errors
    /// As [`ServerConn::command`], and the server's ERR as [`BackendError::MySqlServer`].
    pub async fn must(&mut self, payload: &[u8], expect: Expect) -> Result<Reply, BackendError> {
        match self.command(payload, expect).await? {
            Reply::Err(raw) => Err(self.refused(raw.to_vec())),
            other => Ok(other),
        }
    }

    /// COM_RESET_CONNECTION: rolls back, drops temporary tables, user variables, locks and
    /// prepared statements, resets session variables. The schema stays, and so do the
    /// session settings sidepool applied after login (run again).
    ///
    /// # Errors
    /// As [`ServerConn::must`].
    pub async fn reset(&mut self) -> Result<(), BackendError> {
        self.must(&[command::RESET_CONNECTION], Expect::Ok).await?;
        self.prepared.clear();
        self.state.vars.clear();
        if let Some(sql) = self.after_login.as_ref().map(|a| a.sql.clone()) {
            self.query_must(&sql).await?;
        }
        Ok(())
    }
}
