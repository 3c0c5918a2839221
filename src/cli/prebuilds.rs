//! `prebuildd prebuilds ...`: one subcommand per PrebuildService method
//! (logs through the logs endpoint), each printing the resource it got.

use super::catalog::Details;
use super::client::{get, required, Client, Result};
use super::output::{self, prebuild_row, print_prebuild, PREBUILD_HEADERS};
use super::Format;
use clap::Subcommand;
use prebuildd::proto::gitpod::v1::*;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Subcommand)]
pub enum Command {
    /// Starts a prebuild of a project.
    Create {
        /// The project to prebuild.
        #[arg(long, value_name = "ID")]
        project: String,
        /// The environment class (default: the project's).
        #[arg(long, value_name = "ID")]
        environment_class: Option<String>,
        /// How long the prebuild may run (`1h`, `90m`; default: the project's).
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        /// Follows it to its end; exits non-zero unless it completed.
        #[arg(long)]
        watch: bool,
    },
    /// Lists prebuilds, every page, newest first.
    List {
        /// Only these projects (repeatable).
        #[arg(long, value_name = "ID")]
        project: Vec<String>,
        /// Only these phases (repeatable): pending, running, completed, failed, ...
        #[arg(long, value_name = "NAME", value_parser = parse_phase)]
        phase: Vec<PrebuildPhase>,
    },
    /// Shows one prebuild.
    Get { id: String },
    /// Cancels a prebuild.
    Cancel { id: String },
    /// Deletes a prebuild (it is removed in the background).
    Delete { id: String },
    /// Prints a prebuild's log: what it holds now, or with --follow until the prebuild ends.
    Logs {
        id: String,
        /// Keeps printing as the log grows, until the prebuild ends.
        #[arg(long, short = 'f')]
        follow: bool,
    },
}

/// `completed`, `COMPLETED` or `PREBUILD_PHASE_COMPLETED`.
fn parse_phase(name: &str) -> std::result::Result<PrebuildPhase, String> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("PREBUILD_PHASE_") { upper } else { format!("PREBUILD_PHASE_{upper}") };
    PrebuildPhase::from_str_name(&full).filter(|p| *p != PrebuildPhase::Unspecified).ok_or_else(|| {
        format!("unknown phase {name:?} (pending, starting, running, stopping, snapshotting, completed, failed, cancelling, cancelled, deleting)")
    })
}

pub async fn run(mut client: Client, command: Command) -> Result<ExitCode> {
    match command {
        Command::Create { project, environment_class, timeout, watch } => {
            let spec = PrebuildSpec {
                timeout: timeout.map(|t| pbjson_types::Duration { seconds: t.as_secs() as i64, nanos: t.subsec_nanos() as i32 }),
                ..Default::default()
            };
            let request = CreatePrebuildRequest { project_id: project, environment_class_id: environment_class, spec: Some(spec) };
            let prebuild = required(client.prebuilds.create_prebuild(request).await?.into_inner().prebuild)?;
            if watch {
                return super::watch::follow(&mut client, prebuild).await;
            }
            let details = Details::fetch(&mut client, std::slice::from_ref(&prebuild.id)).await;
            print_prebuild(client.format, &prebuild, &details);
        }
        Command::List { project, phase } => {
            let filter = list_filter(project, phase);
            let all = super::client::all_pages(|pagination| {
                let (mut prebuilds, filter) = (client.prebuilds.clone(), filter.clone());
                async move {
                    let request = ListPrebuildsRequest { pagination: Some(pagination), filter: Some(filter) };
                    let response = prebuilds.list_prebuilds(request).await?.into_inner();
                    Ok((response.prebuilds, response.pagination.map(|p| p.next_token).unwrap_or_default()))
                }
            })
            .await?;
            match client.format {
                Format::Json => output::print_json(&all),
                Format::Table => {
                    let ids: Vec<String> = all.iter().map(|p| p.id.clone()).collect();
                    let details = Details::fetch(&mut client, &ids).await;
                    output::print_table(PREBUILD_HEADERS, &all.iter().map(|p| prebuild_row(p, &details)).collect::<Vec<_>>())
                }
            }
        }
        Command::Get { id } => {
            let prebuild = get(&mut client, &id).await?;
            let details = Details::fetch(&mut client, std::slice::from_ref(&prebuild.id)).await;
            print_prebuild(client.format, &prebuild, &details);
        }
        Command::Cancel { id } => {
            let request = CancelPrebuildRequest { prebuild_id: id };
            let prebuild = required(client.prebuilds.cancel_prebuild(request).await?.into_inner().prebuild)?;
            let details = Details::fetch(&mut client, std::slice::from_ref(&prebuild.id)).await;
            print_prebuild(client.format, &prebuild, &details);
        }
        Command::Delete { id } => {
            let response = client.prebuilds.delete_prebuild(DeletePrebuildRequest { prebuild_id: id.clone() }).await?.into_inner();
            match client.format {
                // The response is `{}`: deletion happens in the background.
                Format::Json => output::print_json(&response),
                Format::Table => output::line(&format!("prebuild {id} is being deleted")),
            }
        }
        Command::Logs { id, follow } => super::logs::print(&mut client, &id, follow).await?,
    }
    Ok(ExitCode::SUCCESS)
}

fn list_filter(project_ids: Vec<String>, phases: Vec<PrebuildPhase>) -> list_prebuilds_request::Filter {
    list_prebuilds_request::Filter { project_ids, phases: phases.into_iter().map(|p| p as i32).collect(), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_named_as_people_type_them() {
        assert_eq!(parse_phase("completed"), Ok(PrebuildPhase::Completed));
        assert_eq!(parse_phase("FAILED"), Ok(PrebuildPhase::Failed));
        assert_eq!(parse_phase("PREBUILD_PHASE_PENDING"), Ok(PrebuildPhase::Pending));
        assert!(parse_phase("unspecified").is_err());
        assert!(parse_phase("done").is_err());
    }
}
