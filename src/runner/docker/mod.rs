//! The docker runner: prebuilds in the project's own dev container, driven
//! by the Dev Containers CLI, and warm pools of containers from the
//! snapshot image, through the Docker Engine API.
//!
//! Files: `lifecycle.rs` (one prebuild, clone to snapshot), `config/` (the
//! project's devcontainer.json and what of it the CLI gets), `policy/` (what
//! the container may be granted under its class's allowances), `builder.rs`
//! (how the Docker CLI builds), `cli.rs` (running the Dev Containers CLI),
//! `pool.rs` (instances as containers), `workspace_copy.rs` (the clone into
//! the container), `network.rs` (the runner's networks and their rules),
//! `engine.rs` (the Engine API calls), `labels.rs` (what the runner writes
//! on its containers, images and networks), `compose/` (Docker Compose
//! configurations: a stack around the dev container, warm whole stacks).
//!
//! **Isolation.** No container gets a host mount: the workspace is cloned
//! into the runner's own root (never the server's data dir) and copied into
//! the container, and so are bind mounts of the repository's own paths.
//! Containers get what their class's policy grants and nothing more
//! (`no-new-privileges` unless the class allows new privileges), checked on
//! the created container before anything runs in it; the CLI runs with a
//! clean environment. Containers join the runner's own network, whose rules
//! keep them off this host, link-local addresses, the private ranges and
//! each other (see `network.rs`), unless the runner opts out.
//!
//! **State.** Jobs and pools are tracked in memory, and written on Docker as
//! labels. When the runner first reaches Docker it adopts what the labels
//! say exists: pool instances (a ready pool keeps its containers) and
//! snapshots (looked up by name); prebuild containers and build images of
//! jobs that were under way are removed (the reconciler starts those jobs
//! again), and so are the leftovers of unfinished work in the root.

mod builder;
mod cli;
mod collect;
mod compose;
mod config;
mod engine;
mod incremental;
mod labels;
mod lifecycle;
mod network;
pub(crate) mod policy;
mod pool;
pub mod registry;
mod workspace_copy;

use crate::catalog::DockerSettings;
use crate::error::{Error, Result};
use crate::runner::job::JobShared;
use crate::runner::process::{checked_id, lock, remove_path};
use crate::runner::{ClaimedInstance, JobState, PoolObservation, PoolTarget, PrebuildJob, Runner};
use async_trait::async_trait;
use engine::Engine;
use pool::DockerPool;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What the runner's tasks share.
pub(crate) struct Core {
    runner_id: String,
    root: PathBuf,
    docker_host: Option<String>,
    default_image: Option<String>,
    cli: cli::Cli,
    /// Connected (and what existed adopted) on first use, so that a daemon
    /// that starts after the server is found once it answers.
    engine: tokio::sync::OnceCell<Engine>,
    /// How the Docker CLI builds, checked once it can be (see `builder.rs`);
    /// a CLI that cannot build at all fails every prebuild with the reason.
    builder: tokio::sync::OnceCell<std::result::Result<builder::Builder, String>>,
    /// The runner's networks, set up and checked on first use.
    networks: network::Networks,
    /// The Docker Compose it uses for Compose configurations, found once
    /// (see `compose/`), or why there is none.
    compose: tokio::sync::OnceCell<std::result::Result<compose::ComposeTool, String>>,
    jobs: Mutex<HashMap<String, Job>>,
    pools: Mutex<HashMap<String, DockerPool>>,
    /// Where snapshots are pushed, if anywhere.
    registry: Option<registry::RegistryName>,
    /// Snapshots being pulled (or whose pull failed).
    pulls: Mutex<registry::Pulls>,
    /// Registry deletions that failed so far, by prebuild.
    delete_attempts: Mutex<HashMap<String, u32>>,
    /// Told when a job changes phase or an instance is made.
    events: crate::runner::RunnerEvents,
}

struct Job {
    environment_id: String,
    shared: Arc<JobShared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The docker runner (see the module documentation).
pub struct DockerRunner {
    core: Arc<Core>,
}

impl std::fmt::Debug for DockerRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRunner").field("runner_id", &self.core.runner_id).field("root", &self.core.root).finish_non_exhaustive()
    }
}

