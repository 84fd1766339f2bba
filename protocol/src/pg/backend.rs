//! Backend messages (server → client): builders for what sidepool says to applications, and
//! decoders for the few server messages the proxy must read.

use bytes::{BufMut, Bytes, BytesMut};

use super::TransactionStatus;
use super::startup::{cstr, put_cstr, utf8};
use crate::error::{ProtocolError, Result};

/// Message type bytes of backend messages the proxy looks at.
pub mod tag {
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const DATA_ROW: u8 = b'D';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const NO_DATA: u8 = b'n';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const ROW_DESCRIPTION: u8 = b'T';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const READY_FOR_QUERY: u8 = b'Z';
}

/// Severity of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The session ends.
    Fatal,
    /// Informational (NoticeResponse).
    Notice,
    /// Warning (NoticeResponse).
    Warning,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Self::Error => "ERROR",
            Self::Fatal => "FATAL",
            Self::Notice => "NOTICE",
            Self::Warning => "WARNING",
        }
    }
}

/// The fields of an ErrorResponse or NoticeResponse sidepool builds.
#[derive(Debug, Clone, Copy)]
pub struct ErrorFields<'a> {
    /// Severity.
    pub severity: Severity,
    /// Five-character SQLSTATE.
    pub code: &'a str,
    /// Primary message.
    pub message: &'a str,
    /// Optional detail.
    pub detail: Option<&'a str>,
    /// Optional hint: what the user should do.
    pub hint: Option<&'a str>,
}

impl<'a> ErrorFields<'a> {
    /// Fields with only severity, code and message.
    pub fn new(severity: Severity, code: &'a str, message: &'a str) -> Self {
        Self {
            severity,
            code,
            message,
            detail: None,
            hint: None,
        }
    }
}

fn finish(mut b: BytesMut) -> Bytes {
    let len = (b.len() - 1) as u32;
    b[1..5].copy_from_slice(&len.to_be_bytes());
    b.freeze()
}

fn start(tag: u8, capacity: usize) -> BytesMut {
    let mut b = BytesMut::with_capacity(5 + capacity);
    b.put_u8(tag);
    b.put_u32(0);
    b
}

fn fields(tag: u8, f: &ErrorFields<'_>) -> Bytes {
    let mut b = start(tag, 32 + f.message.len());
    for (code, value) in [
        (b'S', Some(f.severity.as_str())),
        (b'V', Some(f.severity.as_str())),
        (b'C', Some(f.code)),
        (b'M', Some(f.message)),
        (b'D', f.detail),
        (b'H', f.hint),
    ] {
        if let Some(v) = value {
            b.put_u8(code);
            put_cstr(&mut b, v);
        }
    }
    b.put_u8(0);
    finish(b)
}

/// ErrorResponse.
pub fn error_response(f: &ErrorFields<'_>) -> Bytes {
    fields(tag::ERROR_RESPONSE, f)
}

/// NoticeResponse.
pub fn notice_response(f: &ErrorFields<'_>) -> Bytes {
    fields(tag::NOTICE_RESPONSE, f)
}

/// ReadyForQuery.
pub fn ready_for_query(status: TransactionStatus) -> Bytes {
    let mut b = start(tag::READY_FOR_QUERY, 1);
    b.put_u8(status.as_byte());
    finish(b)
}

fn auth(code: u32, data: &[u8]) -> Bytes {
    let mut b = start(tag::AUTHENTICATION, 4 + data.len());
    b.put_u32(code);
    b.put_slice(data);
    finish(b)
}

/// AuthenticationOk.
pub fn authentication_ok() -> Bytes {
    auth(0, &[])
}

/// AuthenticationCleartextPassword.
pub fn authentication_cleartext() -> Bytes {
    auth(3, &[])
}

/// AuthenticationMD5Password with its salt.
pub fn authentication_md5(salt: [u8; 4]) -> Bytes {
    auth(5, &salt)
}

/// AuthenticationSASL listing one mechanism.
pub fn authentication_sasl(mechanism: &str) -> Bytes {
    let mut data = BytesMut::new();
    put_cstr(&mut data, mechanism);
    data.put_u8(0);
    auth(10, &data)
}

/// AuthenticationSASLContinue.
pub fn authentication_sasl_continue(data: &[u8]) -> Bytes {
    auth(11, data)
}

/// AuthenticationSASLFinal.
pub fn authentication_sasl_final(data: &[u8]) -> Bytes {
    auth(12, data)
}

