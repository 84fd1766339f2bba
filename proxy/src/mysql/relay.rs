//! The relay stage: takes one client command at a time, checks a server connection out for it
//! when none is attached (transaction mode) or holds one for the whole session (session mode),
//! forwards the command and streams the response back, and returns the connection when the
//! last OK/EOF status shows no transaction and nothing pins the client.
//!
//! The classic protocol is strictly request/response, so the relay is too: it reads a whole
//! command, then relays the response packet by packet ([`Scanner`] + [`Tracker`]), rows
//! streamed without decoding. Prepared statements get client ids sidepool assigns; each server
//! connection keeps its own statements by SQL text, prepared on demand.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use sidepool_config::PoolMode;
use sidepool_pool::Pooled;
use sidepool_protocol::mysql::packet::{self, Scanner, Step};
use sidepool_protocol::mysql::response::{self, Event, Expect, Tracker};
use sidepool_protocol::mysql::{StatusFlags, command as com};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, trace};

use super::backend::{MyConnector, Reply, ServerConn, SessionState};
use super::effects::{Effect, effects, reads_last_insert_id};
use super::errors::{self, CLIENT_INTERACTION_TIMEOUT, UNKNOWN_STMT_HANDLER};
use super::login::Login;
use super::replay;
use super::service::MyService;
use crate::error::chain;
use crate::error::{BackendError, SessionError};
use crate::io::write_reading;
use crate::tls::Stream;

/// Cap on one client command (MySQL's own `max_allowed_packet` maximum is 1 GiB; sidepool
/// reads commands whole, so it keeps a lower cap).
const MAX_COMMAND: usize = 256 << 20;
/// Budget for ROLLBACK / COM_RESET_CONNECTION before a connection goes back to the pool.
const RESET_TIMEOUT: Duration = Duration::from_secs(10);
/// Reused idle connections found dead at checkout before giving up.
const DEAD_RETRIES: usize = 3;
/// How much a peer may send while sidepool writes to it (see [`write_reading`]).
const INBOX_CAP: usize = 64 << 20;

mod change_user;
pub mod routing;

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

