//! Framing of typed messages: one tag byte, then a big-endian `u32` length that counts itself.
//!
//! Two ways to walk a byte stream:
//! - [`check`]: is a whole message buffered? (no allocation; `Ok(None)` means "need more bytes").
//! - [`Scanner`]: a streaming walk for relays that yields either a whole message the caller wants
//!   to look at, or a run of bytes to forward untouched, so large bodies (`DataRow`, `CopyData`)
//!   pass through without being buffered whole.

use crate::error::{ProtocolError, Result};

/// Bytes of a message header: tag + length.
pub const HEADER_LEN: usize = 5;

/// The header of a typed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message type byte (`b'Q'`, `b'Z'`, ...).
    pub tag: u8,
    /// Total bytes of the message including the tag byte.
    pub total_len: usize,
}

/// Reads the header at the start of `buf`, validating the declared length against `max_len`
/// (the cap on a whole message, header included).
///
/// # Errors
/// The declared length is below 4 or the message would exceed `max_len`.
pub fn header(buf: &[u8], max_len: usize) -> Result<Option<Header>> {
    let Some(&[tag, a, b, c, d]) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    if len < 4 {
        return Err(ProtocolError::BadLength {
            tag: tag as char,
            len,
        });
    }
    let total_len = len + 1;
    if total_len > max_len {
        return Err(ProtocolError::TooLong {
            tag: tag as char,
            len: total_len,
            max: max_len,
        });
    }
    Ok(Some(Header { tag, total_len }))
}

/// Phase one of two-phase decoding: returns the header if a whole message is buffered.
///
/// # Errors
/// As [`header`].
pub fn check(buf: &[u8], max_len: usize) -> Result<Option<Header>> {
    Ok(header(buf, max_len)?.filter(|h| buf.len() >= h.total_len))
}

/// One step of a [`Scanner`] walk over the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The first `n` bytes are message content to forward as they are.
    Forward(usize),
    /// A whole message of interest is buffered at the front; its first byte is the tag.
    Message(Header),
    /// A header was read for a message the caller streams; the first `n` bytes (the header and as
    /// much of the body as is buffered) can be forwarded. Carries the header so the caller can
    /// account for the message (count a `Sync`, note a `CopyData`).
    Started(Header, usize),
    /// Nothing can be decided until more bytes arrive.
    NeedMore,
}

/// A streaming walk over a relayed byte stream that keeps message boundaries.
///
/// The caller says which message types it must see whole (`wants_whole`); those are capped at
/// `max_whole` bytes. Every other message is reported at its header and then forwarded in pieces
/// as bytes arrive, with no cap beyond `max_len`.
#[derive(Debug, Default, Clone)]
pub struct Scanner {
    /// Bytes of the current streamed message still to come.
    remaining: usize,
}

impl Scanner {
    /// A scanner positioned at a message boundary.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when the walk is between messages (not inside a streamed body).
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// Decides what to do with the front of `buf`. The caller consumes exactly the bytes the step
    /// names (`Forward(n)`, `Started(_, n)`, or the whole `Message`) and calls again.
    ///
    /// # Errors
    /// A declared length below 4, a message over `max_len`, or a message the caller wants whole
    /// that is longer than `max_whole`.
    pub fn step(
        &mut self,
        buf: &[u8],
        max_len: usize,
        max_whole: usize,
        wants_whole: impl Fn(u8) -> bool,
    ) -> Result<Step> {
        if self.remaining > 0 {
            if buf.is_empty() {
                return Ok(Step::NeedMore);
            }
            let n = self.remaining.min(buf.len());
            self.remaining -= n;
            return Ok(Step::Forward(n));
        }
        let Some(h) = header(buf, max_len)? else {
            return Ok(Step::NeedMore);
        };
        if wants_whole(h.tag) {
            if h.total_len > max_whole {
                return Err(ProtocolError::TooLong {
                    tag: h.tag as char,
                    len: h.total_len,
                    max: max_whole,
                });
            }
            return Ok(if buf.len() >= h.total_len {
                Step::Message(h)
            } else {
                Step::NeedMore
            });
        }
        let n = h.total_len.min(buf.len());
        self.remaining = h.total_len - n;
        Ok(Step::Started(h, n))
    }
}

#[cfg(test)]
mod tests;
