//! The relay stage: takes one client command at a time, checks a server connection out for it
//! when none is attached (transaction mode) or holds one for the whole session (session mode),
//! forwards the command and streams the response back, and returns the connection when the
//! last OK/EOF status shows no transaction and nothing pins the client.
//!
//! The classic protocol is strictly request/response, so the relay is too: it reads a whole
//! command, then relays the response packet by packet. This file is the async driver: the
//! decisions (what a command asks for, statement id mapping, response streaming, release)
//! are the socket-free [`machine`]; the session around the commands is [`session`], and what
//! every protocol shares is [`crate::lifecycle`].

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::{Buf, Bytes, BytesMut};
use sidepool_config::PoolMode;
use sidepool_pool::Pooled;
use sidepool_protocol::mysql::packet::{self, Scanner, Step};
use sidepool_protocol::mysql::response::{self, Expect};
use sidepool_protocol::mysql::{StatusFlags, command as com};
use tokio::io::AsyncWriteExt;
use tracing::{debug, trace};

use super::backend::{MyConnector, Reply, ServerConn, SessionState};
use super::effects::{Effect, effects};
use super::errors::{self, UNKNOWN_STMT_HANDLER};
use super::login::Login;
use super::service::MyService;
use crate::error::{BackendError, SessionError};
use crate::io::{read_some, write_reading};
use crate::lifecycle::{INBOX_CAP, OnKill, on_kill};
use crate::tls::Stream;
use machine::{Action, ClientStatement, Hold, Outcome, Progress, ResponseRelay, Statements, Ties};

/// Cap on one client command (MySQL's own `max_allowed_packet` maximum is 1 GiB; sidepool
/// reads commands whole, so it keeps a lower cap).
const MAX_COMMAND: usize = 256 << 20;

/// How long the error after a `query_timeout` may take to reach the client.
const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

mod change_user;
mod machine;
pub mod routing;
mod session;

type Conn = Pooled<MyConnector, Arc<crate::session::ClientInfo>>;

/// A server connection serving the client now.
struct Attached {
    conn: Conn,
    /// Variables the client changed here, to read back before release.
    dirty: Vec<String>,
    /// The client changed schema with `USE`.
    schema_dirty: bool,
    /// The replica this connection belongs to, `None` for the primary (read/write split).
    replica: Option<crate::route::Lease>,
}

/// One logged-in client.
pub(crate) struct Relay {
    svc: Arc<MyService>,
    client: Stream,
    buf: BytesMut,
    out: Vec<u8>,
    login: Login,
    state: SessionState,
    server: Option<Attached>,
    statements: Statements,
    pinned: Option<&'static str>,
    /// Keep the server connection after this command, and why.
    hold: Option<Hold>,
    /// COM_STMT_SEND_LONG_DATA was sent; its execute must run on the same connection.
    long_data: bool,
    /// Asked to end gracefully inside a transaction: end when it is over (drain).
    closing: bool,
    /// Last status flags the client saw.
    status: StatusFlags,
    session_mode: bool,
    /// The replica the next checkout should use ([`routing`]).
    target: Option<usize>,
    /// The client's read-your-writes window.
    ryw: crate::route::ReadYourWrites,
    /// COM_CHANGE_USER attempts that failed authentication on this connection.
    change_user_failures: u8,
}

enum Next {
    Command(u8, Vec<u8>),
    Gone,
    Killed,
}

impl Relay {
    /// Finishes the login (schema check, OK) and relays until the client leaves.
    ///
    /// # Errors
    /// Client or server I/O and protocol failures.
    pub async fn start(
        svc: Arc<MyService>,
        client: Stream,
        buf: BytesMut,
        login: Login,
    ) -> Result<(), SessionError> {
        let schema = Some(login.info.database.clone()).filter(|d| !d.is_empty());
        let mut relay = Relay {
            session_mode: svc.mode == PoolMode::Session,
            svc,
            client,
            buf,
            out: Vec::new(),
            state: SessionState {
                schema,
                vars: Default::default(),
            },
            login,
            server: None,
            statements: Statements::default(),
            pinned: None,
            hold: None,
            long_data: false,
            closing: false,
            status: StatusFlags::SERVER_STATUS_AUTOCOMMIT,
            target: None,
            ryw: Default::default(),
            change_user_failures: 0,
        };
        let result = relay.run().await;
        if relay.pinned.is_some() {
            relay.svc.pinned.fetch_sub(1, Relaxed);
        }
        if result.is_err()
            && let Some(att) = relay.server.take()
        {
            att.conn.discard();
        }
        result
    }

