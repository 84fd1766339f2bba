//! The state one PostgreSQL pool's sessions share: [`PgService`], its users and its pools.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use sidepool_config::ClientAuth;
use sidepool_pool::Pool;
use sidepool_protocol::pg::auth::ScramSecret;

use super::backend::{self, PgConnector};
use super::cancel::CancelRegistry;
use super::statements;
use crate::service::PoolCore;
use crate::session::ClientInfo;

/// The pool type of a PostgreSQL backend.
pub type PgPool = Pool<PgConnector, Arc<ClientInfo>>;

/// Parameters a server reports at login, in the order it sent them.
pub type LoginParams = Arc<Vec<(String, String)>>;

/// A configured user: the password sidepool checks clients against and logs in to servers with.
/// `Debug` shows neither the password nor the SCRAM keys.
pub struct PgUser {
    /// The cleartext password (md5 and server logins need it).
    pub password: String,
    /// Its SCRAM verifier, computed once (4096 PBKDF2 rounds are too slow per login).
    pub scram: ScramSecret,
}

impl std::fmt::Debug for PgUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgUser")
            .field("password", &"<redacted>")
            .field("scram", &self.scram)
            .finish()
    }
}

/// Everything a PostgreSQL client session of one pool needs. The protocol-neutral part (name,
/// counters, metrics) is its [`PoolCore`], reachable through `Deref`.
#[derive(Debug)]
pub struct PgService {
    /// Name, mode, counters and metrics shared with admin, leaks and console.
    pub core: PoolCore,
    /// How clients authenticate.
    pub client_auth: ClientAuth,
    /// Known users.
    pub users: HashMap<String, PgUser>,
    /// Key for the stand-in SCRAM secrets of unknown users, so they fail like a wrong password
    /// after the same exchange (no user enumeration); picked at random at start.
    pub mock_key: [u8; 32],
    /// The primary's pool.
    pub primary: PgPool,
    /// One pool per replica, at the indexes of `core.replicas`.
    pub replicas: Vec<PgPool>,
    /// The key replica checks log in with: the last client login's (see
    /// [`super::health::PgProbe`]).
    pub check_key: Arc<parking_lot::Mutex<backend::ConnKey>>,
    /// Session keys for CancelRequest routing.
    pub cancels: Arc<CancelRegistry>,
    /// The console hub, for clients that log in to database `sidepool`.
    pub hub: std::sync::Weak<crate::console::Hub>,
    /// Parameters the server reports at login, per key, so that logins in transaction mode need
    /// no server connection once a key has been seen.
    pub login_params: parking_lot::Mutex<HashMap<backend::ConnKey, LoginParams>>,
    /// TLS offered to clients (`[pools.tls] client_mode`).
    pub client_tls: crate::tls::ClientTls,
    /// Server-side names of prepared statements, by content (transaction mode).
    pub statement_names: statements::StatementNames,
    /// Named statements kept prepared per server connection before the least recently used
    /// is closed.
    pub prepared_per_connection: usize,
    /// Clients' startup settings by content, so clients that sent the same (most send the
    /// same few) share one copy; see [`PgService::shared_settings`].
    pub startup_settings: parking_lot::Mutex<HashSet<Arc<BTreeMap<String, String>>>>,
}

/// Distinct startup settings [`PgService::shared_settings`] keeps; others are not shared.
const SHARED_SETTINGS: usize = 1024;

impl PgService {
    /// `settings` as a shared copy: the one already kept when another client sent the same,
    /// else a new one, kept for later clients while fewer than [`SHARED_SETTINGS`] are.
    pub fn shared_settings(
        &self,
        settings: BTreeMap<String, String>,
    ) -> Arc<BTreeMap<String, String>> {
        let mut seen = self.startup_settings.lock();
        if let Some(shared) = seen.get(&settings) {
            return shared.clone();
        }
        let shared = Arc::new(settings);
        if seen.len() < SHARED_SETTINGS {
            seen.insert(shared.clone());
        }
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ServerTls;

    #[test]
    fn debug_output_of_users_and_connectors_hides_passwords() {
        let user = PgUser {
            password: "hunter2-user".to_owned(),
            scram: ScramSecret::from_password_with("hunter2-user", b"salt", 1),
        };
        let connector = PgConnector {
            addr: "db:5432".to_owned(),
            passwords: [("app".to_owned(), "hunter2-conn".to_owned())].into(),
            tls: ServerTls::from_config(None, "db").unwrap(),
            tcp: crate::net::shared(&Default::default()),
        };
        let shown = format!("{user:?} {connector:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("app") && shown.contains("db:5432"),
            "{shown}"
        );
    }
}
