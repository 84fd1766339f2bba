//! PostgreSQL frontend/backend protocol v3 (PostgreSQL docs, chapter "Frontend/Backend Protocol").
//!
//! Hand-written rather than taken from `postgres-protocol`: a proxy must frame messages it does not
//! understand, forward bodies it never decodes (a 500 MB `DataRow` streams through without being
//! buffered whole), and tolerate hostile peers on both sides; `postgres-protocol`'s decoders parse
//! whole messages for a client library. Client-side SCRAM does reuse it (see [`auth`]).

pub mod auth;
pub mod backend;
pub mod frame;
pub mod frontend;
pub mod startup;

/// Transaction status carried by `ReadyForQuery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    /// `I`: not in a transaction block.
    Idle,
    /// `T`: in a transaction block.
    InTransaction,
    /// `E`: in a failed transaction block (queries rejected until the block ends).
    Failed,
}

impl TransactionStatus {
    /// Decodes the status byte; `None` for anything else.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'I' => Some(Self::Idle),
            b'T' => Some(Self::InTransaction),
            b'E' => Some(Self::Failed),
            _ => None,
        }
    }

    /// The status byte.
    pub fn as_byte(self) -> u8 {
        match self {
            Self::Idle => b'I',
            Self::InTransaction => b'T',
            Self::Failed => b'E',
        }
    }
}
