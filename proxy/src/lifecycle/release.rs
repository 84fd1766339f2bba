//! The end of a session's hold on a server connection: counted when the client left a
//! transaction open, rolled back and reset under [`RESET_TIMEOUT`] and returned, or closed when
//! its state is unknown; and how a kill or drain ends a session.

use tracing::debug;

use super::server_side::{Conn, RESET_TIMEOUT, Reset, ServerSide};
use crate::service::PoolCore;
use crate::session::ClientInfo;

/// How a client session lets go of its server connection at its end.
#[derive(Debug, Clone, Copy)]
pub struct Leaving {
    /// The client went away on its own (not a kill, drain or orderly quit).
    pub vanished: bool,
    /// A statement's response is still in flight: the connection's state is unknown.
    pub mid_statement: bool,
    /// What the connection needs before reuse.
    pub reset: Reset,
}

/// Lets go of `conn` as `leaving` says: a client that vanished inside a transaction or
/// mid-statement is counted (`abandoned`); a connection mid-statement is closed; otherwise it
/// is reset as needed and returned, or closed if the reset fails or takes longer than
/// [`RESET_TIMEOUT`].
pub async fn finish<S: ServerSide>(core: &PoolCore, mut conn: Conn<S>, leaving: Leaving) {
    if leaving.vanished && (leaving.reset.rollback || leaving.mid_statement) {
        core.abandoned();
    }
    if leaving.mid_statement {
        debug!("client left mid-statement; closing its server connection");
        conn.discard();
        return;
    }
    if leaving.reset == Reset::default() {
        conn.release();
        return;
    }
    if leaving.reset.rollback {
        debug!("client left inside a transaction; rolling it back");
    }
    match tokio::time::timeout(RESET_TIMEOUT, S::reset(&mut conn, leaving.reset)).await {
        Ok(Ok(())) => conn.release(),
        Ok(Err(e)) => {
            debug!(error = %crate::error::chain(&e), "reset failed; closing the server connection");
            conn.discard();
        }
        Err(_) => {
            debug!(timeout = ?RESET_TIMEOUT, "reset took too long; closing the server connection");
            conn.discard();
        }
    }
}

/// What a session does when [`ClientInfo::kill`] or [`ClientInfo::end_gracefully`] woke it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnKill {
    /// A drain with a transaction in flight: end once it is over.
    AfterTransaction,
    /// End now: tell the client why and clean the connection up.
    Now,
}

/// Whether a woken session ends now or after its transaction: a drain waits for the
/// transaction in flight; a kill (console `KILL`, leak `terminate`) does not.
pub fn on_kill(info: &ClientInfo, between_transactions: bool) -> OnKill {
    if info.ends_gracefully() && !between_transactions {
        OnKill::AfterTransaction
    } else {
        OnKill::Now
    }
}

/// The text a client is told when sidepool ends its session.
pub fn kill_reason(info: &ClientInfo) -> String {
    info.kill_reason()
        .unwrap_or_else(|| "sidepool: terminating connection".into())
}
