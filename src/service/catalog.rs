//! `prebuildd.v1.CatalogService`: the caller's projects and environment
//! classes by name, read from the configuration (and, for each project,
//! the newest commit a prebuild completed), and the runners of those
//! classes with their fleets' members. Read-only; our own extension.

use super::Service;
use crate::auth::Caller;
use crate::catalog::RunnerKind;
use crate::error::Result;
use crate::proto::prebuildd::v1::{
    CatalogEnvironmentClass, CatalogProject, CatalogRunner, LastBuilt, ListEnvironmentClassesRequest, ListEnvironmentClassesResponse,
    ListProjectsRequest, ListProjectsResponse, ListRunnersRequest, ListRunnersResponse, RunnerMember,
};
use std::collections::BTreeSet;

fn kind_name(kind: RunnerKind) -> &'static str {
    match kind {
        RunnerKind::Simulated => "simulated",
        RunnerKind::Local => "local",
        RunnerKind::Docker => "docker",
        RunnerKind::Remote => "remote",
    }
}

impl Service {
    /// The organization's projects, by name.
    pub async fn list_projects(&self, caller: &Caller, _request: ListProjectsRequest) -> Result<ListProjectsResponse> {
        let catalog = self.catalog();
        let mut projects = Vec::new();
        for project in catalog.projects.values().filter(|p| p.organization_id == caller.organization_id) {
            let git = project.prebuilds.git.as_ref();
            let last_built = self.store.last_built(&caller.organization_id, &project.id).await?.map(|source| LastBuilt {
                prebuild_id: source.prebuild_id,
                branch: source.branch,
                commit_sha: source.commit_sha,
            });
            projects.push(CatalogProject {
                id: project.id.clone(),
                name: project.name.clone(),
                repository: crate::git::redact(&project.repository),
                prebuilds_enabled: project.prebuilds.enabled,
                environment_class_ids: project.prebuilds.environment_class_ids.clone(),
                default_environment_class_id: project.default_environment_class_id.clone().unwrap_or_default(),
                tracked_branches: git.map(|g| g.branches.iter().map(|b| b.as_str().to_string()).collect()).unwrap_or_default(),
                follows_repository: git.is_some_and(|g| g.webhook_secret.is_some() || g.poll_interval.is_some()),
                polled: git.is_some_and(|g| g.poll_interval.is_some()),
                last_built,
            });
        }
        projects.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        Ok(ListProjectsResponse { projects })
    }

    /// The runners of the classes the organization's projects use, with
    /// the members of remote ones.
    pub async fn list_runners(&self, caller: &Caller, _request: ListRunnersRequest) -> Result<ListRunnersResponse> {
        let classes = self.list_environment_classes(caller, ListEnvironmentClassesRequest {}).await?;
        let ids: BTreeSet<String> = classes.environment_classes.into_iter().map(|class| class.runner_id).collect();
        let catalog = self.catalog();
        let runners = ids
            .into_iter()
            .filter_map(|id| catalog.runners.get(&id))
            .map(|runner| {
                let members = match self.runners().remote(&runner.id) {
                    Some(remote) if self.runners().leads() => remote
                        .members()
                        .into_iter()
                        .map(|member| RunnerMember {
                            name: member.name,
                            connected: member.connected,
                            gone: member.gone,
                            since: Some(crate::clock::timestamp(member.since)),
                            engine: member.engine,
                            version: member.version,
                            prebuilds: member.prebuilds,
                            slots: member.slots,
                            running_instances: member.running_instances,
                            stopped_instances: member.stopped_instances,
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                CatalogRunner {
                    id: runner.id.clone(),
                    kind: kind_name(runner.kind).to_string(),
                    max_concurrent_prebuilds: runner.max_concurrent_prebuilds,
                    members,
                }
            })
            .collect();
        Ok(ListRunnersResponse { runners })
    }

    /// The environment classes the organization's projects use, by name.
    pub async fn list_environment_classes(
        &self,
        caller: &Caller,
        _request: ListEnvironmentClassesRequest,
    ) -> Result<ListEnvironmentClassesResponse> {
        let catalog = self.catalog();
        let used: BTreeSet<&String> = catalog
            .projects
            .values()
            .filter(|p| p.organization_id == caller.organization_id)
            .flat_map(|p| p.prebuilds.environment_class_ids.iter().chain(p.default_environment_class_id.iter()))
            .collect();
        let mut environment_classes: Vec<CatalogEnvironmentClass> = used
            .into_iter()
            .filter_map(|id| catalog.environment_classes.get(id))
            .map(|class| CatalogEnvironmentClass {
                id: class.id.clone(),
                name: class.name.clone(),
                runner_id: class.runner_id.clone(),
                runner_kind: catalog.runners.get(&class.runner_id).map(|r| kind_name(r.kind)).unwrap_or_default().to_string(),
            })
            .collect();
        environment_classes.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        Ok(ListEnvironmentClassesResponse { environment_classes })
    }
}
