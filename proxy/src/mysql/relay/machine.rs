//! The relay's protocol logic, free of sockets: what a client command asks for
//! ([`action`]), which server statement a client statement id maps to ([`Statements`]), how a
//! response streams back ([`ResponseRelay`]), and when the server connection may go back to
//! the pool ([`Ties`]). The async driver in [`super`] reads and writes; everything it decides
//! comes from here, so byte-fixture unit tests cover it without a database.

use sidepool_protocol::mysql::response::Expect;
use sidepool_protocol::mysql::{StatusFlags, command as com};

use crate::mysql::effects::{Effect, effects, reads_last_insert_id};

mod response;
mod statements;

pub(crate) use response::{Outcome, Progress, ResponseRelay};
pub(crate) use statements::{ClientStatement, Statements, Unknown, for_server, opens_cursor};

/// Why a connection is kept past the end of a statement outside a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// `SET TRANSACTION` applies to the next transaction on this connection.
    NextStatement,
    /// The statement generated an id; the next one may read it with `LAST_INSERT_ID()`.
    InsertId,
}

/// What the driver does with one client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// COM_QUIT: end the session.
    Quit,
    /// COM_PING with no server attached: sidepool answers OK with the last status.
    Pong,
    /// COM_STMT_CLOSE: forget the client's statement; no response. The server-side statement
    /// stays for reuse (the per-connection LRU closes it).
    CloseStatement,
    /// COM_RESET_CONNECTION.
    ResetConnection,
    /// COM_CHANGE_USER.
    ChangeUser,
    /// COM_STMT_PREPARE: forwarded, its statement id replaced by a client id.
    Prepare,
    /// COM_STMT_EXECUTE/SEND_LONG_DATA/RESET/FETCH: mapped to the server's statement id.
    Statement,
    /// Forwarded as is; the response is of `Expect` kind, and the effects apply after it.
    Exchange(Expect, Vec<Effect>),
}

/// The action for command `code` (whose text, for COM_QUERY, is `text`), with or without a
/// server connection attached.
pub(crate) fn action(code: u8, text: &[u8], attached: bool) -> Action {
    match code {
        com::QUIT => Action::Quit,
        com::PING if !attached => Action::Pong,
        com::STMT_CLOSE => Action::CloseStatement,
        com::RESET_CONNECTION => Action::ResetConnection,
        com::CHANGE_USER => Action::ChangeUser,
        com::STMT_PREPARE => Action::Prepare,
        com::STMT_EXECUTE | com::STMT_SEND_LONG_DATA | com::STMT_RESET | com::STMT_FETCH => {
            Action::Statement
        }
        com::QUERY => Action::Exchange(Expect::ResultSets, effects(&String::from_utf8_lossy(text))),
        com::INIT_DB => Action::Exchange(Expect::Ok, vec![Effect::Schema]),
        com::FIELD_LIST => Action::Exchange(Expect::FieldList, Vec::new()),
        com::STATISTICS => Action::Exchange(Expect::OnePacket, Vec::new()),
        com::SET_OPTION => Action::Exchange(Expect::Ok, vec![Effect::Pin("COM_SET_OPTION")]),
        _ => Action::Exchange(Expect::Ok, Vec::new()),
    }
}

/// Ends `hold` as a new command `code` (text `text`) arrives. True when the connection was
/// kept for a `LAST_INSERT_ID()` this command does not read: it may go back now.
pub(crate) fn lapse_hold(hold: &mut Option<Hold>, code: u8, text: &[u8]) -> bool {
    hold.take() == Some(Hold::InsertId)
        && !(code == com::QUERY && reads_last_insert_id(&String::from_utf8_lossy(text)))
}

/// The hold a finished exchange leaves: a generated id keeps the connection for the next
/// statement unless something holds it already.
pub(crate) fn hold_after(hold: Option<Hold>, outcome: &Outcome) -> Option<Hold> {
    match hold {
        None if outcome.last_insert_id != 0 => Some(Hold::InsertId),
        h => h,
    }
}

/// What ties a client to its server connection after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ties {
    /// Session mode: the connection is the session's.
    pub session_mode: bool,
    /// The client is pinned.
    pub pinned: bool,
    /// A [`Hold`] keeps the connection for the next statement.
    pub hold: bool,
    /// COM_STMT_SEND_LONG_DATA was sent; its execute must run on the same connection.
    pub long_data: bool,
    /// The last status flags the client saw.
    pub status: StatusFlags,
}

impl Ties {
    /// Transaction mode: the connection goes back once nothing ties the client to it.
    pub fn allow_release(self) -> bool {
        !self.session_mode
            && !self.pinned
            && !self.hold
            && !self.long_data
            && !self.status.contains(StatusFlags::SERVER_STATUS_IN_TRANS)
    }

    /// After a forwarded command whose response ended with an ERR (`error`) or not. An ERR
    /// carries no status, so with autocommit off the connection stays: a transaction may
    /// have begun.
    pub fn allow_release_after(self, error: bool) -> bool {
        (!error || self.status.contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT))
            && self.allow_release()
    }
}

#[cfg(test)]
mod tests;
