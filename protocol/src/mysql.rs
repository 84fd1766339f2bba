//! MySQL classic protocol (MySQL/MariaDB/TiDB client/server protocol, "protocol 41").
//!
//! Written for a relay: [`packet`] frames packets (3-byte length, sequence id, 16 MiB
//! continuation) without decoding rows, [`response`] tells when a command's response is
//! complete from packet headers and the few small packets that matter (OK, ERR, EOF, column
//! counts, COM_STMT_PREPARE_OK). [`handshake`] and [`auth`] cover login on both sides, using
//! `mysql_common` for the handshake packet types and password scrambles. Every decoder takes
//! `&[u8]`, never panics and returns [`crate::ProtocolError`] on bad bytes.

pub mod auth;
pub mod command;
pub mod handshake;
pub mod packet;
pub mod response;

pub use mysql_common::constants::{CapabilityFlags, StatusFlags};

/// Reads a length-encoded integer at the front of `buf`: the value and the bytes it took.
/// `None` when `buf` is too short or starts with 0xFB (NULL) / 0xFF (not an integer).
pub fn lenenc_int(buf: &[u8]) -> Option<(u64, usize)> {
    let (&first, rest) = buf.split_first()?;
    let take = |n: usize| -> Option<(u64, usize)> {
        let bytes = rest.get(..n)?;
        let mut v = 0u64;
        for (i, b) in bytes.iter().enumerate() {
            v |= u64::from(*b) << (8 * i);
        }
        Some((v, n + 1))
    };
    match first {
        0..=0xFA => Some((u64::from(first), 1)),
        0xFC => take(2),
        0xFD => take(3),
        0xFE => take(8),
        _ => None,
    }
}

/// Appends `v` as a length-encoded integer.
pub fn put_lenenc_int(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0xFA => out.push(v as u8),
        0xFB..=0xFFFF => {
            out.push(0xFC);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xFF_FFFF => {
            out.push(0xFD);
            out.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xFE);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// Reads a length-encoded string at the front of `buf`: `Some(None)` for NULL (0xFB), and the
/// bytes it took. `None` when `buf` is too short.
pub fn lenenc_str(buf: &[u8]) -> Option<(Option<&[u8]>, usize)> {
    if buf.first() == Some(&0xFB) {
        return Some((None, 1));
    }
    let (len, n) = lenenc_int(buf)?;
    let len = usize::try_from(len).ok()?;
    let end = n.checked_add(len)?;
    Some((Some(buf.get(n..end)?), end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_round_trips_at_every_width() {
        for v in [
            0u64,
            250,
            251,
            0xFFFF,
            0x1_0000,
            0xFF_FFFF,
            0x100_0000,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_lenenc_int(&mut out, v);
            assert_eq!(lenenc_int(&out), Some((v, out.len())), "{v}");
            if out.len() > 1 {
                assert_eq!(lenenc_int(&out[..out.len() - 1]), None, "truncated {v}");
            }
        }
        assert_eq!(lenenc_int(&[0xFB]), None);
        assert_eq!(lenenc_int(&[0xFF]), None);
        assert_eq!(lenenc_str(&[0xFB]), Some((None, 1)));
        assert_eq!(lenenc_str(&[2, b'h', b'i']), Some((Some(&b"hi"[..]), 3)));
        assert_eq!(lenenc_str(&[3, b'h', b'i']), None);
        assert_eq!(
            lenenc_str(&[0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
            None
        );
    }
}
