//! The state one Dameng pool's sessions share: [`DmService`] and its pool of plain TCP
//! connections.

use std::sync::Arc;

use sidepool_pool::{Connector, Pool};
use sidepool_protocol::dm::FrameRules;
use tokio::net::TcpStream;

use crate::net::SharedTcp;
use crate::service::PoolCore;
use crate::session::ClientInfo;

/// Opens plain TCP connections to the DM server; the client logs itself in through them.
#[derive(Debug, Clone)]
pub struct DmConnector {
    /// `host:port` of the server.
    pub addr: String,
    /// `[pools.tcp]` of the pool; its `server_*` options go on every new socket.
    pub tcp: SharedTcp,
}

impl Connector for DmConnector {
    type Conn = TcpStream;
    /// One key: sidepool cannot read the user from an (often encrypted) LOGIN body, and a
    /// server session is never reused, so keys would not change which connection a client gets.
    type Key = ();
    type Error = std::io::Error;

    async fn connect(&self, _key: &()) -> std::io::Result<TcpStream> {
        let tcp = self.tcp.read().server;
        crate::net::connect(&self.addr, &tcp).await
    }
}

/// The pool type of a DM backend.
pub type DmPool = Pool<DmConnector, Arc<ClientInfo>>;

/// Everything a DM client session of one pool needs.
#[derive(Debug)]
pub struct DmService {
    /// Name, counters and metrics shared with admin, leaks and console.
    pub core: PoolCore,
    /// The primary's pool.
    pub primary: DmPool,
    /// How message headers are checked (body cap).
    pub rules: FrameRules,
}
