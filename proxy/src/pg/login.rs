//! A PostgreSQL client's login, shared by the stages after authentication: the relay and the
//! console. [`client`](super::client) builds it (`Login::new`) from the startup packet.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::BytesMut;
use sidepool_protocol::pg::TransactionStatus;
use sidepool_protocol::pg::backend as be;

use super::backend::ConnKey;
use crate::session::ClientInfo;

/// Who logged in and what session settings they asked for.
#[derive(Debug)]
pub struct Login {
    /// The client's identity, attached to its checkouts.
    pub info: Arc<ClientInfo>,
    /// Server connections it may use.
    pub key: ConnKey,
    /// Settings to replay on whichever server connection serves it: the startup parameters
    /// plus what the client changed since. Shared until the client changes one
    /// (`Arc::make_mut`).
    pub settings: Arc<BTreeMap<String, String>>,
    /// The startup parameters alone (what `RESET ALL` returns to), shared by every client of
    /// the pool that sent the same (`PgService::shared_settings`).
    pub startup_settings: Arc<BTreeMap<String, String>>,
}

/// The login reply after successful authentication: AuthenticationOk, the server's parameters,
/// sidepool's BackendKeyData and ReadyForQuery.
pub fn login_reply(params: &[(String, String)], pid: i32, secret: i32) -> BytesMut {
    let mut out = BytesMut::with_capacity(512);
    out.extend_from_slice(&be::authentication_ok());
    for (k, v) in params {
        out.extend_from_slice(&be::parameter_status(k, v));
    }
    out.extend_from_slice(&be::backend_key_data(pid, secret));
    out.extend_from_slice(&be::ready_for_query(TransactionStatus::Idle));
    out
}
