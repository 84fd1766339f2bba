//! The proxy's integration tests, one module per area, linked into one test binary (one link
//! instead of one per file). Run one area with `cargo test -p sidepool --test it pg_limits`.
//!
//! All modules share this process: a test must not depend on running alone. Ports are free
//! ports and directories are per test. Process-wide state is shared: the log capture of
//! `support::harness::logs` (assertions pick their own server's lines) and the CPU profiler of
//! `admin_metrics` (it samples every test running meanwhile).

// Integration tests: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

mod admin_metrics;
mod cli;
mod dameng_contract;
mod dashboards;
mod dashboards_prometheus;
mod deploy_manifests;
mod drivers_python;
mod faults;
mod fleet_budget;
mod fleet_facts;
mod hostile_clients;
mod lifecycle;
mod mysql_change_user;
mod mysql_clients;
mod mysql_drivers_python;
mod mysql_leaks;
mod mysql_lifecycle;
mod mysql_pooling;
mod mysql_prepared_load;
mod mysql_protocol;
mod mysql_split;
mod mysql_tls;
mod net_timeouts;
mod pg_auth;
mod pg_console;
mod pg_differential;
mod pg_leaks;
mod pg_limits;
mod pg_protocol;
mod pg_split;
mod pg_tls;
mod pg_transaction_state;
mod sidecar_process;
mod tidb_contract;
