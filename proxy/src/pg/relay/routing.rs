//! Read/write split hooks of the PostgreSQL relay (docs/design.md §6, transaction mode only).
//!
//! - **Where a transaction starts:** when a message needs a server connection and none is
//!   attached, [`Relay::route_target`] classifies it (a Query's text; a Parse's; a Bind or
//!   Describe of a named statement by the route remembered at its Parse) and every further
//!   message of the same cycle already buffered, up to its Sync. Only if all are replica reads,
//!   the client has not written within `read_your_writes`, and a replica is in rotation, it
//!   goes to that replica.
//! - **Switching at a boundary:** a client that pipelines a write behind a read on a replica is
//!   held ([`Relay::hold_for_primary`]): its bytes wait, unread, until the replica has answered
//!   everything and the connection is returned; then the write starts a transaction of its own
//!   on the primary. Inside a transaction begun on a replica (`READ ONLY`) nothing moves.
//! - **Read-your-writes:** statements that may write (see [`crate::route::writes`]) sent to
//!   the primary start the window when that connection is returned.

use sidepool_protocol::pg::TransactionStatus;
use sidepool_protocol::pg::frame;
use sidepool_protocol::pg::frontend as fe;
use sidepool_protocol::sql::{self, Dialect, Route, WriteFunctions};

use super::Relay;
use super::machine::{MAX_MESSAGE, SqlRoute};
use crate::pg::effects::{Effect, effects, may_have_effects};
use crate::route::{self, RoutingSettings};

/// Classifies one PostgreSQL text.
pub fn sql_route(text: &[u8], functions: &WriteFunctions) -> SqlRoute {
    let c = sql::classify(text, Dialect::Postgres, functions);
    let pins = may_have_effects(text)
        && effects(&String::from_utf8_lossy(text))
            .iter()
            .any(|e| matches!(e, Effect::Pin(_)));
    SqlRoute {
        replica: route::wanted(&c) == Route::Replica && !pins,
        writes: route::writes(c.kind) || pins,
    }
}

impl Relay {
    /// The routing settings when this session splits reads now: transaction mode, not pinned,
    /// `split` on and replicas configured.
    pub(super) fn splitting(&self) -> Option<std::sync::Arc<RoutingSettings>> {
        if !self.machine.mapping
            || self.machine.pinned.is_some()
            || self.svc.core.replicas.is_empty()
        {
            return None;
        }
        let s = self.svc.core.routing.get();
        s.split.then_some(s)
    }

    /// The replica (index) the transaction that message `msg` (tag `tag`) starts should run
    /// on, or `None` for the primary. `self.buf` holds what the client sent after it.
    pub(super) fn route_target(&self, tag: u8, msg: &[u8]) -> Option<usize> {
        let s = self.splitting()?;
        if self.ryw.holds(s.read_your_writes) {
            return None;
        }
        if self.message_route(tag, msg, &s.write_functions) != Some(true) {
            return None;
        }
        if !fe::ends_cycle(tag) && !self.rest_of_cycle_reads(&s.write_functions) {
            return None;
        }
        self.svc.core.pick_replica()
    }

    /// Whether `msg` may run on a replica: `Some(true)` for reads, `Some(false)` for anything
    /// that must run on the primary, `None` for messages that go with whatever is attached
    /// (Execute, Sync, Flush, Close, copy data).
    fn message_route(&self, tag: u8, msg: &[u8], functions: &WriteFunctions) -> Option<bool> {
        match tag {
            fe::tag::QUERY | fe::tag::PARSE => {
                let text = fe::statement_bytes(msg)?;
                Some(sql_route(text, functions).replica)
            }
            // The unnamed statement lives on the attached connection: it goes with it.
            fe::tag::BIND => {
                let b = fe::parse_bind(msg).ok()?;
                (!b.statement.is_empty()).then(|| {
                    self.machine
                        .statements
                        .get(b.statement)
                        .is_some_and(|s| s.read)
                })
            }
            fe::tag::DESCRIBE => match fe::parse_target(msg).ok()? {
                fe::Target::Statement(name) if !name.is_empty() => {
                    Some(self.machine.statements.get(name).is_some_and(|s| s.read))
                }
                _ => None,
            },
            fe::tag::FUNCTION_CALL => Some(false),
            _ => None,
        }
    }

