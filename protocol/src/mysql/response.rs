//! Server responses: OK, ERR and EOF packets (parse and build), and a [`Tracker`] that tells
//! when the response to one command is complete, from packet headers and the few small packets
//! that decide it (column counts, OK/EOF status flags, COM_STMT_PREPARE_OK counts).

use super::packet::MAX_PAYLOAD;
use super::{StatusFlags, lenenc_int, put_lenenc_int};
use crate::error::{ProtocolError, Result};

/// First byte of an OK packet.
pub const OK: u8 = 0x00;
/// First byte of an EOF packet (and of an OK packet ending rows with CLIENT_DEPRECATE_EOF).
pub const EOF: u8 = 0xFE;
/// First byte of an ERR packet.
pub const ERR: u8 = 0xFF;
/// First byte of a LOCAL INFILE request.
pub const LOCAL_INFILE: u8 = 0xFB;

fn malformed(what: &'static str, why: &'static str) -> ProtocolError {
    ProtocolError::Malformed { what, why }
}

/// The fields of an OK packet sidepool uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OkPacket {
    /// Rows affected.
    pub affected_rows: u64,
    /// The id an AUTO_INCREMENT column got.
    pub last_insert_id: u64,
    /// Server status flags.
    pub status: StatusFlags,
    /// Warning count.
    pub warnings: u16,
}

/// Decodes an OK packet (first byte 0x00, or 0xFE ending rows with CLIENT_DEPRECATE_EOF).
///
/// # Errors
/// A wrong first byte or missing fields.
pub fn parse_ok(payload: &[u8]) -> Result<OkPacket> {
    let bad = |why| malformed("OK", why);
    match payload.first() {
        Some(&OK | &EOF) => {}
        _ => return Err(bad("not an OK packet")),
    }
    let rest = &payload[1..];
    let (affected_rows, a) = lenenc_int(rest).ok_or_else(|| bad("affected rows"))?;
    let rest = rest.get(a..).unwrap_or_default();
    let (last_insert_id, b) = lenenc_int(rest).ok_or_else(|| bad("last insert id"))?;
    let rest = rest.get(b..).unwrap_or_default();
    let &[s0, s1, w0, w1, ..] = rest else {
        return Err(bad("status flags"));
    };
    Ok(OkPacket {
        affected_rows,
        last_insert_id,
        status: StatusFlags::from_bits_retain(u16::from_le_bytes([s0, s1])),
        warnings: u16::from_le_bytes([w0, w1]),
    })
}

/// Builds an OK packet payload (protocol 41, no info, no session state).
pub fn ok_packet(
    affected_rows: u64,
    last_insert_id: u64,
    status: StatusFlags,
    warnings: u16,
) -> Vec<u8> {
    let mut out = vec![OK];
    put_lenenc_int(&mut out, affected_rows);
    put_lenenc_int(&mut out, last_insert_id);
    out.extend_from_slice(&status.bits().to_le_bytes());
    out.extend_from_slice(&warnings.to_le_bytes());
    out
}

/// The status flags of an EOF packet (0xFE, warnings, status; shorter than 9 bytes).
///
/// # Errors
/// Not an EOF packet.
pub fn parse_eof(payload: &[u8]) -> Result<StatusFlags> {
    match payload {
        [EOF, _, _, s0, s1] => Ok(StatusFlags::from_bits_retain(u16::from_le_bytes([
            *s0, *s1,
        ]))),
        _ => Err(malformed("EOF", "not a protocol-41 EOF packet")),
    }
}

/// Builds an EOF packet payload.
pub fn eof_packet(status: StatusFlags, warnings: u16) -> Vec<u8> {
    let mut out = vec![EOF];
    out.extend_from_slice(&warnings.to_le_bytes());
    out.extend_from_slice(&status.bits().to_le_bytes());
    out
}

/// True for an EOF-class packet: 0xFE with a payload shorter than a row could be
/// (an EOF packet, or an OK packet that ends rows with CLIENT_DEPRECATE_EOF).
pub fn is_eof_class(first: Option<u8>, len: usize) -> bool {
    first == Some(EOF) && len < MAX_PAYLOAD
}

/// The status flags of an EOF-class packet, whichever form it has.
///
/// # Errors
/// Neither form decodes.
pub fn eof_class_status(payload: &[u8], deprecate_eof: bool) -> Result<StatusFlags> {
    if deprecate_eof && payload.len() > 5 {
        parse_ok(payload).map(|ok| ok.status)
    } else {
        parse_eof(payload).or_else(|_| parse_ok(payload).map(|ok| ok.status))
    }
}

/// An ERR packet's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrPacket {
    /// Error number (1045, 1146, ...).
    pub code: u16,
    /// SQLSTATE, `HY000` when the packet has none.
    pub state: String,
    /// Human-readable message.
    pub message: String,
}

