//! Runners: where prebuilds and warm pool instances actually live.
//!
//! The reconciler drives a runner through this trait and never assumes more
//! than it says: a runner works on its own once a job is started (as a
//! remote machine would), and the reconciler observes it, level-triggered.
//! Every call is idempotent, so a pass that runs twice does no harm.
//!
//! Implementations: `simulated` (tests and demos), `local` (a real prebuild
//! on this machine, sandboxed), `docker` (the project's dev container) and
//! `remote` (any of those on another machine, through `prebuildd runner`).

pub mod devcontainer;
pub mod docker;
mod egress;
mod events;
mod job;
pub mod local;
mod pool_plan;
mod process;
pub mod remote;
pub mod simulated;
mod workspace;

use crate::error::Result;
use async_trait::async_trait;
use std::path::PathBuf;

pub use crate::logs::LogSink;
pub use events::RunnerEvents;
pub(crate) use process::checked_id;
pub(crate) use workspace::is_git_repository;

/// What a runner needs to run one prebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrebuildJob {
    pub prebuild_id: String,
    /// The environment the prebuild runs in (chosen by the reconciler).
    pub environment_id: String,
    pub project_id: String,
    pub environment_class_id: String,
    /// The project's repository: a git URL or directory, or `sim://...` for
    /// the simulated runner.
    pub repository: String,
    /// What the environment class allows the prebuild to use.
    pub resources: crate::catalog::Resources,
    /// What the environment class allows the dev container to be granted.
    pub policy: crate::catalog::ClassPolicy,
    /// The project's choice of devcontainer.json (relative to the
    /// repository root); `None`: the spec's lookup order.
    pub devcontainer_path: Option<String>,
    /// What to build: the commit, and the base of an incremental prebuild.
    pub source: JobSource,
    /// The prebuild builds the branch the project's warm pools follow (its
    /// default branch): a runner that pushes snapshots to a registry also
    /// tags this one as its class's latest when it completes.
    pub tag_latest: bool,
    /// Where the job's log lines go.
    pub log: LogSink,
}

/// What a prebuild builds, as the reconciler settled it when it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobSource {
    /// The branch the commit is on (for the log and a shallow fetch).
    pub branch: Option<String>,
    /// The exact commit to check out; `None`: whatever the clone gets (a
    /// plain directory, `sim://`, or a repository the server cannot read).
    pub commit: Option<String>,
    /// An incremental prebuild's base: update its snapshot to `commit`
    /// and run only `updateContentCommand`.
    pub base: Option<JobBase>,
}

/// The full prebuild an incremental one starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobBase {
    pub prebuild_id: String,
    pub commit: String,
    /// Its snapshot in a registry, by digest, when it was pushed: a runner
    /// that lacks the base (another member of a fleet) pulls it.
    pub image: Option<String>,
}

impl JobSource {
    /// The source a stored one describes.
    pub fn from_source(source: &crate::proto::prebuildd::v1::PrebuildSource) -> JobSource {
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        JobSource {
            branch: nonempty(&source.branch),
            commit: nonempty(&source.commit_sha),
            base: (source.incremental && !source.base_prebuild_id.is_empty() && !source.base_commit_sha.is_empty()).then(|| JobBase {
                prebuild_id: source.base_prebuild_id.clone(),
                commit: source.base_commit_sha.clone(),
                image: None,
            }),
        }
    }
}

/// What a runner reports about a prebuild job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// The environment is being created (clone, copy).
    Starting,
    /// The prebuild lifecycle commands run.
    Running,
    /// The environment is being stopped before its snapshot.
    Stopping,
    /// The snapshot is being written.
    Snapshotting { percent: i32 },
    /// Done; the snapshot exists. `warning` reports a problem that did not
    /// stop the prebuild (no devcontainer.json, say); `snapshot_image` is
    /// where the snapshot was pushed, by digest, when the runner pushes to a
    /// registry.
    Completed { snapshot_size_bytes: i64, warning: Option<String>, snapshot_image: Option<String> },
    /// The prebuild failed; `message` says why in a way a person can act on.
    Failed { message: String },
    /// Stopped on request (cancel, timeout, delete) before finishing.
    Stopped,
}

