//! The relay stage: forwards bytes between a logged-in client and a server connection, checking
//! one out at the first message of a transaction (transaction mode) or holding one for the whole
//! session (session mode), and returning it when the server reports idle with nothing owed.
//!
//! Messages are framed as they pass ([`Scanner`]); bodies are copied, never decoded and
//! re-encoded. Session mode reads only headers plus whole `ReadyForQuery`/`ParameterStatus`.
//! Transaction mode also reads whole Parse, Bind, Describe, Close and Query messages from the
//! client: it maps named prepared statements to server-side ones ([`super::statements`]),
//! prepares them on demand, tracks `SET`s and pins clients whose state cannot move
//! ([`super::effects`]), and keeps server responses in order with [`responses`].
//!
//! A server connection goes back to the pool only when all of these hold:
//! - no response is outstanding (every Query, Sync and FunctionCall has had its ReadyForQuery),
//! - the client sent nothing since its last Sync (an unsynced Parse/Bind lives on that server),
//! - the last ReadyForQuery said `I` (no transaction block),
//! - the client is not pinned, and both directions are at a message boundary.

pub mod responses;
pub mod routing;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use sidepool_config::PoolMode;
use sidepool_pool::Pooled;
use sidepool_protocol::pg::TransactionStatus;
use sidepool_protocol::pg::backend::{self as be, Severity};
use sidepool_protocol::pg::frame::{Header, Scanner, Step};
use sidepool_protocol::pg::frontend::{self as fe, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::debug;

use self::responses::{Disposition, Expect, Pending, Responses};
use super::backend::{PgConnector, ServerConn};
use super::cancel::Registration;
use super::effects::{Effect, effects, may_have_effects};
use super::errors::{
    self, CONNECTION_FAILURE, IDLE_IN_TRANSACTION_TIMEOUT, PROTOCOL_VIOLATION, error,
};
use super::login::{Login, login_reply};
use super::replay;
use super::service::PgService;
use super::statements::Statement;
use crate::error::{BackendError, SessionError};
use crate::io::{give_buffer, read_some, take_buffer, write_reading};
use crate::session::ClientInfo;
use crate::tls::Stream;

/// PostgreSQL's own limit on a message (`PQ_LARGE_MESSAGE_LIMIT` is 1 GB).
const MAX_MESSAGE: usize = 1 << 30;
/// Cap on server messages the relay reads whole (ReadyForQuery, ParameterStatus, and in
/// transaction mode ErrorResponse).
const MAX_WHOLE_SERVER: usize = 16 << 20;
/// Client bytes of one cycle kept for a transparent retry after a stale plan; a larger cycle
/// (a COPY, huge parameters) is not retried.
const MAX_RETRY_LOG: usize = 256 * 1024;
/// Budget for ROLLBACK / DISCARD ALL before a connection goes back to the pool.
const RESET_TIMEOUT: Duration = Duration::from_secs(10);
/// Reused idle connections found dead at checkout before giving up.
const DEAD_RETRIES: usize = 3;
/// How much a peer may send us while we are still writing to it (see [`write_reading`]): a
/// relay that only reads one side while writing the other deadlocks when both peers write
/// before they read.
const INBOX_CAP: usize = 64 << 20;

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
    /// Outstanding responses (transaction mode).
    responses: Responses,
    /// What to do with the rest of the server message being streamed.
    current: Disposition,
    /// Settings the client changed here, to read back before release.
    dirty: Vec<String>,
    /// The client ran RESET ALL / DISCARD ALL here.
    reset_all: bool,
    /// The messages of the current cycle as sent, for a retry after a stale plan.
    cycle: Vec<Logged>,
    /// Bytes in `cycle`; past [`MAX_RETRY_LOG`] the cycle is not retried.
    cycle_bytes: usize,
    /// The last message sent ended a cycle: the next one starts a new log.
    cycle_closed: bool,
    /// This cycle was already retried once.
    retried: bool,
    /// When the client's current request began (for `sidepool_query_duration_seconds`).
    cycle_started: std::time::Instant,
    /// The replica this connection belongs to (counted as outstanding while attached), or
    /// `None` for the primary.
    replica: Option<crate::route::Lease>,
}

/// A client message as sent to the server, with the response it expects and, for a Bind, the
/// statement it reads.
struct Logged {
    msg: Bytes,
    expect: Option<Expect>,
    statement: Option<Statement>,
}

impl Attached {
    fn new(conn: Conn, replica: Option<crate::route::Lease>) -> Self {
        Attached {
            conn,
            replica,
            scan: Scanner::new(),
            owed: 0,
            pending: false,
            status: TransactionStatus::Idle,
            responses: Responses::default(),
            current: Disposition::Forward,
            dirty: Vec::new(),
            reset_all: false,
            cycle: Vec::new(),
            cycle_bytes: 0,
            cycle_closed: true,
            retried: false,
            cycle_started: std::time::Instant::now(),
        }
    }

    /// `host:port` of the backend this connection belongs to.
    fn addr(&self, svc: &PgService) -> String {
        match &self.replica {
            Some(lease) => lease.replica().addr.clone(),
            None => svc.primary_addr.clone(),
        }
    }

