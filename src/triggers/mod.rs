//! Prebuilds that follow the repository. A push (a provider's webhook, see
//! `webhook/`, or a new head found by polling, see `poll.rs`) becomes a
//! [`Push`]; [`Triggers::push`] decides whether it starts anything (the
//! project follows its repository, the branch is tracked, a tracked path
//! changed) and queues one prebuild per environment class, collapsing
//! bursts per branch in the store (see `store::sources`). When a prebuild
//! starts, `start.rs` settles exactly what it builds: the commit, and for an
//! incremental prebuild the full one it starts from.
//!
//! Nothing here runs a prebuild: the reconciler does, woken by the queue's
//! writes; the one-prebuild-at-a-time rule per (project, class, branch) is
//! the reconciler's.

pub mod glob;
pub mod poll;
pub mod start;
pub mod webhook;

use crate::catalog::{GitSettings, Project};
use crate::clock::timestamp;
use crate::domain::{phase_of, Micros};
use crate::error::{Error, Result};
use crate::git::Mirrors;
use crate::proto::gitpod::v1::prebuild_metadata::PrebuildTrigger;
use crate::proto::gitpod::v1::PrebuildPhase;
use crate::proto::prebuildd::v1::{PrebuildSource, SourceTrigger};
use crate::service::{new_prebuild, NewPrebuild, Service};
use crate::store::sources::{Enqueued, PushBatch, PushOutcome};
use crate::store::Change;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a repository's default branch is believed before it is asked
/// again (it rarely changes; a webhook should not cost a round trip each).
const DEFAULT_BRANCH_TTL: Duration = Duration::from_secs(300);

/// A new commit on a branch, from a webhook or a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub project_id: String,
    pub branch: String,
    pub commit_sha: String,
    /// The branch's previous commit, when the provider or the poller knows
    /// it (all zeros for a new branch): the path filter compares with it.
    pub before_sha: Option<String>,
    pub trigger: SourceTrigger,
    /// `github`, `gitlab`, `gitea`, `bitbucket`; empty for polls.
    pub provider: String,
    /// `provider:project:delivery id`, recorded so a redelivery is ignored.
    pub delivery: Option<String>,
}

/// What became of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushResult {
    /// The delivery was handled before; nothing new happened.
    Replayed,
    /// Nothing starts, and why (an untracked branch, no tracked path changed).
    Ignored(String),
    /// Queued (or joined a queued prebuild, or was built already): per class.
    Queued(Vec<Enqueued>),
}

/// The triggers' state: the repositories' mirrors, their default branches,
/// and the pollers' schedule.
#[derive(Debug)]
pub struct Triggers {
    mirrors: Mirrors,
    default_branches: Mutex<HashMap<String, (String, Instant)>>,
    polls: poll::PollState,
}

impl Triggers {
    pub fn new(data_dir: &Path) -> Triggers {
        Triggers { mirrors: Mirrors::new(data_dir), default_branches: Mutex::default(), polls: poll::PollState::default() }
    }

    pub fn mirrors(&self) -> &Mirrors {
        &self.mirrors
    }

    /// The project repository's default branch (asked with `git ls-remote`
    /// at most every few minutes).
    pub async fn default_branch(&self, project: &Project) -> Result<String> {
        if let Some((branch, at)) = crate::sync::lock(&self.default_branches).get(&project.id) {
            if at.elapsed() < DEFAULT_BRANCH_TTL {
                return Ok(branch.clone());
            }
        }
        let heads = crate::git::ls_remote(&project.repository).await.map_err(|e| Error::Unavailable(e.0))?;
        let branch = heads.default_branch.ok_or_else(|| {
            Error::Unavailable(format!("the repository {} names no default branch (HEAD)", crate::git::redact(&project.repository)))
        })?;
        self.remember_default_branch(&project.id, &branch);
        Ok(branch)
    }

    fn remember_default_branch(&self, project_id: &str, branch: &str) {
        crate::sync::lock(&self.default_branches).insert(project_id.to_string(), (branch.to_string(), Instant::now()));
    }

    /// Acts on a push: see the module documentation. Every write is one
    /// store transaction (the queued prebuilds with the delivery).
    pub async fn push(&self, service: &Service, push: Push) -> Result<PushResult> {
        let catalog = service.catalog();
        let project =
            catalog.projects.get(&push.project_id).ok_or_else(|| Error::NotFound(format!("project {} not found", push.project_id)))?;
        let now = service.clock().now();
        let delivery = push.delivery.clone();
        let record_only = |reason: String| async move {
            let batch = PushBatch { delivery, received_at: Micros::from_system_time(now), prebuilds: Vec::new() };
            Ok::<_, Error>(match service.store().enqueue_push(batch).await? {
                PushOutcome::Replayed => PushResult::Replayed,
                PushOutcome::Enqueued(_) => PushResult::Ignored(reason),
            })
        };
        let settings = &project.prebuilds;
        let (Some(git), Some(executor)) = (settings.git.as_ref(), settings.executor.as_ref()) else {
            return record_only(format!("project {} does not follow its repository ([projects.prebuilds.git])", project.name)).await;
        };
        if !settings.enabled {
            return record_only(format!("prebuilds are not enabled on project {}", project.name)).await;
        }
        let default_branch = if git.branches.is_empty() { Some(self.default_branch(project).await?) } else { None };
        if !git.tracks(&push.branch, default_branch.as_deref()) {
            return record_only(format!("branch {} is not tracked by project {}", push.branch, project.name)).await;
        }
        if let Some(reason) = self.filtered_out(project, git, &push).await? {
            return record_only(reason).await;
        }
        let prebuilds = settings
            .environment_class_ids
            .iter()
            .map(|class_id| {
                let prebuild = new_prebuild(NewPrebuild {
                    organization_id: project.organization_id.clone(),
                    project_id: project.id.clone(),
                    environment_class_id: class_id.clone(),
                    creator: executor.clone(),
                    executor: executor.clone(),
                    // The official enum has no git trigger: a push's prebuild
                    // is the system's, like a scheduled one.
                    triggered_by: PrebuildTrigger::Scheduled,
                    timeout: settings.timeout,
                    public_url: service.public_url().to_string(),
                    now: timestamp(now),
                });
                let source = PrebuildSource {
                    trigger: push.trigger as i32,
                    provider: push.provider.clone(),
                    branch: push.branch.clone(),
                    commit_sha: push.commit_sha.clone(),
                    feeds_warm_pools: true,
                    ..Default::default()
                };
                (prebuild, source)
            })
            .collect();
        let batch = PushBatch { delivery: push.delivery.clone(), received_at: Micros::from_system_time(now), prebuilds };
        let enqueued = match service.store().enqueue_push(batch).await? {
            PushOutcome::Replayed => return Ok(PushResult::Replayed),
            PushOutcome::Enqueued(enqueued) => enqueued,
        };
        for outcome in &enqueued {
            tracing::info!(project = %project.id, branch = %push.branch, commit = %push.commit_sha, ?outcome, "push");
        }
        if git.cancel_superseded {
            self.cancel_superseded(service, project, &push).await?;
        }
        service.changes().notify_one();
        Ok(PushResult::Queued(enqueued))
    }

