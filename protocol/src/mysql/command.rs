//! Client commands: codes, and the few fields the relay reads or rewrites (statement ids,
//! query text, COM_STMT_EXECUTE parameter types).

use crate::error::{ProtocolError, Result};

/// `COM_QUIT`.
pub const QUIT: u8 = 0x01;
/// `COM_INIT_DB`.
pub const INIT_DB: u8 = 0x02;
/// `COM_QUERY`.
pub const QUERY: u8 = 0x03;
/// `COM_FIELD_LIST`.
pub const FIELD_LIST: u8 = 0x04;
/// `COM_STATISTICS`.
pub const STATISTICS: u8 = 0x09;
/// `COM_PROCESS_KILL`.
pub const PROCESS_KILL: u8 = 0x0C;
/// `COM_DEBUG`.
pub const DEBUG: u8 = 0x0D;
/// `COM_PING`.
pub const PING: u8 = 0x0E;
/// `COM_CHANGE_USER`.
pub const CHANGE_USER: u8 = 0x11;
/// `COM_STMT_PREPARE`.
pub const STMT_PREPARE: u8 = 0x16;
/// `COM_STMT_EXECUTE`.
pub const STMT_EXECUTE: u8 = 0x17;
/// `COM_STMT_SEND_LONG_DATA`.
pub const STMT_SEND_LONG_DATA: u8 = 0x18;
/// `COM_STMT_CLOSE`.
pub const STMT_CLOSE: u8 = 0x19;
/// `COM_STMT_RESET`.
pub const STMT_RESET: u8 = 0x1A;
/// `COM_SET_OPTION`.
pub const SET_OPTION: u8 = 0x1B;
/// `COM_STMT_FETCH`.
pub const STMT_FETCH: u8 = 0x1C;
/// `COM_RESET_CONNECTION`.
pub const RESET_CONNECTION: u8 = 0x1F;

/// COM_STMT_EXECUTE flags: a read-only cursor is opened (rows come with COM_STMT_FETCH).
pub const CURSOR_TYPE_READ_ONLY: u8 = 0x01;

/// The statement a COM_STMT_* command names (bytes 1..5).
pub fn statement_id(payload: &[u8]) -> Option<u32> {
    let &[_, a, b, c, d, ..] = payload else {
        return None;
    };
    Some(u32::from_le_bytes([a, b, c, d]))
}

/// `payload` with its statement id replaced.
pub fn with_statement_id(payload: &[u8], id: u32) -> Vec<u8> {
    let mut out = payload.to_vec();
    if let Some(slot) = out.get_mut(1..5) {
        slot.copy_from_slice(&id.to_le_bytes());
    }
    out
}

/// The SQL of a COM_QUERY or COM_STMT_PREPARE, or the schema of COM_INIT_DB.
pub fn text(payload: &[u8]) -> &[u8] {
    payload.get(1..).unwrap_or_default()
}

/// A COM_STMT_EXECUTE's cursor flags byte.
pub fn execute_flags(payload: &[u8]) -> Option<u8> {
    payload.get(5).copied()
}

/// Where the parameter block of a COM_STMT_EXECUTE for a statement with `params` parameters
/// starts: (offset of the new-params-bound flag, the flag).
fn bound_flag(payload: &[u8], params: u16) -> Result<Option<(usize, u8)>> {
    if params == 0 {
        return Ok(None);
    }
    let at = 10 + usize::from(params).div_ceil(8);
    match payload.get(at) {
        Some(flag) => Ok(Some((at, *flag))),
        None => Err(ProtocolError::Malformed {
            what: "COM_STMT_EXECUTE",
            why: "shorter than its parameter count requires",
        }),
    }
}

/// The parameter types a COM_STMT_EXECUTE carries (2 bytes per parameter) when its
/// new-params-bound flag is set; `None` when it relies on the types of an earlier execute.
///
/// # Errors
/// A packet shorter than its parameter count requires.
pub fn execute_param_types(payload: &[u8], params: u16) -> Result<Option<&[u8]>> {
    let Some((at, flag)) = bound_flag(payload, params)? else {
        return Ok(None);
    };
    if flag != 1 {
        return Ok(None);
    }
    let types = payload.get(at + 1..at + 1 + 2 * usize::from(params));
    types.map(Some).ok_or(ProtocolError::Malformed {
        what: "COM_STMT_EXECUTE",
        why: "parameter types cut short",
    })
}

/// A COM_STMT_EXECUTE that relies on earlier parameter types (flag 0) rewritten to carry
/// `types` (flag 1), for a statement prepared afresh on another connection. Returns `None`
/// when the packet already carries types or has no parameters.
///
/// # Errors
/// As [`execute_param_types`].
pub fn execute_with_types(payload: &[u8], params: u16, types: &[u8]) -> Result<Option<Vec<u8>>> {
    let Some((at, 0)) = bound_flag(payload, params)? else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(payload.len() + types.len());
    out.extend_from_slice(&payload[..at]);
    out.push(1);
    out.extend_from_slice(types);
    out.extend_from_slice(&payload[at + 1..]);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_ids_read_and_rewrite() {
        let p = [STMT_EXECUTE, 7, 0, 0, 0, 0, 1, 0, 0, 0];
        assert_eq!(statement_id(&p), Some(7));
        let q = with_statement_id(&p, 0x0102_0304);
        assert_eq!(statement_id(&q), Some(0x0102_0304));
        assert_eq!(&q[5..], &p[5..]);
        assert_eq!(statement_id(&p[..4]), None);
        assert_eq!(with_statement_id(&p[..3], 9), p[..3].to_vec());
    }

    #[test]
    fn execute_types_are_found_and_inserted() {
        // 2 params: null bitmap 1 byte, flag, types (2x2), values.
        let with = [
            STMT_EXECUTE,
            1,
            0,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            1,
            3,
            0,
            8,
            0,
            42,
            0,
            0,
            0,
            7,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        assert_eq!(execute_param_types(&with, 2), Ok(Some(&[3u8, 0, 8, 0][..])));
        let without = [
            STMT_EXECUTE,
            1,
            0,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            42,
            0,
            0,
            0,
            7,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        assert_eq!(execute_param_types(&without, 2), Ok(None));
        assert_eq!(
            execute_with_types(&without, 2, &[3, 0, 8, 0]),
            Ok(Some(with.to_vec()))
        );
        assert_eq!(execute_with_types(&with, 2, &[3, 0, 8, 0]), Ok(None));
        assert_eq!(execute_param_types(&with, 0), Ok(None));
        assert!(execute_param_types(&with[..11], 2).is_err());
        assert!(execute_param_types(&with[..13], 2).is_err());
    }
}