impl JobState {
    /// Whether the job has ended (completed, failed or stopped): its state
    /// does not change any more.
    pub fn is_final(&self) -> bool {
        matches!(self, JobState::Completed { .. } | JobState::Failed { .. } | JobState::Stopped)
    }
}

/// What a warm pool should have on its runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolTarget {
    pub warm_pool_id: String,
    /// The snapshot (prebuild ID) new instances are made from; `None` while
    /// there is none (then nothing is provisioned).
    pub snapshot_id: Option<String>,
    /// The snapshot in a registry, by digest (`registry/prefix/project@sha256:...`),
    /// when it was pushed: a machine that lacks it pulls it from there.
    pub snapshot_image: Option<String>,
    /// Running instances to keep, ready to claim.
    pub running: u32,
    /// Stopped instances to keep beside them (cheaper; started faster than
    /// from scratch when a running one is claimed).
    pub stopped: u32,
    /// What the pool's environment class allows each instance to use.
    pub resources: crate::catalog::Resources,
    /// What the pool's environment class allows each instance to be
    /// granted (checked again against what its snapshot was granted).
    pub policy: crate::catalog::ClassPolicy,
}

/// What exists for a warm pool on its runner right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolObservation {
    /// Running instances of the target snapshot, ready to claim.
    pub running: u32,
    /// Stopped instances of the target snapshot.
    pub stopped: u32,
    /// Instances of older snapshots still present (drained after rotation).
    pub outdated: u32,
    /// Why provisioning keeps failing, if it does.
    pub failure: Option<String>,
}

/// A snapshot a runner holds (on its disk, or as an image of its daemon).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSnapshot {
    /// The prebuild that made it.
    pub prebuild_id: String,
    pub bytes: u64,
}

/// An instance handed out by a claim; the caller owns it from then on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimedInstance {
    pub instance_id: String,
    pub snapshot_id: String,
    /// Where the instance's workspace is: a path on the runner's machine,
    /// or inside the container for the docker runner.
    pub workspace_path: String,
    /// The instance's container (docker runner), empty otherwise.
    pub container_id: String,
    /// The instance's Compose project (docker runner, Compose
    /// configurations), empty otherwise.
    pub compose_project: String,
    /// Every container of that project with its service.
    pub services: Vec<ServiceContainer>,
}

/// One container of a claimed Compose stack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceContainer {
    pub service: String,
    pub container_id: String,
}

