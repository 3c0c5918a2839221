//! `prebuildd projects list` and `prebuildd classes list` (the
//! `prebuildd.v1.CatalogService`), and the names and sources the prebuild
//! tables show beside each prebuild, fetched once per command.

use super::client::{Client, Result};
use super::output::{self, print_json, print_table};
use super::Format;
use clap::Subcommand;
use prebuildd::proto::prebuildd::v1::{
    ListEnvironmentClassesRequest, ListPrebuildSourcesRequest, ListProjectsRequest, PrebuildSource, SourceTrigger,
};
use std::collections::HashMap;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ProjectsCommand {
    /// Lists the organization's projects: name, ID, repository, tracked branches, last built commit.
    List,
}

#[derive(Subcommand)]
pub enum ClassesCommand {
    /// Lists the environment classes the organization's projects use: name, ID, runner.
    List,
}

pub async fn run_projects(mut client: Client, command: ProjectsCommand) -> Result<ExitCode> {
    let ProjectsCommand::List = command;
    let response = client.catalog.list_projects(ListProjectsRequest {}).await?.into_inner();
    match client.format {
        Format::Json => print_json(&response.projects),
        Format::Table => {
            let rows: Vec<Vec<String>> = response
                .projects
                .iter()
                .map(|project| {
                    let branches = if project.tracked_branches.is_empty() {
                        if project.follows_repository {
                            "(default)".to_string()
                        } else {
                            "-".to_string()
                        }
                    } else {
                        project.tracked_branches.join(",")
                    };
                    let last = project
                        .last_built
                        .as_ref()
                        .map_or("-".to_string(), |last| format!("{} {}", last.branch, short_sha(&last.commit_sha)));
                    vec![project.name.clone(), project.id.clone(), project.repository.clone(), branches, last]
                })
                .collect();
            print_table(&["NAME", "ID", "REPOSITORY", "BRANCHES", "LAST BUILT"], &rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_classes(mut client: Client, command: ClassesCommand) -> Result<ExitCode> {
    let ClassesCommand::List = command;
    let response = client.catalog.list_environment_classes(ListEnvironmentClassesRequest {}).await?.into_inner();
    match client.format {
        Format::Json => print_json(&response.environment_classes),
        Format::Table => {
            let rows: Vec<Vec<String>> = response
                .environment_classes
                .iter()
                .map(|class| vec![class.name.clone(), class.id.clone(), class.runner_kind.clone(), class.runner_id.clone()])
                .collect();
            print_table(&["NAME", "ID", "RUNNER", "RUNNER ID"], &rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The first 12 digits of a commit ID, as people quote them.
pub fn short_sha(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// What the prebuild tables show beside the official resource: project and
/// class names, and each prebuild's source. A server without the extension
/// services (or a call that fails) leaves them out; the IDs are shown then.
#[derive(Debug, Default)]
pub struct Details {
    projects: HashMap<String, String>,
    classes: HashMap<String, String>,
    sources: HashMap<String, PrebuildSource>,
}

impl Details {
    pub async fn fetch(client: &mut Client, prebuild_ids: &[String]) -> Details {
        let mut details = Details::default();
        if let Ok(response) = client.catalog.list_projects(ListProjectsRequest {}).await {
            details.projects = response.into_inner().projects.into_iter().map(|p| (p.id, p.name)).collect();
        }
        if let Ok(response) = client.catalog.list_environment_classes(ListEnvironmentClassesRequest {}).await {
            details.classes = response.into_inner().environment_classes.into_iter().map(|c| (c.id, c.name)).collect();
        }
        for chunk in prebuild_ids.chunks(100) {
            if let Ok(response) = client.sources.list_prebuild_sources(ListPrebuildSourcesRequest { prebuild_ids: chunk.to_vec() }).await {
                details.sources.extend(response.into_inner().sources.into_iter().map(|s| (s.prebuild_id.clone(), s)));
            }
        }
        details
    }

    pub fn project(&self, id: &str) -> String {
        self.projects.get(id).cloned().unwrap_or_else(|| id.to_string())
    }

    pub fn class(&self, id: &str) -> String {
        self.classes.get(id).cloned().unwrap_or_else(|| id.to_string())
    }

    pub fn source(&self, prebuild_id: &str) -> Option<&PrebuildSource> {
        self.sources.get(prebuild_id)
    }
}

/// The trigger as the table shows it: `api`, `schedule`, `push`, `poll`,
/// with `+inc` for an incremental prebuild.
pub fn trigger_name(source: &PrebuildSource) -> String {
    let name = match SourceTrigger::try_from(source.trigger).unwrap_or(SourceTrigger::Unspecified) {
        SourceTrigger::Api => "api",
        SourceTrigger::Schedule => "schedule",
        SourceTrigger::PushWebhook => "push",
        SourceTrigger::Poll => "poll",
        SourceTrigger::Unspecified => "-",
    };
    if source.incremental {
        format!("{name}+inc")
    } else {
        name.to_string()
    }
}

/// The lines under a single prebuild's row: its commit, trigger and base.
pub fn print_source(source: &PrebuildSource) {
    if !source.commit_sha.is_empty() {
        output::line(&format!("commit: {} (branch {})", source.commit_sha, source.branch));
    }
    let trigger = match SourceTrigger::try_from(source.trigger).unwrap_or(SourceTrigger::Unspecified) {
        SourceTrigger::PushWebhook => format!("a push webhook ({})", source.provider),
        SourceTrigger::Poll => "a new commit found by polling".to_string(),
        SourceTrigger::Schedule => "the daily schedule".to_string(),
        SourceTrigger::Api => "an API call".to_string(),
        SourceTrigger::Unspecified => "-".to_string(),
    };
    output::line(&format!("triggered by: {trigger}"));
    if source.incremental {
        output::line(&format!(
            "incremental: from prebuild {} (commit {}); only updateContentCommand ran",
            source.base_prebuild_id,
            short_sha(&source.base_commit_sha)
        ));
    }
    if !source.snapshot_image.is_empty() {
        output::line(&format!("snapshot image: {}", source.snapshot_image));
    }
}
