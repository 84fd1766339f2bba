//! sidepool-protocol: the wire protocols sidepool speaks, as pure code (no sockets, no tokio).
//!
//! Owns framing, message types, handshake and authentication codecs for PostgreSQL (`pg`) and
//! MySQL (`mysql`), Dameng header framing (`dm`), and SQL statement classification for
//! read/write splitting (`sql`). It must not do I/O, know
//! about pools or configuration, or depend on any other sidepool crate.
//!
//! Every function that reads bytes treats them as hostile: lengths are checked against a cap
//! before anything is allocated, nothing panics on any input, and "not enough bytes yet" is a
//! normal value (`Ok(None)`), not an error.

pub mod dm;
pub mod error;
pub mod mysql;
pub mod pg;
pub mod sql;

pub use error::{ErrorKind, ProtocolError, Result};