#[async_trait]
pub trait Runner: Send + Sync + 'static {
    /// Whether the runner can take work and report on it now. A runner on
    /// another machine is unavailable while it is not connected: the
    /// reconciler then starts nothing on it, and does not take its silence
    /// for a lost job.
    fn is_available(&self) -> bool {
        true
    }
    /// How many prebuilds the runner may run at once, given its configured
    /// `max_concurrent_prebuilds`: that, but for a fleet of remote members,
    /// whose connected members each bring their own.
    fn slots(&self, configured: u32) -> u32 {
        configured
    }
    /// Starts the job unless the runner already has it (idempotent).
    async fn start(&self, job: PrebuildJob) -> Result<()>;
    /// The job's state, or `None` if the runner does not know it (never
    /// started, or lost in a restart).
    async fn observe(&self, prebuild_id: &str) -> Option<JobState>;
    /// Stops the job's work (killing its processes); afterwards `observe`
    /// says `Stopped`, or the final state it reached first. Idempotent.
    async fn stop(&self, prebuild_id: &str) -> Result<()>;
    /// Removes the job's environment and snapshot and forgets it. Idempotent.
    async fn remove(&self, prebuild_id: &str) -> Result<()>;

    /// Converges a warm pool toward `target` (in the background; this call
    /// returns at once) and reports what exists.
    async fn sync_pool(&self, target: PoolTarget) -> Result<PoolObservation>;
    /// Hands out one running instance of the pool's newest snapshot, if any.
    async fn claim_instance(&self, warm_pool_id: &str) -> Result<Option<ClaimedInstance>>;
    /// Removes all of a pool's instances. Returns true once none is left.
    async fn remove_pool(&self, warm_pool_id: &str) -> Result<bool>;

    /// The snapshots the runner holds, for collection and the
    /// `prebuildd_runner_snapshots` metric. A runner that keeps none (or
    /// cannot tell: one on another machine) holds none.
    async fn snapshots(&self) -> Result<Vec<HeldSnapshot>> {
        Ok(Vec::new())
    }
    /// Deletes a snapshot pushed to a registry (`image`, by digest) from
    /// there. Returns true once done, or given up on (a registry that
    /// refuses deletes is logged, not asked forever); false while it is
    /// under way (the caller asks again). A runner that pushes nothing has
    /// nothing to delete.
    async fn delete_image(&self, _prebuild_id: &str, _image: &str) -> Result<bool> {
        Ok(true)
    }
    /// Removes what the runner made and no live object owns: the snapshots
    /// of the `gone` prebuilds (which the store no longer has), unless
    /// something still uses one (it stays, and is asked for again), and its
    /// own leftovers. Idempotent; called every few seconds.
    async fn collect_garbage(&self, _gone: &[String]) -> Result<()> {
        Ok(())
    }
}

/// The server's own files on this host, which what runners run must never
/// see: the local runner's sandbox hides them from lifecycle commands.
#[derive(Debug, Clone, Default)]
pub struct ServerFiles {
    /// The data dir: database, token secret, logs, every runner's root.
    pub data_dir: PathBuf,
    /// Files outside it: the configuration file (it holds the API keys).
    pub private_files: Vec<PathBuf>,
}

/// The configured runners by ID. A configuration reload adds new runners;
/// existing ones keep their jobs (and the settings they were made with).
pub struct Runners {
    data_dir: PathBuf,
    private_files: Vec<PathBuf>,
    by_id: std::sync::RwLock<std::collections::HashMap<String, std::sync::Arc<dyn Runner>>>,
    /// The remote ones again, as themselves, for their connections.
    remote: std::sync::RwLock<std::collections::HashMap<String, std::sync::Arc<remote::RemoteRunner>>>,
    /// Whether this process leads the reconciler: only the leader gives
    /// remote runners work, so only it accepts their connections.
    leads: std::sync::atomic::AtomicBool,
    /// What every runner here says when something it runs changes.
    events: RunnerEvents,
}

impl std::fmt::Debug for Runners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runners").field("data_dir", &self.data_dir).finish_non_exhaustive()
    }
}

impl Runners {
    /// The runners `catalog` configures. Making one does file work (its
    /// root, and the sweep of what a previous run left half-done there), so
    /// call this, and [`Runners::sync`], on a blocking thread.
    pub fn new(files: ServerFiles, catalog: &crate::catalog::Catalog) -> Self {
        let runners = Runners {
            data_dir: files.data_dir,
            private_files: files.private_files,
            by_id: Default::default(),
            remote: Default::default(),
            leads: std::sync::atomic::AtomicBool::new(true),
            events: RunnerEvents::new(),
        };
        runners.sync(catalog);
        runners
    }

