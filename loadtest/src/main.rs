//! The `sidepool-loadtest` binary. `testbed postgres` starts a throwaway PostgreSQL server for
//! demos and manual tests, prints how to reach it as shell assignments, and removes it on
//! SIGINT/SIGTERM. The load-generator scenarios (`run`) come with their own issue.
//!
//! Must not: depend on the proxy crate, or report numbers it did not measure.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use sidepool_loadtest::testbed::{PgAuth, PgOptions, PgServer};
use tokio::signal::unix::{Signal, SignalKind, signal};

#[derive(Debug, Parser)]
#[command(
    name = "sidepool-loadtest",
    version,
    about = "Throwaway database testbeds and the sidepool load generator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a throwaway database server and keep it running until SIGINT/SIGTERM.
    #[command(subcommand)]
    Testbed(Testbed),
    // `run` (load scenarios against a proxy or a server, with reports) comes with its issue.
}

#[derive(Debug, Subcommand)]
enum Testbed {
    /// PostgreSQL from the installed binaries. Prints PGHOST, PGPORT, PGUSER, PGPASSWORD,
    /// PGDATABASE, PG_DSN, PGDATA, … as `KEY=value` lines (valid POSIX shell), then `READY=1`.
    Postgres(PgArgs),
}

#[derive(Debug, clap::Args)]
struct PgArgs {
    /// How clients authenticate over TCP.
    #[arg(long, value_enum, default_value_t = AuthArg::Scram)]
    auth: AuthArg,
    /// Login role to create (with CREATEDB), plus a database of the same name it owns.
    #[arg(long, default_value = "demo")]
    user: String,
    /// The role's password.
    #[arg(long, default_value = "secret")]
    password: String,
    /// TCP port on 127.0.0.1; default: a free one.
    #[arg(long)]
    port: Option<u16>,
    /// The server's `max_connections`.
    #[arg(long, default_value_t = 300)]
    max_connections: u32,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AuthArg {
    Scram,
    Md5,
    Trust,
}

impl From<AuthArg> for PgAuth {
    fn from(arg: AuthArg) -> PgAuth {
        match arg {
            AuthArg::Scram => PgAuth::Scram,
            AuthArg::Md5 => PgAuth::Md5,
            AuthArg::Trust => PgAuth::Trust,
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match Cli::parse().command {
        Command::Testbed(Testbed::Postgres(args)) => testbed_postgres(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sidepool-loadtest: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn testbed_postgres(args: &PgArgs) -> anyhow::Result<()> {
    // Handlers go in before anything starts: a signal during startup is then kept and ends
    // the run right after, through the same cleanup, instead of killing us mid-way.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let shutdown = runtime.block_on(ShutdownSignals::install())?;
    let auth = PgAuth::from(args.auth);
    let opts = PgOptions {
        auth,
        max_connections: args.max_connections,
        ..PgOptions::default()
    };
    let pg = match args.port {
        Some(port) => PgServer::start_on_port(&opts, port),
        None => PgServer::start(&opts),
    }
    .context("starting the PostgreSQL testbed")?;
    pg.create_user(&args.user, &args.password, auth)
        .with_context(|| format!("creating role {}", args.user))?;
    pg.create_database(&args.user, &args.user)
        .with_context(|| format!("creating database {}", args.user))?;

    let bin = pg.bin("psql");
    let bin_dir = bin.parent().unwrap_or(&bin);
    let port = pg.port().to_string();
    let lines = [
        ("PGHOST", pg.host().to_owned()),
        ("PGPORT", port),
        ("PGUSER", args.user.clone()),
        ("PGPASSWORD", args.password.clone()),
        ("PGDATABASE", args.user.clone()),
        ("PG_DSN", pg.dsn(&args.user, &args.password, &args.user)),
        ("PG_AUTH", auth.hba_method().to_owned()),
        ("PG_SUPERUSER", pg.superuser().to_owned()),
        ("PG_SUPERUSER_PASSWORD", pg.superuser_password().to_owned()),
        ("PGDATA", pg.data_dir().display().to_string()),
        ("PG_SOCKET_DIR", pg.socket_dir().display().to_string()),
        ("PG_LOG", pg.log_file().display().to_string()),
        ("PG_BIN", bin_dir.display().to_string()),
        ("READY", "1".to_owned()),
    ];
    let mut out = std::io::stdout().lock();
    for (key, value) in lines {
        writeln!(out, "{key}={}", shell_quote(&value))?;
    }
    out.flush()?;
    drop(out);

    let signal = runtime.block_on(shutdown.recv());
    tracing::info!(signal, "stopping the PostgreSQL testbed");
    drop(pg);
    Ok(())
}

/// SIGINT and SIGTERM handlers; signals arriving before [`ShutdownSignals::recv`] are kept.
struct ShutdownSignals {
    term: Signal,
    int: Signal,
}

impl ShutdownSignals {
    /// Must run inside the runtime that will poll [`ShutdownSignals::recv`].
    async fn install() -> anyhow::Result<Self> {
        Ok(ShutdownSignals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// Resolves with the name of the first signal received.
    async fn recv(mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// `value` as a POSIX shell word: bare when only safe characters, else single-quoted.
fn shell_quote(value: &str) -> String {
    let safe = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:@%+,=".contains(c));
    if safe {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_leaves_safe_words_and_quotes_the_rest() {
        assert_eq!(
            shell_quote("/tmp/sidepool-pg-x/data"),
            "/tmp/sidepool-pg-x/data"
        );
        assert_eq!(shell_quote("host=a port=1"), "'host=a port=1'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn cli_parses_the_testbed_postgres_flags() {
        let cli = Cli::try_parse_from([
            "sidepool-loadtest",
            "testbed",
            "postgres",
            "--auth",
            "md5",
            "--user",
            "u",
            "--port",
            "6000",
        ])
        .unwrap();
        let Command::Testbed(Testbed::Postgres(args)) = cli.command;
        assert!(matches!(args.auth, AuthArg::Md5));
        assert_eq!(
            (args.user.as_str(), args.password.as_str()),
            ("u", "secret")
        );
        assert_eq!(args.port, Some(6000));
    }
}
