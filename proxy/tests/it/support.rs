//! Helpers shared by the integration tests: PostgreSQL and MySQL set-up with an in-process
//! sidepool, a throwaway PKI, the Python driver suites and the dashboard files.

pub mod dashboards;
pub mod harness;
pub mod mysql;
pub mod pki;
pub mod python;
pub mod sidecar;