    /// The server's data dir (runners keep their files under it).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Creates runners the catalog names that do not exist yet (on a
    /// blocking thread: see [`Runners::new`]).
    pub fn sync(&self, catalog: &crate::catalog::Catalog) {
        let mut by_id = crate::sync::write(&self.by_id);
        for config in catalog.runners.values() {
            if by_id.contains_key(&config.id) {
                continue;
            }
            let runner: std::sync::Arc<dyn Runner> = match config.kind {
                crate::catalog::RunnerKind::Simulated => {
                    std::sync::Arc::new(simulated::SimulatedRunner::new(config.step_duration, &self.data_dir, self.events.clone()))
                }
                crate::catalog::RunnerKind::Docker => {
                    let root = config.docker.root.clone().unwrap_or_else(|| docker::DockerRunner::default_root(&self.data_dir, &config.id));
                    match docker::DockerRunner::new(&config.id, &root, &config.docker, config.network_isolation, self.events.clone()) {
                        Ok(runner) => std::sync::Arc::new(runner),
                        Err(error) => {
                            tracing::error!(runner = %config.id, %error, "cannot start the docker runner; its prebuilds will fail");
                            continue;
                        }
                    }
                }
                crate::catalog::RunnerKind::Remote => match crate::logs::Logs::new(&self.data_dir) {
                    Ok(logs) => {
                        let runner = std::sync::Arc::new(remote::RemoteRunner::new(
                            &config.id,
                            config.remote.grace,
                            config.max_concurrent_prebuilds,
                            logs,
                            self.events.clone(),
                        ));
                        crate::sync::write(&self.remote).insert(config.id.clone(), runner.clone());
                        runner
                    }
                    Err(error) => {
                        tracing::error!(runner = %config.id, %error, "cannot create the log dir; the remote runner's prebuilds will fail");
                        continue;
                    }
                },
                crate::catalog::RunnerKind::Local => match local::LocalRunner::new(
                    &self.data_dir.join("local").join(&config.id),
                    local::SandboxSettings::new(config.sandbox, self.paths_to_hide(catalog))
                        .with_network_isolation(config.network_isolation),
                    self.events.clone(),
                ) {
                    Ok(runner) => std::sync::Arc::new(runner),
                    Err(error) => {
                        tracing::error!(runner = %config.id, %error, "cannot start the local runner; its prebuilds will fail");
                        continue;
                    }
                },
            };
            by_id.insert(config.id.clone(), runner);
        }
    }

    /// What a local runner's sandbox hides: the server's files, and the
    /// roots of runners configured outside the data dir.
    fn paths_to_hide(&self, catalog: &crate::catalog::Catalog) -> Vec<PathBuf> {
        let roots = catalog
            .runners
            .values()
            .filter(|runner| runner.kind == crate::catalog::RunnerKind::Docker)
            .map(|runner| runner.docker.root.clone().unwrap_or_else(|| docker::DockerRunner::default_root(&self.data_dir, &runner.id)));
        std::iter::once(self.data_dir.clone()).chain(self.private_files.iter().cloned()).chain(roots).collect()
    }

    /// The events of every runner here (the reconciler and waiting claims
    /// listen to them).
    pub fn events(&self) -> &RunnerEvents {
        &self.events
    }

    pub fn get(&self, runner_id: &str) -> Option<std::sync::Arc<dyn Runner>> {
        crate::sync::read(&self.by_id).get(runner_id).cloned()
    }

    /// Whether remote runners may connect to this process (it leads).
    pub fn leads(&self) -> bool {
        self.leads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Follows this replica's leadership: while it does not lead, remote
    /// runners are refused, and losing the lead ends their connections so
    /// that they find the new leader.
    pub fn follow_leadership(self: &std::sync::Arc<Self>, mut leadership: tokio::sync::watch::Receiver<Option<i64>>) {
        let runners = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let leads = leadership.borrow_and_update().is_some();
                let Some(this) = runners.upgrade() else { return };
                this.leads.store(leads, std::sync::atomic::Ordering::Relaxed);
                if !leads {
                    for runner in crate::sync::read(&this.remote).values() {
                        runner.disconnect();
                    }
                }
                drop(this);
                if leadership.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Every runner, with its ID.
    pub fn all(&self) -> Vec<(String, std::sync::Arc<dyn Runner>)> {
        crate::sync::read(&self.by_id).iter().map(|(id, runner)| (id.clone(), runner.clone())).collect()
    }

    /// A remote runner, for its connection.
    pub fn remote(&self, runner_id: &str) -> Option<std::sync::Arc<remote::RemoteRunner>> {
        crate::sync::read(&self.remote).get(runner_id).cloned()
    }
}
