//! The relay stage: forwards bytes between a logged-in client and a server connection, checking
//! one out at the first message of a transaction (transaction mode) or holding one for the whole
//! session (session mode), and returning it when the server reports idle with nothing owed.
//!
//! Messages are framed as they pass ([`Scanner`]), never decoded and re-encoded: the relay reads
//! only headers, plus whole `ReadyForQuery` and `ParameterStatus` messages from the server.
//! A server connection goes back to the pool only when all of these hold:
//! - the client has no message on the server that still owes a ReadyForQuery (Query, Sync and
//!   FunctionCall each owe one),
//! - the client sent nothing since its last Sync (an unsynced Parse/Bind lives on that server),
//! - the last ReadyForQuery said `I` (no transaction block),
//! - both directions are at a message boundary with nothing buffered.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use sidepool_config::PoolMode;
use sidepool_pool::Pooled;
use sidepool_protocol::pg::backend::{self as be, Severity};
use sidepool_protocol::pg::frame::{Scanner, Step};
use sidepool_protocol::pg::{TransactionStatus, frontend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use super::PgService;
use super::backend::{PgConnector, ServerConn};
use super::cancel::Registration;
use super::client::{Login, login_reply};
use super::errors::{self, CONNECTION_FAILURE, PROTOCOL_VIOLATION, error};
use crate::error::{BackendError, SessionError};
use crate::session::ClientInfo;

/// PostgreSQL's own limit on a message (`PQ_LARGE_MESSAGE_LIMIT` is 1 GB).
const MAX_MESSAGE: usize = 1 << 30;
/// Cap on server messages the relay reads whole (ReadyForQuery, ParameterStatus).
const MAX_WHOLE_SERVER: usize = 64 * 1024;
/// Cap on client messages the relay reads whole (Terminate).
const MAX_WHOLE_CLIENT: usize = 64;
/// Budget for ROLLBACK / DISCARD ALL before a connection goes back to the pool.
const RESET_TIMEOUT: Duration = Duration::from_secs(10);
/// Reused idle connections found dead at checkout before giving up.
const DEAD_RETRIES: usize = 3;
/// How much a peer may send us while we are still writing to it (see [`write_reading`]).
const INBOX_CAP: usize = 64 << 20;

/// Reported parameters a client may change with SET; tracked per client so they follow it to
/// the next server connection.
const TRACKED_REPORTED: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
];

type Conn = Pooled<PgConnector, Arc<ClientInfo>>;

/// A server connection serving the client now.
struct Attached {
    conn: Conn,
    scan: Scanner,
    /// ReadyForQuery messages still owed for cycles the client started.
    owed: u32,
    /// The client sent messages after its last cycle end (e.g. Parse/Bind without Sync yet).
    pending: bool,
    /// Status of the last ReadyForQuery.
    status: TransactionStatus,
}

impl Attached {
    fn quiet(&self) -> bool {
        self.owed == 0 && !self.pending && self.scan.at_boundary() && self.conn.buf.is_empty()
    }
}

enum Event {
    Client(std::io::Result<usize>),
    Server(std::io::Result<usize>),
}

/// One logged-in client.
pub(crate) struct Relay {
    svc: Arc<PgService>,
    client: TcpStream,
    buf: BytesMut,
    scan: Scanner,
    login: Login,
    cancel: Registration,
    server: Option<Attached>,
    /// Dropping the client's messages up to the end of a cycle whose checkout failed.
    discarding: bool,
    /// Client bytes arrived while writing to the client and await processing.
    client_inbox: bool,
    /// Server bytes arrived while writing to the server and await processing.
    server_inbox: bool,
}

impl Relay {
    /// Finishes the login (parameters, key, ReadyForQuery) and relays until the client leaves.
    ///
    /// # Errors
    /// Client or server I/O and protocol failures; the client has been told where it can be.
    pub async fn start(
        svc: Arc<PgService>,
        client: TcpStream,
        buf: BytesMut,
        login: Login,
    ) -> Result<(), SessionError> {
        let cancel = svc.cancels.register();
        let mut relay = Relay {
            svc,
            client,
            buf,
            scan: Scanner::new(),
            login,
            cancel,
            server: None,
            discarding: false,
            client_inbox: false,
            server_inbox: false,
        };
        let result = relay.run().await;
        if let Err(e) = &result {
            if matches!(e, SessionError::Backend(_)) {
                let msg = format!(
                    "sidepool: lost the server connection of pool \"{}\": {}",
                    relay.svc.name,
                    errors::chain(e)
                );
                let _ = relay
                    .client
                    .write_all(&error(Severity::Fatal, CONNECTION_FAILURE, &msg, None))
                    .await;
            } else if let SessionError::ClientProtocol(p) = e {
                let msg = format!("sidepool: invalid message from client: {p}");
                let _ = relay
                    .client
                    .write_all(&error(Severity::Fatal, PROTOCOL_VIOLATION, &msg, None))
                    .await;
            }
            // A server connection in an unknown state is closed, never returned.
            if let Some(att) = relay.server.take() {
                att.conn.discard();
            }
        }
        result
    }

