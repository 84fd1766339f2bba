//! sidepool: a database connection-pool sidecar.
//!
//! This crate owns the running process: listeners, client sessions, the relay, the mapping from
//! `sidepool_config::Config` to pool settings, and shutdown. It is the only crate that depends
//! on `config`, `protocol` and `pool` together (DESIGN §1); the wire codecs, the pool and the
//! config schema live in those crates and must not learn about each other through this one.

pub mod admin;
pub mod backend;
pub mod console;
pub mod dm;
pub mod error;
pub mod io;
pub mod leaks;
pub mod mysql;
pub mod pg;
pub mod route;
pub mod server;
pub mod service;
pub mod session;
pub mod settings;
pub mod telemetry;
pub mod tls;

pub use server::{Server, StartError};