/// ParameterStatus.
pub fn parameter_status(name: &str, value: &str) -> Bytes {
    let mut b = start(tag::PARAMETER_STATUS, name.len() + value.len() + 2);
    put_cstr(&mut b, name);
    put_cstr(&mut b, value);
    finish(b)
}

/// BackendKeyData (4-byte secret, protocol 3.0).
pub fn backend_key_data(pid: i32, secret: i32) -> Bytes {
    let mut b = start(tag::BACKEND_KEY_DATA, 8);
    b.put_i32(pid);
    b.put_i32(secret);
    finish(b)
}

/// NegotiateProtocolVersion: sidepool speaks 3.0 and none of the `_pq_.` options offered.
pub fn negotiate_protocol_version(unsupported_options: &[&str]) -> Bytes {
    let mut b = start(tag::NEGOTIATE_PROTOCOL_VERSION, 8);
    b.put_u32(3 << 16);
    b.put_u32(unsupported_options.len() as u32);
    for o in unsupported_options {
        put_cstr(&mut b, o);
    }
    finish(b)
}

/// ParseComplete.
pub fn parse_complete() -> Bytes {
    Bytes::from_static(b"1\0\0\0\x04")
}

/// CommandComplete with a command tag such as `DEALLOCATE`.
pub fn command_complete(command: &str) -> Bytes {
    let mut b = start(tag::COMMAND_COMPLETE, command.len() + 1);
    put_cstr(&mut b, command);
    finish(b)
}

/// The type of a column in a [`row_description`] (text format either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// `text` (OID 25).
    Text,
    /// `int8` (OID 20); clients align it as a number.
    Int8,
    /// `float8` (OID 701).
    Float8,
    /// `bool` (OID 16).
    Bool,
}

impl ColumnType {
    fn oid_and_len(self) -> (u32, i16) {
        match self {
            Self::Text => (25, -1),
            Self::Int8 => (20, 8),
            Self::Float8 => (701, 8),
            Self::Bool => (16, 1),
        }
    }
}

/// RowDescription of text-format columns not backed by a table.
pub fn row_description(columns: &[(&str, ColumnType)]) -> Bytes {
    let mut b = start(tag::ROW_DESCRIPTION, 2 + columns.len() * 32);
    b.put_u16(columns.len().min(u16::MAX as usize) as u16);
    for (name, ty) in columns.iter().take(u16::MAX as usize) {
        let (oid, len) = ty.oid_and_len();
        put_cstr(&mut b, name);
        b.put_u32(0); // table OID
        b.put_i16(0); // column number
        b.put_u32(oid);
        b.put_i16(len);
        b.put_i32(-1); // type modifier
        b.put_i16(0); // text format
    }
    finish(b)
}

/// DataRow of text values (`None` = SQL NULL).
pub fn data_row(values: &[Option<&str>]) -> Bytes {
    let size: usize = values.iter().map(|v| 4 + v.map_or(0, str::len)).sum();
    let mut b = start(tag::DATA_ROW, 2 + size);
    b.put_u16(values.len().min(u16::MAX as usize) as u16);
    for v in values.iter().take(u16::MAX as usize) {
        match v {
            Some(v) => {
                b.put_u32(v.len() as u32);
                b.put_slice(v.as_bytes());
            }
            None => b.put_i32(-1),
        }
    }
    finish(b)
}

/// CloseComplete.
pub fn close_complete() -> Bytes {
    Bytes::from_static(b"3\0\0\0\x04")
}

/// Decodes a DataRow into its column values (`None` for SQL NULL).
///
/// # Errors
/// Counts or lengths that run past the message.
pub fn parse_data_row(msg: &[u8]) -> Result<Vec<Option<&[u8]>>> {
    let bad = || malformed("DataRow", "column length");
    let b = body(msg);
    let (count, mut rest) = b.split_at_checked(2).ok_or_else(bad)?;
    let count = u16::from_be_bytes([count[0], count[1]]) as usize;
    let mut values = Vec::with_capacity(count.min(rest.len() / 4 + 1));
    for _ in 0..count {
        let (len, tail) = rest.split_at_checked(4).ok_or_else(bad)?;
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        if len < 0 {
            values.push(None);
            rest = tail;
        } else {
            let (value, tail) = tail.split_at_checked(len as usize).ok_or_else(bad)?;
            values.push(Some(value));
            rest = tail;
        }
    }
    Ok(values)
}

