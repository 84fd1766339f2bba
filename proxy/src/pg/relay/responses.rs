//! Which server responses belong to which client message, so that sidepool can rewrite,
//! add and answer messages in transaction mode without the client noticing.
//!
//! Every message sent to the server that gets a response pushes an entry; a server message
//! that ends an entry's response pops it (PostgreSQL docs, "Extended Query": ParseComplete,
//! BindComplete, RowDescription/NoData, CommandComplete/EmptyQueryResponse/PortalSuspended,
//! CloseComplete, ReadyForQuery). After an ErrorResponse the server skips everything up to
//! the next Sync, so those entries are dropped with no response.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use sidepool_protocol::pg::backend::tag;

use crate::pg::statements::Prepared;

/// The response a message gets from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// ParseComplete; the server-side statement name when sidepool named it.
    Parse(Option<Arc<str>>),
    /// BindComplete.
    Bind,
    /// RowDescription or NoData (after ParameterDescription for a statement).
    Describe,
    /// CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute,
    /// CloseComplete; the statement sidepool closed to make room, if this was that.
    Close(Option<Arc<str>>),
    /// ReadyForQuery for Sync, Query or FunctionCall.
    Ready,
}

/// One outstanding response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// The client's message; its response goes to the client.
    Forward(Expect),
    /// sidepool's own message; its success response is swallowed, an error goes to the client.
    Hidden(Expect),
    /// The client's message answered by sidepool with these bytes, in order.
    Synthetic(Bytes),
}

/// What to do with a server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Send it to the client.
    Forward,
    /// Drop it.
    Swallow,
}

/// The outstanding responses of one attached server connection.
#[derive(Debug, Default)]
pub struct Responses {
    queue: VecDeque<Pending>,
}

impl Responses {
    /// Records a message whose response is outstanding.
    pub fn push(&mut self, p: Pending) {
        self.queue.push_back(p);
    }

    /// True when no response is outstanding.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Pops synthetic answers now at the front (nothing outstanding before them) into `out`.
    pub fn take_ready_synthetic(&mut self, out: &mut bytes::BytesMut) {
        while let Some(Pending::Synthetic(b)) = self.queue.front() {
            out.extend_from_slice(b);
            self.queue.pop_front();
        }
    }

    /// Accounts for a server message with type `t` and says where it goes. Synthetic answers
    /// due before it are appended to `out` first.
    pub fn on_server_message(
        &mut self,
        t: u8,
        out: &mut bytes::BytesMut,
        prepared: &mut Prepared,
    ) -> Disposition {
        if matches!(
            t,
            tag::NOTICE_RESPONSE | tag::PARAMETER_STATUS | tag::NOTIFICATION_RESPONSE
        ) {
            return Disposition::Forward;
        }
        self.take_ready_synthetic(out);
        let Some(front) = self.queue.front() else {
            // Nothing expected: a message of a flow sidepool does not model; pass it on.
            return Disposition::Forward;
        };
        let (hidden, expect) = match front {
            Pending::Forward(e) => (false, e),
            Pending::Hidden(e) => (true, e),
            Pending::Synthetic(_) => unreachable_synthetic(),
        };
        let error = t == tag::ERROR_RESPONSE;
        let terminal = match expect {
            Expect::Parse(_) => t == tag::PARSE_COMPLETE,
            Expect::Bind => t == tag::BIND_COMPLETE,
            Expect::Describe => t == tag::ROW_DESCRIPTION || t == tag::NO_DATA,
            Expect::Execute => {
                matches!(
                    t,
                    tag::COMMAND_COMPLETE | tag::EMPTY_QUERY_RESPONSE | tag::PORTAL_SUSPENDED
                )
            }
            Expect::Close(_) => t == tag::CLOSE_COMPLETE,
            Expect::Ready => t == tag::READY_FOR_QUERY,
        } || (error && *expect != Expect::Ready);
        let disposition = if hidden && !error {
            Disposition::Swallow
        } else {
            Disposition::Forward
        };
        if terminal {
            let done = self.queue.pop_front();
            if error {
                if let Some(Pending::Forward(e) | Pending::Hidden(e)) = &done {
                    undo(e, prepared);
                }
                self.skip_to_sync(prepared);
            }
        }
        disposition
    }

    /// For a stale-plan error on the Bind at the front: drops the cycle's outstanding entries
    /// (the server skips those messages) and hides the ReadyForQuery of the cycle's Sync, since
    /// sidepool sends the cycle again. Returns false, changing nothing, unless the front is a
    /// Bind and the cycle's Sync has already been sent.
    pub fn abandon_for_retry(&mut self, prepared: &mut Prepared) -> bool {
        let ready = |p: &&Pending| {
            matches!(
                p,
                Pending::Forward(Expect::Ready) | Pending::Hidden(Expect::Ready)
            )
        };
        // Exactly one Sync outstanding: the Bind at the front belongs to that (the last) cycle.
        if !matches!(self.queue.front(), Some(Pending::Forward(Expect::Bind)))
            || self.queue.iter().filter(ready).count() != 1
        {
            return false;
        }
        self.queue.pop_front();
        self.skip_to_sync(prepared);
        if let Some(front) = self.queue.front_mut() {
            *front = Pending::Hidden(Expect::Ready);
        }
        true
    }

    /// The response expected next, if any.
    pub fn front(&self) -> Option<&Pending> {
        self.queue.front()
    }

    /// After an error the server ignores messages up to Sync: drop their entries.
    fn skip_to_sync(&mut self, prepared: &mut Prepared) {
        while let Some(front) = self.queue.front() {
            match front {
                Pending::Forward(Expect::Ready) | Pending::Hidden(Expect::Ready) => break,
                Pending::Forward(e) | Pending::Hidden(e) => undo(e, prepared),
                Pending::Synthetic(_) => {}
            }
            self.queue.pop_front();
        }
    }
}

/// Server-side effects that did not happen because the message failed or was skipped.
fn undo(e: &Expect, prepared: &mut Prepared) {
    tracing::trace!(expect = ?e, "response not coming after an error; effect undone");
    match e {
        Expect::Parse(Some(name)) => prepared.remove(name),
        // The eviction Close did not run: the statement is still there.
        Expect::Close(Some(name)) => {
            prepared.insert(name.clone(), usize::MAX);
        }
        _ => {}
    }
}

fn unreachable_synthetic() -> ! {
    // take_ready_synthetic just removed every synthetic entry at the front.
    unreachable!("synthetic entry at the front after take_ready_synthetic")
}

#[cfg(test)]
mod tests;