    /// With a path filter: `Some(reason)` when the push changed none of the
    /// tracked paths (nor the dev container configuration, which always
    /// counts). Without a known previous commit, everything counts.
    async fn filtered_out(&self, project: &Project, git: &GitSettings, push: &Push) -> Result<Option<String>> {
        let Some(paths) = &git.paths else { return Ok(None) };
        let Some(before) = push.before_sha.as_deref().filter(|sha| crate::git::is_sha(sha) && !crate::git::is_zero_sha(sha)) else {
            return Ok(None);
        };
        let mirror = self.mirrors.fetch(&project.id, &project.repository).await.map_err(|e| Error::Unavailable(e.0))?;
        if !mirror.has_commit(before).await.map_err(|e| Error::Unavailable(e.0))? {
            return Ok(None);
        }
        let changed = mirror.changed_paths(before, &push.commit_sha).await.map_err(|e| Error::Unavailable(e.0))?;
        let counts = |path: &String| {
            is_configuration_path(path, project.devcontainer_path.as_deref()) || paths.iter().any(|glob| glob.matches(path))
        };
        if changed.iter().any(counts) {
            return Ok(None);
        }
        Ok(Some(format!(
            "the push changed none of the tracked paths ({})",
            paths.iter().map(|glob| glob.as_str()).collect::<Vec<_>>().join(", ")
        )))
    }

    /// Cancels the running prebuilds of the push's branch that build an
    /// older commit (`cancel_superseded`); the newest is queued already.
    async fn cancel_superseded(&self, service: &Service, project: &Project, push: &Push) -> Result<()> {
        let active = service.store().active_branch_prebuilds().await?;
        let now = timestamp(service.clock().now());
        for running in active.into_iter().filter(|p| {
            p.project_id == project.id
                && p.branch == push.branch
                && p.commit_sha != push.commit_sha
                && PrebuildPhase::try_from(p.phase).is_ok_and(PrebuildPhase::is_running)
        }) {
            service
                .store()
                .update_prebuild(
                    &project.organization_id,
                    &running.prebuild_id,
                    Box::new(move |prebuild| {
                        if !phase_of(prebuild).is_running() {
                            return Ok(Change::Unchanged);
                        }
                        let spec = prebuild.spec.get_or_insert_with(Default::default);
                        spec.spec_version += 1;
                        spec.desired_phase = PrebuildPhase::Cancelled as i32;
                        let status = prebuild.status.get_or_insert_with(Default::default);
                        status.status_version += 1;
                        status.phase = PrebuildPhase::Cancelling as i32;
                        if let Some(metadata) = prebuild.metadata.as_mut() {
                            metadata.updated_at = Some(now);
                        }
                        Ok(Change::Changed)
                    }),
                )
                .await?;
            tracing::info!(prebuild = %running.prebuild_id, "cancelled: a newer commit of its branch arrived (cancel_superseded)");
        }
        Ok(())
    }
}

/// Whether a path is part of the dev container configuration (a change to
/// it always counts, whatever the path filter says).
pub fn is_configuration_path(path: &str, devcontainer_path: Option<&str>) -> bool {
    if path == ".devcontainer.json" || path.starts_with(".devcontainer/") {
        return true;
    }
    match devcontainer_path {
        Some(chosen) => {
            let folder = chosen.rsplit_once('/').map_or("", |(dir, _)| dir);
            path == chosen || (!folder.is_empty() && path.starts_with(&format!("{folder}/")))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::is_configuration_path;

    #[test]
    fn the_configuration_always_counts() {
        assert!(is_configuration_path(".devcontainer/Dockerfile", None));
        assert!(is_configuration_path(".devcontainer.json", None));
        assert!(!is_configuration_path("src/.devcontainer/x", None));
        assert!(is_configuration_path("tools/dev/devcontainer.json", Some("tools/dev/devcontainer.json")));
        assert!(is_configuration_path("tools/dev/Dockerfile", Some("tools/dev/devcontainer.json")));
        assert!(!is_configuration_path("tools/other", Some("tools/dev/devcontainer.json")));
    }
}
