//! Frontend messages (client → server): builders for what sidepool sends to servers, and
//! decoders for the client messages the proxy must read.

use bytes::{BufMut, Bytes, BytesMut};

use super::startup::{cstr, put_cstr, utf8};
use crate::error::{ProtocolError, Result};

/// Message type bytes of frontend messages.
pub mod tag {
    pub const BIND: u8 = b'B';
    pub const CLOSE: u8 = b'C';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const PARSE: u8 = b'P';
    /// PasswordMessage, SASLInitialResponse and SASLResponse share this tag.
    pub const PASSWORD: u8 = b'p';
    pub const QUERY: u8 = b'Q';
    pub const SYNC: u8 = b'S';
    pub const TERMINATE: u8 = b'X';
}

/// The cap on a message sidepool reads whole during authentication.
pub const MAX_AUTH_MESSAGE_LEN: usize = 8 * 1024;

/// True for messages after which the server answers with ReadyForQuery: Query, Sync and
/// FunctionCall. Counting them is how a relay knows how many ReadyForQuery are still owed.
pub fn ends_cycle(tag: u8) -> bool {
    matches!(tag, tag::QUERY | tag::SYNC | tag::FUNCTION_CALL)
}

fn message(tag: u8, body: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + body.len());
    b.put_u8(tag);
    b.put_u32((body.len() + 4) as u32);
    b.put_slice(body);
    b.freeze()
}

/// Query (simple protocol).
pub fn query(sql: &str) -> Bytes {
    let mut body = BytesMut::with_capacity(sql.len() + 1);
    put_cstr(&mut body, sql);
    message(tag::QUERY, &body)
}

/// PasswordMessage carrying a cleartext password or an md5 response (NUL added here).
pub fn password_message(password: &[u8]) -> Bytes {
    let mut body = BytesMut::with_capacity(password.len() + 1);
    body.put_slice(password);
    body.put_u8(0);
    message(tag::PASSWORD, &body)
}

/// SASLInitialResponse.
pub fn sasl_initial_response(mechanism: &str, data: &[u8]) -> Bytes {
    let mut body = BytesMut::with_capacity(mechanism.len() + 5 + data.len());
    put_cstr(&mut body, mechanism);
    body.put_i32(data.len() as i32);
    body.put_slice(data);
    message(tag::PASSWORD, &body)
}

/// SASLResponse.
pub fn sasl_response(data: &[u8]) -> Bytes {
    message(tag::PASSWORD, data)
}

/// Sync.
pub fn sync() -> Bytes {
    message(tag::SYNC, &[])
}

/// Terminate.
pub fn terminate() -> Bytes {
    message(tag::TERMINATE, &[])
}

fn body(msg: &[u8]) -> &[u8] {
    msg.get(5..).unwrap_or_default()
}

/// The password bytes of a PasswordMessage (without the terminating NUL).
///
/// # Errors
/// A body that is not NUL-terminated.
pub fn parse_password(msg: &[u8]) -> Result<&[u8]> {
    cstr(body(msg))
        .map(|(p, _)| p)
        .ok_or(ProtocolError::Malformed {
            what: "PasswordMessage",
            why: "not terminated",
        })
}

/// Decodes a SASLInitialResponse into (mechanism, initial client data).
///
/// # Errors
/// A missing mechanism name, or a data length that does not match the body.
pub fn parse_sasl_initial_response(msg: &[u8]) -> Result<(String, &[u8])> {
    let bad = |why| ProtocolError::Malformed {
        what: "SASLInitialResponse",
        why,
    };
    let (mech, rest) = cstr(body(msg)).ok_or(bad("mechanism"))?;
    let (len, data) = rest.split_at_checked(4).ok_or(bad("data length"))?;
    let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    let data = match len {
        -1 => &[][..],
        n if usize::try_from(n).is_ok_and(|n| n == data.len()) => data,
        _ => return Err(bad("data length does not match the message")),
    };
    Ok((utf8(mech)?, data))
}

/// The body of a SASLResponse.
pub fn sasl_response_data(msg: &[u8]) -> &[u8] {
    body(msg)
}

