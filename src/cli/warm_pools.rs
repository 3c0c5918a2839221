//! `prebuildd warm-pools ...`: the warm pool methods of PrebuildService,
//! and `claim`, prebuildd's own WarmPoolInstanceService/ClaimInstance.

use super::client::{required, Client, Result};
use super::output::{self, instance_row, warm_pool_row, INSTANCE_HEADERS, WARM_POOL_HEADERS};
use super::Format;
use clap::Subcommand;
use prebuildd::proto::gitpod::v1::*;
use prebuildd::proto::prebuildd::v1::ClaimInstanceRequest;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum Command {
    /// Creates a warm pool for a project and environment class.
    Create {
        #[arg(long, value_name = "ID")]
        project: String,
        #[arg(long, value_name = "ID")]
        environment_class: String,
        /// Fewest running instances (default: the server's).
        #[arg(long, value_name = "N")]
        min: Option<i32>,
        /// Most instances, running and stopped (default: the server's).
        #[arg(long, value_name = "N")]
        max: Option<i32>,
    },
    /// Lists warm pools, every page.
    List {
        /// Only these projects (repeatable).
        #[arg(long, value_name = "ID")]
        project: Vec<String>,
        /// Only these environment classes (repeatable).
        #[arg(long, value_name = "ID")]
        environment_class: Vec<String>,
    },
    /// Shows one warm pool.
    Get { id: String },
    /// Changes a warm pool's sizes.
    Update {
        id: String,
        #[arg(long, value_name = "N")]
        min: Option<i32>,
        #[arg(long, value_name = "N")]
        max: Option<i32>,
    },
    /// Deletes a warm pool (its instances are drained in the background).
    Delete { id: String },
    /// Claims one ready instance of the pool's newest snapshot, waiting for one being made.
    Claim {
        id: String,
        /// How long to wait for an instance when none is ready (`0s`: not at all; default and at most 60s).
        #[arg(long, value_parser = humantime::parse_duration)]
        wait: Option<std::time::Duration>,
    },
}

pub async fn run(mut client: Client, command: Command) -> Result<ExitCode> {
    let format = client.format;
    match command {
        Command::Create { project, environment_class, min, max } => {
            let request = CreateWarmPoolRequest {
                project_id: project,
                environment_class_id: environment_class,
                min_size: min,
                max_size: max,
                ..Default::default()
            };
            print_one(format, &required(client.prebuilds.create_warm_pool(request).await?.into_inner().warm_pool)?);
        }
        Command::List { project, environment_class } => {
            let filter = list_warm_pools_request::Filter { project_ids: project, environment_class_ids: environment_class };
            let all = super::client::all_pages(|pagination| {
                let (mut prebuilds, filter) = (client.prebuilds.clone(), filter.clone());
                async move {
                    let request = ListWarmPoolsRequest { pagination: Some(pagination), filter: Some(filter) };
                    let response = prebuilds.list_warm_pools(request).await?.into_inner();
                    Ok((response.warm_pools, response.pagination.map(|p| p.next_token).unwrap_or_default()))
                }
            })
            .await?;
            match format {
                Format::Json => output::print_json(&all),
                Format::Table => output::print_table(WARM_POOL_HEADERS, &all.iter().map(warm_pool_row).collect::<Vec<_>>()),
            }
        }
        Command::Get { id } => {
            let request = GetWarmPoolRequest { warm_pool_id: id };
            print_one(format, &required(client.prebuilds.get_warm_pool(request).await?.into_inner().warm_pool)?);
        }
        Command::Update { id, min, max } => {
            let request = UpdateWarmPoolRequest { warm_pool_id: id, min_size: min, max_size: max, ..Default::default() };
            print_one(format, &required(client.prebuilds.update_warm_pool(request).await?.into_inner().warm_pool)?);
        }
        Command::Delete { id } => {
            let response = client.prebuilds.delete_warm_pool(DeleteWarmPoolRequest { warm_pool_id: id.clone() }).await?.into_inner();
            match format {
                // The response is `{}`: the pool drains in the background.
                Format::Json => output::print_json(&response),
                Format::Table => output::line(&format!("warm pool {id} is being deleted")),
            }
        }
        Command::Claim { id, wait } => {
            let wait = wait.map(|w| pbjson_types::Duration { seconds: w.as_secs() as i64, nanos: w.subsec_nanos() as i32 });
            let request = ClaimInstanceRequest { warm_pool_id: id, wait };
            let instance = required(client.instances.claim_instance(request).await?.into_inner().instance)?;
            match format {
                Format::Json => output::print_json(&instance),
                Format::Table => output::print_table(INSTANCE_HEADERS, &[instance_row(&instance)]),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One warm pool as a one-row table (with its failure below), or its JSON.
fn print_one(format: Format, pool: &WarmPool) {
    match format {
        Format::Json => output::print_json(pool),
        Format::Table => {
            output::print_table(WARM_POOL_HEADERS, &[warm_pool_row(pool)]);
            let failure = pool.status.as_ref().map(|s| s.failure_message.as_str()).unwrap_or_default();
            if !failure.is_empty() {
                output::line(&format!("failure: {failure}"));
            }
        }
    }
}
