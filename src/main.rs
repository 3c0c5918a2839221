//! The `prebuildd` command line.

use prebuildd::config::{Config, Overrides, DEMO_API_KEY, DEMO_PROJECT_ID};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: prebuildd serve [--config FILE] [--listen ADDR] [--data-dir DIR]

  --config FILE    TOML configuration (without it: the embedded demo configuration)
  --listen ADDR    address to listen on, overriding [server] listen (default 127.0.0.1:8080)
  --data-dir DIR   where prebuildd.db and snapshots live, overriding [storage] data_dir (default ./data)";

struct ServeArgs {
    config: Option<PathBuf>,
    overrides: Overrides,
}

fn parse_args(args: &[String]) -> Result<ServeArgs, String> {
    let mut iter = args.iter();
    match iter.next().map(String::as_str) {
        Some("serve") => {}
        Some("-h") | Some("--help") | Some("help") | None => return Err(String::new()),
        Some(other) => return Err(format!("unknown command {other:?}")),
    }
    let mut parsed = ServeArgs { config: None, overrides: Overrides::default() };
    while let Some(arg) = iter.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_string())),
            None => (arg.as_str(), None),
        };
        let mut value = || inline.clone().or_else(|| iter.next().cloned()).ok_or_else(|| format!("{flag} needs a value"));
        match flag {
            "--config" => parsed.config = Some(PathBuf::from(value()?)),
            "--listen" => parsed.overrides.listen = Some(value()?),
            "--data-dir" => parsed.overrides.data_dir = Some(PathBuf::from(value()?)),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(parsed)
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
    let args = match parse_args(&args) {
        Ok(args) => args,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("prebuildd: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match &args.config {
        Some(path) => match Config::load(path, &args.overrides) {
            Ok(config) => config,
            Err(error) => {
                eprintln!("prebuildd: invalid configuration: {error}");
                return ExitCode::from(2);
            }
        },
        None => Config::demo(&args.overrides),
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("prebuildd: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config, args.config, args.overrides))
}

async fn run(config: Config, config_path: Option<PathBuf>, overrides: Overrides) -> ExitCode {
    let is_demo = config.catalog.is_demo;
    let server = match prebuildd::start(config).await {
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
