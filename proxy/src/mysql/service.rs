//! The state one MySQL/TiDB pool's sessions share: [`MyService`] and its pools.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use sidepool_config::ClientAuth;
use sidepool_pool::Pool;
use sidepool_protocol::mysql::handshake::Greeting;

use super::backend::{self, MyConnector};
use super::tidb;
use crate::service::PoolCore;
use crate::session::ClientInfo;
use crate::tls::ClientTls;

/// The pool type of a MySQL backend.
pub type MyPool = Pool<MyConnector, Arc<ClientInfo>>;

/// Everything a MySQL client session of one pool needs. The protocol-neutral part (name,
/// counters, metrics, sessions) is its [`PoolCore`], reachable through `Deref`.
#[derive(Debug)]
pub struct MyService {
    /// Name, mode, counters and metrics shared with admin, leaks and console.
    pub core: PoolCore,
    /// How clients authenticate: `password` = caching_sha2_password, `native` =
    /// mysql_native_password, `trust`.
    pub client_auth: ClientAuth,
    /// Cleartext password per configured user.
    pub users: HashMap<String, String>,
    /// The primary's pool.
    pub primary: MyPool,
    /// One pool per replica, at the indexes of `core.replicas`.
    pub replicas: Vec<MyPool>,
    /// The key replica checks log in with: the last client login's.
    pub check_key: Arc<Mutex<Option<backend::ConnKey>>>,
    /// The last greeting a server sent: version and capabilities offered to clients.
    pub greeting: Arc<Mutex<Option<Greeting>>>,
    /// (user, schema) pairs a server accepted, so later logins need no server connection.
    pub known_schemas: Mutex<HashSet<(String, String)>>,
    /// Statements kept prepared per server connection before the least recently used closes.
    pub prepared_per_connection: usize,
    /// TLS offered to clients (`[pools.tls] client_mode`).
    pub client_tls: ClientTls,
    /// The primary's service state (TiDB status port); always in service without one.
    pub health: Arc<tidb::Health>,
    /// Polls the primary's TiDB status port (`tidb_status_port`) while the service lives.
    pub status_watch: Option<tidb::StatusWatch>,
}
