//! COM_CHANGE_USER: the client logs in again, as another user or the same one, on its open
//! connection. sidepool does what the server would: the session is reset whatever the outcome
//! (transaction rolled back, variables, statements and pins dropped, server connection
//! returned), then the new login is checked against `[[pools.users]]` with the auth data the
//! client sent. On success the session takes the new user's key and schema; on failure the
//! old login stays and the client gets error 1045. After three failures on one connection,
//! further attempts get 1047, as MariaDB answers them.

use std::sync::Arc;

use sidepool_config::ClientAuth;
use sidepool_protocol::mysql::handshake::{self, ChangeUser, HandshakeResponse41};
use sidepool_protocol::mysql::{StatusFlags, auth, packet, response};
use tokio::io::AsyncWriteExt;
use tracing::{debug, warn};

use super::Relay;
use crate::error::SessionError;
use crate::mysql::auth::authenticate;
use crate::mysql::backend::ConnKey;
use crate::mysql::errors::{self, ACCESS_DENIED, HANDSHAKE_ERROR, UNKNOWN_COM_ERROR};

/// Failed attempts after which COM_CHANGE_USER is refused on the connection.
const MAX_FAILURES: u8 = 3;

impl Relay {
    /// Handles COM_CHANGE_USER (`payload` with its command byte, sequence id `seq`).
    pub(super) async fn change_user(
        &mut self,
        seq: u8,
        payload: &[u8],
    ) -> Result<(), SessionError> {
        if self.change_user_failures >= MAX_FAILURES {
            let msg = "sidepool: COM_CHANGE_USER refused after three failed attempts on this \
                       connection; reconnect with the right credentials";
            return self.reply_error(seq, UNKNOWN_COM_ERROR, msg).await;
        }
        let request = match handshake::parse_change_user(payload, self.login.capabilities) {
            Ok(r) => r,
            Err(e) => {
                let msg = format!("sidepool: bad COM_CHANGE_USER packet: {e}");
                return self.reply_error(seq, HANDSHAKE_ERROR, &msg).await;
            }
        };
        self.reset_for_new_login().await?;
        let plugin = match self.svc.client_auth {
            ClientAuth::Password => auth::CACHING_SHA2,
            _ => auth::NATIVE,
        };
        let hello = HandshakeResponse41 {
            user: request.user.clone(),
            auth_response: request.auth_response.clone(),
            auth_plugin: request.auth_plugin.clone(),
            ..HandshakeResponse41::default()
        };
        let mut next = seq.wrapping_add(1);
        let svc = self.svc.clone();
        let accepted = authenticate(
            &svc,
            &mut self.client,
            &mut self.buf,
            &hello,
            plugin,
            &mut self.login.nonce,
            &mut next,
        )
        .await?;
        if !accepted {
            self.change_user_failures += 1;
            warn!(user = %request.user, "COM_CHANGE_USER authentication failed");
            let msg = errors::access_denied(
                &request.user,
                self.login.info.addr.ip(),
                !request.auth_response.is_empty(),
            );
            return self.send_error_at(next, ACCESS_DENIED, &msg).await;
        }
        self.switch_login(&request, next).await
    }

    /// Takes the authenticated login of `request`, or keeps the old one if the server refuses
    /// its schema; answers the client at sequence id `next`.
    async fn switch_login(&mut self, request: &ChangeUser, next: u8) -> Result<(), SessionError> {
        let old_info = self.login.info.clone();
        let old_key = self.login.key.clone();
        let old_schema = self.state.schema.clone();
        let program = request
            .attribute("program_name")
            .map_or_else(|| old_info.application_name.clone(), str::to_owned);
        self.login.info = Arc::new(old_info.with_identity(
            request.user.clone(),
            request.database.clone().unwrap_or_default(),
            program,
        ));
        self.login.key = ConnKey {
            user: request.user.as_str().into(),
            capabilities: old_key.capabilities,
            collation: request
                .collation
                .and_then(|c| u8::try_from(c).ok())
                .unwrap_or(old_key.collation),
        };
        self.state.schema = request.database.clone();
        if let Err(err) = self.verify_schema().await {
            debug!(user = %request.user, "COM_CHANGE_USER schema refused; keeping the old login");
            self.login.info = old_info;
            self.login.key = old_key;
            self.state.schema = old_schema;
            if self.session_mode {
                // The old login's session connection was returned; take one again.
                let _ = self.verify_schema().await;
            }
            return self.write_raw(&packet::encode(next, &err)).await;
        }
        self.svc.sessions.replace(&self.login.info);
        self.login.info.carry_ending_from(&old_info);
        debug!(from = %old_info.user, to = %request.user, "client changed user");
        let ok = response::ok_packet(0, 0, self.status, 0);
        self.write_raw(&packet::encode(next, &ok)).await
    }

    /// Drops everything the old login had: its server connection (rolled back or reset and
    /// returned, as when a client leaves), statements, variables, pins and holds.
    async fn reset_for_new_login(&mut self) -> Result<(), SessionError> {
        self.finish(false).await?;
        self.forget_session_state();
        self.status = StatusFlags::SERVER_STATUS_AUTOCOMMIT;
        Ok(())
    }

    async fn send_error_at(&mut self, seq: u8, code: u16, msg: &str) -> Result<(), SessionError> {
        self.write_raw(&errors::error(seq, code, msg)).await
    }

    async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        self.client
            .write_all(bytes)
            .await
            .map_err(SessionError::ClientIo)
    }
}
