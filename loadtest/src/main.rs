//! The `sidepool-loadtest` binary. `testbed postgres` starts a throwaway PostgreSQL server (and
//! with `--replica` a streaming replica of it) for demos and manual tests, prints how to reach
//! it as shell assignments, and removes it on SIGINT/SIGTERM. `run` loads one or more targets with a scenario and writes Markdown, JSON
//! and SVG reports (see the library's `load` module); `report` merges the JSON of several runs.
//!
//! Must not: depend on the proxy crate, connect anywhere but loopback, or report numbers it did
//! not measure.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use sidepool_loadtest::load::{self, Report, RunSpec, Scenario};
use sidepool_loadtest::testbed::{MariaDbOptions, MariaDbServer, PgAuth, PgOptions, PgServer};
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
    /// Load one or more targets with a scenario, interleaved A B A B for --rounds rounds, and
    /// report tps, latency, errors and the pooler's CPU per transaction and memory.
    Run(Box<RunArgs>),
    /// Merge the JSON reports of several runs into one Markdown table set, JSON and SVG chart.
    Report(ReportArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// select | tpcb | prepared | storm | idle | leaky.
    #[arg(long, default_value = "select")]
    scenario: Scenario,
    /// A target to load, `NAME=DSN` (libpq key=value or URL; loopback hosts only). Repeat for
    /// several; ratios are against the first.
    #[arg(long = "target", value_name = "NAME=DSN", required = true, value_parser = name_value_arg)]
    targets: Vec<(String, String)>,
    /// The pooler process behind target NAME, `NAME=PID`, for CPU µs/transaction and RSS.
    #[arg(long = "pid", value_name = "NAME=PID", value_parser = pid_arg)]
    pids: Vec<(String, u32)>,
    /// Active clients.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// Idle connections held open during each round (required by the `idle` scenario).
    #[arg(long, default_value_t = 0)]
    idle_clients: usize,
    /// Measured time per round and target, e.g. `10s`, `500ms`, `2m`.
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    duration: Duration,
    /// Unmeasured warmup before each measurement, on the same connections.
    #[arg(long, default_value = "1s", value_parser = duration_arg)]
    warmup: Duration,
    /// Rounds; each runs every target once, in the order given.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// How long `leaky` clients sit idle in their open transaction.
    #[arg(long, default_value = "1s", value_parser = duration_arg)]
    leak_hold: Duration,
    /// pgbench scale; default: count(*) of pgbench_branches.
    #[arg(long)]
    scale: Option<u32>,
    /// Heading and chart label; default: scenario and client counts.
    #[arg(long)]
    label: Option<String>,
    /// Write the Markdown table here (default: print it on stdout).
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Write the JSON report here (`report` can merge several).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the SVG bar chart of median tps here.
    #[arg(long)]
    svg: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ReportArgs {
    /// JSON reports written by `run --json`, in the order to show them.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Write the merged Markdown here (default: stdout).
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Write the merged JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the SVG chart here.
    #[arg(long)]
    svg: Option<PathBuf>,
}

fn name_value_arg(arg: &str) -> Result<(String, String), load::OptionError> {
    load::parse_name_value(arg)
}

fn pid_arg(arg: &str) -> Result<(String, u32), load::OptionError> {
    load::parse_pid(arg)
}

fn duration_arg(arg: &str) -> Result<Duration, load::OptionError> {
    load::parse_duration(arg)
}

#[derive(Debug, Subcommand)]
enum Testbed {
    /// PostgreSQL from the installed binaries. Prints PGHOST, PGPORT, PGUSER, PGPASSWORD,
    /// PGDATABASE, PG_DSN, PGDATA, … (with `--replica` also PG_REPLICA_PORT, PG_REPLICA_DSN,
    /// PG_REPLICA_DATA, PG_REPLICA_LOG) as `KEY=value` lines (valid POSIX shell), then `READY=1`.
    Postgres(PgArgs),
    /// MariaDB from the installed binaries. Prints MYSQL_HOST, MYSQL_PORT, MYSQL_USER,
    /// MYSQL_PASSWORD, MYSQL_DATABASE, MYSQL_DSN (a `mysql://` URL), MYSQL_SOCKET, MYSQL_BIN as
    /// `KEY=value` lines, then `READY=1`.
    Mariadb(MyArgs),
}

#[derive(Debug, clap::Args)]
struct MyArgs {
    /// Account to create (all privileges, `mysql_native_password`), plus a database of the
    /// same name.
    #[arg(long, default_value = "demo")]
    user: String,
    /// The account's password.
    #[arg(long, default_value = "secret")]
    password: String,
    /// The server's `max_connections`.
    #[arg(long, default_value_t = 300)]
    max_connections: u32,
    /// Also create pgbench's four tables in the database at this scale (100,000 accounts per
    /// unit), so `run` scenarios work against it as against `pgbench -i -s N`.
    #[arg(long)]
    pgbench_scale: Option<u32>,
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
    /// Also start a streaming replica (hot standby) of the server, on a free port.
    #[arg(long)]
    replica: bool,
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
        Command::Testbed(Testbed::Mariadb(args)) => testbed_mariadb(&args),
        Command::Run(args) => run(&args),
        Command::Report(args) => report(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sidepool-loadtest: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &RunArgs) -> anyhow::Result<()> {
    let targets = load::build_targets(&args.targets, &args.pids)?;
    let spec = RunSpec {
        scenario: args.scenario,
        clients: args.clients,
        idle_clients: args.idle_clients,
        duration: args.duration,
        warmup: args.warmup,
        rounds: args.rounds,
        leak_hold: args.leak_hold,
        scale: args.scale,
        label: args.label.clone(),
    };
    spec.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let tty = std::io::stderr().is_terminal();
    let mut progress = |p: &load::Progress| {
        if tty {
            eprint!("\r{p}\x1b[K");
        } else {
            eprintln!("{p}");
        }
    };
    let result = runtime.block_on(load::run(&spec, &targets, &mut progress));
    if tty {
        eprintln!();
    }
    let report = Report {
        runs: vec![result?],
    };
    write_outputs(
        &report,
        args.markdown.as_deref(),
        args.json.as_deref(),
        args.svg.as_deref(),
    )
}

fn report(args: &ReportArgs) -> anyhow::Result<()> {
    let mut merged = Report { runs: Vec::new() };
    for input in &args.inputs {
        let text = std::fs::read_to_string(input)
            .with_context(|| format!("reading {}", input.display()))?;
        let report = Report::from_json(&text)
            .with_context(|| format!("parsing {} as a run report", input.display()))?;
        merged.runs.extend(report.runs);
    }
    write_outputs(
        &merged,
        args.markdown.as_deref(),
        args.json.as_deref(),
        args.svg.as_deref(),
    )
}

/// Markdown to `markdown` or stdout; JSON and SVG where asked.
fn write_outputs(
    report: &Report,
    markdown: Option<&Path>,
    json: Option<&Path>,
    svg: Option<&Path>,
) -> anyhow::Result<()> {
    let md = report.to_markdown();
    match markdown {
        Some(path) => {
            std::fs::write(path, md).with_context(|| format!("writing {}", path.display()))?;
        }
        None => print!("{md}"),
    }
    if let Some(path) = json {
        std::fs::write(path, report.to_json())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = svg {
        load::write_svg(report, path)?;
    }
    Ok(())
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
    let replica = if args.replica {
        let replica = pg
            .start_replica()
            .context("starting the PostgreSQL testbed replica")?;
        replica
            .wait_caught_up()
            .context("waiting for the replica to replay the new role and database")?;
        Some(replica)
    } else {
        None
    };

    let bin = pg.bin("psql");
    let bin_dir = bin.parent().unwrap_or(&bin);
    let port = pg.port().to_string();
    let mut lines = vec![
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
    ];
    if let Some(replica) = &replica {
        lines.extend([
            ("PG_REPLICA_PORT", replica.port().to_string()),
            (
                "PG_REPLICA_DSN",
                replica.dsn(&args.user, &args.password, &args.user),
            ),
            ("PG_REPLICA_DATA", replica.data_dir().display().to_string()),
            ("PG_REPLICA_LOG", replica.log_file().display().to_string()),
        ]);
    }
    print_env(&lines)?;

    let signal = runtime.block_on(shutdown.recv());
    tracing::info!(signal, "stopping the PostgreSQL testbed");
    // The replica first, so it does not log its primary's disappearance.
    drop(replica);
    drop(pg);
    Ok(())
}

fn testbed_mariadb(args: &MyArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let shutdown = runtime.block_on(ShutdownSignals::install())?;
    let db = MariaDbServer::start(&MariaDbOptions {
        max_connections: args.max_connections,
        ..MariaDbOptions::default()
    })
    .context("starting the MariaDB testbed")?;
    db.create_user(&args.user, &args.password)
        .with_context(|| format!("creating account {}", args.user))?;
    db.create_database(&args.user, &args.user)
        .with_context(|| format!("creating database {}", args.user))?;
    if let Some(scale) = args.pgbench_scale {
        db.create_pgbench_tables(&args.user, scale)
            .context("creating the pgbench tables")?;
    }
    let bin = db.bin("mariadb");
    let bin_dir = bin.parent().unwrap_or(&bin);
    let lines = [
        ("MYSQL_HOST", db.host().to_owned()),
        ("MYSQL_PORT", db.port().to_string()),
        ("MYSQL_USER", args.user.clone()),
        ("MYSQL_PASSWORD", args.password.clone()),
        ("MYSQL_DATABASE", args.user.clone()),
        ("MYSQL_DSN", db.dsn(&args.user, &args.password, &args.user)),
        ("MYSQL_SOCKET", db.socket().display().to_string()),
        ("MYSQL_BIN", bin_dir.display().to_string()),
    ];
    print_env(&lines)?;
    let signal = runtime.block_on(shutdown.recv());
    tracing::info!(signal, "stopping the MariaDB testbed");
    drop(db);
    Ok(())
}

/// Prints `KEY=value` lines (valid POSIX shell) and `READY=1`, for scripts to source.
fn print_env(lines: &[(&str, String)]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for (key, value) in lines {
        writeln!(out, "{key}={}", shell_quote(value))?;
    }
    writeln!(out, "READY=1")?;
    out.flush()
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
            "--replica",
        ])
        .unwrap();
        let Command::Testbed(Testbed::Postgres(args)) = cli.command else {
            panic!("expected testbed postgres");
        };
        assert!(matches!(args.auth, AuthArg::Md5));
        assert_eq!(
            (args.user.as_str(), args.password.as_str()),
            ("u", "secret")
        );
        assert_eq!(args.port, Some(6000));
        assert!(args.replica);
    }

    #[test]
    fn cli_parses_run_with_repeated_targets_pids_and_durations() {
        let cli = Cli::try_parse_from([
            "sidepool-loadtest",
            "run",
            "--scenario",
            "tpcb",
            "--target",
            "direct=host=127.0.0.1 port=5432",
            "--target",
            "sidepool=host=127.0.0.1 port=6432",
            "--pid",
            "sidepool=1234",
            "--clients",
            "500",
            "--duration",
            "1500ms",
            "--rounds",
            "3",
            "--json",
            "out.json",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run");
        };
        assert_eq!(args.scenario, Scenario::Tpcb);
        assert_eq!(
            args.targets,
            [
                ("direct".to_owned(), "host=127.0.0.1 port=5432".to_owned()),
                ("sidepool".to_owned(), "host=127.0.0.1 port=6432".to_owned()),
            ]
        );
        assert_eq!(args.pids, [("sidepool".to_owned(), 1234)]);
        assert_eq!(args.clients, 500);
        assert_eq!(args.duration, Duration::from_millis(1500));
        assert_eq!(args.warmup, Duration::from_secs(1));
        assert_eq!(args.rounds, 3);
        assert_eq!(args.json.as_deref(), Some(Path::new("out.json")));
    }

    #[test]
    fn cli_run_rejects_bad_scenarios_durations_and_missing_targets() {
        let base = ["sidepool-loadtest", "run", "--target", "a=host=127.0.0.1"];
        for extra in [
            &["--scenario", "bogus"][..],
            &["--duration", "10 parsecs"][..],
            &["--pid", "a=notapid"][..],
        ] {
            let argv: Vec<&str> = base.iter().chain(extra).copied().collect();
            assert!(Cli::try_parse_from(&argv).is_err(), "{argv:?}");
        }
        assert!(Cli::try_parse_from(["sidepool-loadtest", "run"]).is_err());
    }
}
