//! sidepool: a database connection-pool sidecar.
//!
//! This crate owns the running process: listeners, client sessions, the relay, the mapping from
//! `sidepool_config::Config` to pool settings, and shutdown. It is the only crate that depends
//! on `config`, `protocol` and `pool` together (docs/design.md §1); the wire codecs, the pool and
//! the config schema live in those crates and must not learn about each other through this one.
//!
//! Dependencies among its modules point one way (`scripts/module-cycles.py` checks that there is
//! no cycle): [`server`] starts, reloads and drains; it asks each protocol ([`pg`], [`mysql`],
//! [`dm`]) to build its pools' services; those build on the protocol-blind core: [`context`],
//! [`service`], [`backend`], [`route`], [`leaks`], [`console`], [`session`], [`settings`],
//! [`telemetry`], [`tls`], [`io`], [`net`] and [`error`].

pub mod admin;
pub mod backend;
pub mod console;
pub mod context;
pub mod dm;
pub mod error;
pub mod fleet;
pub mod io;
pub mod leaks;
pub mod lifecycle;
pub mod mysql;
pub mod net;
pub mod pg;
pub mod route;
pub mod server;
pub mod service;
pub mod session;
pub mod settings;
pub mod telemetry;
pub mod tls;

pub use error::StartError;
pub use server::Server;