/// A decoded Authentication request from a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    /// AuthenticationOk.
    Ok,
    /// AuthenticationCleartextPassword.
    Cleartext,
    /// AuthenticationMD5Password.
    Md5 { salt: [u8; 4] },
    /// AuthenticationSASL with the offered mechanisms.
    Sasl { mechanisms: Vec<String> },
    /// AuthenticationSASLContinue.
    SaslContinue(Bytes),
    /// AuthenticationSASLFinal.
    SaslFinal(Bytes),
    /// Any other method (Kerberos, GSS, SSPI): sidepool cannot answer it.
    Unsupported(u32),
}

fn malformed(what: &'static str, why: &'static str) -> ProtocolError {
    ProtocolError::Malformed { what, why }
}

fn body(msg: &[u8]) -> &[u8] {
    msg.get(5..).unwrap_or_default()
}

/// Decodes an Authentication message (a whole message, tag included).
///
/// # Errors
/// A body too short for its code, or a malformed SASL mechanism list.
pub fn parse_authentication(msg: &[u8]) -> Result<Authentication> {
    let b = body(msg);
    let (code, rest) = b
        .split_at_checked(4)
        .ok_or(malformed("Authentication", "no code"))?;
    let code = u32::from_be_bytes([code[0], code[1], code[2], code[3]]);
    Ok(match code {
        0 => Authentication::Ok,
        3 => Authentication::Cleartext,
        5 => {
            let salt = rest
                .try_into()
                .map_err(|_| malformed("Authentication", "md5 salt"))?;
            Authentication::Md5 { salt }
        }
        10 => {
            let mut mechanisms = Vec::new();
            let mut rest = rest;
            loop {
                let (m, tail) = cstr(rest).ok_or(malformed("Authentication", "SASL list"))?;
                if m.is_empty() {
                    break;
                }
                mechanisms.push(utf8(m)?);
                rest = tail;
            }
            Authentication::Sasl { mechanisms }
        }
        11 => Authentication::SaslContinue(Bytes::copy_from_slice(rest)),
        12 => Authentication::SaslFinal(Bytes::copy_from_slice(rest)),
        other => Authentication::Unsupported(other),
    })
}

/// The fields of an ErrorResponse or NoticeResponse a server sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerError {
    /// Non-localized severity (`V`), or the localized one (`S`) from old servers.
    pub severity: String,
    /// SQLSTATE (`C`).
    pub code: String,
    /// Primary message (`M`).
    pub message: String,
}

/// Decodes the fields sidepool needs from an ErrorResponse/NoticeResponse.
///
/// # Errors
/// Fields that are not NUL-terminated.
pub fn parse_error(msg: &[u8]) -> Result<ServerError> {
    let mut rest = body(msg);
    let mut e = ServerError::default();
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let (value, tail) = cstr(tail).ok_or(malformed("ErrorResponse", "field"))?;
        let value = String::from_utf8_lossy(value).into_owned();
        match code {
            b'V' => e.severity = value,
            b'S' if e.severity.is_empty() => e.severity = value,
            b'C' => e.code = value,
            b'M' => e.message = value,
            _ => {}
        }
        rest = tail;
    }
    Ok(e)
}

/// Decodes a ParameterStatus into (name, value).
///
/// # Errors
/// Missing terminators or non-UTF-8 text.
pub fn parse_parameter_status(msg: &[u8]) -> Result<(String, String)> {
    let (name, rest) = cstr(body(msg)).ok_or(malformed("ParameterStatus", "name"))?;
    let (value, _) = cstr(rest).ok_or(malformed("ParameterStatus", "value"))?;
    Ok((utf8(name)?, utf8(value)?))
}

/// Decodes BackendKeyData into (pid, secret bytes).
///
/// # Errors
/// A body shorter than 8 bytes or a secret over 256 bytes.
pub fn parse_backend_key_data(msg: &[u8]) -> Result<(i32, Bytes)> {
    let b = body(msg);
    let (pid, secret) = b
        .split_at_checked(4)
        .ok_or(malformed("BackendKeyData", "pid"))?;
    if secret.len() < 4 || secret.len() > 256 {
        return Err(malformed("BackendKeyData", "secret length"));
    }
    Ok((
        i32::from_be_bytes([pid[0], pid[1], pid[2], pid[3]]),
        Bytes::copy_from_slice(secret),
    ))
}

/// Decodes the status byte of a ReadyForQuery.
///
/// # Errors
/// A body that is not exactly one known status byte.
pub fn parse_ready_for_query(msg: &[u8]) -> Result<TransactionStatus> {
    match body(msg) {
        [b] => TransactionStatus::from_byte(*b).ok_or(malformed("ReadyForQuery", "status")),
        _ => Err(malformed("ReadyForQuery", "length")),
    }
}

#[cfg(test)]
mod tests;