/// Decodes an ERR packet (protocol 41: the SQLSTATE marker `#` is optional).
///
/// # Errors
/// A wrong first byte or a missing code.
pub fn parse_err(payload: &[u8]) -> Result<ErrPacket> {
    let &[ERR, c0, c1, ref rest @ ..] = payload else {
        return Err(malformed("ERR", "not an ERR packet"));
    };
    let (state, message) = match rest {
        [b'#', s @ ..] if s.len() >= 5 => (String::from_utf8_lossy(&s[..5]).into_owned(), &s[5..]),
        _ => ("HY000".to_owned(), rest),
    };
    Ok(ErrPacket {
        code: u16::from_le_bytes([c0, c1]),
        state,
        message: String::from_utf8_lossy(message).into_owned(),
    })
}

/// Builds an ERR packet payload. `state` must be five ASCII characters (else `HY000`).
pub fn err_packet(code: u16, state: &str, message: &str) -> Vec<u8> {
    let state = if state.len() == 5 && state.is_ascii() {
        state
    } else {
        "HY000"
    };
    let mut out = Vec::with_capacity(9 + message.len());
    out.push(ERR);
    out.extend_from_slice(&code.to_le_bytes());
    out.push(b'#');
    out.extend_from_slice(state.as_bytes());
    out.extend_from_slice(message.as_bytes());
    out
}

/// COM_STMT_PREPARE_OK's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrepareOk {
    /// The statement id the server assigned.
    pub statement_id: u32,
    /// Result set columns.
    pub columns: u16,
    /// Parameters.
    pub params: u16,
}

/// Decodes COM_STMT_PREPARE_OK.
///
/// # Errors
/// A wrong first byte or missing fields.
pub fn parse_prepare_ok(payload: &[u8]) -> Result<PrepareOk> {
    let &[OK, a, b, c, d, c0, c1, p0, p1, ..] = payload else {
        return Err(malformed("COM_STMT_PREPARE_OK", "too short"));
    };
    Ok(PrepareOk {
        statement_id: u32::from_le_bytes([a, b, c, d]),
        columns: u16::from_le_bytes([c0, c1]),
        params: u16::from_le_bytes([p0, p1]),
    })
}

/// Which response a command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// OK or ERR (COM_PING, COM_INIT_DB, COM_RESET_CONNECTION, COM_STMT_RESET, ...).
    Ok,
    /// OK, ERR, a LOCAL INFILE request or result sets, possibly several (COM_QUERY,
    /// COM_STMT_EXECUTE).
    ResultSets,
    /// COM_STMT_PREPARE_OK with parameter and column definitions, or ERR.
    Prepare,
    /// Column definitions ended by EOF, or ERR (COM_FIELD_LIST).
    FieldList,
    /// Rows ended by EOF, or ERR (COM_STMT_FETCH).
    Rows,
    /// One packet of any kind (COM_STATISTICS).
    OnePacket,
    /// No response at all (COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA, COM_QUIT).
    Nothing,
}

/// What a packet meant for the response in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// More packets follow.
    More,
    /// The response is complete. `status` is the last status flags the server sent in it (OK
    /// or EOF), `None` when it ended with ERR or carried none.
    Done {
        /// Last status flags seen.
        status: Option<StatusFlags>,
        /// The response ended with an ERR packet.
        error: bool,
    },
    /// The server asks for a LOCAL INFILE: the client sends file packets ending with an empty
    /// one, then the response goes on.
    LocalInfile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Columns { left: u64 },
    ColumnsEof,
    Rows,
    PrepareDefs { params: u16, columns: u16 },
    ParamsEof { columns: u16 },
    PrepareColumns { left: u16 },
    PrepareColumnsEof,
    FieldList,
    Done,
}

/// Follows one command's response packet by packet.
#[derive(Debug, Clone)]
pub struct Tracker {
    expect: Expect,
    state: State,
    deprecate_eof: bool,
    status: Option<StatusFlags>,
}

impl Tracker {
    /// A tracker for the response to a command expecting `expect`, on a connection where
    /// CLIENT_DEPRECATE_EOF is `deprecate_eof`.
    pub fn new(expect: Expect, deprecate_eof: bool) -> Self {
        let state = match expect {
            Expect::Nothing => State::Done,
            Expect::FieldList => State::FieldList,
            Expect::Rows => State::Rows,
            _ => State::Start,
        };
        Tracker {
            expect,
            state,
            deprecate_eof,
            status: None,
        }
    }

    /// The response is complete.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the tracker needs to read packet `p` whole (small packets whose fields decide
    /// the response's shape). Continuations never are.
    pub fn wants_whole(&self, p: &super::packet::Packet) -> bool {
        if p.continuation {
            return false;
        }
        match self.state {
            State::Start => true,
            State::Rows | State::ColumnsEof | State::FieldList | State::PrepareColumnsEof => {
                is_eof_class(p.first, p.header.len) || p.first == Some(ERR)
            }
            State::ParamsEof { .. } => true,
            _ => false,
        }
    }

