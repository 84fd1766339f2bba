//! One command's response, relayed packet by packet: server bytes in, client-bound bytes out.
//!
//! Rows and long definitions stream through unread ([`Scanner`]); the few packets that decide
//! the response's shape are looked at whole ([`Tracker`]). The first packet is always read
//! whole: it carries COM_STMT_PREPARE_OK's statement id, which is rewritten to the client's,
//! and an OK's last insert id.

use bytes::{Buf, BytesMut};
use sidepool_protocol::ProtocolError;
use sidepool_protocol::mysql::StatusFlags;
use sidepool_protocol::mysql::packet::{self, Scanner, Step};
use sidepool_protocol::mysql::response::{self, Event, Expect, Tracker};

/// What the relay learnt from a response.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Last status flags the server sent, `None` when it ended with ERR or sent none.
    pub status: Option<StatusFlags>,
    /// The response ended with an ERR packet.
    pub error: bool,
    /// The last insert id of the last OK packet seen (0: none generated).
    pub last_insert_id: u64,
    /// The COM_STMT_PREPARE_OK, with the server's statement id.
    pub prepared: Option<response::PrepareOk>,
}

impl Outcome {
    fn note_first(&mut self, body: &[u8], expect: Expect) {
        match (body.first(), expect) {
            (Some(&response::OK), Expect::Prepare) => {
                self.prepared = response::parse_prepare_ok(body).ok();
            }
            (Some(&response::OK), _) => {
                if let Ok(ok) = response::parse_ok(body) {
                    self.last_insert_id = ok.last_insert_id;
                }
            }
            _ => {}
        }
    }
}

/// What [`ResponseRelay::feed`] needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// The response goes on: read more server bytes.
    NeedMore,
    /// The server asks for a LOCAL INFILE: forward the client's file packets, call
    /// [`ResponseRelay::infile_sent`], then read on.
    LocalInfile,
    /// The response is complete, at a packet boundary.
    Done(Outcome),
}

/// Relays the response to one command.
#[derive(Debug)]
pub(crate) struct ResponseRelay {
    tracker: Tracker,
    scan: Scanner,
    expect: Expect,
    /// Replaces the statement id of a COM_STMT_PREPARE_OK.
    client_id: Option<u32>,
    outcome: Outcome,
    first_packet: bool,
    /// Set once the tracker has seen the response's last packet; kept across reads, because
    /// that packet may be one the scanner streams (a parameter or column definition ends a
    /// COM_STMT_PREPARE response under CLIENT_DEPRECATE_EOF) and its tail may come in a later
    /// read. The response is over when `done` and the scanner is at a packet boundary.
    done: bool,
}

impl ResponseRelay {
    /// The relay of a response to a command expecting `expect`, on a connection where
    /// CLIENT_DEPRECATE_EOF is `deprecate_eof`. With `client_id`, a COM_STMT_PREPARE_OK's
    /// statement id is replaced by it.
    pub fn new(expect: Expect, deprecate_eof: bool, client_id: Option<u32>) -> Self {
        ResponseRelay {
            tracker: Tracker::new(expect, deprecate_eof),
            scan: Scanner::new(),
            expect,
            client_id,
            outcome: Outcome::default(),
            first_packet: true,
            done: false,
        }
    }

    /// No response comes at all (the command expects nothing).
    pub fn expects_nothing(&self) -> bool {
        self.tracker.is_done()
    }

    /// The client's LOCAL INFILE packets went to the server: its answer comes next.
    pub fn infile_sent(&mut self) {
        self.first_packet = true;
    }

    /// Consumes what it can of `input` (server bytes), appending what goes to the client to
    /// `out`. Bytes after the response's end stay in `input`.
    ///
    /// # Errors
    /// A packet that cannot appear in this response.
    pub fn feed(
        &mut self,
        input: &mut BytesMut,
        out: &mut Vec<u8>,
    ) -> Result<Progress, ProtocolError> {
        loop {
            if self.done && self.scan.at_boundary() {
                return Ok(Progress::Done(self.outcome));
            }
            let first_packet = self.first_packet;
            let tracker = &self.tracker;
            let step = self.scan.step(input, packet::MAX_PAYLOAD, |p| {
                tracker.wants_whole(p) || first_packet
            });
            let event = match step {
                Step::NeedMore => return Ok(Progress::NeedMore),
                Step::Forward(n) => {
                    out.extend_from_slice(&input[..n]);
                    input.advance(n);
                    continue;
                }
                Step::Started(p, n) => {
                    let head = input
                        .get(packet::HEADER_LEN..(packet::HEADER_LEN + 1).min(n))
                        .unwrap_or_default();
                    let event = self.tracker.on_packet(head, p.header.len, p.continuation)?;
                    out.extend_from_slice(&input[..n]);
                    input.advance(n);
                    event
                }
                Step::Packet(p) => {
                    let total = p.header.total_len();
                    let event = self.on_whole(&input[..total], p, out)?;
                    input.advance(total);
                    event
                }
            };
            self.first_packet = false;
            match event {
                Event::More => {}
                Event::LocalInfile => return Ok(Progress::LocalInfile),
                Event::Done { status, error } => {
                    self.outcome.status = status;
                    self.outcome.error = error;
                    self.done = true;
                }
            }
        }
    }

    /// A packet read whole (`bytes` with its header): tracked, copied to `out`, and the
    /// first packet's statement id or an OK's last insert id taken from it.
    fn on_whole(
        &mut self,
        bytes: &[u8],
        p: packet::Packet,
        out: &mut Vec<u8>,
    ) -> Result<Event, ProtocolError> {
        let body = &bytes[packet::HEADER_LEN..];
        let event = self.tracker.on_packet(body, p.header.len, p.continuation)?;
        let start = out.len();
        out.extend_from_slice(bytes);
        if self.first_packet {
            self.outcome.note_first(body, self.expect);
            if let (Some(id), Some(_)) = (self.client_id, self.outcome.prepared)
                && let Some(slot) = out.get_mut(start + 5..start + 9)
            {
                slot.copy_from_slice(&id.to_le_bytes());
            }
        } else if body.first() == Some(&response::OK)
            && p.header.len < 64
            && let Ok(ok) = response::parse_ok(body)
        {
            self.outcome.last_insert_id = ok.last_insert_id;
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests;
