//! What a starting prebuild builds, and the one-at-a-time rule for
//! prebuilds that pushes start.
//!
//! - **Settling**: a PENDING prebuild that is about to start gets its
//!   commit (and base) settled by `triggers::start` (in a task of its own
//!   for a git repository, so a slow fetch holds up no pass), recorded with a write
//!   guarded by the versions the pass read: a newer commit that collapsed
//!   into it meanwhile bumped its spec version, so the write does not
//!   happen and the next pass settles the newer commit. A prebuild started
//!   again after a restart keeps what was recorded.
//! - **One at a time**: per (project, environment class, branch), a
//!   push's or poll's prebuild waits while another of the same branch is
//!   running (newer commits collapse into the waiting one meanwhile).
//!   Manual and scheduled prebuilds are not held back.

use super::Reconciler;
use crate::catalog::Project;
use crate::domain::phase_of;
use crate::error::Result;
use crate::proto::gitpod::v1::{Prebuild, PrebuildPhase};
use crate::proto::prebuildd::v1::PrebuildSource;
use crate::runner::{JobSource, LogSink};
use crate::store::sources::{versions_of, BranchPrebuild};
use crate::triggers::start::StartPlan;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// The branches whose push prebuilds are waiting their turn: the IDs of
/// pending ones that must not start in this pass.
pub(super) fn held_back(branch_prebuilds: &[BranchPrebuild]) -> HashSet<String> {
    let running: HashSet<(&str, &str, &str)> = branch_prebuilds
        .iter()
        .filter(|p| PrebuildPhase::try_from(p.phase).is_ok_and(|phase| phase.occupies_slot()))
        .map(|p| (p.project_id.as_str(), p.environment_class_id.as_str(), p.branch.as_str()))
        .collect();
    branch_prebuilds
        .iter()
        .filter(|p| PrebuildPhase::try_from(p.phase).is_ok_and(PrebuildPhase::is_pending))
        .filter(|p| running.contains(&(p.project_id.as_str(), p.environment_class_id.as_str(), p.branch.as_str())))
        .map(|p| p.prebuild_id.clone())
        .collect()
}

/// A plan, and the spec and status versions it was made for.
type MadePlan = ((u64, u64), StartPlan);

/// Plans being made in the background, and those made: settling what a
/// git repository's prebuild builds can take a fetch of minutes, which must
/// not hold up a pass (every other object waits for the pass to end).
#[derive(Default)]
pub(super) struct Plans {
    /// Prebuild ID -> the versions the plan was made for, and the plan.
    ready: Mutex<HashMap<String, MadePlan>>,
    making: Mutex<HashSet<String>>,
}

impl Reconciler {
    /// The source a prebuild's job gets, and whether it feeds the
    /// project's warm pools (its snapshot is the class's latest). For a
    /// fresh start it is settled and recorded first; `None` while that is
    /// under way in the background, or when the prebuild changed meanwhile
    /// (a later pass starts it).
    pub(super) async fn job_source(
        &self,
        prebuild: &Prebuild,
        project: &Project,
        fresh: bool,
        log: &LogSink,
    ) -> Result<Option<(JobSource, bool)>> {
        let metadata = prebuild.metadata.clone().unwrap_or_default();
        let recorded = self.store().prebuild_sources(&metadata.organization_id, std::slice::from_ref(&prebuild.id)).await?;
        let recorded = recorded.into_iter().next().unwrap_or_default();
        if !fresh || !phase_of(prebuild).is_pending() {
            return Ok(Some((JobSource::from_source(&recorded), recorded.feeds_warm_pools)));
        }
        let seen = versions_of(prebuild);
        let plan = if crate::git::is_git_repository(&project.repository) {
            let made = crate::sync::lock(&self.plans.ready).remove(&prebuild.id);
            match made {
                Some((versions, plan)) if versions == seen => plan,
                // Made for an older commit (a push joined the queued
                // prebuild since), or not made yet.
                _ => {
                    self.make_plan(prebuild, project, recorded, seen);
                    return Ok(None);
                }
            }
        } else {
            // Nothing to resolve (`sim://`, a plain directory): at once.
            self.service
                .triggers()
                .plan_start(self.store().as_ref(), project, &metadata.environment_class_id, recorded.clone(), self.now())
                .await
        };
        if plan.source != recorded
            && !self.store().record_source(&metadata.organization_id, &prebuild.id, seen, plan.source.clone()).await?
        {
            return Ok(None);
        }
        if !plan.source.commit_sha.is_empty() {
            log.line(&format!("building branch {} at commit {}", plan.source.branch, plan.source.commit_sha)).await;
        }
        for note in &plan.notes {
            log.line(note).await;
        }
        Ok(Some((JobSource::from_source(&plan.source), plan.source.feeds_warm_pools)))
    }

    /// Settles the prebuild's source in a task of its own, unless one is
    /// under way; its end wakes the reconciler.
    fn make_plan(&self, prebuild: &Prebuild, project: &Project, recorded: PrebuildSource, seen: (u64, u64)) {
        if !crate::sync::lock(&self.plans.making).insert(prebuild.id.clone()) {
            return;
        }
        let (service, store, changes) = (self.service.clone(), self.store().clone(), self.changes.clone());
        let (project, prebuild_id) = (project.clone(), prebuild.id.clone());
        let class_id = prebuild.metadata.as_ref().map(|m| m.environment_class_id.clone()).unwrap_or_default();
        let plans = self.plans.clone();
        let now = self.now();
        tokio::spawn(async move {
            let plan = service.triggers().plan_start(store.as_ref(), &project, &class_id, recorded, now).await;
            crate::sync::lock(&plans.ready).insert(prebuild_id.clone(), (seen, plan));
            crate::sync::lock(&plans.making).remove(&prebuild_id);
            changes.notify_one();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn branch(id: &str, branch: &str, phase: PrebuildPhase) -> BranchPrebuild {
        BranchPrebuild {
            prebuild_id: id.into(),
            project_id: "p".into(),
            environment_class_id: "c".into(),
            branch: branch.into(),
            commit_sha: String::new(),
            phase: phase as i32,
        }
    }

    #[test]
    fn a_branch_runs_one_push_prebuild_at_a_time() {
        let held = held_back(&[
            branch("running", "main", PrebuildPhase::Running),
            branch("waiting", "main", PrebuildPhase::Pending),
            branch("other-branch", "dev", PrebuildPhase::Pending),
        ]);
        assert_eq!(held, HashSet::from(["waiting".to_string()]));
        assert!(held_back(&[branch("a", "main", PrebuildPhase::Pending)]).is_empty(), "nothing runs: it may start");
        let cancelling = held_back(&[branch("c", "main", PrebuildPhase::Cancelling), branch("w", "main", PrebuildPhase::Pending)]);
        assert!(cancelling.contains("w"), "a cancelling one still holds its environment");
    }
}
