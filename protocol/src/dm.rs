//! Dameng DM8 framing: the 64-byte message header, and nothing of the bodies.
//!
//! DM's wire protocol is proprietary and undocumented. sidepool reads only the fixed header that
//! every message (both directions) starts with, as the public DM drivers write and read it:
//!
//! | offset | size | field (little-endian) |
//! |---|---|---|
//! | 0 | 4 | statement handle (`i32`; 0 for connection-level messages) |
//! | 4 | 2 | command code (`i16`; requests) |
//! | 6 | 4 | body length (`i32`, bytes after the header) |
//! | 10 | 4 | return code (`i32`, replies; negative = error, the body carries the message) |
//! | 14 | 4 | command-specific (rows for some replies) |
//! | 18 | 1 | compression flag |
//! | 19 | 1 | header checksum: XOR of bytes 0..19 |
//! | 20 | 44 | command-specific fields |
//!
//! Replies to executing commands carry the session's transaction status as an `i32` at offset
//! 60; the transaction is over when `status & 0xFFF` is `0x00`, `0x20` or `0x40`. The reply to
//! STARTUP says at offset 20 whether the connection switches to SSL (1 or 2: a TLS handshake
//! follows on the same socket) and at offset 45 whether later messages are checked by a CRC32
//! appended to the body (counted in the body length) instead of the header XOR.
//!
//! Learned from (read, not copied):
//! - the official Go driver as mirrored at `github.com/ganl/go-dm` (`zr.go`: header offsets,
//!   command codes, XOR/CRC32 check, execute and STARTUP reply fields; `zq.go`: the same
//!   constants in another release) and `github.com/godoes/gorm-dameng` (`dm8/a.go`:
//!   `setTrxFinish`, the SSL switch after STARTUP);
//! - `github.com/rarnu/rust-dameng` (`dameng-protocol/src/frame.rs`), an independent reading
//!   that agrees on offsets 0–19.
//!
//! No DM server ran while writing this; the tests use byte layouts built from those sources.
//! Decoders take `&[u8]`, never panic, and treat "fewer bytes than a header" as `Ok(None)`.

use thiserror::Error;

/// Length of every message header.
pub const HEADER_LEN: usize = 64;

/// Default cap on a message body sidepool relays (64 MiB).
pub const DEFAULT_MAX_BODY: u32 = 64 * 1024 * 1024;

const OFF_STATEMENT: usize = 0;
const OFF_COMMAND: usize = 4;
const OFF_BODY_LEN: usize = 6;
const OFF_RETURN_CODE: usize = 10;
const OFF_COMPRESS: usize = 18;
const OFF_CHECKSUM: usize = 19;
/// First command-specific byte.
const OFF_SPECIFIC: usize = 20;
/// STARTUP reply: SSL mode (`i32`); STARTUP reply offset 45: CRC32 mode (byte).
const OFF_STARTUP_SSL: usize = 20;
const OFF_STARTUP_CRC: usize = 45;
/// PREPARE request: 1 = execute at once (the reply is then an execute reply).
const OFF_PREPARE_EXEC_DIRECT: usize = 21;
const OFF_EXEC_TRX_STATUS: usize = 60;

const TRX_STATUS_MASK: u32 = 0xFFF;
const TRX_FINISHED: [u32; 3] = [0x00, 0x20, 0x40];

/// Command codes the public drivers send (header offset 4). Names follow the Go driver's use.
pub mod command {
    /// Log in (user and password in the body, possibly encrypted).
    pub const LOGIN: u16 = 1;
    /// Log out.
    pub const LOGOUT: u16 = 2;
    /// Allocate a statement handle.
    pub const ALLOCATE_STATEMENT: u16 = 3;
    /// Free a statement handle.
    pub const FREE_STATEMENT: u16 = 4;
    /// Prepare a statement; with the exec-direct flag also execute it.
    pub const PREPARE: u16 = 5;
    /// Execute (older servers).
    pub const EXECUTE: u16 = 6;
    /// Fetch rows of an open result set.
    pub const FETCH: u16 = 7;
    /// Commit the transaction.
    pub const COMMIT: u16 = 8;
    /// Roll the transaction back.
    pub const ROLLBACK: u16 = 9;
    /// Execute with bound parameters (servers newer than 7.1.2.128).
    pub const EXECUTE2: u16 = 13;
    /// Send parameter data in pieces.
    pub const PUT_DATA: u16 = 14;
    /// Set a statement's cursor name.
    pub const SET_CURSOR_NAME: u16 = 27;
    /// Re-execute an open result set's statement (header offset 20 = the cursor's id).
    pub const MORE_RESULTS: u16 = 44;
    /// Set the session's isolation level (value at header offset 20).
    pub const SET_ISOLATION: u16 = 52;
    /// Send parameter descriptions.
    pub const PARAMETER_TYPES: u16 = 90;
    /// Prepare and execute with constant parameters in one message.
    pub const OPTIMIZED_EXECUTE: u16 = 91;
    /// The first message of a connection: versions, encryption, compression, CRC.
    pub const STARTUP: u16 = 200;
}

