//! `prebuildd bench --only docker`: the docker runner against the Docker
//! daemon of this machine, through the real binary. Not part of the default
//! run (it needs a daemon and the Dev Containers CLI).
//!
//! It builds a base image offline (`docker import` of a busybox rootfs),
//! generates a project (a plain directory: a workspace of source-like text
//! files and a devcontainer.json on that image whose `onCreateCommand`
//! writes random bytes outside the workspace), starts prebuildd with a
//! docker runner, and measures:
//!
//! 1. prebuilds, CreatePrebuild to COMPLETED (three in a row, the first
//!    cold: a new base image, nothing cached), split into steps by the time
//!    each of the runner's log lines appears in the prebuild's log;
//! 2. claim to shell: ClaimInstance on a ready pool (minSize 1, maxSize 2)
//!    until `docker exec <container_id> true` answers, several times, the
//!    pool backfilled in between;
//! 3. the start of a created (stopped) instance: `docker start` of a
//!    container made from the snapshot with the runner's settings until
//!    `docker exec true` answers;
//! 4. throughput on the same bytes: the runner's snapshot (a commit) vs a
//!    plain `docker commit` vs `tar` and `tar | zstd` on the host; its copy
//!    of the workspace into its root and into the container vs `cp -r` and
//!    `docker cp`; instance creation (create + start) vs `docker run -d`;
//! 5. a two-service Docker Compose stack: its prebuilds, and claim to shell
//!    and to its server on a pool of stacks (see `compose.rs`).
//!
//! Everything it makes on Docker carries the label `dev.prebuildd.bench=<run>`
//! or the run's runner ID, and is removed at the end, also on failure or
//! Ctrl-C. No network is needed.

mod compose;
mod fixture;
mod incremental;
mod registry;
mod report;
mod scenarios;

use crate::server::{ChildServer, ORG, USER};
use fixture::{busybox_rootfs, generate};
use prebuildd::config::DEMO_API_KEY;
use prebuildd::proto::gitpod::v1::prebuild_service_client::PrebuildServiceClient;
use prebuildd::proto::gitpod::v1::*;
use prebuildd::proto::prebuildd::v1::warm_pool_instance_service_client::WarmPoolInstanceServiceClient;
use prebuildd::proto::prebuildd::v1::ClaimInstanceRequest;
use rand::{Rng, RngCore, SeedableRng};
use report::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::AsyncWriteExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const CLASS: &str = "d0c4e000-b3c4-4000-8000-0000000000c1";
const PROJECT: &str = "d0c4e000-b3c4-4000-8000-0000000000a1";
/// The project's directory name, and so its folder in the container.
const PROJECT_DIR: &str = "bench-project";
/// The workspace: `DIRS` directories of `FILES_PER_DIR` text files of
/// `FILE_BYTES` each (about 131 MB).
const DIRS: usize = 16;
const FILES_PER_DIR: usize = 256;
const FILE_BYTES: usize = 32_000;
/// What the onCreateCommand writes outside the workspace, in MB (10^6 bytes).
const OUTSIDE_MB: usize = 100;
/// Repetitions of the claim, start and creation measurements.
const ROUNDS: usize = 5;
/// Prebuilds in a row, and repetitions of the snapshot baselines.
const PREBUILDS: usize = 3;
const REPEATS: usize = 3;
const POOL_MIN: i32 = 1;
const POOL_MAX: i32 = 2;
/// The environment class: the runner applies it to every container, and
/// the bench's own containers get the same (`docker create` flags).
const CLASS_CPUS: &str = "1";
const CLASS_MEMORY_TOML: &str = "1GiB";
const CLASS_MEMORY_CLI: &str = "1g";
const PREBUILD_PATIENCE: Duration = Duration::from_secs(300);
const POOL_PATIENCE: Duration = Duration::from_secs(120);
const EXEC_PATIENCE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);
const BENCH_LABEL: &str = "dev.prebuildd.bench";
const RUNNER_LABEL: &str = "dev.prebuildd.runner-id";
const POOL_LABEL: &str = "dev.prebuildd.warm-pool-id";
const MB: f64 = 1e6;

/// The onCreateCommand: `OUTSIDE_MB` of random bytes into /opt. Its markers
/// are printed with printf so that the command line the CLI logs does not
/// contain them.
fn on_create() -> String {
    format!(
        r"printf 'bench: %s\n' onCreate-begins && dd if=/dev/urandom of=/opt/bench-build-output bs=1000000 count={OUTSIDE_MB} 2>/dev/null && printf 'bench: %s\n' onCreate-ends"
    )
}