impl DockerRunner {
    /// A runner with its own root directory (created here; what a previous
    /// run left in it is swept). Docker itself is reached on first use.
    /// `network_isolation` false puts containers on Docker's default bridge
    /// (trusted repositories only).
    pub fn new(
        runner_id: &str,
        root: &Path,
        settings: &DockerSettings,
        network_isolation: bool,
        events: crate::runner::RunnerEvents,
    ) -> Result<DockerRunner> {
        let internal =
            |what: &str, path: &Path, e: std::io::Error| Error::Internal(format!("docker runner: cannot {what} {}: {e}", path.display()));
        for dir in ["workspaces", "configs", "home", "stacks"] {
            let path = root.join(dir);
            std::fs::create_dir_all(&path).map_err(|e| internal("create", &path, e))?;
        }
        let root = root.canonicalize().map_err(|e| internal("resolve", root, e))?;
        for dir in ["workspaces", "configs", "stacks"] {
            for entry in std::fs::read_dir(root.join(dir)).into_iter().flatten().flatten() {
                if let Err(error) = remove_path(&entry.path()) {
                    tracing::warn!(path = %entry.path().display(), %error, "docker runner: cannot remove a leftover of a previous run");
                }
            }
        }
        let cli = cli::Cli {
            program: settings.devcontainer_cli.clone().unwrap_or_else(|| PathBuf::from("devcontainer")),
            docker_cli: settings.docker_cli.clone().unwrap_or_else(|| PathBuf::from("docker")),
            docker_host: settings.docker_host.clone(),
            home: root.join("home"),
            docker_config: cli::Cli::docker_config_dir(settings.docker_config.as_deref()),
            ca_file: settings.ca_file.clone(),
            pass_env: settings.pass_env.clone(),
        };
        let core = Core {
            runner_id: runner_id.to_string(),
            root,
            docker_host: settings.docker_host.clone(),
            default_image: settings.default_image.clone(),
            cli,
            engine: tokio::sync::OnceCell::new(),
            builder: tokio::sync::OnceCell::new(),
            networks: network::Networks::new(runner_id, network_isolation),
            compose: tokio::sync::OnceCell::new(),
            jobs: Mutex::default(),
            pools: Mutex::default(),
            registry: settings.registry.clone(),
            pulls: Mutex::default(),
            delete_attempts: Mutex::default(),
            events,
        };
        let core = Arc::new(core);
        // The Docker CLI's and the network's checks run at start, so their
        // verdicts are in the log before any prebuild (a daemon that is not
        // up yet is checked again at the first prebuild).
        if !network_isolation {
            tracing::warn!(runner = %runner_id, "docker runner: network_isolation = false, containers can reach this host and private networks (trusted repositories only)");
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let checking = Arc::downgrade(&core);
            handle.spawn(async move {
                if let Some(core) = checking.upgrade() {
                    let _ = core.builder().await;
                    let _ = core.compose_tool().await;
                    let _ = core.network_at_start().await;
                }
            });
        }
        Ok(DockerRunner { core })
    }

    /// Where a runner's root is by default: beside the data dir, never in it.
    pub fn default_root(data_dir: &Path, runner_id: &str) -> PathBuf {
        let absolute = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        absolute.parent().unwrap_or(Path::new("/")).join("prebuildd-runners").join(runner_id)
    }
}

impl Core {
    /// The Engine API, connected, with what a previous run left adopted.
    async fn engine(&self) -> std::result::Result<&Engine, String> {
        self.engine
            .get_or_try_init(|| async {
                let engine = Engine::connect(self.docker_host.as_deref()).await?;
                self.adopt(&engine).await?;
                Ok(engine)
            })
            .await
    }

