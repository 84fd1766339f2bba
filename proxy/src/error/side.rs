//! Which side of the proxy an error is on; below both [`crate::error`] and [`crate::tls`], whose
//! errors each name their side.

/// Who caused an error: decides what is logged at which level and whether a retry makes sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The application (bad bytes, wrong password, vanished mid-transaction).
    Client,
    /// The database server (unreachable, refused, crashed).
    Server,
    /// sidepool itself (limits, configuration).
    Proxy,
}
