//! The `prebuildd` command line.

use prebuildd::clock::SystemClock;
use prebuildd::config::{Config, Overrides, DEMO_API_KEY, DEMO_PROJECT_ID};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage:
  prebuildd serve [--config FILE] [--listen ADDR] [--data-dir DIR]
      --config FILE    TOML configuration (without it: the embedded demo configuration)
      --listen ADDR    address to listen on, overriding [server] listen (default 127.0.0.1:8080)
      --data-dir DIR   where prebuildd.db, logs and snapshots live (default ./data)
  prebuildd bench [--duration 5s] [--concurrency 64] [--rows 1000000] [--active 10000] [--only SCENARIO]
      runs the benchmark (see BENCHMARKS.md) against a prebuildd it starts itself
  prebuildd bench --only docker
      runs only the docker runner benchmark (needs a Docker daemon and the Dev Containers CLI)
  prebuildd seed --data-dir DIR --count N
      bulk-loads N prebuilds of the demo project into DIR (the server must be stopped)";

enum Command {
    Serve { config: Option<PathBuf>, overrides: Overrides },
    Bench(prebuildd::bench::Options),
    Seed { data_dir: PathBuf, count: usize },
}

/// Splits `--flag=value` and `--flag value` forms into (flag, value) pairs.
fn flags(args: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "-h" || arg == "--help" {
            return Err(String::new());
        }
        let (flag, value) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_string(), value.to_string()),
            None => (arg.clone(), iter.next().cloned().ok_or_else(|| format!("{arg} needs a value"))?),
        };
        pairs.push((flag, value));
    }
    Ok(pairs)
}

fn parse_args(args: &[String]) -> Result<Command, String> {
    let (command, rest) = match args.split_first() {
        Some((command, rest)) => (command.as_str(), rest),
        None => return Err(String::new()),
    };
    let duration = |flag: &str, value: &str| humantime::parse_duration(value).map_err(|e| format!("{flag}: {e}"));
    let number = |flag: &str, value: &str| value.parse::<usize>().map_err(|_| format!("{flag} takes a number, got {value:?}"));
    match command {
        "serve" => {
            let (mut config, mut overrides) = (None, Overrides::default());
            for (flag, value) in flags(rest)? {
                match flag.as_str() {
                    "--config" => config = Some(PathBuf::from(value)),
                    "--listen" => overrides.listen = Some(value),
                    "--data-dir" => overrides.data_dir = Some(PathBuf::from(value)),
                    other => return Err(format!("unknown option {other:?}")),
                }
            }
            Ok(Command::Serve { config, overrides })
        }
        "bench" => {
            let mut options = prebuildd::bench::Options::default();
            for (flag, value) in flags(rest)? {
                match flag.as_str() {
                    "--duration" => options.duration = duration(&flag, &value)?,
                    "--concurrency" => options.concurrency = number(&flag, &value)?.max(1),
                    "--rows" => options.large_rows = number(&flag, &value)?.max(1000),
                    "--active" => options.active_prebuilds = number(&flag, &value)?.max(1),
                    "--only" => options.only = Some(value),
                    other => return Err(format!("unknown option {other:?}")),
                }
            }
            Ok(Command::Bench(options))
        }
        "seed" => {
            let (mut data_dir, mut count) = (None, None);
            for (flag, value) in flags(rest)? {
                match flag.as_str() {
                    "--data-dir" => data_dir = Some(PathBuf::from(value)),
                    "--count" => count = Some(number(&flag, &value)?),
                    other => return Err(format!("unknown option {other:?}")),
                }
            }
            Ok(Command::Seed { data_dir: data_dir.ok_or("seed needs --data-dir")?, count: count.ok_or("seed needs --count")? })
        }
        "-h" | "--help" | "help" => Err(String::new()),
        other => Err(format!("unknown command {other:?}")),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PREBUILDD_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match parse_args(&args) {
        Ok(command) => command,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("prebuildd: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("prebuildd: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match command {
        Command::Serve { config: path, overrides } => {
            let config = match &path {
                Some(path) => match Config::load(path, &overrides) {
                    Ok(config) => config,
                    Err(error) => {
                        eprintln!("prebuildd: invalid configuration: {error}");
                        return ExitCode::from(2);
                    }
                },
                None => Config::demo(&overrides),
            };
            runtime.block_on(run(config, path, overrides))
        }
        Command::Bench(options) => match runtime.block_on(prebuildd::bench::run(options)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("prebuildd bench: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Seed { data_dir, count } => match prebuildd::bench::seed(&data_dir, count) {
            Ok(count) => {
                println!("seeded {count} prebuilds into {}", data_dir.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("prebuildd seed: {error}");
                ExitCode::FAILURE
            }
        },
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
    server.wait().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
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
                    reloader.apply(&config);
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
         Development API key: {DEMO_API_KEY}\n\n\
         Try it:\n\
         \x20 grpcurl -plaintext -H 'Authorization: Bearer {DEMO_API_KEY}' \\\n\
         \x20   -d '{{\"projectId\": \"{DEMO_PROJECT_ID}\", \"spec\": {{\"timeout\": \"3600s\"}}}}' \\\n\
         \x20   {addr} gitpod.v1.PrebuildService/CreatePrebuild\n\n\
         \x20 curl http://{addr}/gitpod.v1.PrebuildService/CreatePrebuild \\\n\
         \x20   -H 'Content-Type: application/json' -H 'Authorization: Bearer {DEMO_API_KEY}' \\\n\
         \x20   -d '{{\"projectId\": \"{DEMO_PROJECT_ID}\", \"spec\": {{\"timeout\": \"3600s\"}}}}'\n"
    );
}
