//! Client bytes: framing, answers without a server, and in transaction mode the mapping of
//! statement names, prepare on demand and the session effects of SQL.

use bytes::{Buf, Bytes, BytesMut};
use sidepool_protocol::ProtocolError;
use sidepool_protocol::pg::TransactionStatus::{self, Failed, Idle, InTransaction};
use sidepool_protocol::pg::backend as be;
use sidepool_protocol::pg::frame::{Header, Step};
use sidepool_protocol::pg::frontend::{self as fe, Target};
use tracing::debug;

use super::{ConnSide, Env, Link, Logged, MAX_MESSAGE, MAX_RETRY_LOG, Machine};
use crate::pg::effects::{Effect, effects, may_have_effects};
use crate::pg::relay::responses::{Expect, Pending};
use crate::pg::statements::{Prepared, Statement};

/// The next thing in the client's bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientStep {
    /// Everything buffered was handled; read more.
    NeedMore,
    /// The client said Terminate.
    Terminate,
    /// A client message (whole, or the start of a streamed one) for the driver to pass to
    /// [`Machine::without_server`] or [`Machine::on_message`].
    Message(Header, Bytes),
}

/// What became of a message that arrived with no server connection attached.
#[derive(Debug, PartialEq, Eq)]
pub enum Unattached {
    /// Answered into `to_client` (or dropped after a failed checkout): flush it, go on.
    Answered,
    /// It needs a server connection: attach one (or report [`Machine::checkout_failed`]), then
    /// pass the message to [`Machine::on_message`].
    NeedServer,
}

impl Machine {
    /// Frames the next client message in `buf`, moving the streamed rest of the current one
    /// to `to_server` (unless it is being dropped).
    ///
    /// # Errors
    /// A malformed or oversized message header.
    pub fn next_client(
        &mut self,
        buf: &mut BytesMut,
        to_server: &mut BytesMut,
    ) -> Result<ClientStep, ProtocolError> {
        let mapping = self.mapping;
        let wants_whole = |t: u8| {
            t == fe::tag::TERMINATE
                || (mapping
                    && matches!(
                        t,
                        fe::tag::PARSE
                            | fe::tag::BIND
                            | fe::tag::DESCRIBE
                            | fe::tag::CLOSE
                            | fe::tag::QUERY
                    ))
        };
        loop {
            let (header, len) = match self.scan.step(buf, MAX_MESSAGE, MAX_MESSAGE, wants_whole)? {
                Step::NeedMore => return Ok(ClientStep::NeedMore),
                Step::Forward(n) => {
                    if !self.dropping {
                        to_server.extend_from_slice(&buf[..n]);
                    }
                    buf.advance(n);
                    continue;
                }
                Step::Started(h, n) => (h, n),
                Step::Message(h) => (h, h.total_len),
            };
            let msg = buf.split_to(len).freeze();
            if header.tag == fe::tag::TERMINATE {
                return Ok(ClientStep::Terminate);
            }
            self.dropping = false;
            return Ok(ClientStep::Message(header, msg));
        }
    }

    /// A message while no server connection is attached: answered here when it can be
    /// ([`Machine::answer_without_server`]), dropped while a failed cycle is discarded, else
    /// [`Unattached::NeedServer`].
    ///
    /// # Errors
    /// A malformed Parse or Close.
    pub fn without_server(
        &mut self,
        tag: u8,
        msg: &[u8],
        env: &impl Env,
        to_client: &mut BytesMut,
    ) -> Result<Unattached, ProtocolError> {
        if self.discarding {
            self.discard(tag, to_client);
        } else if self.answer_without_server(tag, msg, env, to_client)? {
            self.dropping = true;
        } else {
            return Ok(Unattached::NeedServer);
        }
        Ok(Unattached::Answered)
    }

