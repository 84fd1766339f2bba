//! The relay's session lifecycle: the login reply, checking a server connection out and
//! bringing it in line with the client's settings, returning it (settings read back first),
//! and cleaning it up when the client leaves or is ended. [`super::machine`] decides when;
//! these do it, through [`crate::lifecycle`] for what every protocol shares.

use std::sync::Arc;

use bytes::Bytes;
use sidepool_protocol::pg::TransactionStatus;
use sidepool_protocol::pg::backend::Severity;
use tokio::io::AsyncWriteExt;
use tracing::debug;

use super::{Attached, Relay};
use crate::error::{BackendError, SessionError};
use crate::io::{give_buffer, take_buffer};
use crate::lifecycle::{self, Leaving, Reset};
use crate::pg::errors::{self, IDLE_IN_TRANSACTION_TIMEOUT, error};
use crate::pg::login::login_reply;
use crate::pg::replay;
use crate::pg::service::PgService;

impl Relay {
    /// Between transactions with nothing buffered, gives the buffers back (see [`give_buffer`]):
    /// a parked plaintext client holds none until its next message arrives.
    pub(super) fn park(&mut self) {
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
    pub(super) fn unpark(&mut self) {
        if self.to_server.capacity() == 0 {
            self.to_server = take_buffer();
        }
        if self.to_client.capacity() == 0 {
            self.to_client = take_buffer();
        }
    }

    /// Sends the login reply. `Ok(false)`: the login failed and the client was told why.
    pub(super) async fn greet(&mut self) -> Result<bool, SessionError> {
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

    /// Ends the session as [`ClientInfo::kill`] or [`ClientInfo::end_gracefully`] asked: tells
    /// the client why (25P03 inside a transaction, else 57P01), then cleans the server
    /// connection up as if the client had left.
    pub(super) async fn terminate(&mut self) -> Result<(), SessionError> {
        let reason = lifecycle::kill_reason(&self.login.info);
        let code = if self
            .server
            .as_ref()
            .is_some_and(|a| a.link.status != TransactionStatus::Idle)
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
    pub(super) async fn login_params(&mut self) -> Result<Vec<(String, String)>, Bytes> {
        let cached = self.svc.login_params.lock().get(&self.login.key).cloned();
        let base = match cached {
            Some(base) if self.machine.mapping => base,
            _ => {
                self.attach(Severity::Fatal, None).await?;
                let att = self.server.as_ref().map(|a| &a.conn.startup_params);
                let base: crate::pg::LoginParams = Arc::new(
                    att.into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                );
                self.svc
                    .login_params
                    .lock()
                    .insert(self.login.key.clone(), base.clone());
                if self.machine.mapping {
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
    pub(super) async fn attach(
        &mut self,
        severity: Severity,
        replica: Option<usize>,
    ) -> Result<(), Bytes> {
        let svc = &*self.svc;
        let login = &self.login;
        match lifecycle::attach(svc, &login.key, &login.info, &login.settings, replica).await {
            Ok(a) => {
                self.cancel.slot.set(Some(a.conn.cancel.clone()));
                self.server = Some(Box::new(Attached::new(a.conn, a.replica)));
                Ok(())
            }
            Err(f) => {
                debug!(error = %errors::chain(&f), "checkout failed");
                Err(errors::attach_failed(&svc.name, severity, &f))
            }
        }
    }

    /// Returns the server connection to the pool (transaction mode, server idle), after reading
    /// back the settings the client changed on it.
    pub(super) async fn detach(&mut self) {
        let Some(mut att) = self.server.take() else {
            return;
        };
        self.cancel.slot.set(None);
        if att.replica.is_none() {
            self.ryw.released();
        }
        if let Err(e) = self.read_back(&mut att).await {
            debug!(error = %errors::chain(&e), "reading back settings failed; closing the connection");
            att.conn.discard();
            return;
        }
        att.conn.release();
    }

    /// Reads back the settings the client changed on the attached connection into its own.
    /// After a `RESET ALL` / `DISCARD ALL` that is every setting it has, since the statement
    /// may have been rolled back or have failed: a value equal to the server connection's
    /// default was reset, and the client's own default is its startup value.
    async fn read_back(&mut self, att: &mut Attached) -> Result<(), BackendError> {
        let reset_all = att.link.reset_all;
        let mut names = std::mem::take(&mut att.link.dirty);
        if reset_all {
            att.conn.synced = None;
            let known: Vec<String> = (self.login.settings.keys())
                .filter(|k| !names.contains(k))
                .cloned()
                .collect();
            names.extend(known);
        }
        if names.is_empty() {
            return Ok(());
        }
        let values = replay::read_settings(&mut att.conn, &names).await?;
        att.conn.synced = None;
        let startup = self.login.startup_settings.clone();
        let settings = Arc::make_mut(&mut self.login.settings);
        for (k, v) in values {
            let reset = reset_all && v.is_some() && att.conn.startup_params.get(&k) == v.as_ref();
            let mine = if reset {
                startup.get(&k).cloned()
            } else {
                v.clone()
            };
            match mine {
                Some(mine) => settings.insert(k.clone(), mine),
                None => settings.remove(&k),
            };
            match v {
                Some(v) => att.conn.params.insert(k, v),
                None => att.conn.params.remove(&k),
            };
        }
        Ok(())
    }

    /// The client is gone: clean the server connection (ROLLBACK, and DISCARD ALL in session
    /// mode or when pinned) and return it, or close it when its state is unknown.
    pub(super) async fn finish(&mut self) -> Result<(), SessionError> {
        self.finish_after(true).await
    }

    /// [`Relay::finish`]; `vanished`: the client left on its own (counted when it left a
    /// transaction open).
    pub(super) async fn finish_after(&mut self, vanished: bool) -> Result<(), SessionError> {
        let Some(att) = self.server.take() else {
            return Ok(());
        };
        self.cancel.slot.set(None);
        let reset = Reset {
            rollback: att.link.status != TransactionStatus::Idle,
            session: !self.machine.mapping
                || self.machine.pinned.is_some()
                || att.link.reset_all
                || !att.link.dirty.is_empty(),
        };
        let leaving = Leaving {
            vanished,
            mid_statement: !att.quiet(),
            reset,
        };
        lifecycle::finish::<PgService>(&self.svc, att.conn, leaving).await;
        Ok(())
    }
}
