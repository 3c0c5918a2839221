//! The `prebuildd` command line.

mod cli;

use clap::{Args, Parser, Subcommand};
use prebuildd::clock::SystemClock;
use prebuildd::config::{Config, Overrides, DEMO_API_KEY, DEMO_PROJECT_ID};
use std::path::PathBuf;
use std::process::ExitCode;

/// prebuildd: the server, a runner, and a client of its API.
#[derive(Parser)]
#[command(name = "prebuildd", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    client: cli::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the service.
    Serve(ServeArgs),
    /// Runs a runner on this machine: connects out to the server and does the prebuilds and warm pools it sends.
    Runner(RunnerArgs),
    /// Creates, lists, follows, cancels and deletes prebuilds on a server.
    #[command(subcommand)]
    Prebuilds(cli::prebuilds::Command),
    /// Creates, lists, updates, deletes and claims from warm pools on a server.
    #[command(subcommand)]
    WarmPools(cli::warm_pools::Command),
    /// Lists the organization's projects by name (IDs, repositories, tracked branches, last built commit).
    #[command(subcommand)]
    Projects(cli::catalog::ProjectsCommand),
    /// Lists the environment classes by name (IDs, runners).
    #[command(subcommand)]
    Classes(cli::catalog::ClassesCommand),
}

#[derive(Args)]
struct ServeArgs {
    /// TOML configuration (without it: the embedded demo configuration).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, overriding [server] listen (default 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Where prebuildd.db, logs and snapshots live (default ./data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct RunnerArgs {
    /// The runner's TOML configuration (server, runner_id, token, data_dir, [engine]).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The client's stderr is for its errors and progress: only warnings
    // from the libraries underneath, unless PREBUILDD_LOG says otherwise.
    let default_level = if matches!(cli.command, Command::Prebuilds(_) | Command::WarmPools(_) | Command::Projects(_) | Command::Classes(_))
    {
        "warn"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PREBUILDD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("prebuildd: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(args) => {
            let overrides = Overrides { listen: args.listen, data_dir: args.data_dir };
            let config = match &args.config {
                Some(path) => match Config::load(path, &overrides) {
                    Ok(config) => config,
                    Err(error) => {
                        eprintln!("prebuildd: invalid configuration: {error}");
                        return ExitCode::from(2);
                    }
                },
                None => Config::demo(&overrides),
            };
            runtime.block_on(run(config, args.config, overrides))
        }
        Command::Runner(args) => {
            let config = match prebuildd::agent::AgentConfig::load(&args.config) {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("prebuildd runner: invalid configuration: {error}");
                    return ExitCode::from(2);
                }
            };
            match runtime.block_on(prebuildd::agent::run(config, wait_for_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("prebuildd runner: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Prebuilds(command) => runtime.block_on(cli::run(cli.client, cli::Request::Prebuilds(command))),
        Command::WarmPools(command) => runtime.block_on(cli::run(cli.client, cli::Request::WarmPools(command))),
        Command::Projects(command) => runtime.block_on(cli::run(cli.client, cli::Request::Projects(command))),
        Command::Classes(command) => runtime.block_on(cli::run(cli.client, cli::Request::Classes(command))),
    }
}

async fn run(config: Config, config_path: Option<PathBuf>, overrides: Overrides) -> ExitCode {
    let is_demo = config.catalog.is_demo;
    // The file holds the API keys: lifecycle commands must not read it.
    let private_files = config_path.iter().cloned().collect();
    let server = match prebuildd::start_with_private_files(config, std::sync::Arc::new(SystemClock), private_files).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("prebuildd: {error}");
            return ExitCode::FAILURE;
        }
    };
    if is_demo {
        print_demo_hint(server.addr);
    }
    let trigger = server.shutdown_trigger();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        trigger.trigger();
    });
    if let Some(path) = config_path {
        reload_on_sighup(server.reloader(), path, overrides);
    }
    match server.wait().await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            // Logged where it happened; said once more where a person reads.
            eprintln!("prebuildd: {failure}");
            ExitCode::FAILURE
        }
    }
}

/// SIGHUP re-reads the configuration file; an invalid one is logged and
/// ignored (the running configuration stays).
fn reload_on_sighup(reloader: prebuildd::Reloader, path: PathBuf, overrides: Overrides) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else { return };
        while hangup.recv().await.is_some() {
            match Config::load(&path, &overrides) {
                Ok(config) => {
                    let reloader = reloader.clone();
                    // New runners sweep their roots: file work, off the runtime.
                    if let Err(error) = tokio::task::spawn_blocking(move || reloader.apply(&config)).await {
                        tracing::error!(%error, "configuration not reloaded: applying it failed");
                        continue;
                    }
                    tracing::info!(path = %path.display(), "configuration reloaded");
                }
                Err(error) => tracing::error!(%error, "configuration not reloaded: it is invalid"),
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (reloader, path, overrides);
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn print_demo_hint(addr: std::net::SocketAddr) {
    println!(
        "\nprebuildd is running on the embedded demo configuration (no --config given).\n\
         Development API key: {DEMO_API_KEY}\n\
         Dashboard: http://{addr}/ui/ (sign in with that key)\n\n\
         Try it:\n\
         \x20 grpcurl -plaintext -H 'Authorization: Bearer {DEMO_API_KEY}' \\\n\
         \x20   -d '{{\"projectId\": \"{DEMO_PROJECT_ID}\", \"spec\": {{\"timeout\": \"3600s\"}}}}' \\\n\
         \x20   {addr} gitpod.v1.PrebuildService/CreatePrebuild\n\n\
         \x20 curl http://{addr}/gitpod.v1.PrebuildService/CreatePrebuild \\\n\
         \x20   -H 'Content-Type: application/json' -H 'Authorization: Bearer {DEMO_API_KEY}' \\\n\
         \x20   -d '{{\"projectId\": \"{DEMO_PROJECT_ID}\", \"spec\": {{\"timeout\": \"3600s\"}}}}'\n\n\
         \x20 prebuildd --server http://{addr} --api-key {DEMO_API_KEY} \\\n\
         \x20   prebuilds create --project {DEMO_PROJECT_ID} --watch\n"
    );
}
