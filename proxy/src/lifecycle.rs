//! The session lifecycle every protocol shares, written once.
//!
//! A client session goes through the same stages whatever its protocol (docs/design.md §2):
//! it is **admitted** ([`admit`]: the `max_clients` slot, the connected-clients count, the
//! session's span, how its end is logged), it **attaches** a server connection when it needs one
//! ([`attach`]: wait while the pool is paused, the chosen replica first and the primary when that
//! replica cannot be reached, idle connections the server closed meanwhile skipped, the
//! connection brought in line with the client's session state), and it **releases** it
//! ([`finish`]: a client that left inside a transaction is counted, the connection is rolled back
//! and reset under [`RESET_TIMEOUT`] or closed when its state is unknown). A kill or drain ends it
//! ([`on_kill`], [`kill_reason`]).
//!
//! What differs between protocols plugs in through two small traits: [`ClientSide`] (how a
//! refused client is told, and the login + relay that make up a session) and [`ServerSide`] (the
//! pools, how a dead idle connection is recognised, how the client's state is replayed on a
//! connection and how a connection is reset). Each protocol keeps only its framing, statement
//! mapping and effects; the relays' protocol logic lives in their own state machines.
//!
//! This module knows no wire format: errors reach it typed ([`CheckoutFailure`]) and each
//! protocol renders them in its own error packet.

mod admit;
mod attach;
mod release;
mod server_side;

pub use self::admit::{ClientSide, MAX_CLIENTS_HINT, admit};
pub use self::attach::{Attached, CheckoutFailure, attach, checkout_for_check, checkout_live};
pub use self::release::{Leaving, OnKill, finish, kill_reason, on_kill};
pub use self::server_side::{Conn, INBOX_CAP, RESET_TIMEOUT, Reset, ServerSide, SyncError};