    fn quiet(&self) -> bool {
        self.owed == 0
            && !self.pending
            && self.responses.is_empty()
            && self.scan.at_boundary()
            && self.conn.buf.is_empty()
    }
}

enum Event {
    Client(std::io::Result<usize>),
    Server(std::io::Result<usize>),
    Killed,
}

/// One logged-in client.
pub(crate) struct Relay {
    svc: Arc<PgService>,
    client: Stream,
    /// Bytes read from the client, not yet handled.
    buf: BytesMut,
    /// Bytes for the server, written once per batch.
    to_server: BytesMut,
    /// Bytes for the client, written once per batch.
    to_client: BytesMut,
    scan: Scanner,
    login: Login,
    cancel: Registration,
    /// Boxed: an idle client's session stays small.
    server: Option<Box<Attached>>,
    /// Transaction mode: statements are mapped, settings tracked, clients pinned.
    mapping: bool,
    /// The client's named statements.
    statements: HashMap<Bytes, Statement>,
    /// Why the client keeps its server connection, if it does (transaction mode).
    pinned: Option<&'static str>,
    /// Dropping the client's messages up to the end of a cycle whose checkout failed.
    discarding: bool,
    /// Dropping the rest of the client message being streamed.
    dropping: bool,
    /// Client bytes arrived while writing to the client and await processing.
    client_inbox: bool,
    /// Server bytes arrived while writing to the server and await processing.
    server_inbox: bool,
    /// Asked to end gracefully while a transaction was in flight: end when it is over.
    closing: bool,
    /// The client's read-your-writes window (read/write split).
    ryw: crate::route::ReadYourWrites,
    /// The next client message waits for the attached replica connection to be returned
    /// ([`routing`]); the client is not read meanwhile.
    held: bool,
}

