//! The local runner: real prebuilds on this machine, under its own root
//! directory (`<data_dir>/local/<runner id>`: each local runner has its own,
//! so one starting never touches another's work).
//!
//! **Prebuilds.** A prebuild's environment is a workspace directory,
//! `workspaces/<environment id>`. The project's repository is cloned into it
//! (any URL or path `git clone` accepts; a plain directory that is not a git
//! repository is copied), then the prebuild part of the devcontainer
//! lifecycle runs in it (`onCreateCommand`, `updateContentCommand`) on this
//! host, each command in a bubblewrap sandbox that shows it its workspace and
//! hides the server's files (unless the runner is configured without one),
//! in its own process group so that a stop kills it whole, its output
//! appended to the prebuild's log. Its snapshot is a
//! zstd-compressed tar of the workspace, `snapshots/<prebuild id>.tar.zst`;
//! the path depends on the prebuild ID only, so snapshots outlive restarts.
//!
//! **Warm pools.** A pool's instances live in `pools/<warm pool id>/`. A
//! running instance is a workspace extracted from the snapshot,
//! `<instance id>/`, ready to hand out; a stopped one is a reserved slot that
//! costs one small marker file, `<instance id>.stopped`, naming the archive it
//! will be made from (by extraction, into `<instance id>.extracting/` while
//! under way, which is much faster than a prebuild). A claim moves a running
//! instance to `claimed/<instance id>`; from then on it is the claimant's.
//!
//! Jobs and pool instances are tracked in memory (the reconciler restarts
//! lost jobs and re-syncs pools); what a previous run left half-done is
//! swept at start. Heavy file work (copy, archive, extract, delete) runs on
//! blocking threads, never on the async runtime.
//!
//! Files: `job.rs` (the prebuild), `sandbox.rs` (what the commands see),
//! `network.rs` (the sandbox's own network),
//! `snapshot.rs` (archives), `pool.rs` (instances on disk); the pool
//! arithmetic is `runner::pool_plan`.
//!
//! This module knows nothing of the store or the API: it does what the
//! [`Runner`] trait asks and reports what exists.

mod collect;
mod job;
mod network;
mod pool;
mod sandbox;
mod snapshot;

pub use sandbox::SandboxSettings;

use super::job::JobShared;
use super::pool_plan::Pool;
use super::process::{blocking, checked_id, lock, remove_path};
use super::{ClaimedInstance, JobState, PoolObservation, PoolTarget, PrebuildJob, Runner};
use crate::error::{Error, Result};
use async_trait::async_trait;
use pool::{delete_instances, instance_paths};
use sandbox::Sandbox;
use snapshot::partial_path;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub struct LocalRunner {
    /// The runner's own directory, canonical (so that copying a project
    /// directory that holds the data dir can recognise and skip it).
    root: PathBuf,
    jobs: Mutex<HashMap<String, Job>>,
    /// Shared with the blocking threads that finish extractions.
    pools: Arc<Mutex<HashMap<String, Pool>>>,
    /// How lifecycle commands run; shared with the jobs.
    sandbox: Arc<Sandbox>,
    /// Told when a job changes phase or a warm instance is ready.
    events: super::RunnerEvents,
}

impl std::fmt::Debug for LocalRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRunner").field("root", &self.root).finish_non_exhaustive()
    }
}

/// One prebuild job: its environment, its state, and the task doing it.
struct Job {
    environment_id: String,
    shared: Arc<JobShared>,
    task: tokio::task::JoinHandle<()>,
}

fn internal(context: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Internal(format!("local runner: {context}: {e}"))
}

/// Removes what a previous run of this runner left half-done: workspaces,
/// pool instances (in-memory state that is gone) and partial snapshots.
/// Finished snapshots and claimed instances stay.
fn sweep_leftovers(root: &Path) {
    let mut leftovers = Vec::new();
    for dir in ["workspaces", "pools"] {
        leftovers.extend(std::fs::read_dir(root.join(dir)).into_iter().flatten().flatten().map(|e| e.path()));
    }
    let snapshots = std::fs::read_dir(root.join("snapshots")).into_iter().flatten().flatten().map(|e| e.path());
    leftovers.extend(snapshots.filter(|p| p.extension().is_some_and(|e| e == "partial")));
    for path in leftovers {
        if let Err(error) = remove_path(&path) {
            tracing::warn!(path = %path.display(), %error, "local runner: cannot remove a leftover of a previous run");
        }
    }
}

