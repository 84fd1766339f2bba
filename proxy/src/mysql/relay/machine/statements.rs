//! Client prepared statements. sidepool gives each COM_STMT_PREPARE a client id of its own;
//! each server connection keeps its own statements by SQL text (prepared on demand), so a
//! statement command is rewritten to the attached connection's id before it is sent.

use std::collections::HashMap;

use bytes::Bytes;
use sidepool_protocol::mysql::command as com;

use crate::mysql::effects::Effect;

/// A statement the client prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientStatement {
    pub sql: Bytes,
    pub params: u16,
    /// Parameter types of its last execute that carried them.
    pub types: Option<Vec<u8>>,
    /// It may run on a replica; it may write (read/write split, classified at prepare).
    pub read: bool,
    pub writes: bool,
    /// What executing it does to session state (a prepared `SET`), pins excepted: those
    /// applied at prepare. Empty for the common statement.
    pub effects: Vec<Effect>,
}

/// A statement command names a client id sidepool never gave (or the client closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unknown(pub u32);

/// The client's statements by client id.
#[derive(Debug)]
pub(crate) struct Statements {
    by_id: HashMap<u32, ClientStatement>,
    next: u32,
}

impl Default for Statements {
    fn default() -> Self {
        Statements {
            by_id: HashMap::new(),
            next: 1,
        }
    }
}

impl Statements {
    /// The client id the next successful prepare gets.
    pub fn next_id(&self) -> u32 {
        self.next
    }

    /// Records a successful prepare of `sql` (with `params` parameters, `route`: may read on a
    /// replica, may write; `effects` of executing it) under [`Statements::next_id`], and moves
    /// that on.
    pub fn add(&mut self, sql: Bytes, params: u16, route: (bool, bool), effects: Vec<Effect>) {
        let id = self.next;
        self.next = self.next.wrapping_add(1).max(1);
        let (read, writes) = route;
        self.by_id.insert(
            id,
            ClientStatement {
                sql,
                params,
                types: None,
                read,
                writes,
                effects,
            },
        );
    }

    /// The statement with client id `id`.
    pub fn get(&self, id: &u32) -> Option<&ClientStatement> {
        self.by_id.get(id)
    }

    /// COM_STMT_CLOSE (`payload` with its command byte): forgets the statement.
    pub fn close(&mut self, payload: &[u8]) {
        if let Some(id) = com::statement_id(payload) {
            self.by_id.remove(&id);
        }
    }

    /// Forgets every statement (COM_RESET_CONNECTION, COM_CHANGE_USER).
    pub fn clear(&mut self) {
        self.by_id.clear();
    }

    /// The statement a COM_STMT_EXECUTE/SEND_LONG_DATA/RESET/FETCH names, as it was before
    /// this command; an execute that carries parameter types records them for later ones.
    ///
    /// # Errors
    /// [`Unknown`] when the id names no statement.
    pub fn lookup(&mut self, payload: &[u8]) -> Result<ClientStatement, Unknown> {
        let id = com::statement_id(payload).unwrap_or(0);
        let Some(stmt) = self.by_id.get(&id).cloned() else {
            return Err(Unknown(id));
        };
        if payload.first() == Some(&com::STMT_EXECUTE)
            && let Ok(Some(types)) = com::execute_param_types(payload, stmt.params)
            && stmt.types.as_deref() != Some(types)
            && let Some(s) = self.by_id.get_mut(&id)
        {
            s.types = Some(types.to_vec());
        }
        Ok(stmt)
    }
}

/// An execute asks for a read-only cursor (the client must stay on the connection).
pub(crate) fn opens_cursor(payload: &[u8]) -> bool {
    payload.first() == Some(&com::STMT_EXECUTE)
        && com::execute_flags(payload).is_some_and(|f| f & com::CURSOR_TYPE_READ_ONLY != 0)
}

/// The statement command `payload` for the server: its statement id replaced by
/// `server_id`. An execute that relies on the types of the client's earlier execute (flag 0)
/// gets them spelled out: that earlier execute may have run on another connection, and this
/// connection's statement may never have seen types at all.
pub(crate) fn for_server(payload: &[u8], server_id: u32, stmt: &ClientStatement) -> Vec<u8> {
    let mapped = com::with_statement_id(payload, server_id);
    if payload.first() == Some(&com::STMT_EXECUTE)
        && let Some(types) = &stmt.types
        && let Ok(Some(p)) = com::execute_with_types(&mapped, stmt.params, types)
    {
        return p;
    }
    mapped
}