    /// The checkout for message `tag` failed: `reply` tells the client, and its messages are
    /// dropped up to the end of the cycle.
    pub fn checkout_failed(&mut self, tag: u8, reply: &[u8], to_client: &mut BytesMut) {
        to_client.extend_from_slice(reply);
        self.discarding = true;
        self.discard(tag, to_client);
    }

    /// Drops a message of a cycle whose checkout failed; at the cycle's end answers as the
    /// server would after an error.
    fn discard(&mut self, tag: u8, to_client: &mut BytesMut) {
        self.dropping = true;
        if fe::ends_cycle(tag) {
            self.discarding = false;
            to_client.extend_from_slice(&be::ready_for_query(TransactionStatus::Idle));
        }
    }

    /// Messages sidepool answers itself when no server connection is attached; `true` if it did.
    /// Nothing is open anywhere then, so a Sync gets `ReadyForQuery 'I'`, a Flush nothing, and in
    /// transaction mode a named Parse is only recorded (it is prepared on the server at first
    /// use) and a statement Close forgets the statement. Answering these without a server is what
    /// keeps `pgbench -M prepared` from stalling when every connection is busy.
    fn answer_without_server(
        &mut self,
        tag: u8,
        msg: &[u8],
        env: &impl Env,
        to_client: &mut BytesMut,
    ) -> Result<bool, ProtocolError> {
        match tag {
            fe::tag::SYNC => {
                to_client.extend_from_slice(&be::ready_for_query(TransactionStatus::Idle))
            }
            fe::tag::FLUSH => {}
            fe::tag::PARSE if self.mapping => {
                let p = fe::parse_parse(msg)?;
                if p.name.is_empty() {
                    return Ok(false);
                }
                let found = self.sql_effects(msg, env);
                if found.as_ref().is_some_and(|f| f.pins) {
                    return Ok(false);
                }
                self.remember(p.name, p.rest, found, env);
                to_client.extend_from_slice(&be::parse_complete());
            }
            fe::tag::CLOSE if self.mapping => match fe::parse_target(msg)? {
                Target::Statement(name) if self.statements.remove(name).is_some() => {
                    to_client.extend_from_slice(&be::close_complete());
                }
                _ => return Ok(false),
            },
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// A client message for the attached server connection: counts the cycle it opens or
    /// continues, then forwards it (session mode) or maps it (transaction mode).
    ///
    /// # Errors
    /// A malformed Parse, Bind, Describe or Close.
    pub fn on_message(
        &mut self,
        tag: u8,
        msg: Bytes,
        link: &mut Link,
        conn: ConnSide<'_>,
        env: &impl Env,
        to_server: &mut BytesMut,
    ) -> Result<(), ProtocolError> {
        // The status the server will be in when it reads this message: known only when no
        // earlier request's ReadyForQuery is still owed (a request in flight may open, fail or
        // end a transaction block; a client can send on after an ErrorResponse before its
        // ReadyForQuery has reached sidepool).
        let settled = (link.owed == 0).then_some(link.status);
        if fe::ends_cycle(tag) {
            link.owed += 1;
            link.pending = false;
        } else if !is_copy(tag) {
            link.pending = true;
        }
        if !self.mapping {
            to_server.extend_from_slice(&msg);
            return Ok(());
        }
        let mut out = Out {
            link,
            settled,
            prepared: conn.prepared,
            pid: conn.pid,
            to_server,
            capacity: env.prepared_capacity(),
        };
        self.map_message(tag, msg, &mut out, env)
    }

    /// Transaction mode: rewrites statement names, prepares on demand, and records the
    /// response each message will get.
    fn map_message(
        &mut self,
        tag: u8,
        msg: Bytes,
        out: &mut Out<'_>,
        env: &impl Env,
    ) -> Result<(), ProtocolError> {
        match tag {
            fe::tag::PARSE => self.map_parse(msg, out, env)?,
            fe::tag::BIND => {
                let b = fe::parse_bind(&msg)?;
                match self.statements.get(b.statement) {
                    Some(stmt) => {
                        let stmt = stmt.clone();
                        out.ensure_prepared(&stmt);
                        if let Some(effects) = &stmt.effects {
                            self.run_effects(effects, out.link, out.prepared);
                        }
                        let rewritten = fe::bind_message(&b, &stmt.server_name);
                        out.forward(rewritten, Some(Expect::Bind), Some(stmt));
                    }
                    None => out.forward(msg, Some(Expect::Bind), None),
                }
            }
            fe::tag::DESCRIBE => match fe::parse_target(&msg)? {
                Target::Statement(name) if self.statements.contains_key(name) => {
                    let stmt = self.statements[name].clone();
                    out.ensure_prepared(&stmt);
                    out.forward(
                        fe::statement_target(fe::tag::DESCRIBE, &stmt.server_name),
                        Some(Expect::Describe),
                        None,
                    );
                }
                _ => out.forward(msg, Some(Expect::Describe), None),
            },
            fe::tag::CLOSE => match fe::parse_target(&msg)? {
                // The server-side statement stays for other clients; the LRU closes it.
                Target::Statement(name) if self.statements.remove(name).is_some() => {
                    out.link
                        .responses
                        .push(Pending::Synthetic(be::close_complete()));
                }
                _ => out.forward(msg, Some(Expect::Close(None)), None),
            },
            fe::tag::QUERY => self.map_query(msg, out, env),
            fe::tag::SYNC | fe::tag::FUNCTION_CALL => out.forward(msg, Some(Expect::Ready), None),
            fe::tag::EXECUTE => out.forward(msg, Some(Expect::Execute), None),
            _ => out.forward(msg, None, None),
        }
        Ok(())
    }

    /// A Parse: the unnamed statement goes as is; a named one is recorded and prepared under
    /// its server name unless the connection has it already (then sidepool answers). A pin
    /// applies now; what running the statement does applies now for the unnamed statement
    /// (it runs in this cycle), at each Bind for a named one.
    fn map_parse(
        &mut self,
        msg: Bytes,
        out: &mut Out<'_>,
        env: &impl Env,
    ) -> Result<(), ProtocolError> {
        let p = fe::parse_parse(&msg)?;
        let found = self.sql_effects(&msg, env);
        if p.name.is_empty() {
            if let Some(f) = &found {
                self.run_effects(&f.effects, out.link, out.prepared);
            }
            out.forward(msg, Some(Expect::Parse(None)), None);
            return Ok(());
        }
        let stmt = self.remember(p.name, p.rest, found, env);
        if out.prepared.touch(&stmt.server_name) {
            if !matches!(out.settled, Some(Idle | InTransaction)) {
                // The server answers a Parse in a failed transaction with 25P02 (or runs a
                // ROLLBACK's), and with a request in flight the status is not known yet: let
                // it answer, with a Parse that leaves the shared one alone.
                let probe = fe::parse_message("", &stmt.content);
                out.forward(probe, Some(Expect::Parse(None)), None);
                return Ok(());
            }
            out.link
                .responses
                .push(Pending::Synthetic(be::parse_complete()));
        } else {
            out.prepare(&stmt, false);
        }
        Ok(())
    }

    /// A Query: applies its effects, and answers a lone `DEALLOCATE` itself.
    fn map_query(&mut self, msg: Bytes, out: &mut Out<'_>, env: &impl Env) {
        if let Some(found) = self.sql_effects(&msg, env) {
            if found.single && self.answer_deallocate(&found.effects, out.link) {
                return;
            }
            self.run_effects(&found.effects, out.link, out.prepared);
        }
        out.forward(msg, Some(Expect::Ready), None);
    }

    /// Answers a Query that is one `DEALLOCATE` of the client's own statements, as the server
    /// would for a direct session: the server knows those statements under other names, shared
    /// with other clients, and must keep them. Not in a failed transaction (the server's error
    /// is the answer), and `DEALLOCATE ALL` not when pinned (SQL-level `PREPARE`d statements
    /// live on the server).
    fn answer_deallocate(&mut self, effects: &[Effect], link: &mut Link) -> bool {
        if link.status == Failed {
            return false;
        }
        let tag = match effects {
            [Effect::Deallocate(name)] if self.statements.remove(name.as_bytes()).is_some() => {
                "DEALLOCATE"
            }
            [Effect::DeallocateAll] if self.pinned.is_none() => {
                self.statements.clear();
                "DEALLOCATE ALL"
            }
            _ => return false,
        };
        // Answered here: no ReadyForQuery will come from the server for it.
        link.owed = link.owed.saturating_sub(1);
        let mut answer = BytesMut::new();
        answer.extend_from_slice(&be::command_complete(tag));
        answer.extend_from_slice(&be::ready_for_query(link.status));
        link.responses.push(Pending::Synthetic(answer.freeze()));
        true
    }

    /// Records a client statement and returns it.
    fn remember(
        &mut self,
        name: &[u8],
        content: &[u8],
        found: Option<Found>,
        env: &impl Env,
    ) -> Statement {
        let route = env.route(content_text(content));
        let stmt = Statement {
            server_name: env.statement_name(content),
            content: Bytes::copy_from_slice(content),
            read: route.replica,
            writes: route.writes,
            effects: found
                .filter(|f| !f.effects.is_empty())
                .map(|f| f.effects.into()),
        };
        self.statements
            .insert(Bytes::copy_from_slice(name), stmt.clone());
        stmt
    }

    /// The session effects of the SQL of a Query or Parse, with its pins applied at once (a
    /// statement that pins pins from its Parse on, executed or not). `None` for the common
    /// statement: a byte check without allocation rules most out before any lexing.
    fn sql_effects(&mut self, msg: &[u8], env: &impl Env) -> Option<Found> {
        let sql = fe::statement_bytes(msg).filter(|s| may_have_effects(s))?;
        let sql = String::from_utf8_lossy(sql);
        let mut effects = effects(&sql);
        if effects.is_empty() {
            return None;
        }
        let mut pins = false;
        effects.retain(|e| match e {
            Effect::Pin(reason) => {
                pins = true;
                if self.pinned.is_none() {
                    self.pinned = Some(*reason);
                    env.pinned();
                    let sql = truncate(&sql, 200);
                    debug!(reason, sql, "client pinned to its server connection");
                }
                false
            }
            _ => true,
        });
        let single = !sql.trim().trim_end_matches(';').contains(';');
        Some(Found {
            effects,
            pins,
            single,
        })
    }

    /// Applies what running a statement does to the client's session (on the attached
    /// connection `link`): settings to read back before release, every setting back to its
    /// start value, its statements deallocated. Deallocating reached the server, which knows
    /// the client's statements under shared names: what was prepared on the connection may
    /// be gone, and is closed before it is prepared again ([`Prepared::clear_unsure`]).
    ///
    /// Settings are read back from the server, so a statement that fails or is rolled back
    /// costs nothing there. The client's statements are forgotten unless the statement is
    /// certain to fail: any in a failed transaction, `DISCARD ALL` (which also resets) in a
    /// transaction block.
    fn run_effects(&mut self, effects: &[Effect], link: &mut Link, prepared: &mut Prepared) {
        let fails = match link.status {
            Idle => false,
            InTransaction => effects.contains(&Effect::ResetAll),
            Failed => true,
        };
        for e in effects {
            match e {
                Effect::Setting(name) if !link.dirty.contains(name) => {
                    link.dirty.push(name.clone());
                }
                Effect::ResetAll => link.reset_all = true,
                Effect::DeallocateAll => {
                    if !fails {
                        self.statements.clear();
                    }
                    prepared.clear_unsure();
                }
                Effect::Setting(_) | Effect::Deallocate(_) | Effect::Pin(_) => {}
            }
        }
    }
}

/// The session effects of one SQL text, pins excepted (they apply when it is seen).
struct Found {
    /// Effects of running it, in order.
    effects: Vec<Effect>,
    /// It pins the client.
    pins: bool,
    /// The text is one statement.
    single: bool,
}

/// Where a mapped message goes: the attached connection's state and the bytes for it.
struct Out<'a> {
    link: &'a mut Link,
    /// The transaction status before the message, if no earlier request is in flight.
    settled: Option<TransactionStatus>,
    prepared: &'a mut Prepared,
    pid: i32,
    to_server: &'a mut BytesMut,
    capacity: usize,
}

impl Out<'_> {
    fn ensure_prepared(&mut self, stmt: &Statement) {
        if !self.prepared.touch(&stmt.server_name) {
            self.prepare(stmt, true);
        }
    }