impl LocalRunner {
    /// A runner rooted at `root` (created if needed; the registry passes
    /// `<data_dir>/local/<runner id>`), after sweeping what a previous run
    /// left half-done there, whose lifecycle commands run as `sandbox`
    /// says. Whether the sandbox works is checked in the background at once
    /// (when there is a runtime) and awaited by the first prebuild.
    pub fn new(root: &Path, sandbox: SandboxSettings, events: super::RunnerEvents) -> Result<LocalRunner> {
        for dir in ["workspaces", "snapshots", "pools", "claimed"] {
            let path = root.join(dir);
            std::fs::create_dir_all(&path).map_err(internal(format!("cannot create {}", path.display())))?;
        }
        let root = root.canonicalize().map_err(internal(format!("cannot resolve {}", root.display())))?;
        sweep_leftovers(&root);
        let sandbox = Arc::new(Sandbox::new(sandbox, &root));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let early = sandbox.clone();
            // The answer is logged once, at start, where an operator looks.
            runtime.spawn(async move { early.check().await });
        }
        Ok(LocalRunner { root, jobs: Mutex::default(), pools: Arc::default(), sandbox, events })
    }

    /// Where a prebuild's snapshot archive is. It depends on the prebuild ID
    /// alone, so a runner started later on the same root finds the
    /// snapshots of an earlier one.
    pub fn snapshot_path(&self, prebuild_id: &str) -> PathBuf {
        self.root.join("snapshots").join(format!("{prebuild_id}.tar.zst"))
    }

    fn workspace(&self, environment_id: &str) -> PathBuf {
        self.root.join("workspaces").join(environment_id)
    }

    fn pool_dir(&self, warm_pool_id: &str) -> PathBuf {
        self.root.join("pools").join(warm_pool_id)
    }
}

impl Drop for LocalRunner {
    /// A runner going away (shutdown, a test's end) leaves no processes
    /// behind; the reconciler starts lost jobs again on the next run.
    fn drop(&mut self) {
        for job in lock(&self.jobs).values() {
            job.shared.processes.kill_all();
            job.task.abort();
        }
    }
}

#[async_trait]
impl Runner for LocalRunner {
    async fn start(&self, job: PrebuildJob) -> Result<()> {
        checked_id("prebuild ID", &job.prebuild_id)?;
        checked_id("environment ID", &job.environment_id)?;
        let mut jobs = lock(&self.jobs);
        if jobs.contains_key(&job.prebuild_id) {
            return Ok(());
        }
        let shared = Arc::new(JobShared::reporting_to(self.events.clone()));
        let (workspace, snapshot) = (self.workspace(&job.environment_id), self.snapshot_path(&job.prebuild_id));
        let (prebuild_id, environment_id) = (job.prebuild_id.clone(), job.environment_id.clone());
        let task = tokio::spawn(job::run_job(shared.clone(), job, workspace, snapshot, self.root.clone(), self.sandbox.clone()));
        jobs.insert(prebuild_id, Job { environment_id, shared, task });
        Ok(())
    }

    async fn observe(&self, prebuild_id: &str) -> Option<JobState> {
        let jobs = lock(&self.jobs);
        Some(jobs.get(prebuild_id)?.shared.observed())
    }

    async fn stop(&self, prebuild_id: &str) -> Result<()> {
        let jobs = lock(&self.jobs);
        if let Some(job) = jobs.get(prebuild_id) {
            if job.shared.stop() {
                job.task.abort();
            }
        }
        Ok(())
    }

