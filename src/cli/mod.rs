//! The client half of the binary: `prebuildd prebuilds ...` and
//! `prebuildd warm-pools ...` call a server's API as any user would, over
//! gRPC with a bearer key, and print tables or the resources' proto3 JSON.
//!
//! One concern per file: [`client`] connects and maps errors to their
//! Connect names, [`output`] formats, [`prebuilds`] and [`warm_pools`] are
//! the commands, [`watch`] follows a prebuild, [`logs`] streams its log.

pub mod catalog;
pub mod client;
pub mod logs;
pub mod output;
pub mod prebuilds;
pub mod warm_pools;
pub mod watch;

use clap::{Args, ValueEnum};
use std::process::ExitCode;

/// The client's options, accepted before or after the subcommand (serve,
/// and runner ignore them).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Client options (prebuilds, warm-pools, projects, classes)")]
pub struct Global {
    /// The server's base URL (h2c, as `prebuildd serve` listens).
    #[arg(long, global = true, env = "PREBUILDD_SERVER", default_value = "http://127.0.0.1:8080", value_name = "URL")]
    pub server: String,
    /// The API key, sent as `authorization: Bearer <KEY>`.
    #[arg(long, global = true, env = "PREBUILDD_API_KEY", value_name = "KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Output: aligned columns, or the proto3 JSON of the resource (an array for lists).
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// A client command, whichever resource it is about.
pub enum Request {
    Prebuilds(prebuilds::Command),
    WarmPools(warm_pools::Command),
    Projects(catalog::ProjectsCommand),
    Classes(catalog::ClassesCommand),
}

/// Runs one client command. API errors print as `<connect code>: <message>`
/// on stderr and exit 1, so scripts can match on the code.
pub async fn run(global: Global, request: Request) -> ExitCode {
    let result = match client::Client::connect(&global).await {
        Ok(client) => match request {
            Request::Prebuilds(command) => prebuilds::run(client, command).await,
            Request::WarmPools(command) => warm_pools::run(client, command).await,
            Request::Projects(command) => catalog::run_projects(client, command).await,
            Request::Classes(command) => catalog::run_classes(client, command).await,
        },
        Err(error) => Err(error),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}