    /// How the Docker CLI builds (checked on first use, once Docker
    /// answers), or why it cannot.
    async fn builder(&self) -> std::result::Result<&builder::Builder, String> {
        if let Some(checked) = self.builder.get() {
            return checked.as_ref().map_err(Clone::clone);
        }
        // Only a daemon that answers can tell how the CLI builds; the check
        // connects on its own, adopting nothing (a replica that does not
        // lead must not touch the leader's containers).
        Engine::connect(self.docker_host.as_deref()).await?;
        let checked = self
            .builder
            .get_or_init(|| async {
                let probe = builder::Probe {
                    docker_cli: &self.cli.docker_cli,
                    docker_host: self.docker_host.as_deref(),
                    docker_config: self.cli.docker_config.as_deref(),
                    scratch: &self.cli.home,
                    image_tag: format!("{}:probe", labels::build_repository(&self.runner_id)),
                };
                let checked = probe.check().await;
                match &checked {
                    Ok(builder) => tracing::info!(runner = %self.runner_id, "docker runner: {}", builder.description),
                    Err(error) => tracing::error!(runner = %self.runner_id, "docker runner: {error}"),
                }
                checked
            })
            .await;
        checked.as_ref().map_err(Clone::clone)
    }

    /// The Docker Compose this runner uses (found once: the Docker CLI's
    /// plugin, else `docker-compose`), or why Compose prebuilds fail.
    async fn compose_tool(&self) -> std::result::Result<&compose::ComposeTool, String> {
        let found = self
            .compose
            .get_or_init(|| async {
                let found = compose::ComposeTool::detect(&self.cli.docker_cli, Path::new("docker-compose"), &self.compose_env()).await;
                match &found {
                    Ok(tool) => {
                        tracing::info!(runner = %self.runner_id, "docker runner: Compose configurations use {}", tool.description())
                    }
                    Err(error) => tracing::warn!(runner = %self.runner_id, "docker runner: Compose configurations will fail: {error}"),
                }
                found
            })
            .await;
        found.as_ref().map_err(Clone::clone)
    }

    /// What Docker Compose sees of the runner's environment: as the Dev
    /// Containers CLI, the Docker endpoint and credentials and the
    /// `pass_env` variables, nothing else.
    fn compose_env(&self) -> compose::ComposeEnv {
        compose::ComposeEnv {
            docker_host: self.docker_host.clone(),
            docker_config: self.cli.docker_config.clone(),
            home: self.cli.home.clone(),
            passed: self.cli.passed_env().into_iter().collect(),
        }
    }

    /// The shared network's check, at start: on a connection of its own
    /// that adopts nothing (like the builder's check), since a replica that
    /// does not lead must not touch the leader's containers; setting up the
    /// network and its rules is the same in every process of the runner.
    async fn network_at_start(&self) -> std::result::Result<(), String> {
        let engine = Engine::connect(self.docker_host.as_deref()).await?;
        self.networks.for_allowances(&engine, &[]).await.map(|_| ())
    }

    /// The network of a container whose class allows `allowances` (`None`:
    /// isolation is off), or why the runner refuses to make one.
    async fn network_for(
        &self,
        engine: &Engine,
        allowances: &[crate::catalog::EgressAllowance],
    ) -> std::result::Result<Option<String>, String> {
        self.networks.for_allowances(engine, allowances).await
    }

    /// Reads back what the labels say exists: pool instances are adopted,
    /// prebuild containers and build images (of jobs that were under way)
    /// removed.
    async fn adopt(&self, engine: &Engine) -> std::result::Result<(), String> {
        let ours = [(labels::RUNNER_ID, self.runner_id.as_str())];
        let mut by_pool: HashMap<String, Vec<engine::ListedContainer>> = HashMap::new();
        for container in engine.containers(&ours).await? {
            let role = container.labels.get(labels::ROLE).map(String::as_str);
            match role {
                Some(labels::ROLE_INSTANCE) if !container.name.starts_with(labels::CLAIMED_NAME_PREFIX) => {
                    if let Some(pool_id) = container.labels.get(labels::WARM_POOL_ID) {
                        by_pool.entry(pool_id.clone()).or_default().push(container);
                    }
                }
                Some(labels::ROLE_PREBUILD) => {
                    tracing::info!(container = %container.id, "docker runner: removing the container of a prebuild a previous run left unfinished");
                    engine.remove_container(&container.id).await?;
                    if container.image.starts_with("vsc-") {
                        engine.remove_image(&container.image, true).await?;
                    }
                }
                _ => {}
            }
        }
        for image in engine.images_named(&format!("{}:*", labels::build_repository(&self.runner_id))).await? {
            engine.remove_image(&image, true).await?;
        }
        if self.networks.enabled {
            self.networks.sweep(engine).await?;
        }
        self.sweep_stack_volumes(engine).await?;
        let mut pools = lock(&self.pools);
        for (pool_id, containers) in by_pool {
            tracing::info!(warm_pool = %pool_id, instances = containers.len(), "docker runner: adopted warm pool instances");
            pools.insert(pool_id, DockerPool::adopted(&containers));
        }
        Ok(())
    }
}

