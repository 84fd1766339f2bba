//! Packet framing: a 3-byte little-endian payload length, a 1-byte sequence id, the payload.
//! A payload of exactly [`MAX_PAYLOAD`] bytes continues in the next packet (a logical packet of
//! 16 MiB or more is split; one that is an exact multiple ends with an empty packet).
//!
//! Two ways to walk a byte stream, as for PostgreSQL:
//! - [`check`] / [`read_logical`]: is a whole (physical / logical) packet buffered?
//! - [`Scanner`]: a streaming walk for relays that yields whole packets the caller wants to
//!   look at and runs of bytes to forward untouched, so large rows pass without being buffered.

use crate::error::{ProtocolError, Result};

/// Bytes of a packet header.
pub const HEADER_LEN: usize = 4;
/// The largest payload of one physical packet; a packet this long continues in the next one.
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;

/// The header of one physical packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload bytes.
    pub len: usize,
    /// Sequence id.
    pub seq: u8,
}

impl Header {
    /// Header plus payload.
    pub fn total_len(&self) -> usize {
        self.len + HEADER_LEN
    }

    /// The logical packet continues in the next physical one.
    pub fn continues(&self) -> bool {
        self.len == MAX_PAYLOAD
    }
}

/// The header at the front of `buf`, if four bytes are there.
pub fn header(buf: &[u8]) -> Option<Header> {
    let &[a, b, c, seq] = buf.get(..HEADER_LEN)? else {
        return None;
    };
    Some(Header {
        len: usize::from(a) | usize::from(b) << 8 | usize::from(c) << 16,
        seq,
    })
}

/// Phase one of two-phase decoding: the header if a whole physical packet is buffered.
///
/// # Errors
/// The payload is longer than `max_payload`.
pub fn check(buf: &[u8], max_payload: usize) -> Result<Option<Header>> {
    let Some(h) = header(buf) else {
        return Ok(None);
    };
    if h.len > max_payload {
        return Err(too_long(h.len, max_payload));
    }
    Ok((buf.len() >= h.total_len()).then_some(h))
}

fn too_long(len: usize, max: usize) -> ProtocolError {
    ProtocolError::TooLong { tag: 'M', len, max }
}

/// A whole logical packet read from the front of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logical {
    /// Bytes of the buffer it spans (headers included).
    pub consumed: usize,
    /// Sequence id of its first physical packet.
    pub first_seq: u8,
    /// Sequence id of its last physical packet.
    pub last_seq: u8,
    /// The payload, continuations joined.
    pub payload: Vec<u8>,
}

/// Reads a whole logical packet if one is buffered, joining continuation packets. The joined
/// payload is capped at `max_payload` before anything is allocated.
///
/// # Errors
/// The logical payload would exceed `max_payload`.
pub fn read_logical(buf: &[u8], max_payload: usize) -> Result<Option<Logical>> {
    let mut at = 0;
    let mut total = 0usize;
    let mut first_seq = None;
    // First pass: find the end without copying.
    let last_seq = loop {
        let Some(h) = header(buf.get(at..).unwrap_or_default()) else {
            return Ok(None);
        };
        total = total.saturating_add(h.len);
        if total > max_payload {
            return Err(too_long(total, max_payload));
        }
        if buf.len() - at < h.total_len() {
            return Ok(None);
        }
        first_seq.get_or_insert(h.seq);
        at += h.total_len();
        if !h.continues() {
            break h.seq;
        }
    };
    let mut payload = Vec::with_capacity(total);
    let mut pos = 0;
    while pos < at {
        let Some(h) = header(&buf[pos..]) else { break };
        payload.extend_from_slice(
            buf.get(pos + HEADER_LEN..pos + h.total_len())
                .unwrap_or_default(),
        );
        pos += h.total_len();
    }
    Ok(Some(Logical {
        consumed: at,
        first_seq: first_seq.unwrap_or(0),
        last_seq,
        payload,
    }))
}

/// Appends `payload` as one logical packet starting at sequence id `seq`, split into 16 MiB
/// physical packets. Returns the sequence id after the last packet written.
pub fn write(out: &mut Vec<u8>, seq: u8, payload: &[u8]) -> u8 {
    let mut seq = seq;
    let mut chunks = payload.chunks(MAX_PAYLOAD);
    loop {
        let chunk = chunks.next().unwrap_or_default();
        let len = chunk.len() as u32;
        out.extend_from_slice(&len.to_le_bytes()[..3]);
        out.push(seq);
        out.extend_from_slice(chunk);
        seq = seq.wrapping_add(1);
        if chunk.len() < MAX_PAYLOAD {
            return seq;
        }
    }
}

/// [`write`] into a fresh buffer.
pub fn encode(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + HEADER_LEN);
    write(&mut out, seq, payload);
    out
}

/// One step of a [`Scanner`] walk over the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Not enough bytes to go on.
    NeedMore,
    /// A whole physical packet the caller asked to see is at the front: consume
    /// `header.total_len()` bytes. `first` is the payload's first byte (`None` if empty).
    Packet(Packet),
    /// A packet the caller did not ask to see whole starts at the front: forward `n` bytes
    /// (header included); the rest comes as [`Step::Forward`].
    Started(Packet, usize),
    /// Forward the next `n` bytes of the packet being streamed.
    Forward(usize),
}