/// Why bytes are not a DM message header sidepool accepts.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// The body length is negative.
    #[error("DM message declares a negative body length ({0})")]
    NegativeLength(i32),
    /// The body length is above the cap.
    #[error("DM message body of {len} bytes exceeds the limit of {max} bytes")]
    TooLong {
        /// Declared body length.
        len: u32,
        /// The cap in force.
        max: u32,
    },
    /// Byte 19 is not the XOR of bytes 0..19.
    #[error("DM message header checksum is {found:#04x}, expected {expected:#04x}")]
    BadChecksum {
        /// Byte 19 as received.
        found: u8,
        /// XOR of bytes 0..19.
        expected: u8,
    },
}

/// How a reader checks headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRules {
    /// Largest body accepted.
    pub max_body: u32,
    /// Check byte 19 (the XOR). Off once STARTUP switched the connection to CRC32 bodies, where
    /// the drivers neither write nor check it.
    pub xor_checksum: bool,
}

impl Default for FrameRules {
    fn default() -> Self {
        FrameRules {
            max_body: DEFAULT_MAX_BODY,
            xor_checksum: true,
        }
    }
}

/// The generic fields of a message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// Statement handle (offset 0).
    pub statement: i32,
    /// Command code (offset 4); see [`command`].
    pub command: u16,
    /// Body length (offset 6), already checked against the cap.
    pub body_len: u32,
    /// Return code (offset 10); negative in error replies.
    pub return_code: i32,
    /// Compression flag (offset 18).
    pub compressed: u8,
}

impl Header {
    /// Header plus body length.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.body_len as usize
    }

    /// Encodes the header with `specific` as bytes 20..64, checksum included (for tests and
    /// the readiness probe's STARTUP).
    pub fn encode(&self, specific: &[u8; HEADER_LEN - OFF_SPECIFIC]) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[OFF_STATEMENT..OFF_STATEMENT + 4].copy_from_slice(&self.statement.to_le_bytes());
        h[OFF_COMMAND..OFF_COMMAND + 2].copy_from_slice(&self.command.to_le_bytes());
        h[OFF_BODY_LEN..OFF_BODY_LEN + 4].copy_from_slice(&self.body_len.to_le_bytes());
        h[OFF_RETURN_CODE..OFF_RETURN_CODE + 4].copy_from_slice(&self.return_code.to_le_bytes());
        h[OFF_COMPRESS] = self.compressed;
        h[OFF_SPECIFIC..].copy_from_slice(specific);
        h[OFF_CHECKSUM] = checksum(&h);
        h
    }
}

/// XOR of bytes 0..19 (0 if fewer are given).
pub fn checksum(buf: &[u8]) -> u8 {
    buf.get(..OFF_CHECKSUM)
        .map_or(0, |b| b.iter().fold(0, |x, b| x ^ b))
}

