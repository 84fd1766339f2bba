//! The relay's session lifecycle: the login reply, checking a server connection out and
//! bringing it in line with the client's settings, returning it (settings read back first),
//! and cleaning it up when the client leaves or is ended. [`super::machine`] decides when;
//! these do it.

use std::sync::Arc;

use bytes::Bytes;
use sidepool_protocol::pg::TransactionStatus;
use sidepool_protocol::pg::backend::Severity;
use tokio::io::AsyncWriteExt;
use tracing::debug;

use super::{Attached, Conn, DEAD_RETRIES, RESET_TIMEOUT, Relay};
use crate::error::{BackendError, SessionError};
use crate::io::{give_buffer, take_buffer};
use crate::pg::client::login_reply;
use crate::pg::errors::{self, CONNECTION_FAILURE, IDLE_IN_TRANSACTION_TIMEOUT, error};
use crate::pg::replay;

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
        let reason = self
            .login
            .info
            .kill_reason()
            .unwrap_or_else(|| "sidepool: terminating connection".into());
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

    pub(super) fn install(&mut self, conn: Conn, replica: Option<crate::route::Lease>) {
        self.cancel.slot.set(Some(conn.cancel.clone()));
        self.server = Some(Box::new(Attached::new(conn, replica)));
    }

    /// One backend's checkout with the dead-connection retries and the settings sync. `Err`:
    /// whether another backend may be tried (the backend could not be reached), and the
    /// ErrorResponse for the client.
    pub(super) async fn checkout(
        &self,
        pool: &crate::pg::PgPool,
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
    pub(super) async fn detach(&mut self) {
        let Some(mut att) = self.server.take() else {
            return;
        };
        self.cancel.slot.set(None);
        if att.replica.is_none() {
            self.ryw.released();
        }
        if att.link.reset_all {
            self.login.settings = self.login.startup_settings.clone();
            att.conn.params = att.conn.startup_params.clone();
            att.conn.synced = None;
        }
        if !att.link.dirty.is_empty() {
            match replay::read_settings(&mut att.conn, &att.link.dirty).await {
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
        if vanished && (att.link.status != TransactionStatus::Idle || !att.quiet()) {
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
        let (mut conn, status) = (att.conn, att.link.status);
        let discard_all = !self.machine.mapping
            || self.machine.pinned.is_some()
            || att.link.reset_all
            || !att.link.dirty.is_empty();
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