/// A statement the client prepared.
#[derive(Debug, Clone)]
struct ClientStatement {
    sql: Bytes,
    params: u16,
    /// Parameter types of its last execute that carried them.
    types: Option<Vec<u8>>,
    /// It may run on a replica; it may write (read/write split, classified at prepare).
    read: bool,
    writes: bool,
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
    statements: HashMap<u32, ClientStatement>,
    next_statement: u32,
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

/// Why a connection is kept past the end of a statement outside a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// `SET TRANSACTION` applies to the next transaction on this connection.
    NextStatement,
    /// The statement generated an id; the next one may read it with `LAST_INSERT_ID()`.
    InsertId,
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
            statements: HashMap::new(),
            next_statement: 1,
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
                    if self.login.info.ends_gracefully() && self.in_transaction() {
                        // Drain: end once the open transaction is over.
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

    /// Whether the client is inside a transaction (as the last status said).
    fn in_transaction(&self) -> bool {
        self.status.contains(StatusFlags::SERVER_STATUS_IN_TRANS)
    }

    /// Ends the session as a kill, leak terminate or drain asked: error 4031 inside a
    /// transaction (then rolled back), else 1053 (server shutdown).
    async fn terminate(&mut self) -> Result<(), SessionError> {
        let reason = self
            .login
            .info
            .kill_reason()
            .unwrap_or_else(|| "sidepool: terminating connection".into());
        let code = if self.in_transaction() {
            CLIENT_INTERACTION_TIMEOUT
        } else {
            errors::SERVER_SHUTDOWN
        };
        // Sequence id 1, as if answering the client's next command: the client is idle between
        // commands, and drivers (mysql_async, PyMySQL, Connector/Python) read this packet as
        // that answer; with id 0 they report "packets out of order" instead of the error.
        let _ = self
            .client
            .write_all(&errors::error(1, code, &reason))
            .await;
        let _ = self.client.shutdown().await;
        self.finish(false).await
    }

    /// Checks the login schema once per (user, schema) and, in session mode, takes the
    /// session's connection; then sends the login OK. `false`: the client was refused.
    async fn finish_login(&mut self, seq: u8) -> Result<bool, SessionError> {
        if let Err(err) = self.verify_schema().await {
            self.client
                .write_all(&packet::encode(seq, &err))
                .await
                .map_err(SessionError::ClientIo)?;
            return Ok(false);
        }
        if !self.svc.replicas.is_empty() {
            // Replica checks log in as the last client did.
            *self.svc.check_key.lock() = Some(self.login.key.clone());
        }
        let ok = response::ok_packet(0, 0, self.status, 0);
        self.client
            .write_all(&packet::encode(seq, &ok))
            .await
            .map_err(SessionError::ClientIo)?;
        Ok(true)
    }

    /// Makes sure the server accepts the client's schema for its user (once per pair, then
    /// remembered) and, in session mode, attaches the session's connection. `Err` carries the
    /// ERR payload for the client (unknown database, no access, checkout failure).
    async fn verify_schema(&mut self) -> Result<(), Vec<u8>> {
        let known = match &self.state.schema {
            None => true,
            Some(db) => self
                .svc
                .known_schemas
                .lock()
                .contains(&(self.login.info.user.clone(), db.clone())),
        };
        if known && !self.session_mode {
            return Ok(());
        }
        self.attach().await?;
        if let Some(db) = &self.state.schema {
            self.svc
                .known_schemas
                .lock()
                .insert((self.login.info.user.clone(), db.clone()));
        }
        if !self.session_mode {
            self.detach().await;
        }
        Ok(())
    }

    /// Waits for the next whole command, a kill, or the client leaving.
    async fn next_command(&mut self) -> Result<Next, SessionError> {
        let info = self.login.info.clone();
        loop {
            if let Some(l) = packet::read_logical(&self.buf, MAX_COMMAND)
                .map_err(SessionError::ClientProtocol)?
            {
                self.buf.advance(l.consumed);
                return Ok(Next::Command(l.first_seq, l.payload));
            }
            let read = match self.server.as_mut() {
                None => tokio::select! {
                    r = self.client.read_buf(&mut self.buf) => Some(r),
                    () = info.killed() => None,
                },
                Some(att) => {
                    let conn: &mut ServerConn = &mut att.conn;
                    tokio::select! {
                        r = self.client.read_buf(&mut self.buf) => Some(r),
                        () = info.killed() => None,
                        r = conn.stream.read_buf(&mut conn.buf) => {
                            // The server spoke unasked (shutdown, kill) or closed.
                            let addr = conn.addr.clone();
                            let _ = r;
                            return Err(BackendError::Closed { addr }.into());
                        }
                    }
                }
            };
            match read {
                None => return Ok(Next::Killed),
                Some(r) => {
                    if r.map_err(SessionError::ClientIo)? == 0 {
                        return Ok(Next::Gone);
                    }
                }
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
        if self.hold.take() == Some(Hold::InsertId)
            && !(code == com::QUERY && reads_last_insert_id(&String::from_utf8_lossy(text)))
        {
            // The connection was kept for a LAST_INSERT_ID() that did not come.
            self.maybe_release().await;
        }
        self.target = if self.server.is_none() {
            self.route_target(code, &payload)
        } else {
            None
        };
        self.note_write(code, &payload);
        match code {
            com::QUIT => return Ok(false),
            com::PING if self.server.is_none() => {
                let ok = response::ok_packet(0, 0, self.status, 0);
                self.reply(seq, &ok).await?;
            }
            com::STMT_CLOSE => {
                // No response. The server-side statement stays for reuse (LRU closes it).
                if let Some(id) = com::statement_id(&payload) {
                    self.statements.remove(&id);
                }
            }
            com::RESET_CONNECTION => self.reset_connection(seq).await?,
            com::CHANGE_USER => self.change_user(seq, &payload).await?,
            com::STMT_PREPARE => self.prepare(seq, payload).await?,
            com::STMT_EXECUTE | com::STMT_SEND_LONG_DATA | com::STMT_RESET | com::STMT_FETCH => {
                self.statement_command(seq, payload).await?;
            }
            com::QUERY => {
                let found = effects(&String::from_utf8_lossy(text));
                self.exchange(seq, payload, Expect::ResultSets, found)
                    .await?;
            }
            com::INIT_DB => {
                self.exchange(seq, payload, Expect::Ok, vec![Effect::Schema])
                    .await?;
            }
            com::FIELD_LIST => {
                self.exchange(seq, payload, Expect::FieldList, Vec::new())
                    .await?
            }
            com::STATISTICS => {
                self.exchange(seq, payload, Expect::OnePacket, Vec::new())
                    .await?
            }
            com::SET_OPTION => {
                self.exchange(
                    seq,
                    payload,
                    Expect::Ok,
                    vec![Effect::Pin("COM_SET_OPTION")],
                )
                .await?;
            }
            _ => self.exchange(seq, payload, Expect::Ok, Vec::new()).await?,
        }
        self.login.info.touch(false);
        Ok(true)
    }

    /// Checks a server connection out and brings its state in line with the client's.
    /// `Err` carries the ERR payload for the client.
    async fn attach(&mut self) -> Result<(), Vec<u8>> {
        if self.server.is_some() {
            return Ok(());
        }
        let svc = self.svc.clone();
        svc.until_resumed().await;
        if let Some(i) = self.target.take()
            && self.attach_replica(i).await?
        {
            return Ok(());
        }
        for _ in 0..DEAD_RETRIES {
            let mut conn = match svc
                .primary
                .get(&self.login.key, self.login.info.clone())
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    debug!(error = %chain(&e), "checkout failed");
                    return Err(errors::checkout_failed(&svc.name, &svc.primary_addr, &e));
                }
            };
            if conn.is_dead() {
                conn.discard();
                continue;
            }
            match replay::sync(&mut conn, &self.state).await {
                Ok(None) => {}
                Ok(Some(err)) => {
                    conn.release();
                    return Err(err.to_vec());
                }
                Err(e) => {
                    conn.discard();
                    let msg = format!(
                        "sidepool: server connection of pool \"{}\" failed: {}",
                        svc.name,
                        chain(&e)
                    );
                    return Err(response::err_packet(errors::CONN_HOST_ERROR, "HY000", &msg));
                }
            }
            self.server = Some(Attached {
                conn,
                dirty: Vec::new(),
                schema_dirty: false,
                replica: None,
            });
            return Ok(());
        }
        let msg = format!(
            "sidepool: every idle server connection of pool \"{}\" to {} was closed by the server; retry",
            svc.name, svc.primary_addr
        );
        Err(response::err_packet(errors::CONN_HOST_ERROR, "HY000", &msg))
    }

    /// Returns the server connection after reading back the state the client changed on it.
    async fn detach(&mut self) {
        let Some(mut att) = self.server.take() else {
            return;
        };
        self.ryw.released();
        if !att.dirty.is_empty() || att.schema_dirty {
            let names: Vec<String> = att
                .dirty
                .iter()
                .map(|n| server_name(&att.conn, n))
                .collect();
            if let Err(e) =
                replay::read_back(&mut att.conn, &names, att.schema_dirty, &mut self.state).await
            {
                debug!(error = %chain(&e), "reading back session state failed; closing the connection");
                att.conn.discard();
                return;
            }
        }
        att.conn.release();
    }

    /// Transaction mode: gives the connection back once nothing ties the client to it.
    async fn maybe_release(&mut self) {
        let in_trans = self.status.contains(StatusFlags::SERVER_STATUS_IN_TRANS);
        if !self.session_mode
            && self.pinned.is_none()
            && self.hold.is_none()
            && !self.long_data
            && !in_trans
        {
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
        if outcome.last_insert_id != 0 && self.hold.is_none() {
            self.hold = Some(Hold::InsertId);
        }
        if !outcome.error || !self.autocommit_off() {
            self.maybe_release().await;
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
        let id = self.next_statement;
        let outcome = self.relay(seq, &payload, Expect::Prepare, Some(id)).await?;
        if let Some(ok) = outcome.prepared {
            self.next_statement = self.next_statement.wrapping_add(1).max(1);
            let sql = Bytes::copy_from_slice(com::text(&payload));
            let functions = &self.svc.core.routing.get().write_functions;
            let (read, writes) = routing::sql_route(&sql, functions);
            self.statements.insert(
                id,
                ClientStatement {
                    sql: sql.clone(),
                    params: ok.params,
                    types: None,
                    read,
                    writes,
                },
            );
            self.remember_prepared(sql, ok.statement_id).await?;
        }
        if let Some(e) = effects(&String::from_utf8_lossy(com::text(&payload)))
            .into_iter()
            .find_map(|e| match e {
                Effect::Pin(r) => Some(r),
                _ => None,
            })
        {
            self.pin(e);
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
        let id = com::statement_id(&payload).unwrap_or(0);
        let Some(stmt) = self.statements.get(&id).cloned() else {
            if code != com::STMT_SEND_LONG_DATA {
                let msg = format!("Unknown prepared statement handler ({id}) given to sidepool");
                self.reply_error(seq, UNKNOWN_STMT_HANDLER, &msg).await?;
            }
            return Ok(());
        };
        if code == com::STMT_EXECUTE {
            if let Ok(Some(types)) = com::execute_param_types(&payload, stmt.params)
                && stmt.types.as_deref() != Some(types)
                && let Some(s) = self.statements.get_mut(&id)
            {
                s.types = Some(types.to_vec());
            }
            if com::execute_flags(&payload).is_some_and(|f| f & com::CURSOR_TYPE_READ_ONLY != 0) {
                self.pin("cursor");
            }
        }
        if !self.attach_or_tell(seq).await? {
            return Ok(());
        }
        let Some(att) = self.server.as_mut() else {
            return Ok(());
        };
        let server_id = match att.conn.prepared.get(&stmt.sql) {
            Some(sid) => sid,
            None => {
                let mut prep = vec![com::STMT_PREPARE];
                prep.extend_from_slice(&stmt.sql);
                match att.conn.command(&prep, Expect::Prepare).await? {
                    Reply::Prepared(ok) => {
                        self.remember_prepared(stmt.sql.clone(), ok.statement_id)
                            .await?;
                        ok.statement_id
                    }
                    Reply::Err(err) => {
                        if code != com::STMT_SEND_LONG_DATA {
                            self.reply(seq, &err).await?;
                        }
                        self.maybe_release().await;
                        return Ok(());
                    }
                    _ => {
                        return Err(BackendError::Unexpected {
                            addr: self.svc.primary_addr.clone(),
                            what: "reply to a prepare",
                        }
                        .into());
                    }
                }
            }
        };
        let mut payload = com::with_statement_id(&payload, server_id);
        // An execute that relies on the types of the client's earlier execute (flag 0) gets
        // them spelled out: that earlier execute may have run on another connection, and this
        // connection's statement may never have seen types at all.
        if code == com::STMT_EXECUTE
            && let Some(types) = &stmt.types
            && let Ok(Some(p)) = com::execute_with_types(&payload, stmt.params, types)
        {
            payload = p;
        }
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
                self.exchange(
                    seq,
                    payload,
                    if code == com::STMT_RESET {
                        Expect::Ok
                    } else {
                        Expect::ResultSets
                    },
                    Vec::new(),
                )
                .await
            }
            _ => self.exchange(seq, payload, Expect::Rows, Vec::new()).await,
        }
    }

    /// COM_RESET_CONNECTION: the client's state is cleared and it is unpinned. With a server
    /// attached the server resets too; otherwise sidepool answers.
    async fn reset_connection(&mut self, seq: u8) -> Result<(), SessionError> {
        self.state.vars.clear();
        self.statements.clear();
        self.hold = None;
        self.long_data = false;
        if self.pinned.take().is_some() {
            self.svc.pinned.fetch_sub(1, Relaxed);
        }
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

    /// Sends one command and relays its whole response. With `client_id`, a
    /// COM_STMT_PREPARE_OK's statement id is replaced by it.
    async fn relay(
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
        let mut tracker = Tracker::new(expect, conn.deprecate_eof());
        let mut scan = Scanner::new();
        let mut outcome = Outcome::default();
        if tracker.is_done() {
            return Ok(outcome);
        }
        let mut first_packet = true;
        // Set once the tracker has seen the response's last packet; kept across reads, because
        // that packet may be one the scanner streams (a parameter or column definition ends a
        // COM_STMT_PREPARE response under CLIENT_DEPRECATE_EOF) and its tail may come in a later
        // read. The response is over when `done` and the scanner is at a packet boundary.
        let mut done = false;
        loop {
            let mut infile = false;
            loop {
                let step = scan.step(&conn.buf, packet::MAX_PAYLOAD, |p| {
                    tracker.wants_whole(p) || first_packet
                });
                let event = match step {
                    Step::NeedMore => break,
                    Step::Forward(n) => {
                        self.out.extend_from_slice(&conn.buf[..n]);
                        conn.buf.advance(n);
                        continue;
                    }
                    Step::Started(p, n) => {
                        let head = conn
                            .buf
                            .get(packet::HEADER_LEN..(packet::HEADER_LEN + 1).min(n))
                            .unwrap_or_default();
                        let event = tracker
                            .on_packet(head, p.header.len, p.continuation)
                            .map_err(BackendError::Protocol)?;
                        self.out.extend_from_slice(&conn.buf[..n]);
                        conn.buf.advance(n);
                        event
                    }
                    Step::Packet(p) => {
                        let total = p.header.total_len();
                        let body = &conn.buf[packet::HEADER_LEN..total];
                        let event = tracker
                            .on_packet(body, p.header.len, p.continuation)
                            .map_err(BackendError::Protocol)?;
                        let start = self.out.len();
                        self.out.extend_from_slice(&conn.buf[..total]);
                        if first_packet {
                            outcome.note_first(body, expect);
                            if let (Some(id), Some(_)) = (client_id, outcome.prepared)
                                && let Some(slot) = self.out.get_mut(start + 5..start + 9)
                            {
                                slot.copy_from_slice(&id.to_le_bytes());
                            }
                        } else if body.first() == Some(&response::OK)
                            && p.header.len < 64
                            && let Ok(ok) = response::parse_ok(body)
                        {
                            outcome.last_insert_id = ok.last_insert_id;
                        }
                        conn.buf.advance(total);
                        event
                    }
                };
                first_packet = false;
                match event {
                    Event::More => {}
                    Event::LocalInfile => {
                        infile = true;
                        break;
                    }
                    Event::Done { status, error } => {
                        outcome.status = status;
                        outcome.error = error;
                        done = true;
                        if let Some(s) = status {
                            conn.status = s;
                        }
                    }
                }
                if done && scan.at_boundary() {
                    break;
                }
            }
            if !self.out.is_empty() {
                write_reading(&mut self.client, &self.out, &mut self.buf, INBOX_CAP)
                    .await
                    .map_err(SessionError::ClientIo)?;
                self.out.clear();
            }
            if done && scan.at_boundary() {
                return Ok(outcome);
            }
            if infile {
                forward_infile(&mut self.client, &mut self.buf, conn).await?;
                first_packet = true;
                continue;
            }
            let n = conn.stream.read_buf(&mut conn.buf).await.map_err(io)?;
            if n == 0 {
                return Err(BackendError::Closed {
                    addr: conn.addr.clone(),
                }
                .into());
            }
        }
    }

    /// The client is gone (or quit, or was killed): roll back, reset what it left, return the
    /// connection; close it when its state is unknown.
    async fn finish(&mut self, vanished: bool) -> Result<(), SessionError> {
        let Some(att) = self.server.take() else {
            return Ok(());
        };
        let in_trans = att
            .conn
            .status
            .contains(StatusFlags::SERVER_STATUS_IN_TRANS);
        if vanished && in_trans {
            self.svc.abandoned_total.fetch_add(1, Relaxed);
            self.svc.metrics.abandoned();
        }
        let mut conn = att.conn;
        let must_reset = self.session_mode
            || self.pinned.is_some()
            || !att.dirty.is_empty()
            || att.schema_dirty
            || self.long_data;
        let cleanup = async {
            if in_trans && !must_reset {
                debug!("client left inside a transaction; rolling it back");
                conn.must(b"\x03ROLLBACK", Expect::ResultSets).await?;
            }
            if must_reset {
                conn.reset().await?;
            }
            Ok::<_, BackendError>(())
        };
        match tokio::time::timeout(RESET_TIMEOUT, cleanup).await {
            Ok(Ok(())) => conn.release(),
            Ok(Err(e)) => {
                debug!(error = %chain(&e), "reset failed; closing the server connection");
                conn.discard();
            }
            Err(_) => conn.discard(),
        }
        Ok(())
    }
}

/// The server's name for a variable sidepool tracks under a generic one.
fn server_name(conn: &ServerConn, name: &str) -> String {
    let mariadb = conn.greeting.is_mariadb();
    match name {
        "transaction_isolation" if mariadb => "tx_isolation".into(),
        "transaction_read_only" if mariadb => "tx_read_only".into(),
        other => other.to_owned(),
    }
}

/// What the relay learnt from a response.
#[derive(Debug, Default)]
struct Outcome {
    status: Option<StatusFlags>,
    error: bool,
    last_insert_id: u64,
    prepared: Option<response::PrepareOk>,
}

impl Outcome {
    fn note_first(&mut self, body: &[u8], expect: Expect) {
        match (body.first(), expect) {
            (Some(&response::OK), Expect::Prepare) => {
                self.prepared = response::parse_prepare_ok(body).ok()
            }
            (Some(&response::OK), _) => {
                if let Ok(ok) = response::parse_ok(body) {
                    self.last_insert_id = ok.last_insert_id;
                }
            }
            _ => {}
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
        if client.read_buf(buf).await.map_err(SessionError::ClientIo)? == 0 {
            return Err(SessionError::ClientIo(
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
    }
}