    /// Prepares `stmt` on the attached connection, closing the least recently used statement
    /// first when the connection is at its limit. `hidden`: the client did not ask for this
    /// Parse, so its ParseComplete is swallowed.
    fn prepare(&mut self, stmt: &Statement, hidden: bool) {
        let responses = &mut self.link.responses;
        if self.prepared.take_unsure(&stmt.server_name) {
            // It may still be there (the DEALLOCATE ALL that was sent may have failed).
            self.to_server
                .extend_from_slice(&fe::statement_target(fe::tag::CLOSE, &stmt.server_name));
            responses.push(Pending::Hidden(Expect::Close(None)));
        }
        if let Some(victim) = self
            .prepared
            .insert(stmt.server_name.clone(), self.capacity)
        {
            self.to_server
                .extend_from_slice(&fe::statement_target(fe::tag::CLOSE, &victim));
            responses.push(Pending::Hidden(Expect::Close(Some(victim))));
        }
        tracing::trace!(statement = %stmt.server_name, hidden, server.pid = self.pid, "preparing");
        self.to_server
            .extend_from_slice(&fe::parse_message(&stmt.server_name, &stmt.content));
        let expect = Expect::Parse(Some(stmt.server_name.clone()));
        responses.push(if hidden {
            Pending::Hidden(expect)
        } else {
            Pending::Forward(expect)
        });
    }