    async fn run(&mut self) -> Result<(), SessionError> {
        let seq = self.login.next_seq;
        if !self.finish_login(seq).await? {
            return Ok(());
        }
        loop {
            match self.next_command().await? {
                Next::Command(seq, payload) => {
                    if !self.on_command(seq, payload).await? {
                        return self.finish(false).await;
                    }
                }
                Next::Gone => return self.finish(true).await,
                Next::Killed => {
                    let between = !self.in_transaction();
                    if on_kill(&self.login.info, between) == OnKill::AfterTransaction {
                        self.closing = true;
                        continue;
                    }
                    return self.terminate().await;
                }
            }
            if self.closing && !self.in_transaction() {
                return self.terminate().await;
            }
        }
    }

    async fn reply(&mut self, seq: u8, payload: &[u8]) -> Result<(), SessionError> {
        let bytes = packet::encode(seq.wrapping_add(1), payload);
        self.client
            .write_all(&bytes)
            .await
            .map_err(SessionError::ClientIo)
    }

    async fn reply_error(&mut self, seq: u8, code: u16, msg: &str) -> Result<(), SessionError> {
        self.client
            .write_all(&errors::error(seq.wrapping_add(1), code, msg))
            .await
            .map_err(SessionError::ClientIo)
    }
    /// Handles one command. `Ok(false)`: COM_QUIT.
    async fn on_command(&mut self, seq: u8, payload: Vec<u8>) -> Result<bool, SessionError> {
        let Some(&code) = payload.first() else {
            self.reply_error(
                seq,
                errors::PACKETS_OUT_OF_ORDER,
                "sidepool: empty command packet",
            )
            .await?;
            return Ok(true);
        };
        let text = com::text(&payload);
        trace!(code, seq, len = payload.len(), "client command");
        if matches!(code, com::QUERY | com::STMT_PREPARE) {
            self.login.info.set_statement(text);
        }
        self.login.info.touch(true);
        if machine::lapse_hold(&mut self.hold, code, text) {
            // The connection was kept for a LAST_INSERT_ID() that did not come.
            self.maybe_release().await;
        }
        self.target = if self.server.is_none() {
            self.route_target(code, &payload)
        } else {
            None
        };
        self.note_write(code, &payload);
        match machine::action(code, text, self.server.is_some()) {
            Action::Quit => return Ok(false),
            Action::Pong => {
                let ok = response::ok_packet(0, 0, self.status, 0);
                self.reply(seq, &ok).await?;
            }
            Action::CloseStatement => self.statements.close(&payload),
            Action::ResetConnection => self.reset_connection(seq).await?,
            Action::ChangeUser => self.change_user(seq, &payload).await?,
            Action::Prepare => self.prepare(seq, payload).await?,
            Action::Statement => self.statement_command(seq, payload).await?,
            Action::Exchange(expect, found) => self.exchange(seq, payload, expect, found).await?,
        }
        self.login.info.touch(false);
        Ok(true)
    }

    /// What ties the client to its server connection now.
    fn ties(&self) -> Ties {
        Ties {
            session_mode: self.session_mode,
            pinned: self.pinned.is_some(),
            hold: self.hold.is_some(),
            long_data: self.long_data,
            status: self.status,
        }
    }

    /// Transaction mode: gives the connection back once nothing ties the client to it.
    async fn maybe_release(&mut self) {
        if self.ties().allow_release() {
            self.detach().await;
        }
    }

    fn pin(&mut self, reason: &'static str) {
        if self.pinned.is_none() && !self.session_mode {
            self.pinned = Some(reason);
            self.svc.pinned.fetch_add(1, Relaxed);
            self.svc.pins_total.fetch_add(1, Relaxed);
            debug!(reason, "client pinned to its server connection");
        }
    }

    /// Attaches, answering the client with the checkout error if that fails. `false`: failed.
    async fn attach_or_tell(&mut self, seq: u8) -> Result<bool, SessionError> {
        match self.attach().await {
            Ok(()) => Ok(true),
            Err(err) => {
                self.reply(seq, &err).await?;
                Ok(false)
            }
        }
    }

