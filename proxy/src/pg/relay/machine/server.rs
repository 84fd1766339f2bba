//! Server bytes: forwarded to the client minus swallowed answers to sidepool's own messages
//! (plus sidepool's answers in their place), with ReadyForQuery and ParameterStatus tracked and
//! a stale plan retried.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use sidepool_protocol::ProtocolError;
use sidepool_protocol::pg::TransactionStatus;
use sidepool_protocol::pg::backend as be;
use sidepool_protocol::pg::frame::Step;
use sidepool_protocol::pg::frontend as fe;
use tracing::debug;

use super::{ConnSide, Link, Logged, MAX_MESSAGE, MAX_RETRY_LOG, MAX_WHOLE_SERVER, Machine};
use crate::pg::relay::responses::{Disposition, Expect, Pending};
use crate::pg::replay;

/// What one batch of server bytes did, for the driver to act on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ServerOutcome {
    /// ReadyForQuery messages after which nothing more was owed (each ends a client request:
    /// the driver marks the client idle and times the request).
    pub done: u32,
    /// A cycle is being retried after a stale plan: `to_server` holds it, send it now.
    pub retrying: bool,
}

impl Machine {
    /// Handles the server bytes in `conn.input`, as far as they are framed: forwards them to
    /// `to_client` (minus swallowed answers to sidepool's own messages, plus sidepool's answers
    /// in their place), tracks ReadyForQuery and reported parameters (those the client's
    /// `settings` follow too), and queues a retried cycle in `to_server`.
    ///
    /// # Errors
    /// A malformed or oversized server message.
    pub fn on_server(
        &mut self,
        link: &mut Link,
        conn: ConnSide<'_>,
        settings: &mut Arc<BTreeMap<String, String>>,
        to_server: &mut BytesMut,
        to_client: &mut BytesMut,
    ) -> Result<ServerOutcome, ProtocolError> {
        let mapping = self.mapping;
        let mut outcome = ServerOutcome::default();
        let input = conn.input;
        loop {
            let step = link.scan.step(input, MAX_MESSAGE, MAX_WHOLE_SERVER, |t| {
                t == be::tag::READY_FOR_QUERY
                    || t == be::tag::PARAMETER_STATUS
                    || (mapping && t == be::tag::ERROR_RESPONSE)
            })?;
            let (tag, len) = match step {
                Step::NeedMore => break,
                Step::Forward(n) => {
                    if link.current == Disposition::Forward {
                        to_client.extend_from_slice(&input[..n]);
                    }
                    input.advance(n);
                    continue;
                }
                Step::Started(h, n) => (h.tag, n),
                Step::Message(h) => (h.tag, h.total_len),
            };
            let msg = &input[..len];
            let stale = mapping
                && tag == be::tag::ERROR_RESPONSE
                && retry_stale(link, msg, conn.prepared, to_server);
            link.current = if stale {
                outcome.retrying = true;
                Disposition::Swallow
            } else if mapping {
                link.responses
                    .on_server_message(tag, to_client, conn.prepared)
            } else {
                Disposition::Forward
            };
            if tag == be::tag::READY_FOR_QUERY {
                link.status = be::parse_ready_for_query(msg)?;
                link.owed = link.owed.saturating_sub(1);
                if link.owed == 0 {
                    outcome.done += 1;
                }
            } else if tag == be::tag::PARAMETER_STATUS {
                let (k, v) = be::parse_parameter_status(msg)?;
                let follows = replay::follows_client(&k) || settings.contains_key(&k);
                if follows && settings.get(&k) != Some(&v) {
                    Arc::make_mut(settings).insert(k.clone(), v.clone());
                }
                conn.params.insert(k, v);
                *conn.synced = None;
            }
            if link.current == Disposition::Forward {
                to_client.extend_from_slice(msg);
            }
            input.advance(len);
        }
        Ok(outcome)
    }
}

/// After a stale plan (SQLSTATE 0A000, "cached plan must not change result type", raised when
/// DDL changed a prepared statement's result type) on the Bind that opens a cycle outside a
/// transaction block, sends the cycle again behind its Sync with the statement prepared afresh.
/// Nothing of the cycle reached the client yet, so the client sees only the retried result.
/// Returns true if it did; the error is then swallowed.
fn retry_stale(
    link: &mut Link,
    err: &[u8],
    prepared: &mut crate::pg::statements::Prepared,
    to_server: &mut BytesMut,
) -> bool {
    if link.retried || link.status != TransactionStatus::Idle || link.cycle_bytes > MAX_RETRY_LOG {
        return false;
    }
    let Some(Logged {
        expect: Some(Expect::Bind),
        statement: Some(stmt),
        ..
    }) = link.cycle.first()
    else {
        return false;
    };
    let stale = be::parse_error(err).is_ok_and(|e| {
        e.code == "0A000"
            && e.message
                .contains("cached plan must not change result type")
    });
    if !stale {
        return false;
    }
    let stmt = stmt.clone();
    if !link.responses.abandon_for_retry(prepared) {
        return false;
    }
    link.retried = true;
    to_server.extend_from_slice(&fe::statement_target(fe::tag::CLOSE, &stmt.server_name));
    link.responses.push(Pending::Hidden(Expect::Close(None)));
    to_server.extend_from_slice(&fe::parse_message(&stmt.server_name, &stmt.content));
    link.responses.push(Pending::Hidden(Expect::Parse(Some(
        stmt.server_name.clone(),
    ))));
    for logged in &link.cycle {
        to_server.extend_from_slice(&logged.msg);
        if let Some(e) = &logged.expect {
            if *e == Expect::Ready {
                link.owed += 1;
            }
            link.responses.push(Pending::Forward(e.clone()));
        }
    }
    debug!(statement = %stmt.server_name, "stale plan after DDL: statement prepared again and the cycle retried");
    true
}