    /// Sends a client message, records the response it expects, and keeps it in the cycle log
    /// (`statement`: the mapped statement a Bind reads).
    fn forward(&mut self, msg: Bytes, expect: Option<Expect>, statement: Option<Statement>) {
        self.to_server.extend_from_slice(&msg);
        let link = &mut *self.link;
        if std::mem::take(&mut link.cycle_closed) {
            link.cycle.clear();
            link.cycle_bytes = 0;
            link.retried = false;
        }
        link.cycle_closed = expect == Some(Expect::Ready);
        // Only a cycle that opens with the Bind of a mapped statement is ever retried
        // (`retry_stale`): any other is marked too large at its first message and not logged.
        let opens = link.cycle.is_empty() && link.cycle_bytes == 0;
        if opens && !(expect == Some(Expect::Bind) && statement.is_some()) {
            link.cycle_bytes = usize::MAX / 2;
        } else if link.cycle_bytes + msg.len() <= MAX_RETRY_LOG {
            link.cycle_bytes += msg.len();
            link.cycle.push(Logged {
                msg,
                expect: expect.clone(),
                statement,
            });
        } else {
            link.cycle_bytes = usize::MAX / 2; // too large: never retried
        }
        if let Some(e) = expect {
            link.responses.push(Pending::Forward(e));
        }
    }
}

/// CopyData, CopyDone and CopyFail continue the cycle of the statement that started COPY.
fn is_copy(tag: u8) -> bool {
    matches!(
        tag,
        fe::tag::COPY_DATA | fe::tag::COPY_DONE | fe::tag::COPY_FAIL
    )
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The query text of a statement's content (a Parse message after the name).
pub fn content_text(content: &[u8]) -> &[u8] {
    let end = content
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(content.len());
    &content[..end]
}
