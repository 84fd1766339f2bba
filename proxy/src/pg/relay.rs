//! The relay stage: forwards bytes between a logged-in client and a server connection, checking
//! one out at the first message of a transaction (transaction mode) or holding one for the whole
//! session (session mode), and returning it when the server reports idle with nothing owed.
//!
//! This file is the async driver: it waits on the client, the server and the kill signal,
//! feeds bytes to the protocol logic in [`machine`] (a synchronous state machine with byte
//! fixture tests) and performs what it asks: writes, checkout, release ([`session`],
//! [`crate::lifecycle`]).
//!
//! Messages are framed as they pass ([`sidepool_protocol::pg::frame::Scanner`]); bodies are
//! copied, never decoded and re-encoded. Session mode reads only headers plus whole `ReadyForQuery`/`ParameterStatus`.
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

mod machine;
pub mod responses;
pub mod routing;
mod session;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sidepool_config::PoolMode;
use sidepool_protocol::pg::backend::Severity;
use sidepool_protocol::pg::frontend as fe;
use tokio::io::AsyncWriteExt;

use self::machine::{ClientStep, ConnSide, Env, Link, Machine, SqlRoute, Unattached};
use super::backend::ServerConn;
use super::cancel::Registration;
use super::errors::{self, CONNECTION_FAILURE, PROTOCOL_VIOLATION, QUERY_CANCELED, error};
use super::login::Login;
use super::service::PgService;
use crate::error::{BackendError, SessionError};
use crate::io::{read_some, write_reading};
use crate::lifecycle::{INBOX_CAP, OnKill, on_kill};
use crate::tls::Stream;

type Conn = crate::lifecycle::Conn<PgService>;

/// A server connection serving the client now.
struct Attached {
    conn: Conn,
    /// The protocol state of this connection ([`Machine`]).
    link: Link,
    /// When the client's current request began (for `sidepool_query_duration_seconds`).
    cycle_started: std::time::Instant,
    /// The replica this connection belongs to (counted as outstanding while attached), or
    /// `None` for the primary.
    replica: Option<crate::route::Lease>,
}

impl Attached {
    fn new(conn: Conn, replica: Option<crate::route::Lease>) -> Self {
        Attached {
            conn,
            replica,
            link: Link::default(),
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
        self.link.quiet(self.conn.buf.is_empty())
    }

    /// The machine's state of this connection, and the connection's own.
    fn parts(&mut self) -> (&mut Link, ConnSide<'_>) {
        let conn: &mut ServerConn = &mut self.conn;
        let side = ConnSide {
            input: &mut conn.buf,
            prepared: &mut conn.prepared,
            params: &mut conn.params,
            synced: &mut conn.synced,
            pid: conn.cancel.pid,
        };
        (&mut self.link, side)
    }
}

impl Env for PgService {
    fn statement_name(&self, content: &[u8]) -> Arc<str> {
        self.statement_names.name_for(content)
    }

    fn route(&self, text: &[u8]) -> SqlRoute {
        routing::sql_route(text, &self.core.routing.get().write_functions)
    }

    fn prepared_capacity(&self) -> usize {
        self.prepared_per_connection
    }

