//! What a prebuild builds, settled when it starts: the exact commit (the
//! push's, or the branch head resolved now), whether its snapshot may feed
//! warm pools, its configuration's fingerprint and, when the project allows
//! incremental prebuilds, the full prebuild it starts from.
//!
//! **The base**: among the project and class's completed full prebuilds,
//! newest first, the first whose commit is an ancestor of the new one at
//! most `max_base_distance` commits back and whose configuration
//! fingerprint is equal. It is then used only if it has had fewer than
//! `full_every - 1` incremental prebuilds and finished within a day;
//! otherwise this prebuild is full. Incremental prebuilds never serve as
//! bases, so they never chain. A Docker Compose configuration's prebuilds
//! are always full (see [`crate::git::uses_compose`]).

use super::Triggers;
use crate::catalog::Project;
use crate::domain::Micros;
use crate::proto::prebuildd::v1::PrebuildSource;
use crate::store::Store;
use std::time::{Duration, SystemTime};

/// How many full prebuilds are considered as bases.
const BASE_CANDIDATES: usize = 20;
/// A base older than this is not used: one full prebuild a day at least.
const MAX_BASE_AGE: Duration = Duration::from_secs(86_400);

/// A settled source and the log lines that explain it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartPlan {
    pub source: PrebuildSource,
    pub notes: Vec<String>,
}

impl Triggers {
    /// Settles `recorded` (what the trigger recorded) for a prebuild of
    /// `project` in `environment_class_id`. Never fails: what cannot be
    /// resolved is left out and said in the notes (the runner then clones
    /// what the repository's default branch holds, as a remote runner that
    /// reaches a repository the server cannot would).
    pub async fn plan_start(
        &self,
        store: &dyn Store,
        project: &Project,
        environment_class_id: &str,
        recorded: PrebuildSource,
        now: SystemTime,
    ) -> StartPlan {
        let mut source = recorded;
        let mut notes = Vec::new();
        if !crate::git::is_git_repository(&project.repository) {
            return StartPlan { source, notes };
        }
        let git = project.prebuilds.git.as_ref();
        let default_branch = match self.default_branch(project).await {
            Ok(branch) => Some(branch),
            Err(error) => {
                notes.push(format!("warning: cannot ask the repository for its default branch: {error}"));
                None
            }
        };
        if source.branch.is_empty() {
            match &default_branch {
                Some(branch) => source.branch = branch.clone(),
                None => return StartPlan { source, notes },
            }
        }
        let pool_branch = git.and_then(|g| g.warm_pool_branch.clone()).or(default_branch);
        source.feeds_warm_pools = pool_branch.as_deref().is_none_or(|b| b == source.branch);
        let mirror = match self.mirrors.fetch(&project.id, &project.repository).await {
            Ok(mirror) => mirror,
            Err(error) => {
                notes.push(format!("warning: {error}; the prebuild is full and its configuration is not fingerprinted"));
                return StartPlan { source, notes };
            }
        };
        if source.commit_sha.is_empty() {
            match mirror.branch_commit(&source.branch).await {
                Ok(Some(sha)) => source.commit_sha = sha,
                Ok(None) => {
                    notes.push(format!("warning: the repository has no branch {}", source.branch));
                    return StartPlan { source, notes };
                }
                Err(error) => {
                    notes.push(format!("warning: cannot resolve branch {}: {error}", source.branch));
                    return StartPlan { source, notes };
                }
            }
        }
        match crate::git::configuration_fingerprint(&mirror, &source.commit_sha, project.devcontainer_path.as_deref(), environment_class_id)
            .await
        {
            Ok(fingerprint) => source.configuration_fingerprint = fingerprint,
            Err(error) => {
                notes.push(format!("warning: cannot fingerprint the configuration: {error}; the prebuild is full"));
                return StartPlan { source, notes };
            }
        }
        source.incremental = false;
        source.base_prebuild_id.clear();
        source.base_commit_sha.clear();
        let Some(git) = git.filter(|g| g.incremental) else { return StartPlan { source, notes } };
        match crate::git::uses_compose(&mirror, &source.commit_sha, project.devcontainer_path.as_deref()).await {
            Ok(false) => {}
            Ok(true) => {
                notes.push("full prebuild: a Docker Compose configuration (dockerComposeFile) is always prebuilt in full".into());
                return StartPlan { source, notes };
            }
            Err(error) => {
                notes.push(format!("warning: cannot read the configuration: {error}; the prebuild is full"));
                return StartPlan { source, notes };
            }
        }
        let candidates = match store.base_candidates(&project.organization_id, &project.id, environment_class_id, BASE_CANDIDATES).await {
            Ok(candidates) => candidates,
            Err(error) => {
                notes.push(format!("warning: cannot look for a base prebuild: {error}; the prebuild is full"));
                return StartPlan { source, notes };
            }
        };
        for candidate in candidates {
            if candidate.fingerprint != source.configuration_fingerprint || candidate.commit_sha == source.commit_sha {
                continue;
            }
            let distance = match mirror.distance(&candidate.commit_sha, &source.commit_sha).await {
                Ok(Some(distance)) if distance <= u64::from(git.max_base_distance) => distance,
                _ => continue,
            };
            let short = &candidate.commit_sha[..candidate.commit_sha.len().min(12)];
            if candidate.incremental_builds + 1 >= git.full_every {
                notes.push(format!(
                    "full prebuild: {} incremental prebuilds came from the newest base, prebuild {} (full_every = {})",
                    candidate.incremental_builds, candidate.prebuild_id, git.full_every
                ));
            } else if candidate.finished_at.is_some_and(|at| at < Micros::before(now, MAX_BASE_AGE)) {
                notes.push(format!("full prebuild: the newest base, prebuild {}, is more than a day old", candidate.prebuild_id));
            } else {
                source.incremental = true;
                source.base_prebuild_id = candidate.prebuild_id.clone();
                source.base_commit_sha = candidate.commit_sha.clone();
                notes.push(format!(
                    "incremental prebuild from prebuild {} (commit {short}, {distance} commit{} back, the same configuration)",
                    candidate.prebuild_id,
                    if distance == 1 { "" } else { "s" }
                ));
            }
            return StartPlan { source, notes };
        }
        notes.push("full prebuild: no earlier full prebuild of an ancestor commit with the same configuration".into());
        StartPlan { source, notes }
    }
}