/// What a [`Scanner`] knows about a packet when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// Its header.
    pub header: Header,
    /// First payload byte, `None` for an empty payload.
    pub first: Option<u8>,
    /// It continues a logical packet (its first byte means nothing).
    pub continuation: bool,
}

/// Streaming packet walk for relays.
#[derive(Debug, Default, Clone)]
pub struct Scanner {
    /// Bytes of the current packet still to forward.
    remaining: usize,
    /// The previous packet was full, so the next one continues it.
    continuing: bool,
}

impl Scanner {
    /// A scanner at a packet boundary.
    pub fn new() -> Self {
        Self::default()
    }

    /// At a packet boundary and not inside a split logical packet.
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0 && !self.continuing
    }

    /// Looks at the front of `buf`. `wants_whole(packet)` decides whether a packet (of at most
    /// `whole_cap` payload bytes) is returned whole; others stream. Never fails: any length up
    /// to [`MAX_PAYLOAD`] is valid framing.
    pub fn step(
        &mut self,
        buf: &[u8],
        whole_cap: usize,
        wants_whole: impl Fn(&Packet) -> bool,
    ) -> Step {
        if self.remaining > 0 {
            if buf.is_empty() {
                return Step::NeedMore;
            }
            let n = self.remaining.min(buf.len());
            self.remaining -= n;
            return Step::Forward(n);
        }
        let Some(header) = header(buf) else {
            return Step::NeedMore;
        };
        let first = if header.len == 0 {
            None
        } else {
            match buf.get(HEADER_LEN) {
                Some(b) => Some(*b),
                None => return Step::NeedMore,
            }
        };
        let packet = Packet {
            header,
            first,
            continuation: self.continuing,
        };
        if header.len <= whole_cap && wants_whole(&packet) {
            if buf.len() < header.total_len() {
                return Step::NeedMore;
            }
            self.continuing = header.continues();
            return Step::Packet(packet);
        }
        self.continuing = header.continues();
        let n = header.total_len().min(buf.len());
        self.remaining = header.total_len() - n;
        Step::Started(packet, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_check_follow_the_declared_length() {
        let p = encode(3, b"hello");
        assert_eq!(p, [5, 0, 0, 3, b'h', b'e', b'l', b'l', b'o']);
        assert_eq!(check(&p, 100), Ok(Some(Header { len: 5, seq: 3 })));
        assert_eq!(check(&p[..8], 100), Ok(None));
        assert_eq!(check(&p[..3], 100), Ok(None));
        assert!(check(&p, 4).is_err());
    }

    #[test]
    fn large_payloads_split_and_join_at_16_mib() {
        let payload = vec![7u8; MAX_PAYLOAD + 10];
        let mut out = Vec::new();
        assert_eq!(write(&mut out, 0, &payload), 2);
        assert_eq!(
            header(&out),
            Some(Header {
                len: MAX_PAYLOAD,
                seq: 0
            })
        );
        let l = read_logical(&out, 32 << 20).unwrap().unwrap();
        assert_eq!((l.consumed, l.first_seq, l.last_seq), (out.len(), 0, 1));
        assert_eq!(l.payload, payload);
        assert!(
            read_logical(&out, MAX_PAYLOAD).is_err(),
            "cap applies to the joined payload"
        );
        assert_eq!(read_logical(&out[..out.len() - 1], 32 << 20), Ok(None));

        // An exact multiple ends with an empty packet.
        let exact = vec![1u8; MAX_PAYLOAD];
        let mut out = Vec::new();
        assert_eq!(write(&mut out, 5, &exact), 7);
        assert_eq!(&out[out.len() - 4..], &[0, 0, 0, 6]);
        assert_eq!(
            read_logical(&out, 32 << 20).unwrap().unwrap().payload.len(),
            MAX_PAYLOAD
        );
    }

    #[test]
    fn scanner_streams_unwanted_packets_and_returns_wanted_ones_whole() {
        let mut buf = encode(1, &[0xFE, 0, 0, 2, 0]);
        buf.extend(encode(2, &[3, b'a', b'b', b'c']));
        let mut s = Scanner::new();
        let wants = |p: &Packet| p.first == Some(0xFE);
        // Split read: the wanted packet needs all its bytes.
        assert_eq!(s.step(&buf[..6], 100, wants), Step::NeedMore);
        let Step::Packet(p) = s.step(&buf, 100, wants) else {
            panic!()
        };
        assert_eq!(p.header.total_len(), 9);
        let rest = &buf[9..];
        assert_eq!(
            s.step(&rest[..6], 100, wants),
            Step::Started(
                Packet {
                    header: Header { len: 4, seq: 2 },
                    first: Some(3),
                    continuation: false
                },
                6
            )
        );
        assert_eq!(s.step(&rest[6..], 100, wants), Step::Forward(2));
        assert!(s.at_boundary());
    }

    #[test]
    fn scanner_marks_continuation_packets() {
        let mut buf = Vec::new();
        write(&mut buf, 0, &vec![0xFE; MAX_PAYLOAD + 1]);
        let mut s = Scanner::new();
        let Step::Started(p, n) = s.step(&buf, 16, |_| true) else {
            panic!()
        };
        assert!(!p.continuation && n == MAX_PAYLOAD + 4);
        assert!(!s.at_boundary());
        let Step::Packet(p) = s.step(&buf[n..], 16, |_| true) else {
            panic!()
        };
        assert!(p.continuation);
        assert!(s.at_boundary());
    }
}