    /// Whether every message of the current cycle already buffered after the first one, up to
    /// its Sync, may run on a replica. A message not wholly buffered yet counts as a write.
    fn rest_of_cycle_reads(&self, functions: &WriteFunctions) -> bool {
        let mut rest = &self.buf[..];
        loop {
            let Ok(Some(h)) = frame::header(rest, MAX_MESSAGE) else {
                // The Sync has not arrived: a write may still come within this cycle, where
                // it could not move to the primary any more.
                return false;
            };
            if h.total_len > rest.len() {
                return false;
            }
            let msg = &rest[..h.total_len];
            if self.message_route(h.tag, msg, functions) == Some(false) {
                return false;
            }
            if fe::ends_cycle(h.tag) {
                return true;
            }
            rest = &rest[h.total_len..];
        }
    }

    /// Whether the next buffered client message must wait for the attached replica connection
    /// to be returned: it starts a new cycle outside a transaction and must run on the primary.
    pub(super) fn needs_primary_next(&self) -> bool {
        let Some(att) = self.server.as_deref() else {
            return false;
        };
        if att.replica.is_none()
            || att.link.pending
            || att.link.status != TransactionStatus::Idle
            || !self.machine.scan.at_boundary()
        {
            return false;
        }
        let Ok(Some(h)) = frame::header(&self.buf, MAX_MESSAGE) else {
            return false;
        };
        if h.total_len > self.buf.len() && h.tag != fe::tag::FUNCTION_CALL {
            return false; // classified once it is whole
        }
        let functions = self.svc.core.routing.get().write_functions.clone();
        let msg = &self.buf[..h.total_len.min(self.buf.len())];
        self.message_route(h.tag, msg, &functions) == Some(false)
    }

    /// Before the next client message: if it needs the primary while a replica connection is
    /// attached, returns that connection when it is quiet (`false`: go on), or holds the
    /// client's bytes until it is (`true`: stop reading the client).
    pub(super) async fn hold_for_primary(&mut self) -> bool {
        if !self.needs_primary_next() {
            return false;
        }
        let quiet = self
            .server
            .as_deref()
            .is_some_and(|a| a.link.owed == 0 && a.quiet());
        if quiet {
            self.detach().await;
            return false;
        }
        self.held = true;
        true
    }

    /// After server bytes: a held client goes on once the replica owes nothing more (the
    /// connection is then returned, or a transaction is open and the message stays there).
    pub(super) fn release_hold(&mut self) {
        if self.held && self.server.as_deref().is_none_or(|a| a.link.owed == 0) {
            self.held = false;
            self.client_inbox = true;
        }
    }

    /// Records that a statement sent to the primary may write (read-your-writes).
    pub(super) fn note_write(&mut self, msg: &[u8]) {
        let on_primary = self.server.as_deref().is_some_and(|a| a.replica.is_none());
        if !on_primary || self.splitting().is_none() {
            return;
        }
        let writes = match msg.first() {
            Some(&fe::tag::QUERY | &fe::tag::PARSE) => {
                let functions = &self.svc.core.routing.get().write_functions;
                fe::statement_bytes(msg).is_some_and(|t| sql_route(t, functions).writes)
            }
            // A Bind of the unnamed statement: its Parse was looked at.
            Some(&fe::tag::BIND) => fe::parse_bind(msg)
                .ok()
                .and_then(|b| self.machine.statements.get(b.statement))
                .is_some_and(|s| s.writes),
            Some(&fe::tag::FUNCTION_CALL) => true,
            _ => false,
        };
        if writes {
            self.ryw.wrote();
        }
    }
}
