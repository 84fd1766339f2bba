//! sidepool-protocol: the wire protocols sidepool speaks, as pure code (no sockets, no tokio).
//!
//! Owns framing, message types, handshake and authentication codecs for PostgreSQL (`pg`), and
//! Dameng (`dm`, header framing only), and later MySQL (`mysql`) and SQL classification (`sql`). It must not do I/O, know
//! about pools or configuration, or depend on any other sidepool crate.
//!
//! Every function that reads bytes treats them as hostile: lengths are checked against a cap
//! before anything is allocated, nothing panics on any input, and "not enough bytes yet" is a
//! normal value (`Ok(None)`), not an error.

pub mod dm;
pub mod error;
pub mod pg;

pub use error::{ErrorKind, ProtocolError, Result};
