//! Throwaway database servers for integration tests and demos, started from the installed
//! server binaries in temp dirs on free ports, and removed on drop.
//!
//! - [`PgServer`]: a PostgreSQL cluster (`initdb` + `pg_ctl`), see `postgres.rs`.
//! - [`PgReplica`]: its streaming replica ([`PgServer::start_replica`]: `pg_basebackup -R`,
//!   then the primary's configure-and-start path), see `postgres/replica.rs`.
//! - [`MariaDbServer`]: a MariaDB server (`mariadb-install-db` + `mariadbd`), see `mariadb.rs`.
//! - [`MariaDbReplica`]: its GTID replica ([`MariaDbServer::start_replica`]: a fresh server
//!   told `CHANGE MASTER TO`), see `mariadb/replica.rs`.
//!
//! Servers are never shared between tests and never reuse a system cluster: each one owns its
//! temp dir, socket and port. Missing binaries are an error with an install hint, never a skip.

mod mariadb;
mod postgres;
mod process;

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;

use tempfile::TempDir;

use self::process::RunAs;
use crate::error::Result;

pub use self::mariadb::{MARIADB_BIN_ENV, MariaDbOptions, MariaDbReplica, MariaDbServer};
pub use self::postgres::{PG_BIN_ENV, PgAuth, PgOptions, PgReplica, PgServer, pg_bin_dir};
pub use crate::error::{ErrorKind, TestbedError};

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
///
/// Another process may take it before the caller binds it; server starts retry on a new port.
///
/// # Panics
/// If no socket can be bound on 127.0.0.1 at all (the machine cannot run a testbed).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("binding 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of a bound listener")
        .port()
}

/// A new temp dir (mode 0700) owned by `run_as`. When that is another account it lives under
/// `/tmp`, which every account can traverse, whatever `$TMPDIR` says.
fn temp_dir(prefix: &str, run_as: &RunAs) -> Result<TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    let dir = if run_as.is_other_account() {
        builder.tempdir_in(Path::new("/tmp"))?
    } else {
        builder.tempdir()?
    };
    run_as.give(dir.path())?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_can_be_bound_again() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }
}
