//! The session lifecycle of the MySQL relay: login completion, waiting for commands (and
//! kills), checking a server connection out and returning it, and the end of the session.
//! Kept apart from the per-command logic so that a protocol-neutral session core can take it
//! over.

use std::sync::atomic::Ordering::Relaxed;

use bytes::Buf;
use sidepool_protocol::mysql::response::{self, Expect};
use sidepool_protocol::mysql::{StatusFlags, packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::debug;

use super::{Attached, DEAD_RETRIES, MAX_COMMAND, Next, RESET_TIMEOUT, Relay};
use crate::error::{BackendError, SessionError};
use crate::mysql::backend::ServerConn;
use crate::mysql::errors::{self, CLIENT_INTERACTION_TIMEOUT};
use crate::mysql::replay;
use crate::pg::errors::chain;

impl Relay {
    /// Whether the client is inside a transaction (as the last status said).
    pub(super) fn in_transaction(&self) -> bool {
        self.status.contains(StatusFlags::SERVER_STATUS_IN_TRANS)
    }

    /// Ends the session as a kill, leak terminate or drain asked: error 4031 inside a
    /// transaction (then rolled back), else 1053 (server shutdown).
    pub(super) async fn terminate(&mut self) -> Result<(), SessionError> {
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

    /// Checks a server connection out and brings its state in line with the client's.
    /// `Err` carries the ERR payload for the client.
    pub(super) async fn attach(&mut self) -> Result<(), Vec<u8>> {
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