impl Drop for DockerRunner {
    /// A runner going away (shutdown, a test's end) kills the CLI processes
    /// it started; containers stay, and the next run removes or adopts them.
    fn drop(&mut self) {
        for job in lock(&self.core.jobs).values() {
            job.shared.processes.kill_all();
        }
    }
}

#[async_trait]
impl Runner for DockerRunner {
    async fn start(&self, job: PrebuildJob) -> Result<()> {
        checked_id("prebuild ID", &job.prebuild_id)?;
        checked_id("environment ID", &job.environment_id)?;
        let mut jobs = lock(&self.core.jobs);
        if jobs.contains_key(&job.prebuild_id) {
            return Ok(());
        }
        let shared = Arc::new(JobShared::reporting_to(self.core.events.clone()));
        let (prebuild_id, environment_id) = (job.prebuild_id.clone(), job.environment_id.clone());
        let task = tokio::spawn(lifecycle::run_job(self.core.clone(), shared.clone(), job));
        jobs.insert(prebuild_id, Job { environment_id, shared, task: Some(task) });
        Ok(())
    }

    async fn observe(&self, prebuild_id: &str) -> Option<JobState> {
        let jobs = lock(&self.core.jobs);
        Some(jobs.get(prebuild_id)?.shared.observed())
    }

    /// Kills the CLI and the prebuild's container at once; the job's task
    /// then cleans up and ends as stopped.
    async fn stop(&self, prebuild_id: &str) -> Result<()> {
        let stopped = lock(&self.core.jobs).get(prebuild_id).is_some_and(|job| job.shared.stop());
        if stopped {
            let core = self.core.clone();
            let prebuild_id = prebuild_id.to_string();
            tokio::spawn(async move { core.clean_up_job(&prebuild_id, None).await });
        }
        Ok(())
    }

    async fn remove(&self, prebuild_id: &str) -> Result<()> {
        checked_id("prebuild ID", prebuild_id)?;
        self.stop(prebuild_id).await?;
        let job = lock(&self.core.jobs).remove(prebuild_id);
        let environment_id = match job {
            Some(mut job) => {
                if let Some(task) = job.task.take() {
                    let _ = task.await;
                }
                Some(job.environment_id)
            }
            None => None,
        };
        self.core.clean_up_job(prebuild_id, environment_id.as_deref()).await;
        let engine = self.core.engine().await.map_err(Error::Internal)?;
        self.core.remove_snapshot_references(engine, prebuild_id).await.map_err(|e| Error::Internal(format!("docker runner: {e}")))?;
        // A Compose stack's service images too.
        self.core.remove_snapshot_images(prebuild_id).await.map_err(|e| Error::Internal(format!("docker runner: {e}")))
    }

    async fn sync_pool(&self, target: PoolTarget) -> Result<PoolObservation> {
        checked_id("warm pool ID", &target.warm_pool_id)?;
        self.core.sync_pool(target).await
    }

    async fn claim_instance(&self, warm_pool_id: &str) -> Result<Option<ClaimedInstance>> {
        self.core.claim_instance(warm_pool_id).await
    }

    async fn remove_pool(&self, warm_pool_id: &str) -> Result<bool> {
        self.core.remove_pool(warm_pool_id).await
    }

    async fn snapshots(&self) -> Result<Vec<crate::runner::HeldSnapshot>> {
        self.core.snapshots().await
    }

    async fn collect_garbage(&self, gone: &[String]) -> Result<()> {
        self.core.collect_garbage(gone).await
    }

    async fn delete_image(&self, prebuild_id: &str, image: &str) -> Result<bool> {
        self.core.delete_pushed(prebuild_id, image).await
    }
}
