//! The session lifecycle of the MySQL relay: login completion, waiting for commands (and
//! kills), checking a server connection out and returning it, and the end of the session.
//! What is not MySQL-specific (checkout with replica fallback and dead-connection retries,
//! rollback and reset under a timeout, kill reasons) is [`crate::lifecycle`]'s.

use bytes::Buf;
use sidepool_protocol::mysql::response;
use sidepool_protocol::mysql::{StatusFlags, packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::debug;

use super::{Attached, MAX_COMMAND, Next, Relay};
use crate::error::{BackendError, SessionError, chain};
use crate::io::read_some;
use crate::lifecycle::{self, Leaving, Reset};
use crate::mysql::backend::ServerConn;
use crate::mysql::errors::{self, CLIENT_INTERACTION_TIMEOUT};
use crate::mysql::replay;
use crate::mysql::service::MyService;

impl Relay {
    /// Whether the client is inside a transaction (as the last status said).
    pub(super) fn in_transaction(&self) -> bool {
        self.status.contains(StatusFlags::SERVER_STATUS_IN_TRANS)
    }

    /// Ends the session as a kill, leak terminate or drain asked: error 4031 inside a
    /// transaction (then rolled back), else 1053 (server shutdown).
    pub(super) async fn terminate(&mut self) -> Result<(), SessionError> {
        let reason = lifecycle::kill_reason(&self.login.info);
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
    pub(super) async fn finish_login(&mut self, seq: u8) -> Result<bool, SessionError> {
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
    pub(super) async fn verify_schema(&mut self) -> Result<(), Vec<u8>> {
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
    pub(super) async fn next_command(&mut self) -> Result<Next, SessionError> {
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
                    r = read_some(&mut self.client, &mut self.buf) => Some(r),
                    () = info.killed() => None,
                },
                Some(att) => {
                    let conn: &mut ServerConn = &mut att.conn;
                    tokio::select! {
                        r = read_some(&mut self.client, &mut self.buf) => Some(r),
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

    /// Checks a server connection out (from the routed replica, else the primary) and brings
    /// its state in line with the client's. `Err` carries the ERR payload for the client.
    pub(super) async fn attach(&mut self) -> Result<(), Vec<u8>> {
        if self.server.is_some() {
            return Ok(());
        }
        let target = self.target.take();
        let svc = &*self.svc;
        match lifecycle::attach(svc, &self.login.key, &self.login.info, &self.state, target).await {
            Ok(a) => {
                self.server = Some(Attached {
                    conn: a.conn,
                    dirty: Vec::new(),
                    schema_dirty: false,
                    replica: a.replica,
                });
                Ok(())
            }
            Err(f) => {
                debug!(error = %chain(&f), "checkout failed");
                Err(errors::attach_failed(&svc.name, &f))
            }
        }
    }

    /// Returns the server connection after reading back the state the client changed on it.
    pub(super) async fn detach(&mut self) {
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

    /// The client is gone (or quit, or was killed): roll back, reset what it left, return the
    /// connection; close it when its state is unknown.
    pub(super) async fn finish(&mut self, vanished: bool) -> Result<(), SessionError> {
        let Some(att) = self.server.take() else {
            return Ok(());
        };
        let reset = Reset {
            rollback: att
                .conn
                .status
                .contains(StatusFlags::SERVER_STATUS_IN_TRANS),
            session: self.session_mode
                || self.pinned.is_some()
                || !att.dirty.is_empty()
                || att.schema_dirty
                || self.long_data,
        };
        let leaving = Leaving {
            vanished,
            mid_statement: false,
            reset,
        };
        lifecycle::finish::<MyService>(&self.svc, att.conn, leaving).await;
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