    /// Forwards a command and relays its response; then applies `found` effects and releases
    /// the connection if it may.
    async fn exchange(
        &mut self,
        seq: u8,
        payload: Vec<u8>,
        expect: Expect,
        found: Vec<Effect>,
    ) -> Result<(), SessionError> {
        if !self.attach_or_tell(seq).await? {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let outcome = self.relay(seq, &payload, expect, None).await?;
        self.backend_metrics().query(started.elapsed());
        if let Some(status) = outcome.status {
            self.status = status;
        }
        for e in found {
            match e {
                Effect::Pin(reason) => self.pin(reason),
                Effect::HoldNext => self.hold = Some(Hold::NextStatement),
                Effect::Var(name) if !outcome.error => {
                    if let Some(att) = self.server.as_mut().filter(|a| !a.dirty.contains(&name)) {
                        att.dirty.push(name);
                    }
                }
                Effect::Schema if !outcome.error => {
                    if let Some(att) = self.server.as_mut() {
                        att.schema_dirty = true;
                    }
                }
                Effect::Var(_) | Effect::Schema => {}
            }
        }
        self.hold = machine::hold_after(self.hold, &outcome);
        if self.ties().allow_release_after(outcome.error) {
            self.detach().await;
        }
        Ok(())
    }

    fn autocommit_off(&self) -> bool {
        !self.status.contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT)
    }

    /// COM_STMT_PREPARE: forwarded; the server's id is replaced by a client id sidepool keeps.
    async fn prepare(&mut self, seq: u8, payload: Vec<u8>) -> Result<(), SessionError> {
        if !self.attach_or_tell(seq).await? {
            return Ok(());
        }
        let id = self.statements.next_id();
        let outcome = self.relay(seq, &payload, Expect::Prepare, Some(id)).await?;
        // A prepared SET changes the session each time it is executed; a pin applies now.
        let (pins, found): (Vec<Effect>, Vec<Effect>) =
            effects(&String::from_utf8_lossy(com::text(&payload)))
                .into_iter()
                .partition(|e| matches!(e, Effect::Pin(_)));
        if let Some(ok) = outcome.prepared {
            let sql = Bytes::copy_from_slice(com::text(&payload));
            let functions = &self.svc.core.routing.get().write_functions;
            let route = routing::sql_route(&sql, functions);
            self.statements.add(sql.clone(), ok.params, route, found);
            self.remember_prepared(sql, ok.statement_id).await?;
        }
        if let Some(Effect::Pin(reason)) = pins.first() {
            self.pin(reason);
        }
        self.maybe_release().await;
        Ok(())
    }

    /// Records a statement prepared on the attached connection, closing those it displaces.
    async fn remember_prepared(&mut self, sql: Bytes, server_id: u32) -> Result<(), SessionError> {
        let cap = self.svc.prepared_per_connection;
        let Some(att) = self.server.as_mut() else {
            return Ok(());
        };
        for victim in att.conn.prepared.insert(sql, server_id, cap) {
            let mut close = vec![com::STMT_CLOSE];
            close.extend_from_slice(&victim.to_le_bytes());
            att.conn.send_command(&close).await?;
        }
        Ok(())
    }

    /// COM_STMT_EXECUTE/SEND_LONG_DATA/RESET/FETCH: client id → this connection's server id,
    /// preparing the statement here first if needed.
    async fn statement_command(&mut self, seq: u8, payload: Vec<u8>) -> Result<(), SessionError> {
        let code = payload[0];
        let stmt = match self.statements.lookup(&payload) {
            Ok(stmt) => stmt,
            Err(machine::Unknown(id)) => {
                if code != com::STMT_SEND_LONG_DATA {
                    let msg =
                        format!("Unknown prepared statement handler ({id}) given to sidepool");
                    self.reply_error(seq, UNKNOWN_STMT_HANDLER, &msg).await?;
                }
                return Ok(());
            }
        };
        if machine::opens_cursor(&payload) {
            self.pin("cursor");
        }
        if !self.attach_or_tell(seq).await? {
            return Ok(());
        }
        let Some(server_id) = self.server_statement(seq, code, &stmt).await? else {
            return Ok(());
        };
        let payload = machine::for_server(&payload, server_id, &stmt);
        match code {
            com::STMT_SEND_LONG_DATA => {
                self.long_data = true;
                let Some(att) = self.server.as_mut() else {
                    return Ok(());
                };
                let bytes = packet::encode(seq, &payload);
                att.conn
                    .stream
                    .write_all(&bytes)
                    .await
                    .map_err(|e| BackendError::Io {
                        addr: att.conn.addr.clone(),
                        source: e,
                    })?;
                Ok(())
            }
            com::STMT_EXECUTE | com::STMT_RESET => {
                self.long_data = false;
                let (expect, found) = if code == com::STMT_RESET {
                    (Expect::Ok, Vec::new())
                } else {
                    (Expect::ResultSets, stmt.effects)
                };
                self.exchange(seq, payload, expect, found).await
            }
            _ => self.exchange(seq, payload, Expect::Rows, Vec::new()).await,
        }
    }