    async fn run(&mut self) -> Result<(), SessionError> {
        let params = match self.login_params().await {
            Ok(p) => p,
            Err(msg) => {
                let _ = self.client.write_all(&msg).await;
                return Ok(());
            }
        };
        let reply = login_reply(&params, self.cancel.pid, self.cancel.secret);
        self.client
            .write_all(&reply)
            .await
            .map_err(SessionError::ClientIo)?;

        loop {
            if std::mem::take(&mut self.server_inbox) {
                self.on_server().await?;
                continue;
            }
            if std::mem::take(&mut self.client_inbox) {
                if !self.on_client().await? {
                    return self.finish().await;
                }
                continue;
            }
            let event = match self.server.as_mut() {
                None => Event::Client(self.client.read_buf(&mut self.buf).await),
                Some(att) => {
                    let conn: &mut ServerConn = &mut att.conn;
                    tokio::select! {
                        r = self.client.read_buf(&mut self.buf) => Event::Client(r),
                        r = conn.stream.read_buf(&mut conn.buf) => Event::Server(r),
                    }
                }
            };
            match event {
                Event::Client(r) => {
                    if r.map_err(SessionError::ClientIo)? == 0 || !self.on_client().await? {
                        return self.finish().await;
                    }
                }
                Event::Server(r) => {
                    let addr = self.svc.primary_addr.clone();
                    let n = r.map_err(|e| BackendError::Io {
                        addr: addr.clone(),
                        source: e,
                    })?;
                    if n == 0 {
                        return Err(BackendError::Closed { addr }.into());
                    }
                    self.on_server().await?;
                }
            }
        }
    }

    /// The ParameterStatus list for the login reply. Session mode checks its server connection
    /// out here and keeps it; transaction mode needs one only the first time a key is seen.
    async fn login_params(&mut self) -> Result<Vec<(String, String)>, Bytes> {
        let cached = self.svc.login_params.lock().get(&self.login.key).cloned();
        let base = match cached {
            Some(base) if self.svc.mode == PoolMode::Transaction => base,
            _ => {
                self.attach(Severity::Fatal).await?;
                let att = self.server.as_ref().map(|a| &a.conn.startup_params);
                let base: super::LoginParams = Arc::new(
                    att.into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                );
                self.svc
                    .login_params
                    .lock()
                    .insert(self.login.key.clone(), base.clone());
                if self.svc.mode == PoolMode::Transaction {
                    self.detach();
                }
                base
            }
        };
        Ok(base
            .iter()
            .map(|(k, v)| (k.clone(), self.login.settings.get(k).unwrap_or(v).clone()))
            .collect())
    }