    fn pinned(&self) {
        self.pinned
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.pins_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

enum Event {
    Client(std::io::Result<usize>),
    Server(std::io::Result<usize>),
    Killed,
    QueryTimeout,
}

/// How long the CancelRequest sent for a request past `query_timeout` may take; the server
/// connection is closed either way.
const CANCEL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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
    /// The protocol logic: what each message does.
    machine: Machine,
    login: Login,
    cancel: Registration,
    /// Boxed: an idle client's session stays small.
    server: Option<Box<Attached>>,
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
    /// `query_timeout` of the request in flight (`None`: not timed).
    query_limit: Option<std::time::Duration>,
    /// Fires `query_limit` after the request in flight started; set once per request, not
    /// per message. Boxed and made at the first timed request: idle sessions stay small.
    query_timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
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
            machine: Machine::new(svc.mode == PoolMode::Transaction),
            svc,
            client,
            buf,
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
            login,
            cancel,
            server: None,
            client_inbox: false,
            server_inbox: false,
            closing: false,
            ryw: Default::default(),
            held: false,
            query_limit: None,
            query_timer: None,
        };
        let result = relay.run().await;
        if relay.machine.pinned.is_some() {
            relay
                .svc
                .pinned
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        if let Err(e) = &result {
            // A server connection in an unknown state is closed, never returned; first, so
            // that a client slow to take its error does not hold the slot.
            if let Some(att) = relay.server.take() {
                att.conn.discard();
            }
            if !matches!(e, SessionError::ClientIo(_)) {
                let (code, msg) = last_words(e, &relay.svc.name);
                let _ = relay
                    .client
                    .write_all(&error(Severity::Fatal, code, &msg, None))
                    .await;
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
                    let timed = att.link.owed > 0 && self.query_limit.is_some();
                    let timer = self.query_timer.as_mut();
                    tokio::select! {
                        r = read_some(&mut self.client, &mut self.buf), if !held => Event::Client(r),
                        r = read_some(&mut conn.stream, &mut conn.buf) => Event::Server(r),
                        () = fired(timer), if timed => Event::QueryTimeout,
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
                    let between = self.between_transactions();
                    if on_kill(&info, between) == OnKill::AfterTransaction {
                        self.closing = true;
                        continue;
                    }
                    return Box::pin(self.terminate()).await;
                }
                Event::QueryTimeout => return Err(self.query_timed_out()),
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

    /// Whether no transaction or statement is in flight: no server connection, or one that is
    /// idle with nothing owed.
    fn between_transactions(&self) -> bool {
        self.server
            .as_ref()
            .is_none_or(|a| a.link.between_transactions(a.conn.buf.is_empty()))
    }

    /// Handles bytes from the client. `Ok(false)`: the client said Terminate.
    async fn on_client(&mut self) -> Result<bool, SessionError> {
        self.unpark();
        loop {
            if self.server.is_some() && Box::pin(self.hold_for_primary()).await {
                break;
            }
            let step = self
                .machine
                .next_client(&mut self.buf, &mut self.to_server)
                .map_err(SessionError::ClientProtocol)?;
            match step {
                ClientStep::NeedMore => break,
                ClientStep::Terminate => {
                    self.flush_to_server().await?;
                    self.buf.clear();
                    return Ok(false);
                }
                ClientStep::Message(h, msg) => self.on_client_message(h.tag, msg).await?,
            }
        }
        self.flush_to_server().await?;
        self.flush_synthetic().await?;
        Ok(true)
    }

    /// One client message (whole, or the start of a streamed one): checks a server connection
    /// out if it needs one, and hands it to the machine.
    async fn on_client_message(&mut self, tag: u8, msg: Bytes) -> Result<(), SessionError> {
        if let Some(sql) = fe::statement_bytes(&msg) {
            self.login.info.set_statement(sql);
        }
        self.login
            .info
            .touch(fe::ends_cycle(tag) || self.server.as_ref().is_some_and(|a| a.link.owed > 0));
        if self.server.is_none() {
            let unattached = self
                .machine
                .without_server(tag, &msg, &*self.svc, &mut self.to_client)
                .map_err(SessionError::ClientProtocol)?;
            if unattached == Unattached::Answered {
                return self.flush_to_client().await;
            }
            let target = self.route_target(tag, &msg);
            if let Err(reply) = self.attach(Severity::Error, target).await {
                self.machine
                    .checkout_failed(tag, &reply, &mut self.to_client);
                return self.flush_to_client().await;
            }
        }
        if self.machine.mapping
            && matches!(
                tag,
                fe::tag::QUERY | fe::tag::PARSE | fe::tag::BIND | fe::tag::FUNCTION_CALL
            )
        {
            self.note_write(&msg);
        }
        let Some(att) = self.server.as_deref_mut() else {
            unreachable!("a server connection was just attached");
        };
        let starts = fe::ends_cycle(tag) && att.link.owed == 0;
        if starts {
            att.cycle_started = std::time::Instant::now();
        }
        let (link, side) = att.parts();
        self.machine
            .on_message(tag, msg, link, side, &*self.svc, &mut self.to_server)
            .map_err(SessionError::ClientProtocol)?;
        if starts {
            self.start_query_timer();
        }
        Ok(())
    }

    /// Starts the `query_timeout` clock of a request: one timer reset per request, checked by
    /// the wait in [`Self::run`] while a response is owed.
    fn start_query_timer(&mut self) {
        self.query_limit = self.svc.core.query_timeout();
        let Some(limit) = self.query_limit else {
            return;
        };
        let deadline = tokio::time::Instant::now() + limit;
        match self.query_timer.as_mut() {
            Some(timer) => timer.as_mut().reset(deadline),
            None => self.query_timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }

    /// The request in flight outlived `query_timeout`: the server is asked to cancel it (in the
    /// background; the connection is closed either way, by [`Self::start`], which also tells
    /// the client) and the session ends.
    fn query_timed_out(&mut self) -> SessionError {
        let after = self.query_limit.unwrap_or_default();
        let addr = self.server_addr();
        if let Some(att) = self.server.as_ref() {
            let target = att.conn.cancel.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(CANCEL_TIMEOUT, super::cancel::send(&target)).await;
            });
        }
        tracing::warn!(server.addr = %addr, query_timeout = ?after, "query timed out; server connection closed");
        SessionError::QueryTimeout { addr, after }
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
            att.link.responses.take_ready_synthetic(&mut self.to_client);
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

    /// Handles bytes from the server (see [`Machine::on_server`]), and releases the connection
    /// when the transaction is over.
    async fn on_server(&mut self) -> Result<(), SessionError> {
        let Some(att) = self.server.as_deref_mut() else {
            return Ok(());
        };
        let (link, side) = att.parts();
        let outcome = self
            .machine
            .on_server(
                link,
                side,
                &mut self.login.settings,
                &mut self.to_server,
                &mut self.to_client,
            )
            .map_err(BackendError::Protocol)?;
        for _ in 0..outcome.done {
            self.login.info.touch(false);
            let took = att.cycle_started.elapsed();
            match &att.replica {
                Some(lease) => lease.replica().metrics.query(took),
                None => self.svc.metrics.query(took),
            }
        }
        if outcome.done > 0 && att.link.owed > 0 {
            // A pipelined request is next: its clock starts when the one before it is answered.
            self.start_query_timer();
        }
        if outcome.retrying {
            self.flush_to_server().await?;
        }
        self.flush_synthetic().await
    }

    /// Transaction mode: gives the server connection back once nothing ties the client to it.
    async fn maybe_release(&mut self) {
        let Some(att) = self.server.as_ref() else {
            return;
        };
        if self.machine.releasable(&att.link, att.conn.buf.is_empty()) && !self.client_inbox {
            self.detach().await;
        }
    }
}

/// Completes when `timer` fires; never without one.
async fn fired(timer: Option<&mut std::pin::Pin<Box<tokio::time::Sleep>>>) {
    match timer {
        Some(timer) => timer.await,
        None => std::future::pending().await,
    }
}

/// The SQLSTATE and message of the FATAL a session of pool `pool` ends with after `e`.
fn last_words(e: &SessionError, pool: &str) -> (&'static str, String) {
    match e {
        SessionError::ClientProtocol(p) => (
            PROTOCOL_VIOLATION,
            format!("sidepool: invalid message from client: {p}"),
        ),
        SessionError::QueryTimeout { after, .. } => (
            QUERY_CANCELED,
            format!(
                "sidepool: canceling statement due to query_timeout ({}) of pool \"{pool}\"; \
                 the session is closed",
                sidepool_config::format_duration(*after),
            ),
        ),
        _ => (
            CONNECTION_FAILURE,
            format!(
                "sidepool: lost the server connection of pool \"{pool}\": {}",
                errors::chain(e)
            ),
        ),
    }
}
