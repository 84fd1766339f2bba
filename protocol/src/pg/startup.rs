//! Untagged packets a client sends before authentication: StartupMessage, SSLRequest,
//! GSSENCRequest and CancelRequest (PostgreSQL docs, "Message Formats").

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{ProtocolError, Result};

/// PostgreSQL's own cap on a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_LEN: usize = 10_000;
const VERSION_3_0: u32 = 3 << 16;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;

/// A decoded pre-authentication packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// StartupMessage, protocol 3.x: parameters in the order sent. A minor version above 0 is
    /// reported so the caller can answer with NegotiateProtocolVersion.
    Startup {
        minor: u16,
        params: Vec<(String, String)>,
    },
    /// SSLRequest.
    SslRequest,
    /// GSSENCRequest.
    GssEncRequest,
    /// CancelRequest with the key the server (here: sidepool) handed out. `secret` is 4 bytes in
    /// protocol 3.0 and up to 256 in 3.2.
    Cancel { pid: i32, secret: Bytes },
}

impl StartupPacket {
    /// Value of a startup parameter, if sent.
    pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Phase one: the length of the packet at the front of `buf` if it is whole.
///
/// # Errors
/// A length below 8 or above [`MAX_STARTUP_LEN`].
pub fn check(buf: &[u8]) -> Result<Option<usize>> {
    let Some(&[a, b, c, d]) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    if len < 8 {
        return Err(ProtocolError::BadLength { tag: '\0', len });
    }
    if len > MAX_STARTUP_LEN {
        return Err(ProtocolError::TooLong {
            tag: '\0',
            len,
            max: MAX_STARTUP_LEN,
        });
    }
    Ok((buf.len() >= len).then_some(len))
}

/// Phase two: decodes one whole packet (exactly the bytes [`check`] measured).
///
/// # Errors
/// Unknown request codes, protocol versions other than 3.x, and malformed parameter lists.
pub fn parse(packet: &[u8]) -> Result<StartupPacket> {
    let malformed = |why| ProtocolError::Malformed {
        what: "startup",
        why,
    };
    let code = packet
        .get(4..8)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .ok_or(malformed("shorter than 8 bytes"))?;
    let body = &packet[8..];
    match code {
        SSL_REQUEST => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST => {
            let (pid, secret) = body
                .split_at_checked(4)
                .ok_or(malformed("cancel key missing"))?;
            if secret.len() < 4 || secret.len() > 256 {
                return Err(malformed("cancel key must be 4 to 256 bytes"));
            }
            let pid = i32::from_be_bytes([pid[0], pid[1], pid[2], pid[3]]);
            Ok(StartupPacket::Cancel {
                pid,
                secret: Bytes::copy_from_slice(secret),
            })
        }
        v if v >> 16 == 3 => Ok(StartupPacket::Startup {
            minor: (v & 0xffff) as u16,
            params: parse_params(body)?,
        }),
        v => Err(ProtocolError::UnsupportedVersion {
            major: (v >> 16) as u16,
            minor: v as u16,
        }),
    }
}

fn parse_params(mut body: &[u8]) -> Result<Vec<(String, String)>> {
    let malformed = |why| ProtocolError::Malformed {
        what: "startup",
        why,
    };
    let mut params = Vec::new();
    loop {
        let (name, rest) = cstr(body).ok_or(malformed("parameter list not terminated"))?;
        if name.is_empty() {
            if !rest.is_empty() {
                return Err(malformed("bytes after the parameter list"));
            }
            return Ok(params);
        }
        let (value, rest) = cstr(rest).ok_or(malformed("parameter value not terminated"))?;
        params.push((utf8(name)?, utf8(value)?));
        body = rest;
    }
}

/// Splits a NUL-terminated string off the front of `buf`.
pub(crate) fn cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = memchr::memchr(0, buf)?;
    Some((&buf[..end], &buf[end + 1..]))
}

pub(crate) fn utf8(b: &[u8]) -> Result<String> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtocolError::Malformed {
        what: "string",
        why: "not valid UTF-8",
    })
}

/// Encodes a protocol 3.0 StartupMessage (sidepool logging in to a server).
pub fn startup_message(params: &[(&str, &str)]) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_u32(0);
    b.put_u32(VERSION_3_0);
    for (k, v) in params {
        put_cstr(&mut b, k);
        put_cstr(&mut b, v);
    }
    b.put_u8(0);
    let len = b.len() as u32;
    b[..4].copy_from_slice(&len.to_be_bytes());
    b.freeze()
}

/// Encodes an SSLRequest.
pub fn ssl_request() -> Bytes {
    let mut b = BytesMut::with_capacity(8);
    b.put_u32(8);
    b.put_u32(SSL_REQUEST);
    b.freeze()
}

/// Encodes a CancelRequest for a server's backend key.
pub fn cancel_request(pid: i32, secret: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(12 + secret.len());
    b.put_u32((12 + secret.len()) as u32);
    b.put_u32(CANCEL_REQUEST);
    b.put_i32(pid);
    b.put_slice(secret);
    b.freeze()
}

pub(crate) fn put_cstr(b: &mut BytesMut, s: &str) {
    // A NUL inside would end the string early on the other side: cut there.
    let s = s.split('\0').next().unwrap_or_default();
    b.put_slice(s.as_bytes());
    b.put_u8(0);
}

#[cfg(test)]
mod tests;
