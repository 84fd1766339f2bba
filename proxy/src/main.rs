//! The `sidepool` binary: `sidepool --config FILE` runs the proxy; `sidepool check --config FILE`
//! validates a config and prints the effective one. A bad config exits with code 64 (EX_USAGE)
//! listing every problem, before any port is bound.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sidepool_config::{Config, LogFormat};

/// EX_USAGE from sysexits.h: the configuration is wrong.
const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(name = "sidepool", version, about = "Database connection-pool sidecar")]
struct Cli {
    /// Path of the TOML configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "SIDEPOOL_CONFIG",
        default_value = "/etc/sidepool/sidepool.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the configuration and print the effective configuration (secrets redacted).
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match sidepool_config::load(&cli.config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!(
                "sidepool: {} has {} problem(s):",
                cli.config.display(),
                errors.problems.len()
            );
            eprintln!("{errors}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.command {
        Some(Command::Check) => {
            print!("{}", config.to_effective_toml());
            eprintln!("sidepool: {} is valid", cli.config.display());
            ExitCode::SUCCESS
        }
        None => match run(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sidepool: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(config.log.level.as_str()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    init_logging(&config);
    let workers = sidepool::settings::worker_threads(config.runtime.workers);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let server = sidepool::Server::start(&config).await?;
        tracing::info!(
            workers,
            admin = %server.admin_addr(),
            version = env!("CARGO_PKG_VERSION"),
            "sidepool started"
        );
        serve_signals(&server).await;
        // The config in force now: a reload may have changed [shutdown] timeout.
        let timeout = server.config().shutdown.timeout;
        tracing::info!(
            ?timeout,
            "draining: finishing open transactions, then shutting down"
        );
        server.drain(timeout).await;
        Ok(())
    })
}

/// Reloads on SIGHUP; returns on SIGTERM or SIGINT.
async fn serve_signals(server: &sidepool::Server) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        // Without signal handlers the process can only be killed; keep serving.
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the config file");
                // The outcome is logged by the reload itself.
                let _ = server.reload().await;
            }
        }
    }
}