/// A Parse message split at its statement name: `rest` is everything after the name (query,
/// parameter count and types), which identifies the statement's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseParts<'a> {
    /// Statement name; empty for the unnamed statement.
    pub name: &'a [u8],
    /// Query text (NUL-terminated) and parameter types, as sent.
    pub rest: &'a [u8],
}

/// Splits a whole Parse message.
///
/// # Errors
/// A name that is not NUL-terminated, or no query after it.
pub fn parse_parse(msg: &[u8]) -> Result<ParseParts<'_>> {
    let (name, rest) = cstr(body(msg)).ok_or(ProtocolError::Malformed {
        what: "Parse",
        why: "statement name",
    })?;
    cstr(rest).ok_or(ProtocolError::Malformed {
        what: "Parse",
        why: "query",
    })?;
    Ok(ParseParts { name, rest })
}

/// Builds a Parse from a statement name and the content of another Parse.
pub fn parse_message(name: &str, rest: &[u8]) -> Bytes {
    let mut body = BytesMut::with_capacity(name.len() + 1 + rest.len());
    put_cstr(&mut body, name);
    body.put_slice(rest);
    message(tag::PARSE, &body)
}

/// A Bind message split at its names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindParts<'a> {
    /// Destination portal; empty for the unnamed portal.
    pub portal: &'a [u8],
    /// Source statement; empty for the unnamed statement.
    pub statement: &'a [u8],
    /// Parameter formats, values and result formats, as sent.
    pub rest: &'a [u8],
}

/// Splits a whole Bind message.
///
/// # Errors
/// Portal or statement names that are not NUL-terminated.
pub fn parse_bind(msg: &[u8]) -> Result<BindParts<'_>> {
    let bad = |why| ProtocolError::Malformed { what: "Bind", why };
    let (portal, rest) = cstr(body(msg)).ok_or(bad("portal name"))?;
    let (statement, rest) = cstr(rest).ok_or(bad("statement name"))?;
    Ok(BindParts {
        portal,
        statement,
        rest,
    })
}

/// Builds a Bind that reads from statement `statement` instead of the one in `parts`.
pub fn bind_message(parts: &BindParts<'_>, statement: &str) -> Bytes {
    let mut body =
        BytesMut::with_capacity(parts.portal.len() + statement.len() + 2 + parts.rest.len());
    body.put_slice(parts.portal);
    body.put_u8(0);
    put_cstr(&mut body, statement);
    body.put_slice(parts.rest);
    message(tag::BIND, &body)
}

/// What a Describe or Close names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// `S`: a prepared statement.
    Statement(&'a [u8]),
    /// `P`: a portal.
    Portal(&'a [u8]),
}

/// Decodes a whole Describe or Close message.
///
/// # Errors
/// A kind other than `S`/`P`, or a name that is not NUL-terminated.
pub fn parse_target(msg: &[u8]) -> Result<Target<'_>> {
    let bad = |why| ProtocolError::Malformed {
        what: "Describe/Close",
        why,
    };
    let (&kind, rest) = body(msg).split_first().ok_or(bad("kind"))?;
    let (name, _) = cstr(rest).ok_or(bad("name"))?;
    match kind {
        b'S' => Ok(Target::Statement(name)),
        b'P' => Ok(Target::Portal(name)),
        _ => Err(bad("kind must be S or P")),
    }
}

/// Builds a Describe (`tag::DESCRIBE`) or Close (`tag::CLOSE`) of a statement.
pub fn statement_target(tag: u8, name: &str) -> Bytes {
    let mut body = BytesMut::with_capacity(name.len() + 2);
    body.put_u8(b'S');
    put_cstr(&mut body, name);
    message(tag, &body)
}

/// The SQL text of a Query or Parse message, lossily decoded, for logs and leak reports.
/// `None` for other messages or malformed ones.
pub fn statement_text(msg: &[u8]) -> Option<String> {
    statement_bytes(msg).map(|b| String::from_utf8_lossy(b).into_owned())
}

/// The SQL bytes of a Query or Parse message (without the terminating NUL), borrowed.
pub fn statement_bytes(msg: &[u8]) -> Option<&[u8]> {
    match *msg.first()? {
        tag::QUERY => Some(cstr(body(msg))?.0),
        tag::PARSE => {
            let (_name, rest) = cstr(body(msg))?;
            Some(cstr(rest)?.0)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