    /// Takes the next packet of the response. `payload` is the whole packet when
    /// [`Tracker::wants_whole`] asked for it, else at least its first byte; `len` is its payload
    /// length; `continuation`: it continues the previous packet.
    ///
    /// # Errors
    /// A packet that cannot appear at this point, or a short OK/EOF/count packet.
    pub fn on_packet(&mut self, payload: &[u8], len: usize, continuation: bool) -> Result<Event> {
        if continuation {
            return Ok(self.more_or_done());
        }
        let first = payload.first().copied();
        match self.state {
            State::Done => return Err(malformed("response", "packet after the response ended")),
            State::Start => return self.on_start(payload, first),
            State::Columns { left } => {
                self.state = match left {
                    0 | 1 if self.deprecate_eof => State::Rows,
                    0 | 1 => State::ColumnsEof,
                    n => State::Columns { left: n - 1 },
                };
            }
            State::ColumnsEof => {
                let status = eof_class_status(payload, false)?;
                self.status = Some(status);
                // A cursor was opened: rows come with COM_STMT_FETCH.
                self.state = if status.contains(StatusFlags::SERVER_STATUS_CURSOR_EXISTS) {
                    State::Done
                } else {
                    State::Rows
                };
            }
            State::Rows | State::FieldList => {
                if first == Some(ERR) {
                    self.state = State::Done;
                    return Ok(Event::Done {
                        status: self.status,
                        error: true,
                    });
                }
                if is_eof_class(first, len) {
                    let status = eof_class_status(payload, self.deprecate_eof)?;
                    return Ok(self.after_status(status));
                }
            }
            State::PrepareDefs { params, columns } => {
                self.state = match (params, columns) {
                    (1, c) if !self.deprecate_eof => State::ParamsEof { columns: c },
                    (1, 0) => State::Done,
                    (1, c) => State::PrepareColumns { left: c },
                    (p, c) => State::PrepareDefs {
                        params: p - 1,
                        columns: c,
                    },
                };
            }
            State::ParamsEof { columns } => {
                self.state = match columns {
                    0 => State::Done,
                    c => State::PrepareColumns { left: c },
                };
            }
            State::PrepareColumns { left } => {
                self.state = match left {
                    1 if self.deprecate_eof => State::Done,
                    1 => State::PrepareColumnsEof,
                    n => State::PrepareColumns { left: n - 1 },
                };
            }
            State::PrepareColumnsEof => self.state = State::Done,
        }
        Ok(self.more_or_done())
    }

    fn more_or_done(&self) -> Event {
        if self.state == State::Done {
            Event::Done {
                status: self.status,
                error: false,
            }
        } else {
            Event::More
        }
    }

    fn after_status(&mut self, status: StatusFlags) -> Event {
        self.status = Some(status);
        if self.expect == Expect::ResultSets
            && status.contains(StatusFlags::SERVER_MORE_RESULTS_EXISTS)
        {
            self.state = State::Start;
            return Event::More;
        }
        self.state = State::Done;
        Event::Done {
            status: Some(status),
            error: false,
        }
    }

    fn on_start(&mut self, payload: &[u8], first: Option<u8>) -> Result<Event> {
        if first == Some(ERR) {
            self.state = State::Done;
            return Ok(Event::Done {
                status: self.status,
                error: true,
            });
        }
        match self.expect {
            Expect::OnePacket => {
                self.state = State::Done;
                Ok(self.more_or_done())
            }
            Expect::Ok => {
                // COM_SET_OPTION answers with an EOF packet on older servers.
                let status = if first == Some(EOF) {
                    eof_class_status(payload, true)?
                } else {
                    parse_ok(payload)?.status
                };
                Ok(self.after_status(status))
            }
            Expect::Prepare => {
                let ok = parse_prepare_ok(payload)?;
                self.state = match (ok.params, ok.columns) {
                    (0, 0) => State::Done,
                    (0, c) => State::PrepareColumns { left: c },
                    (p, c) => State::PrepareDefs {
                        params: p,
                        columns: c,
                    },
                };
                Ok(self.more_or_done())
            }
            Expect::ResultSets => match first {
                Some(OK) => {
                    let status = parse_ok(payload)?.status;
                    Ok(self.after_status(status))
                }
                Some(LOCAL_INFILE) => Ok(Event::LocalInfile),
                _ => {
                    let (n, _) = lenenc_int(payload)
                        .ok_or_else(|| malformed("result set", "column count"))?;
                    if n == 0 {
                        return Err(malformed("result set", "zero columns"));
                    }
                    self.state = State::Columns { left: n };
                    Ok(Event::More)
                }
            },
            Expect::FieldList | Expect::Rows | Expect::Nothing => {
                Err(malformed("response", "unexpected start"))
            }
        }
    }
}

/// Runs a tracker over whole packet payloads; a convenience for tests and fuzzing: the event
/// of the last packet, or the first error.
///
/// # Errors
/// As [`Tracker::on_packet`].
pub fn track(expect: Expect, deprecate_eof: bool, payloads: &[&[u8]]) -> Result<Event> {
    let mut t = Tracker::new(expect, deprecate_eof);
    let mut last = Event::More;
    for p in payloads {
        last = t.on_packet(p, p.len(), false)?;
    }
    Ok(last)
}

#[cfg(test)]
mod tests;