    /// The attached connection's id for `stmt`, prepared there first if needed. `None`: no
    /// connection, or the prepare failed (the client got its error unless the command
    /// `code` gets no response).
    async fn server_statement(
        &mut self,
        seq: u8,
        code: u8,
        stmt: &ClientStatement,
    ) -> Result<Option<u32>, SessionError> {
        let Some(att) = self.server.as_mut() else {
            return Ok(None);
        };
        if let Some(sid) = att.conn.prepared.get(&stmt.sql) {
            return Ok(Some(sid));
        }
        let mut prep = vec![com::STMT_PREPARE];
        prep.extend_from_slice(&stmt.sql);
        match att.conn.command(&prep, Expect::Prepare).await? {
            Reply::Prepared(ok) => {
                self.remember_prepared(stmt.sql.clone(), ok.statement_id)
                    .await?;
                Ok(Some(ok.statement_id))
            }
            Reply::Err(err) => {
                if code != com::STMT_SEND_LONG_DATA {
                    self.reply(seq, &err).await?;
                }
                self.maybe_release().await;
                Ok(None)
            }
            _ => Err(BackendError::Unexpected {
                addr: self.svc.primary_addr.clone(),
                what: "reply to a prepare",
            }
            .into()),
        }
    }

    /// COM_RESET_CONNECTION: the client's state is cleared and it is unpinned. With a server
    /// attached the server resets too; otherwise sidepool answers.
    async fn reset_connection(&mut self, seq: u8) -> Result<(), SessionError> {
        self.forget_session_state();
        if let Some(att) = self.server.as_mut() {
            att.dirty.clear();
            att.conn.reset().await?;
            self.status = att.conn.status;
        } else {
            self.status = StatusFlags::SERVER_STATUS_AUTOCOMMIT;
        }
        let ok = response::ok_packet(0, 0, self.status, 0);
        self.reply(seq, &ok).await?;
        self.maybe_release().await;
        Ok(())
    }

    /// Forgets what the client set up in its session (variables, statements, holds, a pin), as
    /// COM_RESET_CONNECTION and a new login do.
    fn forget_session_state(&mut self) {
        self.state.vars.clear();
        self.statements.clear();
        self.hold = None;
        self.long_data = false;
        if self.pinned.take().is_some() {
            self.svc.pinned.fetch_sub(1, Relaxed);
        }
    }

    /// Sends one command and relays its whole response ([`ResponseRelay`]) within the pool's
    /// `query_timeout` (one timer per command). With `client_id`, a COM_STMT_PREPARE_OK's
    /// statement id is replaced by it.
    async fn relay(
        &mut self,
        seq: u8,
        payload: &[u8],
        expect: Expect,
        client_id: Option<u32>,
    ) -> Result<Outcome, SessionError> {
        let Some(limit) = self.svc.core.query_timeout() else {
            return self.relay_response(seq, payload, expect, client_id).await;
        };
        let response = self.relay_response(seq, payload, expect, client_id);
        match tokio::time::timeout(limit, response).await {
            Ok(outcome) => outcome,
            Err(_) => Err(self.query_timed_out(seq, limit).await),
        }
    }

