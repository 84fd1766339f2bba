//! The relay's protocol logic with no socket: bytes in, actions out.
//!
//! [`Machine`] frames client bytes and decides what each message does ([`client`]): forward it,
//! rewrite a statement name, prepare on demand, answer it without a server, or ask the driver
//! for a server connection. With one attached it handles the server's bytes ([`server`]):
//! ReadyForQuery and ParameterStatus tracking, swallowed and synthetic responses
//! ([`super::responses`]), the stale-plan retry. What it writes goes into the driver's
//! `to_server`/`to_client` buffers; the driver in [`super`] waits on sockets, performs the
//! writes, checks connections out and returns them when [`Machine::releasable`] says so.
//!
//! The state of one attached server connection is a [`Link`] (owned by the driver next to the
//! connection) plus the connection's own facts the machine reads and updates ([`ConnSide`]).

mod client;
mod server;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sidepool_protocol::pg::TransactionStatus;
use sidepool_protocol::pg::frame::Scanner;

use super::responses::{Disposition, Expect, Responses};
use crate::pg::statements::{Prepared, Statement};

pub use self::client::{ClientStep, Unattached};

/// What routing needs to know of one SQL text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlRoute {
    /// It may start a transaction on a replica: a read (or a `READ ONLY` begin, or a hinted
    /// statement the classifier allows), with no effect that would pin the client.
    pub replica: bool,
    /// It may write (read-your-writes).
    pub writes: bool,
}

/// PostgreSQL's own limit on a message (`PQ_LARGE_MESSAGE_LIMIT` is 1 GB).
pub const MAX_MESSAGE: usize = 1 << 30;
/// Cap on server messages the relay reads whole (ReadyForQuery, ParameterStatus, and in
/// transaction mode ErrorResponse).
const MAX_WHOLE_SERVER: usize = 16 << 20;
/// Client bytes of one cycle kept for a transparent retry after a stale plan; a larger cycle
/// (a COPY, huge parameters) is not retried.
const MAX_RETRY_LOG: usize = 256 * 1024;

/// What the machine asks of the pool a session belongs to.
pub trait Env {
    /// The pool-wide server-side name of a statement's content.
    fn statement_name(&self, content: &[u8]) -> Arc<str>;
    /// How one SQL text routes (read/write split).
    fn route(&self, text: &[u8]) -> SqlRoute;
    /// Statements one server connection keeps prepared before closing the least recently used.
    fn prepared_capacity(&self) -> usize;
    /// The client was just pinned to its server connection (counted once per session).
    fn pinned(&self);
}

/// The facts of the attached server connection the machine reads and updates.
pub struct ConnSide<'a> {
    /// Server bytes read and not handled yet.
    pub input: &'a mut BytesMut,
    /// Statements prepared on the connection.
    pub prepared: &'a mut Prepared,
    /// The session parameters the server reported.
    pub params: &'a mut BTreeMap<String, String>,
    /// The client settings `params` were last brought in line with; cleared on any change.
    pub synced: &'a mut Option<Arc<BTreeMap<String, String>>>,
    /// Server process id (for traces).
    pub pid: i32,
}

/// A client's protocol state.
pub struct Machine {
    /// Transaction mode: statements are mapped, settings tracked, clients pinned.
    pub mapping: bool,
    /// Frames the client's bytes.
    pub scan: Scanner,
    /// The client's named statements.
    pub statements: HashMap<Bytes, Statement>,
    /// Why the client keeps its server connection, if it does (transaction mode).
    pub pinned: Option<&'static str>,
    /// Dropping the client's messages up to the end of a cycle whose checkout failed.
    pub discarding: bool,
    /// Dropping the rest of the client message being streamed.
    dropping: bool,
}

/// The machine's state of one attached server connection.
pub struct Link {
    /// Frames the server's bytes.
    pub scan: Scanner,
    /// ReadyForQuery messages still owed for cycles the client started.
    pub owed: u32,
    /// The client sent messages after its last cycle end (e.g. Parse/Bind without Sync yet).
    pub pending: bool,
    /// Status of the last ReadyForQuery.
    pub status: TransactionStatus,
    /// Outstanding responses (transaction mode).
    pub responses: Responses,
    /// What to do with the rest of the server message being streamed.
    current: Disposition,
    /// Settings the client changed here, to read back before release.
    pub dirty: Vec<String>,
    /// The client ran RESET ALL / DISCARD ALL here.
    pub reset_all: bool,
    /// The messages of the current cycle as sent, for a retry after a stale plan.
    cycle: Vec<Logged>,
    /// Bytes in `cycle`; past [`MAX_RETRY_LOG`] the cycle is not retried.
    cycle_bytes: usize,
    /// The last message sent ended a cycle: the next one starts a new log.
    cycle_closed: bool,
    /// This cycle was already retried once.
    retried: bool,
}

/// A client message as sent to the server, with the response it expects and, for a Bind, the
/// statement it reads.
struct Logged {
    msg: Bytes,
    expect: Option<Expect>,
    statement: Option<Statement>,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            scan: Scanner::new(),
            owed: 0,
            pending: false,
            status: TransactionStatus::Idle,
            responses: Responses::default(),
            current: Disposition::Forward,
            dirty: Vec::new(),
            reset_all: false,
            cycle: Vec::new(),
            cycle_bytes: 0,
            cycle_closed: true,
            retried: false,
        }
    }
}

impl Link {
    /// Nothing owed or outstanding, nothing unsynced, and the server side at a message boundary
    /// with no unread bytes (`input_empty`).
    pub fn quiet(&self, input_empty: bool) -> bool {
        self.owed == 0
            && !self.pending
            && self.responses.is_empty()
            && self.scan.at_boundary()
            && input_empty
    }

    /// Idle (no transaction block) and [`Link::quiet`].
    pub fn between_transactions(&self, input_empty: bool) -> bool {
        self.status == TransactionStatus::Idle && self.quiet(input_empty)
    }
}

impl Machine {
    /// A fresh session; `mapping` in transaction mode.
    pub fn new(mapping: bool) -> Self {
        Machine {
            mapping,
            scan: Scanner::new(),
            statements: HashMap::new(),
            pinned: None,
            discarding: false,
            dropping: false,
        }
    }

    /// Whether the attached connection may go back to the pool now (transaction mode): between
    /// transactions, the client at a message boundary, and not pinned. The driver also waits
    /// for client bytes it has not handled yet.
    pub fn releasable(&self, link: &Link, input_empty: bool) -> bool {
        link.between_transactions(input_empty)
            && self.scan.at_boundary()
            && self.mapping
            && self.pinned.is_none()
    }
}

#[cfg(test)]
mod tests;