    /// Checks a server connection out and brings its session settings in line with the
    /// client's. `Err` carries the ErrorResponse to send.
    async fn attach(&mut self, severity: Severity) -> Result<(), Bytes> {
        let svc = &self.svc;
        for _ in 0..DEAD_RETRIES {
            let mut conn = match svc
                .primary
                .get(&self.login.key, self.login.info.clone())
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    debug!(error = %errors::chain(&e), "checkout failed");
                    return Err(errors::checkout_failed(
                        &svc.name,
                        &svc.primary_addr,
                        severity,
                        &e,
                    ));
                }
            };
            if conn.is_dead() {
                debug!("idle server connection was closed by the server; discarding it");
                conn.discard();
                continue;
            }
            if let Err(e) = sync_settings(&mut conn, &self.login.settings).await {
                return Err(match e {
                    BackendError::Server { fields, .. } => {
                        conn.release();
                        error(severity, &fields.code, &fields.message, None)
                    }
                    other => {
                        conn.discard();
                        let msg = format!(
                            "sidepool: server connection of pool \"{}\" failed: {}",
                            svc.name,
                            errors::chain(&other)
                        );
                        error(severity, CONNECTION_FAILURE, &msg, None)
                    }
                });
            }
            self.cancel.slot.set(Some(conn.cancel.clone()));
            self.server = Some(Attached {
                conn,
                scan: Scanner::new(),
                owed: 0,
                pending: false,
                status: TransactionStatus::Idle,
            });
            return Ok(());
        }
        let msg = format!(
            "sidepool: every idle server connection of pool \"{}\" to {} was closed by the server",
            svc.name, svc.primary_addr
        );
        Err(error(
            severity,
            CONNECTION_FAILURE,
            &msg,
            Some("the database may have restarted; retry"),
        ))
    }

    /// Returns the server connection to the pool (transaction mode, server idle).
    fn detach(&mut self) {
        if let Some(att) = self.server.take() {
            self.cancel.slot.set(None);
            att.conn.release();
        }
    }

    /// Handles bytes from the client. `Ok(false)`: the client said Terminate.
    async fn on_client(&mut self) -> Result<bool, SessionError> {
        // Invariant: bytes are forwarded only while a server is attached, so `fwd > 0` implies
        // `self.server.is_some()`, and dropping bytes happens only at `fwd == 0`.
        let mut fwd = 0;
        loop {
            let step = self
                .scan
                .step(&self.buf[fwd..], MAX_MESSAGE, MAX_WHOLE_CLIENT, |t| {
                    t == frontend::tag::TERMINATE
                })
                .map_err(SessionError::ClientProtocol)?;
            match step {
                Step::NeedMore => break,
                Step::Message(_) => {
                    self.flush_to_server(fwd).await?;
                    self.buf.clear();
                    return Ok(false);
                }
                Step::Forward(n) if self.server.is_none() => self.buf.advance(n),
                Step::Forward(n) => fwd += n,
                Step::Started(h, n) => {
                    if self.server.is_none() && !self.discarding {
                        if let Some(answer) = answer_locally(h.tag) {
                            // A lone Sync or Flush with no server: nothing is open anywhere.
                            self.buf.advance(n);
                            if let Some(reply) = answer {
                                self.client
                                    .write_all(&reply)
                                    .await
                                    .map_err(SessionError::ClientIo)?;
                            }
                            continue;
                        }
                        if let Err(reply) = self.attach(Severity::Error).await {
                            self.client
                                .write_all(&reply)
                                .await
                                .map_err(SessionError::ClientIo)?;
                            self.discarding = true;
                        }
                    }
                    let Some(att) = self.server.as_mut() else {
                        // Discarding: drop the message; at the cycle's end answer as the server
                        // would after an error.
                        self.buf.advance(n);
                        if frontend::ends_cycle(h.tag) {
                            self.discarding = false;
                            let rfq = be::ready_for_query(TransactionStatus::Idle);
                            self.client
                                .write_all(&rfq)
                                .await
                                .map_err(SessionError::ClientIo)?;
                        }
                        continue;
                    };
                    if frontend::ends_cycle(h.tag) {
                        att.owed += 1;
                        att.pending = false;
                    } else if !is_copy(h.tag) {
                        att.pending = true;
                    }
                    fwd += n;
                }
            }
        }
        self.flush_to_server(fwd).await?;
        Ok(true)
    }

    async fn flush_to_server(&mut self, n: usize) -> Result<(), SessionError> {
        if n == 0 {
            return Ok(());
        }
        let Some(att) = self.server.as_mut() else {
            return Ok(());
        };
        let ServerConn { stream, buf, .. } = &mut *att.conn;
        self.server_inbox |= write_reading(stream, &self.buf[..n], buf)
            .await
            .map_err(|e| BackendError::Io {
                addr: self.svc.primary_addr.clone(),
                source: e,
            })?;
        self.buf.advance(n);
        Ok(())
    }

    /// Handles bytes from the server: forwards them, tracks ReadyForQuery and reported
    /// parameters, and releases the connection when the transaction is over.
    async fn on_server(&mut self) -> Result<(), SessionError> {
        let Some(att) = self.server.as_mut() else {
            return Ok(());
        };
        let mut fwd = 0;
        loop {
            let step = att
                .scan
                .step(&att.conn.buf[fwd..], MAX_MESSAGE, MAX_WHOLE_SERVER, |t| {
                    t == be::tag::READY_FOR_QUERY || t == be::tag::PARAMETER_STATUS
                })
                .map_err(BackendError::Protocol)?;
            match step {
                Step::NeedMore => break,
                Step::Forward(n) | Step::Started(_, n) => fwd += n,
                Step::Message(h) => {
                    let msg = &att.conn.buf[fwd..fwd + h.total_len];
                    if h.tag == be::tag::READY_FOR_QUERY {
                        att.status =
                            be::parse_ready_for_query(msg).map_err(BackendError::Protocol)?;
                        att.owed = att.owed.saturating_sub(1);
                    } else {
                        let (k, v) =
                            be::parse_parameter_status(msg).map_err(BackendError::Protocol)?;
                        if TRACKED_REPORTED.contains(&k.as_str())
                            || self.login.settings.contains_key(&k)
                        {
                            self.login.settings.insert(k.clone(), v.clone());
                        }
                        att.conn.params.insert(k, v);
                    }
                    fwd += h.total_len;
                }
            }
        }
        self.client_inbox |= write_reading(&mut self.client, &att.conn.buf[..fwd], &mut self.buf)
            .await
            .map_err(SessionError::ClientIo)?;
        att.conn.buf.advance(fwd);
        let idle = att.status == TransactionStatus::Idle && att.quiet() && self.scan.at_boundary();
        if idle && self.svc.mode == PoolMode::Transaction {
            self.detach();
        }
        Ok(())
    }

    /// The client is gone: clean the server connection (ROLLBACK, and DISCARD ALL in session
    /// mode) and return it, or close it when its state is unknown.
    async fn finish(&mut self) -> Result<(), SessionError> {
        let Some(att) = self.server.take() else {
            return Ok(());
        };
        self.cancel.slot.set(None);
        if !att.quiet() {
            debug!("client left mid-statement; closing its server connection");
            att.conn.discard();
            return Ok(());
        }
        let (mut conn, status) = (att.conn, att.status);
        let session = self.svc.mode == PoolMode::Session;
        let reset = async {
            if status != TransactionStatus::Idle {
                debug!("client left inside a transaction; rolling it back");
                conn.run("ROLLBACK").await?;
            }
            if session {
                conn.params = conn.startup_params.clone();
                conn.run("DISCARD ALL").await?;
            }
            Ok::<_, BackendError>(())
        };
        match tokio::time::timeout(RESET_TIMEOUT, reset).await {
            Ok(Ok(())) => conn.release(),
            Ok(Err(e)) => {
                debug!(error = %errors::chain(&e), "reset failed; closing the server connection");
                conn.discard();
            }
            Err(_) => conn.discard(),
        }
        Ok(())
    }
}