    /// The command outlived `query_timeout`: the server connection is closed, never returned,
    /// the client gets ER_QUERY_TIMEOUT (bounded, in case it stopped reading) and the session
    /// ends.
    async fn query_timed_out(&mut self, seq: u8, after: std::time::Duration) -> SessionError {
        let mut addr = self.svc.primary_addr.clone();
        if let Some(att) = self.server.take() {
            addr.clone_from(&att.conn.addr);
            att.conn.discard();
        }
        tracing::warn!(server.addr = %addr, query_timeout = ?after, "query timed out; server connection closed");
        let msg = format!(
            "sidepool: query execution was interrupted, query_timeout ({}) of pool \"{}\" \
             exceeded; the connection is closed",
            sidepool_config::format_duration(after),
            self.svc.name
        );
        let err = errors::error(seq.wrapping_add(1), errors::QUERY_TIMEOUT, &msg);
        let _ = tokio::time::timeout(REPLY_TIMEOUT, self.client.write_all(&err)).await;
        SessionError::QueryTimeout { addr, after }
    }

    /// [`Self::relay`] without the timeout.
    async fn relay_response(
        &mut self,
        seq: u8,
        payload: &[u8],
        expect: Expect,
        client_id: Option<u32>,
    ) -> Result<Outcome, SessionError> {
        let svc_addr = self.svc.primary_addr.clone();
        let io = |e| {
            SessionError::from(BackendError::Io {
                addr: svc_addr.clone(),
                source: e,
            })
        };
        let Some(att) = self.server.as_mut() else {
            return Ok(Outcome::default());
        };
        let conn: &mut ServerConn = &mut att.conn;
        let bytes = packet::encode(seq, payload);
        write_reading(&mut conn.stream, &bytes, &mut conn.buf, INBOX_CAP)
            .await
            .map_err(io)?;
        let mut response = ResponseRelay::new(expect, conn.deprecate_eof(), client_id);
        if response.expects_nothing() {
            return Ok(Outcome::default());
        }
        loop {
            let progress = response
                .feed(&mut conn.buf, &mut self.out)
                .map_err(BackendError::Protocol)?;
            if !self.out.is_empty() {
                write_reading(&mut self.client, &self.out, &mut self.buf, INBOX_CAP)
                    .await
                    .map_err(SessionError::ClientIo)?;
                self.out.clear();
            }
            match progress {
                Progress::Done(outcome) => {
                    if let Some(s) = outcome.status {
                        conn.status = s;
                    }
                    return Ok(outcome);
                }
                Progress::LocalInfile => {
                    forward_infile(&mut self.client, &mut self.buf, conn).await?;
                    response.infile_sent();
                }
                Progress::NeedMore => {
                    let n = read_some(&mut conn.stream, &mut conn.buf)
                        .await
                        .map_err(io)?;
                    if n == 0 {
                        return Err(BackendError::Closed {
                            addr: conn.addr.clone(),
                        }
                        .into());
                    }
                }
            }
        }
    }
}

/// LOAD DATA LOCAL INFILE: forwards the client's file packets to the server until the empty
/// packet that ends them.
async fn forward_infile(
    client: &mut Stream,
    buf: &mut BytesMut,
    conn: &mut ServerConn,
) -> Result<(), SessionError> {
    let mut scan = Scanner::new();
    let mut chunk = Vec::new();
    loop {
        let mut ended = false;
        loop {
            match scan.step(buf, 0, |_| false) {
                Step::NeedMore => break,
                Step::Forward(n) => {
                    chunk.extend_from_slice(&buf[..n]);
                    buf.advance(n);
                }
                Step::Started(p, n) => {
                    chunk.extend_from_slice(&buf[..n]);
                    buf.advance(n);
                    if p.header.len == 0 && !p.continuation {
                        ended = true;
                        break;
                    }
                }
                Step::Packet(p) => {
                    // Not asked for (wants_whole is false); forwarded all the same.
                    let n = p.header.total_len();
                    chunk.extend_from_slice(&buf[..n]);
                    buf.advance(n);
                }
            }
        }
        if !chunk.is_empty() {
            write_reading(&mut conn.stream, &chunk, &mut conn.buf, INBOX_CAP)
                .await
                .map_err(|e| BackendError::Io {
                    addr: conn.addr.clone(),
                    source: e,
                })?;
            chunk.clear();
        }
        if ended && scan.at_boundary() {
            return Ok(());
        }
        if read_some(client, buf)
            .await
            .map_err(SessionError::ClientIo)?
            == 0
        {
            return Err(SessionError::ClientIo(
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
    }
}