/// The steps of a prebuild, each ended by the first log line (after the
/// previous step's) that contains the text.
const STEPS: &[(&str, &str)] = &[
    ("building the dev container image", "repository copied into the runner's root"),
    ("creating the dev container", "devcontainer build (FROM the local base image)"),
    ("copying the workspace into the container", "devcontainer up (container created, started)"),
    ("bench: onCreate-begins", "workspace into the container (tar + upload)"),
    ("bench: onCreate-ends", "onCreateCommand (random bytes into /opt)"),
    ("stopping the dev container", "rest of run-user-commands"),
    ("committing the snapshot", "container stopped"),
    ("committed:", "snapshot committed"),
];

type Auth = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;

fn auth(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    let value = format!("Bearer {DEMO_API_KEY}").parse().map_err(|_| tonic::Status::internal("the API key is not ASCII"))?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

type Prebuilds = PrebuildServiceClient<InterceptedService<Channel, Auth>>;
type Claims = WarmPoolInstanceServiceClient<InterceptedService<Channel, Auth>>;

fn status_text(status: tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / MB
}

/// (p50, max) of a sample, in milliseconds.
fn p50_max(sample: &[Duration]) -> (f64, f64) {
    let mut sorted = sample.to_vec();
    sorted.sort();
    let p50 = sorted.get(sorted.len().saturating_sub(1) / 2).copied().unwrap_or_default();
    (ms(p50), ms(sorted.last().copied().unwrap_or_default()))
}

/// The Docker CLI, run as async child processes.
struct Docker {
    cli: PathBuf,
}

impl Docker {
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.cli);
        command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        command
    }

    /// Runs `docker <args>`; its trimmed stdout, or why it failed.
    async fn run(&self, args: &[&str]) -> Result<String, String> {
        let output = self.command(args).output().await.map_err(|e| format!("cannot run {}: {e}", self.cli.display()))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(format!("docker {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
        }
    }

    async fn lines(&self, args: &[&str]) -> Result<Vec<String>, String> {
        Ok(self.run(args).await?.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect())
    }

    /// How long `docker <args>` took, and its output.
    async fn timed(&self, args: &[&str]) -> Result<(Duration, String), String> {
        let started = Instant::now();
        let output = self.run(args).await?;
        Ok((started.elapsed(), output))
    }

    /// `docker <args>` with `input` on stdin.
    async fn run_with_input(&self, args: &[&str], input: Vec<u8>) -> Result<(), String> {
        let mut command = self.command(args);
        command.stdin(Stdio::piped());
        let mut child = command.spawn().map_err(|e| format!("cannot run {}: {e}", self.cli.display()))?;
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        let writing = async move {
            let written = stdin.write_all(&input).await;
            drop(stdin);
            written
        };
        let (written, output) = tokio::join!(writing, child.wait_with_output());
        let output = output.map_err(|e| format!("docker {}: {e}", args.join(" ")))?;
        if !output.status.success() {
            return Err(format!("docker {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()));
        }
        written.map_err(|e| format!("docker {}: cannot write its input: {e}", args.join(" ")))
    }

    /// Runs `docker exec <id> true` until it succeeds; returns the time
    /// since `since` when it did, and the number of attempts.
    async fn exec_answers(&self, id: &str, since: Instant) -> Result<(Duration, u32), String> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let status = self.command(&["exec", id, "true"]).status().await.map_err(|e| e.to_string())?;
            if status.success() {
                return Ok((since.elapsed(), attempts));
            }
            if since.elapsed() > EXEC_PATIENCE {
                return Err(format!("docker exec {id} true never answered"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The size in bytes of an image's top layer (what its commit wrote).
    async fn top_layer_bytes(&self, image: &str) -> Result<u64, String> {
        let sizes = self.lines(&["history", "--human=false", "--format", "{{.Size}}", image]).await?;
        sizes.first().and_then(|s| s.parse().ok()).ok_or_else(|| format!("no layer size for {image}"))
    }
}

/// A prebuild's log, read as it grows; every line stamped with when it was
/// first seen.
struct LogTail {
    path: PathBuf,
    since: Instant,
    read: usize,
    pending: String,
    lines: Vec<(Duration, String)>,
}

impl LogTail {
    async fn poll(&mut self) {
        let Ok(bytes) = tokio::fs::read(&self.path).await else { return };
        if bytes.len() <= self.read {
            return;
        }
        let now = self.since.elapsed();
        self.pending.push_str(&String::from_utf8_lossy(&bytes[self.read..]));
        self.read = bytes.len();
        while let Some(end) = self.pending.find('\n') {
            let line: String = self.pending.drain(..=end).collect();
            self.lines.push((now, line.trim_end().to_string()));
        }
    }

    fn tail(&self, count: usize) -> String {
        let from = self.lines.len().saturating_sub(count);
        self.lines[from..].iter().map(|(_, line)| line.as_str()).collect::<Vec<_>>().join("\n")
    }
}

/// The cold prebuild's measurements.
struct Prebuilt {
    id: String,
    total: Duration,
    /// (step, how long it took); `None` if its log line never showed.
    steps: Vec<(String, Option<Duration>)>,
    /// (phase, first seen at).
    phases: Vec<(String, Duration)>,
    commit: Option<Duration>,
    image_bytes: u64,
}

/// One claim's measurements.
struct Claim {
    /// The pool before it: running + stopped instances.
    shape: String,
    rpc: Duration,
    to_shell: Duration,
    attempts: u32,
    /// When Docker started the instance promoted from created, and a new
    /// instance, after the claim.
    promoted: Option<Duration>,
    fresh: Option<Duration>,
    backfilled: Duration,
}

/// One run of the docker bench: its names and tools.
struct Bench {
    docker: Docker,
    devcontainer: PathBuf,
    /// Short, for names and the bench label.
    run: String,
    runner_id: String,
    work: PathBuf,
    /// The prebuildd under test, while it runs.
    server: std::sync::Mutex<Option<ChildServer>>,
}

impl Bench {
    /// Stops the server (SIGTERM, and waits), if it runs.
    async fn stop_server(&self) {
        let server = self.server.lock().ok().and_then(|mut slot| slot.take());
        if let Some(server) = server {
            let _ = tokio::task::spawn_blocking(move || server.stop()).await;
        }
    }

    fn base_image(&self) -> String {
        format!("prebuildd-bench-base:{}", self.run)
    }

    fn commit_image(&self, n: usize) -> String {
        format!("prebuildd-bench-commit:{}-{n}", self.run)
    }

    fn snapshot_image(prebuild_id: &str) -> String {
        format!("prebuildd-snapshot:{prebuild_id}")
    }

    fn name(&self, what: &str, n: usize) -> String {
        format!("prebuildd-bench-{}-{what}-{n}", self.run)
    }

    fn label(&self) -> String {
        format!("{BENCH_LABEL}={}", self.run)
    }

    fn project(&self) -> PathBuf {
        self.work.join(PROJECT_DIR)
    }

    fn outside(&self) -> PathBuf {
        self.work.join("outside")
    }

    /// `docker create` flags: the runner's settings for instances (the
    /// class's limits, `no-new-privileges`, no mounts) and the bench label.
    fn create_flags(&self) -> Vec<String> {
        ["--label", &self.label(), "--cpus", CLASS_CPUS, "--memory", CLASS_MEMORY_CLI, "--security-opt", "no-new-privileges"]
            .map(str::to_string)
            .to_vec()
    }

    fn config(&self, listen: &str) -> String {
        format!(
            "[server]\nlisten = \"{listen}\"\n[reconciler]\ninterval = \"100ms\"\n\
             [[organizations]]\nid = \"{ORG}\"\nname = \"Bench\"\n\
             [[api_keys]]\ntoken = \"{DEMO_API_KEY}\"\norganization_id = \"{ORG}\"\nsubject_id = \"{USER}\"\n\
             [[runners]]\nid = \"{runner}\"\nkind = \"docker\"\ndevcontainer_cli = {cli}\ndocker_cli = {docker}\n\
             default_image = \"{image}\"\nroot = {root}\n\
             [[environment_classes]]\nid = \"{CLASS}\"\nrunner_id = \"{runner}\"\nname = \"docker\"\ncpus = {CLASS_CPUS}\nmemory = \"{CLASS_MEMORY_TOML}\"\n\
             [[projects]]\nid = \"{PROJECT}\"\norganization_id = \"{ORG}\"\nname = \"bench\"\nrepository = {repository}\n\
             default_environment_class_id = \"{CLASS}\"\n[projects.prebuilds]\nenabled = true\nenvironment_class_ids = [\"{CLASS}\"]\n\
             [[projects]]\nid = \"{stack}\"\norganization_id = \"{ORG}\"\nname = \"bench-stack\"\nrepository = {stack_repository}\n\
             default_environment_class_id = \"{CLASS}\"\n[projects.prebuilds]\nenabled = true\nenvironment_class_ids = [\"{CLASS}\"]\n",
            runner = self.runner_id,
            cli = toml_string(&self.devcontainer),
            docker = toml_string(&self.docker.cli),
            image = self.base_image(),
            root = toml_string(&self.work.join("runner-root")),
            repository = toml_string(&self.project()),
            stack = compose::STACK_PROJECT,
            stack_repository = toml_string(&self.stack_project()),
        )
    }
}

fn toml_string(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

/// A program on PATH, or `None`.
fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(program)).find(|path| path.is_file())
}

/// The Dev Containers CLI: `PREBUILDD_DEVCONTAINER_CLI`, else the one
/// `scripts/install-test-tools` puts in `.tools/` (looked for from the
/// current directory), else `devcontainer` on PATH.
fn devcontainer_cli() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("PREBUILDD_DEVCONTAINER_CLI") {
        return Ok(PathBuf::from(path));
    }
    for tools in [".tools/devcontainer/node_modules/.bin/devcontainer", ".tools/npm/node_modules/.bin/devcontainer"] {
        if Path::new(tools).exists() {
            return std::path::absolute(tools).map_err(|e| e.to_string());
        }
    }
    on_path("devcontainer").ok_or_else(|| {
        "the Dev Containers CLI is missing: run scripts/install-test-tools from the repository, or set PREBUILDD_DEVCONTAINER_CLI".into()
    })
}

/// The Docker CLI: `PREBUILDD_DOCKER_CLI`, else Debian's `/usr/bin/docker`
/// (it builds with BuildKit without the buildx plugin), else `docker`.
fn docker_cli() -> PathBuf {
    if let Some(path) = std::env::var_os("PREBUILDD_DOCKER_CLI") {
        return PathBuf::from(path);
    }
    let debian = Path::new("/usr/bin/docker");
    if debian.exists() {
        return debian.to_path_buf();
    }
    on_path("docker").unwrap_or_else(|| PathBuf::from("docker"))
}

/// Runs the docker scenario in `work` (a fresh directory the caller
/// removes afterwards) and prints its results.
pub async fn run(work: &Path) -> Result<(), String> {
    run_scenario(work, Scenario::Docker).await
}

/// Full vs incremental prebuilds on the docker runner (see
/// `crate::incremental`), with the same set-up and clean-up.
pub async fn run_incremental(work: &Path) -> Result<(), String> {
    run_scenario(work, Scenario::Incremental).await
}

/// Snapshots through an OCI registry (see `registry.rs`), with the same
/// set-up and clean-up.
pub async fn run_registry(work: &Path) -> Result<(), String> {
    run_scenario(work, Scenario::Registry).await
}

/// Which measurements a run makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Docker,
    Incremental,
    Registry,
}

async fn run_scenario(work: &Path, scenario: Scenario) -> Result<(), String> {
    let docker = Docker { cli: docker_cli() };
    let server_version = docker
        .run(&["version", "--format", "{{.Server.Version}} (API {{.Server.APIVersion}})"])
        .await
        .map_err(|e| format!("no Docker daemon answers (start one; see scripts/ensure-dockerd): {e}"))?;
    let driver = docker.run(&["info", "--format", "{{.Driver}}"]).await?;
    let devcontainer = devcontainer_cli()?;
    let cli_version = tokio::process::Command::new(&devcontainer)
        .arg("--version")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run the Dev Containers CLI {}: {e}", devcontainer.display()))?;
    if !Path::new("/bin/busybox").exists() {
        return Err("/bin/busybox is missing (the base image is made from it): install busybox-static".into());
    }
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or("?".to_string(), |kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0));
    println!(
        "prebuildd bench --only {}: {} cores, {memory} memory; Docker {server_version}, storage driver {driver}; Dev Containers CLI {}",
        format!("{scenario:?}").to_lowercase(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        String::from_utf8_lossy(&cli_version.stdout).trim()
    );
    tokio::fs::create_dir_all(work).await.map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let work = std::path::absolute(work).map_err(|e| e.to_string())?;
    let id = uuid::Uuid::new_v4();
    let run = id.simple().to_string()[..12].to_string();
    let bench = Bench { docker, devcontainer, run, runner_id: id.to_string(), work, server: std::sync::Mutex::new(None) };
    println!("run {} (Docker objects labelled {} or {RUNNER_LABEL}={})", bench.run, bench.label(), bench.runner_id);

    let scenario = async {
        match scenario {
            Scenario::Docker => bench.scenarios().await,
            Scenario::Incremental => bench.incremental().await,
            Scenario::Registry => bench.registry().await,
        }
    };
    let result = tokio::select! {
        result = scenario => result,
        _ = tokio::signal::ctrl_c() => Err("interrupted".to_string()),
    };
    // A graceful stop: the runner kills the CLI processes it started, so
    // nothing makes containers after the clean-up.
    bench.stop_server().await;
    if result.is_err() {
        if let Ok(log) = tokio::fs::read_to_string(bench.work.join("data/server.log")).await {
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("--- the server's last log lines:\n{}", lines[lines.len().saturating_sub(20)..].join("\n"));
        }
        // What the Engine API was still doing (a commit, a create) ends
        // before the clean-up looks.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let cleaned = bench.clean_up().await;
    result.and(cleaned)
}