/// Writes all of `data` to `stream` while reading whatever the same peer sends into `inbox`
/// (up to [`INBOX_CAP`]). A relay that only reads one side while it writes the other deadlocks
/// when both peers write before they read (a pipelining client and a server answering it fill
/// each other's socket buffers). Returns whether anything was read into `inbox`; a read error
/// or EOF here only stops the side reading, and the main loop sees it on its next read.
async fn write_reading(
    stream: &mut TcpStream,
    data: &[u8],
    inbox: &mut BytesMut,
) -> std::io::Result<bool> {
    if data.is_empty() {
        return Ok(false);
    }
    let (mut reader, mut writer) = stream.split();
    let (mut off, mut got, mut reading) = (0, false, true);
    while off < data.len() {
        tokio::select! {
            biased;
            n = writer.write(&data[off..]) => match n? {
                0 => return Err(std::io::ErrorKind::WriteZero.into()),
                n => off += n,
            },
            n = reader.read_buf(inbox), if reading && inbox.len() < INBOX_CAP => match n {
                Ok(n) if n > 0 => got = true,
                _ => reading = false,
            },
        }
    }
    Ok(got)
}

/// CopyData, CopyDone and CopyFail continue the cycle of the statement that started COPY.
fn is_copy(tag: u8) -> bool {
    matches!(
        tag,
        frontend::tag::COPY_DATA | frontend::tag::COPY_DONE | frontend::tag::COPY_FAIL
    )
}

/// Messages sidepool answers itself when no server connection is attached: `Some(reply)`.
fn answer_locally(tag: u8) -> Option<Option<Bytes>> {
    match tag {
        frontend::tag::SYNC => Some(Some(be::ready_for_query(TransactionStatus::Idle))),
        frontend::tag::FLUSH => Some(None),
        _ => None,
    }
}

/// Applies the client's session settings that differ on this server connection, in one
/// round trip (`set_config` parses values as the startup packet would, lists included).
async fn sync_settings(
    conn: &mut ServerConn,
    wanted: &std::collections::BTreeMap<String, String>,
) -> Result<(), BackendError> {
    let diff: Vec<(&String, &String)> = wanted
        .iter()
        .filter(|(k, v)| conn.params.get(*k) != Some(*v))
        .collect();
    if diff.is_empty() {
        return Ok(());
    }
    let calls: Vec<String> = diff
        .iter()
        .map(|(k, v)| {
            format!(
                "pg_catalog.set_config({}, {}, false)",
                literal(k),
                literal(v)
            )
        })
        .collect();
    conn.run(&format!("SELECT {}", calls.join(", "))).await?;
    for (k, v) in diff {
        conn.params.insert(k.clone(), v.clone());
    }
    Ok(())
}

/// A SQL escape-string literal: correct whatever `standard_conforming_strings` is.
fn literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}