fn le_i32(buf: &[u8], at: usize) -> Option<i32> {
    let b = buf.get(at..at + 4)?;
    Some(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn le_u16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at + 2)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

/// Decodes the header at the start of `buf`; `Ok(None)` while fewer than 64 bytes are there.
///
/// # Errors
/// A negative or over-cap body length, or (with `rules.xor_checksum`) a wrong checksum.
pub fn parse_header(buf: &[u8], rules: &FrameRules) -> Result<Option<Header>, HeaderError> {
    let Some(h) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    if rules.xor_checksum {
        let expected = checksum(h);
        let found = h.get(OFF_CHECKSUM).copied().unwrap_or_default();
        if found != expected {
            return Err(HeaderError::BadChecksum { found, expected });
        }
    }
    let declared = le_i32(h, OFF_BODY_LEN).unwrap_or_default();
    let body_len = u32::try_from(declared).map_err(|_| HeaderError::NegativeLength(declared))?;
    if body_len > rules.max_body {
        return Err(HeaderError::TooLong {
            len: body_len,
            max: rules.max_body,
        });
    }
    Ok(Some(Header {
        statement: le_i32(h, OFF_STATEMENT).unwrap_or_default(),
        command: le_u16(h, OFF_COMMAND).unwrap_or_default(),
        body_len,
        return_code: le_i32(h, OFF_RETURN_CODE).unwrap_or_default(),
        compressed: h.get(OFF_COMPRESS).copied().unwrap_or_default(),
    }))
}

/// The length of the whole message (header and body) at the start of `buf` once all of it is
/// buffered; `Ok(None)` while more bytes are needed. Allocates nothing.
///
/// # Errors
/// As [`parse_header`].
pub fn check_frame(buf: &[u8], rules: &FrameRules) -> Result<Option<usize>, HeaderError> {
    Ok(parse_header(buf, rules)?
        .map(|h| h.frame_len())
        .filter(|&len| buf.len() >= len))
}

/// Whether a request's reply is an execute reply (with the transaction status at offset 60).
/// `frame` is the request, header first.
pub fn expects_exec_reply(frame: &[u8]) -> bool {
    match le_u16(frame, OFF_COMMAND) {
        Some(command::PREPARE) => frame.get(OFF_PREPARE_EXEC_DIRECT) == Some(&1),
        Some(
            command::EXECUTE
            | command::EXECUTE2
            | command::MORE_RESULTS
            | command::PARAMETER_TYPES
            | command::OPTIMIZED_EXECUTE,
        ) => true,
        _ => false,
    }
}

/// The transaction status of an execute reply (header first), if the header is complete.
pub fn exec_reply_trx_status(frame: &[u8]) -> Option<u32> {
    le_i32(frame, OFF_EXEC_TRX_STATUS).map(|s| s as u32)
}

/// Whether a transaction status says a transaction is still open.
pub fn trx_open(status: u32) -> bool {
    !TRX_FINISHED.contains(&(status & TRX_STATUS_MASK))
}

/// What the server's reply to STARTUP says about the rest of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartupReply {
    /// 1 or 2: a TLS handshake follows on the socket; headers are no longer readable.
    pub ssl: i32,
    /// Later messages carry a CRC32 after the body instead of the header XOR.
    pub crc32: bool,
}

impl StartupReply {
    /// Whether the connection continues inside TLS.
    pub fn switches_to_ssl(&self) -> bool {
        self.ssl == 1 || self.ssl == 2
    }
}

/// Reads the fields of a STARTUP reply's header; `None` if fewer than 64 bytes are given.
pub fn parse_startup_reply(frame: &[u8]) -> Option<StartupReply> {
    frame.get(..HEADER_LEN)?;
    Some(StartupReply {
        ssl: le_i32(frame, OFF_STARTUP_SSL)?,
        crc32: frame.get(OFF_STARTUP_CRC) == Some(&1),
    })
}

/// Bytes 20..64 of a header whose fields sidepool sets itself: all zero but `(offset, byte)`
/// pairs (offsets counted from the header's start; others are ignored).
pub fn specific(bytes: &[(usize, u8)]) -> [u8; HEADER_LEN - OFF_SPECIFIC] {
    let mut s = [0u8; HEADER_LEN - OFF_SPECIFIC];
    for &(at, b) in bytes {
        if let Some(slot) = at.checked_sub(OFF_SPECIFIC).and_then(|i| s.get_mut(i)) {
            *slot = b;
        }
    }
    s
}

/// Offset of the transaction status in execute replies, for building replies in tests.
pub const EXEC_TRX_STATUS_OFFSET: usize = OFF_EXEC_TRX_STATUS;
/// Offset of the SSL field in STARTUP replies.
pub const STARTUP_SSL_OFFSET: usize = OFF_STARTUP_SSL;
/// Offset of the CRC32 flag in STARTUP replies.
pub const STARTUP_CRC_OFFSET: usize = OFF_STARTUP_CRC;
/// Offset of PREPARE's exec-direct flag.
pub const PREPARE_EXEC_DIRECT_OFFSET: usize = OFF_PREPARE_EXEC_DIRECT;

#[cfg(test)]
mod tests;
