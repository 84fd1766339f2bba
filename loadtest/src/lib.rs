//! `sidepool-loadtest`: throwaway database servers ([`testbed`]) for sidepool's integration
//! tests and demos, and the load generator ([`load`]: scenarios, statistics, reports) that the
//! binary drives.
//!
//! Owns: starting real servers from installed binaries in temp dirs, on free ports, as the
//! right system account, and cleaning them up. Must not: depend on the `sidepool` proxy crate,
//! touch system clusters or fixed ports, or skip silently when binaries are missing (errors
//! carry an install hint instead).

pub mod error;
pub mod ledger;
pub mod load;
pub mod testbed;

pub use error::{ErrorKind, Result, TestbedError};