impl Relay {
    /// Finishes the login (parameters, key, ReadyForQuery) and relays until the client leaves.
    ///
    /// # Errors
    /// Client or server I/O and protocol failures; the client has been told where it can be.
    pub async fn start(
        svc: Arc<PgService>,
        client: Stream,
        buf: BytesMut,
        login: Login,
    ) -> Result<(), SessionError> {
        let cancel = svc.cancels.register();
        let mut relay = Relay {
            mapping: svc.mode == PoolMode::Transaction,
            svc,
            client,
            buf,
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
            scan: Scanner::new(),
            login,
            cancel,
            server: None,
            statements: HashMap::new(),
            pinned: None,
            discarding: false,
            dropping: false,
            client_inbox: false,
            server_inbox: false,
            closing: false,
            ryw: Default::default(),
            held: false,
        };
        let result = relay.run().await;
        if relay.pinned.is_some() {
            relay
                .svc
                .pinned
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        if let Err(e) = &result {
            let (code, msg) = match e {
                SessionError::ClientProtocol(p) => (
                    PROTOCOL_VIOLATION,
                    format!("sidepool: invalid message from client: {p}"),
                ),
                _ => (
                    CONNECTION_FAILURE,
                    format!(
                        "sidepool: lost the server connection of pool \"{}\": {}",
                        relay.svc.name,
                        errors::chain(e)
                    ),
                ),
            };
            if !matches!(e, SessionError::ClientIo(_)) {
                let _ = relay
                    .client
                    .write_all(&error(Severity::Fatal, code, &msg, None))
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
        // The relay's own future is what an idle client costs, so everything but the wait for
        // the next message runs in a boxed future of its own, and nothing of the login (its
        // parameter list, its reply) stays in scope for the loop.
        if !Box::pin(self.greet()).await? {
            return Ok(());
        }
        loop {
            if self.closing && self.between_transactions() {
                return Box::pin(self.terminate()).await;
            }
            if std::mem::take(&mut self.server_inbox) {
                Box::pin(self.on_server()).await?;
                self.release_hold();
                continue;
            }
            if std::mem::take(&mut self.client_inbox) {
                if !Box::pin(self.on_client()).await? {
                    return Box::pin(self.finish()).await;
                }
                continue;
            }
            let info = self.login.info.clone();
            let event = match self.server.as_mut() {
                None => {
                    self.park();
                    tokio::select! {
                        r = read_some(&mut self.client, &mut self.buf) => Event::Client(r),
                        () = info.killed() => Event::Killed,
                    }
                }
                Some(att) => {
                    let conn: &mut ServerConn = &mut att.conn;
                    let held = self.held;
                    tokio::select! {
                        r = read_some(&mut self.client, &mut self.buf), if !held => Event::Client(r),
                        r = conn.stream.read_buf(&mut conn.buf) => Event::Server(r),
                        () = info.killed() => Event::Killed,
                    }
                }
            };
            match event {
                Event::Client(r) => {
                    if r.map_err(SessionError::ClientIo)? == 0
                        || !Box::pin(self.on_client()).await?
                    {
                        return Box::pin(self.finish()).await;
                    }
                }
                Event::Killed => {
                    if info.ends_gracefully() && !self.between_transactions() {
                        // Drain: end once the transaction in flight is over.
                        self.closing = true;
                        continue;
                    }
                    return Box::pin(self.terminate()).await;
                }
                Event::Server(r) => {
                    let addr = self.server_addr();
                    let n = r.map_err(|e| BackendError::Io {
                        addr: addr.clone(),
                        source: e,
                    })?;
                    if n == 0 {
                        return Err(BackendError::Closed { addr }.into());
                    }
                    Box::pin(self.on_server()).await?;
                    self.release_hold();
                }
            }
        }
    }

    /// `host:port` of the attached server connection's backend (the primary if none).
    fn server_addr(&self) -> String {
        match self.server.as_deref() {
            Some(att) => att.addr(&self.svc),
            None => self.svc.primary_addr.clone(),
        }
    }

    /// Between transactions with nothing buffered, gives the buffers back (see [`give_buffer`]):
    /// a parked plaintext client holds none until its next message arrives.
    fn park(&mut self) {
        if self.buf.is_empty() && !self.client.is_tls() {
            give_buffer(&mut self.buf);
        }
        if self.to_server.is_empty() {
            give_buffer(&mut self.to_server);
        }
        if self.to_client.is_empty() {
            give_buffer(&mut self.to_client);
        }
    }

    /// Output buffers back from [`Relay::park`], before a batch is handled.
    fn unpark(&mut self) {
        if self.to_server.capacity() == 0 {
            self.to_server = take_buffer();
        }
        if self.to_client.capacity() == 0 {
            self.to_client = take_buffer();
        }
    }

    /// Sends the login reply. `Ok(false)`: the login failed and the client was told why.
    async fn greet(&mut self) -> Result<bool, SessionError> {
        let params = match self.login_params().await {
            Ok(p) => p,
            Err(msg) => {
                let _ = self.client.write_all(&msg).await;
                return Ok(false);
            }
        };
        // Replica checks log in as the last client did: a key the servers accept.
        if !self.svc.replicas.is_empty() {
            *self.svc.check_key.lock() = self.login.key.clone();
        }
        let reply = login_reply(&params, self.cancel.pid, self.cancel.secret);
        self.client
            .write_all(&reply)
            .await
            .map_err(SessionError::ClientIo)?;
        Ok(true)
    }

    /// Whether no transaction or statement is in flight: no server connection, or one that is
    /// idle with nothing owed.
    fn between_transactions(&self) -> bool {
        self.server
            .as_ref()
            .is_none_or(|a| a.status == TransactionStatus::Idle && a.quiet())
    }

    /// Ends the session as [`ClientInfo::kill`] or [`ClientInfo::end_gracefully`] asked: tells
    /// the client why (25P03 inside a transaction, else 57P01), then cleans the server
    /// connection up as if the client had left.
    async fn terminate(&mut self) -> Result<(), SessionError> {
        let reason = self
            .login
            .info
            .kill_reason()
            .unwrap_or_else(|| "sidepool: terminating connection".into());
        let code = if self
            .server
            .as_ref()
            .is_some_and(|a| a.status != TransactionStatus::Idle)
        {
            IDLE_IN_TRANSACTION_TIMEOUT
        } else {
            errors::ADMIN_SHUTDOWN
        };
        let _ = self
            .client
            .write_all(&error(Severity::Fatal, code, &reason, None))
            .await;
        let _ = self.client.shutdown().await;
        self.finish_after(false).await
    }

    /// The ParameterStatus list for the login reply. Session mode checks its server connection
    /// out here and keeps it; transaction mode needs one only the first time a key is seen.
    async fn login_params(&mut self) -> Result<Vec<(String, String)>, Bytes> {
        let cached = self.svc.login_params.lock().get(&self.login.key).cloned();
        let base = match cached {
            Some(base) if self.mapping => base,
            _ => {
                self.attach(Severity::Fatal, None).await?;
                let att = self.server.as_ref().map(|a| &a.conn.startup_params);
                let base: super::service::LoginParams = Arc::new(
                    att.into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                );
                self.svc
                    .login_params
                    .lock()
                    .insert(self.login.key.clone(), base.clone());
                if self.mapping {
                    self.detach().await;
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
    /// client's: from replica `replica` if given, falling back to the primary when that replica
    /// cannot be reached (nothing of the client's request was sent yet), else from the primary.
    /// `Err` carries the ErrorResponse to send.
    async fn attach(&mut self, severity: Severity, replica: Option<usize>) -> Result<(), Bytes> {
        let svc = self.svc.clone();
        svc.until_resumed().await;
        if let Some(i) = replica {
            let r = &svc.core.replicas[i];
            let lease = r.lease();
            match self.checkout(&svc.replicas[i], &r.addr, severity).await {
                Ok(conn) => {
                    self.install(conn, Some(lease));
                    return Ok(());
                }
                Err((true, _)) => {
                    debug!(backend = %r.addr, "replica unreachable at checkout; the read goes to the primary");
                    r.connect_failed();
                }
                Err((false, reply)) => return Err(reply),
            }
        }
        let conn = self
            .checkout(&svc.primary, &svc.primary_addr, severity)
            .await
            .map_err(|(_, reply)| reply)?;
        self.install(conn, None);
        Ok(())
    }

    fn install(&mut self, conn: Conn, replica: Option<crate::route::Lease>) {
        self.cancel.slot.set(Some(conn.cancel.clone()));
        self.server = Some(Box::new(Attached::new(conn, replica)));
    }

    /// One backend's checkout with the dead-connection retries and the settings sync. `Err`:
    /// whether another backend may be tried (the backend could not be reached), and the
    /// ErrorResponse for the client.
    async fn checkout(
        &self,
        pool: &super::service::PgPool,
        addr: &str,
        severity: Severity,
    ) -> Result<Conn, (bool, Bytes)> {
        let svc = &self.svc;
        for _ in 0..DEAD_RETRIES {
            let mut conn = match pool.get(&self.login.key, self.login.info.clone()).await {
                Ok(c) => c,
                Err(e) => {
                    debug!(backend = addr, error = %errors::chain(&e), "checkout failed");
                    let unreachable = e.kind().side() == sidepool_pool::ErrorSide::Server;
                    return Err((
                        unreachable,
                        errors::checkout_failed(&svc.name, addr, severity, &e),
                    ));
                }
            };
            if conn.is_dead() {
                debug!("idle server connection was closed by the server; discarding it");
                conn.discard();
                continue;
            }
            if let Err(e) = replay::sync_settings(&mut conn, &self.login.settings).await {
                return Err(match e {
                    BackendError::Server { fields, .. } => {
                        conn.release();
                        (false, error(severity, &fields.code, &fields.message, None))
                    }
                    other => {
                        conn.discard();
                        let msg = format!(
                            "sidepool: server connection of pool \"{}\" failed: {}",
                            svc.name,
                            errors::chain(&other)
                        );
                        (true, error(severity, CONNECTION_FAILURE, &msg, None))
                    }
                });
            }
            return Ok(conn);
        }
        let msg = format!(
            "sidepool: every idle server connection of pool \"{}\" to {} was closed by the server",
            svc.name, addr
        );
        Err((
            true,
            error(
                severity,
                CONNECTION_FAILURE,
                &msg,
                Some("the database may have restarted; retry"),
            ),
        ))
    }

    /// Returns the server connection to the pool (transaction mode, server idle), after reading
    /// back the settings the client changed on it.
    async fn detach(&mut self) {
        let Some(mut att) = self.server.take() else {
            return;
        };
        self.cancel.slot.set(None);
        if att.replica.is_none() {
            self.ryw.released();
        }
        if att.reset_all {
            self.login.settings = self.login.startup_settings.clone();
            att.conn.params = att.conn.startup_params.clone();
            att.conn.synced = None;
        }
        if !att.dirty.is_empty() {
            match replay::read_settings(&mut att.conn, &att.dirty).await {
                Ok(values) => {
                    att.conn.synced = None;
                    for (k, v) in values {
                        match v {
                            Some(v) => {
                                Arc::make_mut(&mut self.login.settings)
                                    .insert(k.clone(), v.clone());
                                att.conn.params.insert(k, v);
                            }
                            None => {
                                Arc::make_mut(&mut self.login.settings).remove(&k);
                                att.conn.params.remove(&k);
                            }
                        }
                    }
                }
                Err(e) => {
                    debug!(error = %errors::chain(&e), "reading back settings failed; closing the connection");
                    att.conn.discard();
                    return;
                }
            }
        }
        att.conn.release();
    }

    /// Handles bytes from the client. `Ok(false)`: the client said Terminate.
    async fn on_client(&mut self) -> Result<bool, SessionError> {
        self.unpark();
        let mapping = self.mapping;
        let wants_whole = |t: u8| {
            t == fe::tag::TERMINATE
                || (mapping
                    && matches!(
                        t,
                        fe::tag::PARSE
                            | fe::tag::BIND
                            | fe::tag::DESCRIBE
                            | fe::tag::CLOSE
                            | fe::tag::QUERY
                    ))
        };
        loop {
            if self.server.is_some() && Box::pin(self.hold_for_primary()).await {
                break;
            }
            let step = self
                .scan
                .step(&self.buf, MAX_MESSAGE, MAX_MESSAGE, wants_whole)
                .map_err(SessionError::ClientProtocol)?;
            let (header, len) = match step {
                Step::NeedMore => break,
                Step::Forward(n) => {
                    if !self.dropping {
                        self.to_server.extend_from_slice(&self.buf[..n]);
                    }
                    self.buf.advance(n);
                    continue;
                }
                Step::Started(h, n) => (h, n),
                Step::Message(h) => (h, h.total_len),
            };
            let msg = self.buf.split_to(len).freeze();
            if header.tag == fe::tag::TERMINATE {
                self.flush_to_server().await?;
                self.buf.clear();
                return Ok(false);
            }
            self.on_client_message(header, msg).await?;
        }
        self.flush_to_server().await?;
        self.flush_synthetic().await?;
        Ok(true)
    }

    /// One client message (whole, or the start of a streamed one).
    async fn on_client_message(&mut self, h: Header, msg: Bytes) -> Result<(), SessionError> {
        self.dropping = false;
        if let Some(sql) = fe::statement_bytes(&msg) {
            self.login.info.set_statement(sql);
        }
        self.login
            .info
            .touch(fe::ends_cycle(h.tag) || self.server.as_ref().is_some_and(|a| a.owed > 0));
        if self.server.is_none() && !self.discarding {
            if self.answer_without_server(h.tag, &msg)? {
                self.dropping = true;
                return self.flush_to_client().await;
            }
            let target = self.route_target(h.tag, &msg);
            if let Err(reply) = self.attach(Severity::Error, target).await {
                self.to_client.extend_from_slice(&reply);
                self.discarding = true;
            }
        }
        let Some(att) = self.server.as_mut() else {
            // Discarding: drop the message; at the cycle's end answer as the server would after
            // an error.
            self.dropping = true;
            if fe::ends_cycle(h.tag) {
                self.discarding = false;
                self.to_client
                    .extend_from_slice(&be::ready_for_query(TransactionStatus::Idle));
            }
            return self.flush_to_client().await;
        };
        if fe::ends_cycle(h.tag) && att.owed == 0 {
            att.cycle_started = std::time::Instant::now();
        }
        if fe::ends_cycle(h.tag) {
            att.owed += 1;
            att.pending = false;
        } else if !is_copy(h.tag) {
            att.pending = true;
        }
        if !self.mapping {
            self.to_server.extend_from_slice(&msg);
            return Ok(());
        }
        self.map_message(h.tag, msg)
            .map_err(SessionError::ClientProtocol)
    }

    /// Messages sidepool answers itself when no server connection is attached; `true` if it did.
    /// Nothing is open anywhere then, so a Sync gets `ReadyForQuery 'I'`, a Flush nothing, and in
    /// transaction mode a named Parse is only recorded (it is prepared on the server at first
    /// use) and a statement Close forgets the statement. Answering these without a server is what
    /// keeps `pgbench -M prepared` from stalling when every connection is busy.
    fn answer_without_server(&mut self, tag: u8, msg: &[u8]) -> Result<bool, SessionError> {
        match tag {
            fe::tag::SYNC => self
                .to_client
                .extend_from_slice(&be::ready_for_query(TransactionStatus::Idle)),
            fe::tag::FLUSH => {}
            fe::tag::PARSE if self.mapping => {
                let p = fe::parse_parse(msg).map_err(SessionError::ClientProtocol)?;
                if p.name.is_empty() || self.note_effects(msg) {
                    return Ok(false);
                }
                self.remember(p.name, p.rest);
                self.to_client.extend_from_slice(&be::parse_complete());
            }
            fe::tag::CLOSE if self.mapping => {
                match fe::parse_target(msg).map_err(SessionError::ClientProtocol)? {
                    Target::Statement(name) if self.statements.remove(name).is_some() => {
                        self.to_client.extend_from_slice(&be::close_complete());
                    }
                    _ => return Ok(false),
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Records a client statement and returns it.
    fn remember(&mut self, name: &[u8], content: &[u8]) -> Statement {
        let functions = &self.svc.core.routing.get().write_functions;
        let route = routing::sql_route(routing::content_text(content), functions);
        let stmt = Statement {
            server_name: self.svc.statement_names.name_for(content),
            content: Bytes::copy_from_slice(content),
            read: route.replica,
            writes: route.writes,
        };
        self.statements
            .insert(Bytes::copy_from_slice(name), stmt.clone());
        stmt
    }

    /// Transaction mode: rewrites statement names, prepares on demand, and records the
    /// response each message will get.
    fn map_message(&mut self, tag: u8, msg: Bytes) -> Result<(), sidepool_protocol::ProtocolError> {
        if matches!(
            tag,
            fe::tag::QUERY | fe::tag::PARSE | fe::tag::BIND | fe::tag::FUNCTION_CALL
        ) {
            self.note_write(&msg);
        }
        match tag {
            fe::tag::PARSE => {
                let p = fe::parse_parse(&msg)?;
                self.note_effects(&msg);
                if p.name.is_empty() {
                    self.forward(msg, Some(Expect::Parse(None)));
                    return Ok(());
                }
                let stmt = self.remember(p.name, p.rest);
                let att = self.attached();
                if att.conn.prepared.touch(&stmt.server_name) {
                    att.responses.push(Pending::Synthetic(be::parse_complete()));
                } else {
                    self.prepare(&stmt, false);
                }
            }
            fe::tag::BIND => {
                let b = fe::parse_bind(&msg)?;
                match self.statements.get(b.statement).cloned() {
                    Some(stmt) => {
                        self.ensure_prepared(&stmt);
                        let rewritten = fe::bind_message(&b, &stmt.server_name);
                        self.forward_logged(rewritten, Some(Expect::Bind), Some(stmt));
                    }
                    None => self.forward(msg, Some(Expect::Bind)),
                }
            }
            fe::tag::DESCRIBE => match fe::parse_target(&msg)? {
                Target::Statement(name) if self.statements.contains_key(name) => {
                    let stmt = self.statements[name].clone();
                    self.ensure_prepared(&stmt);
                    self.forward(
                        fe::statement_target(fe::tag::DESCRIBE, &stmt.server_name),
                        Some(Expect::Describe),
                    );
                }
                _ => self.forward(msg, Some(Expect::Describe)),
            },
            fe::tag::CLOSE => match fe::parse_target(&msg)? {
                // The server-side statement stays for other clients; the LRU closes it.
                Target::Statement(name) if self.statements.remove(name).is_some() => {
                    self.attached()
                        .responses
                        .push(Pending::Synthetic(be::close_complete()));
                }
                _ => self.forward(msg, Some(Expect::Close(None))),
            },
            fe::tag::QUERY => {
                if self.apply_effects(&msg, true).1 {
                    let att = self.attached();
                    // Answered here: no ReadyForQuery will come from the server for it.
                    att.owed = att.owed.saturating_sub(1);
                    let mut answer = BytesMut::new();
                    answer.extend_from_slice(&be::command_complete("DEALLOCATE"));
                    answer.extend_from_slice(&be::ready_for_query(att.status));
                    att.responses.push(Pending::Synthetic(answer.freeze()));
                } else {
                    self.forward(msg, Some(Expect::Ready));
                }
            }
            fe::tag::SYNC | fe::tag::FUNCTION_CALL => self.forward(msg, Some(Expect::Ready)),
            fe::tag::EXECUTE => self.forward(msg, Some(Expect::Execute)),
            _ => self.forward(msg, None),
        }
        Ok(())
    }

    fn attached(&mut self) -> &mut Attached {
        // map_message runs only with a server attached (on_client_message checked).
        self.server
            .as_deref_mut()
            .unwrap_or_else(|| unreachable!("mapping without a server"))
    }

    fn forward(&mut self, msg: Bytes, expect: Option<Expect>) {
        self.forward_logged(msg, expect, None);
    }

    /// Sends a client message, records the response it expects, and keeps it in the cycle log.
    fn forward_logged(&mut self, msg: Bytes, expect: Option<Expect>, statement: Option<Statement>) {
        self.to_server.extend_from_slice(&msg);
        let att = self.attached();
        if std::mem::take(&mut att.cycle_closed) {
            att.cycle.clear();
            att.cycle_bytes = 0;
            att.retried = false;
        }
        att.cycle_closed = expect == Some(Expect::Ready);
        // Only a cycle that opens with the Bind of a mapped statement is ever retried
        // (`retry_stale`): any other is marked too large at its first message and not logged.
        let opens = att.cycle.is_empty() && att.cycle_bytes == 0;
        if opens && !(expect == Some(Expect::Bind) && statement.is_some()) {
            att.cycle_bytes = usize::MAX / 2;
        } else if att.cycle_bytes + msg.len() <= MAX_RETRY_LOG {
            att.cycle_bytes += msg.len();
            att.cycle.push(Logged {
                msg,
                expect: expect.clone(),
                statement,
            });
        } else {
            att.cycle_bytes = usize::MAX / 2; // too large: never retried
        }
        if let Some(e) = expect {
            att.responses.push(Pending::Forward(e));
        }
    }

    fn ensure_prepared(&mut self, stmt: &Statement) {
        if !self.attached().conn.prepared.touch(&stmt.server_name) {
            self.prepare(stmt, true);
        }
    }

    /// Prepares `stmt` on the attached connection, closing the least recently used statement
    /// first when the connection is at its limit. `hidden`: the client did not ask for this
    /// Parse, so its ParseComplete is swallowed.
    fn prepare(&mut self, stmt: &Statement, hidden: bool) {
        let capacity = self.svc.prepared_per_connection;
        let att = self
            .server
            .as_mut()
            .unwrap_or_else(|| unreachable!("prepare without a server"));
        if let Some(victim) = att.conn.prepared.insert(stmt.server_name.clone(), capacity) {
            self.to_server
                .extend_from_slice(&fe::statement_target(fe::tag::CLOSE, &victim));
            att.responses
                .push(Pending::Hidden(Expect::Close(Some(victim))));
        }
        tracing::trace!(statement = %stmt.server_name, hidden, server.pid = att.conn.cancel.pid, "preparing");
        self.to_server
            .extend_from_slice(&fe::parse_message(&stmt.server_name, &stmt.content));
        let expect = Expect::Parse(Some(stmt.server_name.clone()));
        att.responses.push(if hidden {
            Pending::Hidden(expect)
        } else {
            Pending::Forward(expect)
        });
    }

    /// Applies what a Query or Parse does to session state. Returns true if it pins.
    fn note_effects(&mut self, msg: &[u8]) -> bool {
        self.apply_effects(msg, false).0
    }

    /// Applies what a Query (`query = true`) or Parse does to session state. Returns whether it
    /// pins, and whether it is a lone `DEALLOCATE` of one of the client's mapped statements,
    /// which sidepool answers itself (the server knows that statement under another name).
    fn apply_effects(&mut self, msg: &[u8], query: bool) -> (bool, bool) {
        let Some(sql) = fe::statement_bytes(msg).filter(|s| may_have_effects(s)) else {
            return (false, false);
        };
        let sql = String::from_utf8_lossy(sql);
        let (mut pins, mut answered) = (false, false);
        let found = effects(&sql);
        let lone = found.len() == 1 && !sql.trim().trim_end_matches(';').contains(';');
        for e in found {
            match e {
                Effect::Pin(reason) => {
                    pins = true;
                    if self.pinned.is_none() {
                        self.pinned = Some(reason);
                        self.svc
                            .pinned
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        self.svc
                            .pins_total
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let sql = truncate(&sql, 200);
                        debug!(reason, sql, "client pinned to its server connection");
                    }
                }
                Effect::Setting(name) => {
                    if let Some(att) = self.server.as_mut().filter(|a| !a.dirty.contains(&name)) {
                        att.dirty.push(name);
                    }
                }
                Effect::ResetAll => {
                    if let Some(att) = self.server.as_mut() {
                        att.reset_all = true;
                    }
                }
                // Only a Query runs now; a prepared DEALLOCATE takes effect at Execute, and
                // forgetting statements early would re-Parse names that still exist.
                Effect::DeallocateAll if query => {
                    self.statements.clear();
                    if let Some(att) = self.server.as_mut() {
                        att.conn.prepared.clear();
                    }
                }
                Effect::Deallocate(name) if query && lone => {
                    answered = self.statements.remove(name.as_bytes()).is_some();
                }
                Effect::DeallocateAll | Effect::Deallocate(_) => {}
            }
        }
        (pins, answered)
    }

    async fn flush_to_server(&mut self) -> Result<(), SessionError> {
        if self.to_server.is_empty() {
            return Ok(());
        }
        let Some(att) = self.server.as_mut() else {
            self.to_server.clear();
            return Ok(());
        };
        let ServerConn { stream, buf, .. } = &mut *att.conn;
        let written = write_reading(stream, &self.to_server, buf, INBOX_CAP).await;
        self.server_inbox |= written.map_err(|e| BackendError::Io {
            addr: self.server_addr(),
            source: e,
        })?;
        self.to_server.clear();
        Ok(())
    }

    /// Sends answers sidepool made that are now due (nothing outstanding before them).
    async fn flush_synthetic(&mut self) -> Result<(), SessionError> {
        if let Some(att) = self.server.as_mut() {
            att.responses.take_ready_synthetic(&mut self.to_client);
        }
        self.flush_to_client().await?;
        self.maybe_release().await;
        Ok(())
    }

    async fn flush_to_client(&mut self) -> Result<(), SessionError> {
        if self.to_client.is_empty() {
            return Ok(());
        }
        self.client_inbox |=
            write_reading(&mut self.client, &self.to_client, &mut self.buf, INBOX_CAP)
                .await
                .map_err(SessionError::ClientIo)?;
        self.to_client.clear();
        Ok(())
    }

    /// Handles bytes from the server: forwards them (minus swallowed answers to sidepool's own
    /// messages, plus sidepool's answers in their place), tracks ReadyForQuery and reported
    /// parameters, and releases the connection when the transaction is over.
    async fn on_server(&mut self) -> Result<(), SessionError> {
        let mapping = self.mapping;
        let mut retrying = false;
        let Some(att) = self.server.as_mut() else {
            return Ok(());
        };
        loop {
            let step = att
                .scan
                .step(&att.conn.buf, MAX_MESSAGE, MAX_WHOLE_SERVER, |t| {
                    t == be::tag::READY_FOR_QUERY
                        || t == be::tag::PARAMETER_STATUS
                        || (mapping && t == be::tag::ERROR_RESPONSE)
                })
                .map_err(BackendError::Protocol)?;
            let (tag, len) = match step {
                Step::NeedMore => break,
                Step::Forward(n) => {
                    if att.current == Disposition::Forward {
                        self.to_client.extend_from_slice(&att.conn.buf[..n]);
                    }
                    att.conn.buf.advance(n);
                    continue;
                }
                Step::Started(h, n) => (h.tag, n),
                Step::Message(h) => (h.tag, h.total_len),
            };
            let stale = mapping && tag == be::tag::ERROR_RESPONSE && {
                let err = Bytes::copy_from_slice(&att.conn.buf[..len]);
                retry_stale(att, &err, &mut self.to_server)
            };
            att.current = if stale {
                retrying = true;
                Disposition::Swallow
            } else if mapping {
                let conn: &mut ServerConn = &mut att.conn;
                att.responses
                    .on_server_message(tag, &mut self.to_client, &mut conn.prepared)
            } else {
                Disposition::Forward
            };
            let conn: &mut ServerConn = &mut att.conn;
            let msg = &conn.buf[..len];
            if tag == be::tag::READY_FOR_QUERY {
                att.status = be::parse_ready_for_query(msg).map_err(BackendError::Protocol)?;
                att.owed = att.owed.saturating_sub(1);
                if att.owed == 0 {
                    self.login.info.touch(false);
                    let took = att.cycle_started.elapsed();
                    match &att.replica {
                        Some(lease) => lease.replica().metrics.query(took),
                        None => self.svc.metrics.query(took),
                    }
                }
            } else if tag == be::tag::PARAMETER_STATUS {
                let (k, v) = be::parse_parameter_status(msg).map_err(BackendError::Protocol)?;
                let follows = replay::follows_client(&k) || self.login.settings.contains_key(&k);
                if follows && self.login.settings.get(&k) != Some(&v) {
                    Arc::make_mut(&mut self.login.settings).insert(k.clone(), v.clone());
                }
                conn.params.insert(k, v);
                conn.synced = None;
            }
            if att.current == Disposition::Forward {
                self.to_client.extend_from_slice(msg);
            }
            conn.buf.advance(len);
        }
        if retrying {
            self.flush_to_server().await?;
        }
        self.flush_synthetic().await
    }

    /// Transaction mode: gives the server connection back once nothing ties the client to it.
    async fn maybe_release(&mut self) {
        let Some(att) = self.server.as_ref() else {
            return;
        };
        let idle = att.status == TransactionStatus::Idle && att.quiet() && self.scan.at_boundary();
        if idle && self.mapping && self.pinned.is_none() && !self.client_inbox {
            self.detach().await;
        }
    }

    /// The client is gone: clean the server connection (ROLLBACK, and DISCARD ALL in session
    /// mode or when pinned) and return it, or close it when its state is unknown.
    async fn finish(&mut self) -> Result<(), SessionError> {
        self.finish_after(true).await
    }

    /// [`Relay::finish`]; `vanished`: the client left on its own (counted when it left a
    /// transaction open).
    async fn finish_after(&mut self, vanished: bool) -> Result<(), SessionError> {
        let Some(att) = self.server.take() else {
            return Ok(());
        };
        self.cancel.slot.set(None);
        if vanished && (att.status != TransactionStatus::Idle || !att.quiet()) {
            self.svc
                .abandoned_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.svc.metrics.abandoned();
        }
        if !att.quiet() {
            debug!("client left mid-statement; closing its server connection");
            att.conn.discard();
            return Ok(());
        }
        let (mut conn, status) = (att.conn, att.status);
        let discard_all =
            !self.mapping || self.pinned.is_some() || att.reset_all || !att.dirty.is_empty();
        let reset = async {
            if status != TransactionStatus::Idle {
                debug!("client left inside a transaction; rolling it back");
                conn.run("ROLLBACK").await?;
            }
            if discard_all {
                conn.params = conn.startup_params.clone();
                conn.synced = None;
                conn.prepared.clear();
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

/// After a stale plan (SQLSTATE 0A000, "cached plan must not change result type", raised when
/// DDL changed a prepared statement's result type) on the Bind that opens a cycle outside a
/// transaction block, sends the cycle again behind its Sync with the statement prepared afresh.
/// Nothing of the cycle reached the client yet, so the client sees only the retried result.
/// Returns true if it did; the error is then swallowed.
fn retry_stale(att: &mut Attached, err: &[u8], to_server: &mut BytesMut) -> bool {
    if att.retried || att.status != TransactionStatus::Idle || att.cycle_bytes > MAX_RETRY_LOG {
        return false;
    }
    let Some(Logged {
        expect: Some(Expect::Bind),
        statement: Some(stmt),
        ..
    }) = att.cycle.first()
    else {
        return false;
    };
    let stale = be::parse_error(err).is_ok_and(|e| {
        e.code == "0A000"
            && e.message
                .contains("cached plan must not change result type")
    });
    if !stale {
        return false;
    }
    let stmt = stmt.clone();
    let conn: &mut ServerConn = &mut att.conn;
    if !att.responses.abandon_for_retry(&mut conn.prepared) {
        return false;
    }
    att.retried = true;
    to_server.extend_from_slice(&fe::statement_target(fe::tag::CLOSE, &stmt.server_name));
    att.responses.push(Pending::Hidden(Expect::Close(None)));
    to_server.extend_from_slice(&fe::parse_message(&stmt.server_name, &stmt.content));
    att.responses.push(Pending::Hidden(Expect::Parse(Some(
        stmt.server_name.clone(),
    ))));
    for logged in &att.cycle {
        to_server.extend_from_slice(&logged.msg);
        if let Some(e) = &logged.expect {
            if *e == Expect::Ready {
                att.owed += 1;
            }
            att.responses.push(Pending::Forward(e.clone()));
        }
    }
    debug!(statement = %stmt.server_name, "stale plan after DDL: statement prepared again and the cycle retried");
    true
}

/// CopyData, CopyDone and CopyFail continue the cycle of the statement that started COPY.
fn is_copy(tag: u8) -> bool {
    matches!(
        tag,
        fe::tag::COPY_DATA | fe::tag::COPY_DONE | fe::tag::COPY_FAIL
    )
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
