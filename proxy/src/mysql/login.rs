//! A MySQL client's login, shared by [`client`](super::client), which builds it, and the
//! [`relay`](super::relay), which serves the session after it (and redoes it on
//! COM_CHANGE_USER).

use std::sync::Arc;

use sidepool_protocol::mysql::CapabilityFlags;

use super::backend::ConnKey;
use crate::session::ClientInfo;

/// Who logged in and how.
#[derive(Debug)]
pub struct Login {
    /// The client's identity, attached to its checkouts.
    pub info: Arc<ClientInfo>,
    /// Server connections it may use.
    pub key: ConnKey,
    /// Capabilities negotiated with the client.
    pub capabilities: CapabilityFlags,
    /// Sequence id of the final OK (or ERR) of the login.
    pub next_seq: u8,
    /// The last nonce sent to the client, which a COM_CHANGE_USER's auth data answers.
    pub nonce: Vec<u8>,
}
