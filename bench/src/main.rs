//! `prebuildd-bench`: prebuildd's load generator and its scenarios, a crate
//! of its own so that the server binary carries none of it.
//!
//! It starts the `prebuildd` binary (the one built beside it, or
//! `--server-binary`) as a child process on a temporary data dir (so it can
//! read the server's RSS from /proc), drives it at a fixed concurrency for a
//! fixed time per scenario, and prints requests/s, p50/p99/max latency and
//! the server's RSS. Every API scenario runs twice side by side: against the
//! real method and against a baseline handler in the server that answers
//! with a canned response of the same size without touching the store (the
//! server's `[bench] baseline = true`); figures are reported as ratios to it.
//!
//! Phases (`api.rs`): (A) the API scenarios on a table of 1,000 prebuilds;
//! (B) the same list query after seeding the table to a million rows; (C)
//! the reconciler with 10,000 active prebuilds on the simulated runner, and
//! the API's p99 while it runs.
//!
//! Phase D (`events.rs`): runner event to stored phase, with a 30 s
//! reconciler interval.
//!
//! `--only docker` runs the docker runner scenario instead (`docker/`): it
//! needs a Docker daemon and the Dev Containers CLI, so it is not part of
//! the default run; `--only postgres` the PostgreSQL scenarios
//! (`postgres.rs`); `--only overload` CreatePrebuild at four times the
//! sustainable rate (`overload.rs`); `--only events` phase D alone.

mod api;
mod docker;
mod events;
mod incremental;
mod load;
mod overload;
mod plain;
mod postgres;
mod server;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// prebuildd-bench: measures a prebuildd server it starts itself (see BENCHMARKS.md).
#[derive(Parser)]
#[command(name = "prebuildd-bench", version, about)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Bulk-loads prebuilds of the demo project into a data dir (no server may run on it).
    Seed(SeedArgs),
    /// The plain server the GetPrebuild comparison starts (started by the benchmark itself).
    #[command(hide = true)]
    PlainServer(PlainServerArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// How long each measurement runs.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent requests (at least 1).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Rows in the table of the large list measurement (at least 1000).
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Active prebuilds of the reconciler measurement (at least 1).
    #[arg(long, default_value_t = 10_000)]
    active: usize,
    /// Runs only this scenario (`GetPrebuild`, ...); `docker` runs only the
    /// docker runner benchmark (needs a Docker daemon and the Dev Containers
    /// CLI), `postgres` only the PostgreSQL one, `overload` CreatePrebuild at
    /// four times the sustainable rate, `events` runner event to stored phase,
    /// `incremental` full vs incremental prebuilds on the local and docker runners,
    /// `registry` snapshots pushed to and pulled from an OCI registry.
    #[arg(long, value_name = "SCENARIO")]
    only: Option<String>,
    /// The prebuildd binary to measure (default: `prebuildd` beside this one).
    #[arg(long, value_name = "FILE", env = "PREBUILDD_BIN")]
    server_binary: Option<PathBuf>,
}

#[derive(Args)]
struct PlainServerArgs {
    #[arg(long, value_enum)]
    protocol: plain::PlainProtocol,
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// The canned response: an encoded GetPrebuildResponse, or its JSON.
    #[arg(long, value_name = "FILE")]
    response: PathBuf,
}

#[derive(Args)]
struct SeedArgs {
    /// The data dir to load into.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// How many prebuilds.
    #[arg(long)]
    count: usize,
}

/// Benchmark settings (`prebuildd-bench --help`).
#[derive(Debug, Clone)]
pub struct Options {
    pub duration: Duration,
    pub concurrency: usize,
    /// Rows in the table for the large list measurement.
    pub large_rows: usize,
    /// Active prebuilds for the reconciler measurement.
    pub active_prebuilds: usize,
    /// Run only the phase A scenario of this name (`GetPrebuild`, ...),
    /// and skip phases B and C: for quick iteration. `docker`: only the
    /// docker runner scenario (never run otherwise).
    pub only: Option<String>,
    /// The `prebuildd` binary the scenarios start.
    pub server_binary: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PREBUILDD_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("prebuildd-bench: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Some(Command::Seed(args)) => server::seed(&args.data_dir, args.count).map(|count| {
            println!("seeded {count} prebuilds into {}", args.data_dir.display());
        }),
        Some(Command::PlainServer(args)) => match std::fs::read(&args.response) {
            Ok(response) => runtime.block_on(plain::serve(args.protocol, args.listen, response.into())),
            Err(error) => Err(format!("{}: {error}", args.response.display())),
        },
        None => {
            let args = cli.bench;
            server::locate_binary(args.server_binary.clone()).and_then(|server_binary| {
                let options = Options {
                    duration: args.duration,
                    concurrency: args.concurrency.max(1),
                    large_rows: args.rows.max(1000),
                    active_prebuilds: args.active.max(1),
                    only: args.only,
                    server_binary,
                };
                runtime.block_on(api::run(options))
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("prebuildd-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