    async fn remove(&self, prebuild_id: &str) -> Result<()> {
        self.stop(prebuild_id).await?;
        let job = lock(&self.jobs).remove(prebuild_id);
        let workspace = job.map(|job| self.workspace(&job.environment_id));
        let snapshot = self.snapshot_path(checked_id("prebuild ID", prebuild_id)?);
        blocking(move || {
            if let Some(workspace) = workspace {
                remove_path(&workspace).map_err(internal(format!("cannot remove {}", workspace.display())))?;
                let home = sandbox::home_of(&workspace);
                remove_path(&home).map_err(internal(format!("cannot remove {}", home.display())))?;
            }
            remove_path(&snapshot).map_err(internal(format!("cannot remove {}", snapshot.display())))?;
            remove_path(&partial_path(&snapshot)).map_err(internal("cannot remove a partial snapshot"))
        })
        .await?
    }

    async fn sync_pool(&self, target: PoolTarget) -> Result<PoolObservation> {
        let warm_pool_id = checked_id("warm pool ID", &target.warm_pool_id)?.to_string();
        if let Some(snapshot_id) = &target.snapshot_id {
            checked_id("snapshot ID", snapshot_id)?;
        }
        let missing_archive = self.missing_archive(target.snapshot_id.as_deref()).await;
        let plan = {
            let mut pools = lock(&self.pools);
            let pool = pools.entry(warm_pool_id.clone()).or_default();
            let plan = pool.plan(&target, missing_archive.is_none(), || uuid::Uuid::now_v7().to_string());
            pool.extracting += plan.extractions.len();
            plan
        };
        self.write_pool_markers(&warm_pool_id, plan.markers).await?;
        if !plan.discarded.is_empty() {
            let (pool_dir, discarded) = (self.pool_dir(&warm_pool_id), plan.discarded);
            // In the background: deleting a workspace can take a while.
            tokio::task::spawn_blocking(move || delete_instances(&pool_dir, &discarded));
        }
        for instance in plan.extractions {
            self.spawn_extraction(&warm_pool_id, instance);
        }
        let pools = lock(&self.pools);
        Ok(pools.get(&warm_pool_id).map(|pool| pool.observe(missing_archive)).unwrap_or_default())
    }

    async fn claim_instance(&self, warm_pool_id: &str) -> Result<Option<ClaimedInstance>> {
        checked_id("warm pool ID", warm_pool_id)?;
        let Some(instance) = lock(&self.pools).get_mut(warm_pool_id).and_then(Pool::take_for_claim) else {
            return Ok(None);
        };
        let from = instance_paths(&self.pool_dir(warm_pool_id), &instance.id).dir;
        let claimed = self.root.join("claimed").join(&instance.id);
        let to = claimed.clone();
        blocking(move || std::fs::rename(&from, &to)).await?.map_err(internal(format!("cannot hand out warm instance {}", instance.id)))?;
        Ok(Some(ClaimedInstance {
            instance_id: instance.id,
            snapshot_id: instance.snapshot_id,
            workspace_path: claimed.display().to_string(),
            ..Default::default()
        }))
    }

    async fn remove_pool(&self, warm_pool_id: &str) -> Result<bool> {
        checked_id("warm pool ID", warm_pool_id)?;
        let busy = match lock(&self.pools).get_mut(warm_pool_id) {
            Some(pool) => {
                pool.instances.clear();
                pool.snapshot_id = None;
                pool.extraction_failure = None;
                pool.extracting > 0
            }
            None => false,
        };
        let dir = self.pool_dir(warm_pool_id);
        let removed = blocking(move || remove_path(&dir).map_err(internal(format!("cannot remove {}", dir.display())))).await?;
        if busy {
            // Extractions still under way delete their own files when they
            // end; a later call finishes the removal.
            return Ok(false);
        }
        removed?;
        let mut pools = lock(&self.pools);
        if pools.get(warm_pool_id).is_some_and(|pool| pool.extracting > 0 || !pool.instances.is_empty()) {
            return Ok(false);
        }
        pools.remove(warm_pool_id);
        Ok(true)
    }

    async fn snapshots(&self) -> Result<Vec<super::HeldSnapshot>> {
        self.held_snapshots().await
    }

    async fn collect_garbage(&self, gone: &[String]) -> Result<()> {
        self.collect(gone).await
    }
}
