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
//!    `docker cp`; instance creation (create + start) vs `docker run -d`.
//!
//! Everything it makes on Docker carries the label `dev.prebuildd.bench=<run>`
//! or the run's runner ID, and is removed at the end, also on failure or
//! Ctrl-C. No network is needed.

use super::ChildServer;
use super::{ORG, USER};
use crate::config::DEMO_API_KEY;
use crate::proto::gitpod::v1::prebuild_service_client::PrebuildServiceClient;
use crate::proto::gitpod::v1::*;
use crate::proto::prebuildd::v1::warm_pool_instance_service_client::WarmPoolInstanceServiceClient;
use crate::proto::prebuildd::v1::ClaimInstanceRequest;
use rand::{Rng, RngCore, SeedableRng};
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
             default_environment_class_id = \"{CLASS}\"\n[projects.prebuilds]\nenabled = true\nenvironment_class_ids = [\"{CLASS}\"]\n",
            runner = self.runner_id,
            cli = toml_string(&self.devcontainer),
            docker = toml_string(&self.docker.cli),
            image = self.base_image(),
            root = toml_string(&self.work.join("runner-root")),
            repository = toml_string(&self.project()),
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
    let tools = Path::new(".tools/npm/node_modules/.bin/devcontainer");
    if tools.exists() {
        return std::path::absolute(tools).map_err(|e| e.to_string());
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
        "prebuildd bench --only docker: {} cores, {memory} memory; Docker {server_version}, storage driver {driver}; Dev Containers CLI {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        String::from_utf8_lossy(&cli_version.stdout).trim()
    );
    tokio::fs::create_dir_all(work).await.map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let work = std::path::absolute(work).map_err(|e| e.to_string())?;
    let id = uuid::Uuid::new_v4();
    let run = id.simple().to_string()[..12].to_string();
    let bench = Bench { docker, devcontainer, run, runner_id: id.to_string(), work, server: std::sync::Mutex::new(None) };
    println!("run {} (Docker objects labelled {} or {RUNNER_LABEL}={})", bench.run, bench.label(), bench.runner_id);

    let result = tokio::select! {
        result = bench.scenarios() => result,
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

impl Bench {
    async fn scenarios(&self) -> Result<(), String> {
        // The base image and the project.
        let started = Instant::now();
        self.import_base_image().await?;
        let (project, outside, base) = (self.project(), self.outside(), self.base_image());
        let workspace_bytes = tokio::task::spawn_blocking(move || generate(&project, &outside, &base))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot generate the project: {e}"))?;
        let outside_bytes = (OUTSIDE_MB as f64 * MB) as u64;
        let tree_bytes = workspace_bytes + outside_bytes;
        println!(
            "base image {} imported, project generated ({} files, {:.0} MB; onCreateCommand writes {OUTSIDE_MB} MB to /opt) in {:.1} s",
            self.base_image(),
            DIRS * FILES_PER_DIR,
            mb(workspace_bytes),
            started.elapsed().as_secs_f64()
        );

        // The server, with a docker runner.
        let data_dir = self.work.join("data");
        let server = ChildServer::start_with(&data_dir, |listen| self.config(listen))?;
        server.ready().await?;
        let base = server.base.clone();
        *self.server.lock().map_err(|_| "poisoned")? = Some(server);
        let channel = Channel::from_shared(base).map_err(|e| e.to_string())?.connect().await.map_err(|e| e.to_string())?;
        let mut prebuilds = PrebuildServiceClient::with_interceptor(channel.clone(), auth as Auth);
        let mut claims = WarmPoolInstanceServiceClient::with_interceptor(channel, auth as Auth);

        println!(
            "\n== 1. Prebuild: CreatePrebuild to COMPLETED ({PREBUILDS} in a row; the first is cold: a new base image, no build cache)"
        );
        let mut all = Vec::new();
        for _ in 0..PREBUILDS {
            settle().await;
            all.push(self.prebuild(&mut prebuilds, &data_dir).await?);
        }
        // The pool follows the newest snapshot.
        let prebuilt = all.last().ok_or("no prebuild")?;
        let snapshot = Self::snapshot_image(&prebuilt.id);
        let snapshot_layer = self.docker.top_layer_bytes(&snapshot).await?;
        print_prebuilds(&all, snapshot_layer);

        println!("\n== 2. Claim to shell (warm pool minSize 1, maxSize 2)");
        let started = Instant::now();
        let pool = prebuilds
            .create_warm_pool(CreateWarmPoolRequest {
                project_id: PROJECT.into(),
                environment_class_id: CLASS.into(),
                min_size: Some(POOL_MIN),
                max_size: Some(POOL_MAX),
                ..Default::default()
            })
            .await
            .map_err(status_text)?
            .into_inner()
            .warm_pool
            .ok_or("CreateWarmPool returned no pool")?;
        wait_backfilled(&mut prebuilds, &pool.id, &prebuilt.id).await?;
        let pool_ready = started.elapsed();
        println!(
            "CreateWarmPool (minSize {POOL_MIN}, maxSize {POOL_MAX}) to READY, 1 running + 1 created container from the {:.0} MB image: {:.2} s",
            mb(prebuilt.image_bytes),
            pool_ready.as_secs_f64()
        );
        let mut rounds = Vec::new();
        let mut floor = Vec::new();
        for round in 0..ROUNDS {
            let claim = self.claim(&mut prebuilds, &mut claims, &pool.id, &prebuilt.id, (round == 0).then_some(&mut floor)).await?;
            rounds.push(claim);
        }
        print_claims(&rounds, &floor);
        self.stop_server().await;
        // The pool's containers go now, so the rest runs on a quiet daemon.
        let runner_filter = format!("label={RUNNER_LABEL}={}", self.runner_id);
        let leftover = self.docker.lines(&["ps", "-aq", "--no-trunc", "--filter", &runner_filter]).await?;
        self.remove_containers(&leftover).await?;

        println!("\n== 3. Start of a stopped (created) instance, and 4b. instance creation");
        let creation = self.instances(&snapshot).await?;
        creation.print(prebuilt.image_bytes);

        println!(
            "\n== 4a. Throughput on the same bytes: the workspace ({:.0} MB), and it + {OUTSIDE_MB} MB outside it ({:.0} MB); {REPEATS} each",
            mb(workspace_bytes),
            mb(tree_bytes)
        );
        let (mut copies, mut docker_cps, mut commits, mut tars, mut zstds) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut commit_layer, mut tar_bytes, mut zstd_bytes) = (0, 0, 0);
        for n in 0..REPEATS {
            settle().await;
            copies.push(self.host_copy(n).await?);
            let (docker_cp, commit) = self.commit_baseline(n).await?;
            docker_cps.push(docker_cp);
            commits.push(commit);
            commit_layer = self.docker.top_layer_bytes(&self.commit_image(n)).await?;
            settle().await;
            let (took, bytes) = self.host_tar(false).await?;
            tars.push(took);
            tar_bytes = bytes;
            settle().await;
            let (took, bytes) = self.host_tar(true).await?;
            zstds.push(took);
            zstd_bytes = bytes;
        }
        let step = |index: usize| all.iter().filter_map(|p| p.steps.get(index).and_then(|(_, d)| *d)).collect::<Vec<_>>();
        let runner_commits: Vec<Duration> = all.iter().filter_map(|p| p.commit).collect();
        println!("{:<60} {:>8} {:>8} {:>8} {:>9}", "", "MB", "p50 s", "max s", "MB/s p50");
        let line = |what: &str, bytes: u64, sample: &[Duration]| {
            let (p50, max) = p50_max(sample);
            println!(
                "{what:<60} {:>8.1} {:>8.2} {:>8.2} {:>9.1}",
                mb(bytes),
                p50 / 1000.0,
                max / 1000.0,
                mb(bytes) / (p50 / 1000.0).max(1e-9)
            );
        };
        // Steps 1 and 4 of the prebuild table (0 is the pending time).
        line("runner: repository copied into its root (prebuilds above)", workspace_bytes, &step(1));
        line("baseline: cp -r of the workspace on the host", workspace_bytes, &copies);
        line("runner: workspace into the container (tar + upload)", workspace_bytes, &step(4));
        line("baseline: docker cp of the workspace into a container", workspace_bytes, &docker_cps);
        line("runner: snapshot, the commit (prebuilds above)", snapshot_layer, &runner_commits);
        line("baseline: docker commit of a container with the same bytes", commit_layer, &commits);
        line("baseline: tar of the same tree on the host (to a file)", tree_bytes, &tars);
        line(&format!("baseline: tar | zstd -3 -T0 on the host (to {:.1} MB)", mb(zstd_bytes)), tree_bytes, &zstds);
        println!(
            "(MB = 10^6 bytes; commits: the layer's size as Docker reports it; tar wrote {:.1} MB; the page cache is warm; `sync` before each, untimed)",
            mb(tar_bytes)
        );
        Ok(())
    }

    /// `docker import` of a busybox rootfs (root and a `dev` user), with no
    /// registry.
    async fn import_base_image(&self) -> Result<(), String> {
        let output = tokio::process::Command::new("/bin/busybox")
            .arg("--list")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("cannot run /bin/busybox: {e}"))?;
        let applets: Vec<String> =
            String::from_utf8_lossy(&output.stdout).lines().filter(|a| !a.is_empty() && *a != "busybox").map(str::to_string).collect();
        let rootfs = tokio::task::spawn_blocking(move || busybox_rootfs(&applets))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot make the base image's rootfs: {e}"))?;
        let label = format!("LABEL {}", self.label());
        let image = self.base_image();
        self.docker.run_with_input(&["import", "--change", "ENV PATH=/bin", "--change", &label, "-", &image], rootfs).await
    }

    async fn prebuild(&self, client: &mut Prebuilds, data_dir: &Path) -> Result<Prebuilt, String> {
        let started = Instant::now();
        let created = client
            .create_prebuild(CreatePrebuildRequest {
                project_id: PROJECT.into(),
                environment_class_id: None,
                spec: Some(PrebuildSpec::default()),
            })
            .await
            .map_err(status_text)?
            .into_inner()
            .prebuild
            .ok_or("CreatePrebuild returned no prebuild")?;
        let mut log = LogTail {
            path: data_dir.join("logs").join(format!("{}.log", created.id)),
            since: started,
            read: 0,
            pending: String::new(),
            lines: Vec::new(),
        };
        let mut phases: Vec<(String, Duration)> = Vec::new();
        let status = loop {
            log.poll().await;
            let prebuild = client
                .get_prebuild(GetPrebuildRequest { prebuild_id: created.id.clone() })
                .await
                .map_err(status_text)?
                .into_inner()
                .prebuild
                .ok_or("GetPrebuild returned no prebuild")?;
            let status = prebuild.status.unwrap_or_default();
            let phase = PrebuildPhase::try_from(status.phase).unwrap_or_default();
            let name = phase.as_str_name().trim_start_matches("PREBUILD_PHASE_").to_string();
            if phases.last().is_none_or(|(last, _)| *last != name) {
                phases.push((name, started.elapsed()));
            }
            if matches!(phase, PrebuildPhase::Completed | PrebuildPhase::Failed | PrebuildPhase::Cancelled) {
                break status;
            }
            if started.elapsed() > PREBUILD_PATIENCE {
                return Err(format!("the prebuild did not finish in {} s; last log lines:\n{}", PREBUILD_PATIENCE.as_secs(), log.tail(30)));
            }
            tokio::time::sleep(POLL).await;
        };
        let total = phases.last().map(|(_, at)| *at).unwrap_or_default();
        log.poll().await;
        if status.phase != PrebuildPhase::Completed as i32 {
            return Err(format!("the prebuild did not complete: {}; last log lines:\n{}", status.failure_message, log.tail(30)));
        }
        // Each step ends at its line; the first begins when the runner's
        // first line shows (before it: the reconciler picking the job up).
        let mut steps = Vec::new();
        let first = log.lines.first().map(|(at, _)| *at);
        steps.push(("pending: until the runner's first log line".to_string(), first));
        let (mut from, mut index) = (first.unwrap_or_default(), 0);
        let mut commit = None;
        for (needle, step) in STEPS {
            match log.lines[index..].iter().position(|(_, line)| line.contains(needle)) {
                Some(found) => {
                    let at = log.lines[index + found].0;
                    steps.push((step.to_string(), Some(at.saturating_sub(from))));
                    if *needle == "committed:" {
                        commit = Some(at.saturating_sub(from));
                    }
                    from = at;
                    index += found + 1;
                }
                None => steps.push((step.to_string(), None)),
            }
        }
        steps.push(("clean-up, COMPLETED observed".to_string(), Some(total.saturating_sub(from))));
        Ok(Prebuilt { id: created.id, total, steps, phases, commit, image_bytes: status.snapshot_size_bytes.max(0) as u64 })
    }

    /// One claim: ClaimInstance, `docker exec true` in what it returned, and
    /// the backfill (the pool back at its size), with when Docker started
    /// the replacements: a promoted (created) instance, a new one; then the
    /// claimed container is removed. `floor` gets the times of `docker exec
    /// true` in the claimed (running) container.
    async fn claim(
        &self,
        prebuilds: &mut Prebuilds,
        claims: &mut Claims,
        pool_id: &str,
        snapshot_id: &str,
        floor: Option<&mut Vec<Duration>>,
    ) -> Result<Claim, String> {
        let before = wait_backfilled(prebuilds, pool_id, snapshot_id).await?;
        let containers_before = self.pool_containers(pool_id).await?;
        let wall = SystemTime::now();
        let started = Instant::now();
        let instance = claims
            .claim_instance(ClaimInstanceRequest { warm_pool_id: pool_id.into() })
            .await
            .map_err(status_text)?
            .into_inner()
            .instance
            .ok_or("ClaimInstance returned no instance")?;
        let rpc = started.elapsed();
        if instance.container_id.is_empty() {
            return Err("ClaimInstance returned no container ID".into());
        }
        let (to_shell, attempts) = self.docker.exec_answers(&instance.container_id, started).await?;
        wait_backfilled(prebuilds, pool_id, snapshot_id).await?;
        let backfilled = started.elapsed();
        let (mut promoted, mut fresh) = (None, None);
        for (id, state) in self.pool_containers(pool_id).await? {
            if id == instance.container_id || state != "running" {
                continue;
            }
            let slot = match containers_before.iter().find(|(before, _)| *before == id) {
                Some((_, state)) if state == "created" => &mut promoted,
                Some(_) => continue,
                None => &mut fresh,
            };
            let at = self.docker.run(&["inspect", "--format", "{{.State.StartedAt}}", &id]).await?;
            if let Ok(at) = time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339) {
                *slot = Duration::try_from(at - time::OffsetDateTime::from(wall)).ok();
            }
        }
        if let Some(floor) = floor {
            for _ in 0..ROUNDS {
                let exec = Instant::now();
                self.docker.exec_answers(&instance.container_id, exec).await?;
                floor.push(exec.elapsed());
            }
        }
        self.remove_containers(&[instance.container_id]).await?;
        let shape = format!("{}+{}", before.running_instances, before.stopped_instances);
        Ok(Claim { shape, rpc, to_shell, attempts, promoted, fresh, backfilled })
    }

    /// The pool's containers (claimed ones too) and their states.
    async fn pool_containers(&self, pool_id: &str) -> Result<Vec<(String, String)>, String> {
        let filter = format!("label={POOL_LABEL}={pool_id}");
        let lines = self.docker.lines(&["ps", "-a", "--no-trunc", "--filter", &filter, "--format", "{{.ID}} {{.State}}"]).await?;
        Ok(lines.iter().filter_map(|l| l.split_once(' ')).map(|(id, state)| (id.to_string(), state.to_string())).collect())
    }

    /// Containers from the snapshot image with the runner's settings:
    /// created (timed), then started (timed until `docker exec true`
    /// answers); then `docker run -d` of the same image with the same
    /// settings.
    async fn instances(&self, snapshot: &str) -> Result<Creation, String> {
        let flags = self.create_flags();
        let mut creation = Creation::default();
        let mut ids = Vec::new();
        for n in 0..ROUNDS {
            let name = self.name("instance", n);
            let mut args: Vec<&str> = vec!["create", "--name", &name];
            args.extend(flags.iter().map(String::as_str));
            args.push(snapshot);
            let (took, id) = self.docker.timed(&args).await?;
            creation.create.push(took);
            ids.push(id);
        }
        for id in &ids {
            let started = Instant::now();
            self.docker.run(&["start", id]).await?;
            creation.start.push(started.elapsed());
            creation.start_to_shell.push(self.docker.exec_answers(id, started).await?.0);
        }
        self.remove_containers(&ids).await?;
        let mut ids = Vec::new();
        for n in 0..ROUNDS {
            let name = self.name("run", n);
            let mut args: Vec<&str> = vec!["run", "-d", "--name", &name];
            args.extend(flags.iter().map(String::as_str));
            args.push(snapshot);
            let started = Instant::now();
            let id = self.docker.run(&args).await?;
            creation.run.push(started.elapsed());
            creation.run_to_shell.push(self.docker.exec_answers(&id, started).await?.0);
            ids.push(id);
        }
        self.remove_containers(&ids).await?;
        Ok(creation)
    }

    /// A container from the base image with the runner's settings, holding
    /// the same bytes as the prebuild's (the workspace at its folder, the
    /// 100 MB outside it), started and stopped like the prebuild's. Returns
    /// how long `docker cp` of the workspace into it took, and its `docker
    /// commit`.
    async fn commit_baseline(&self, n: usize) -> Result<(Duration, Duration), String> {
        let name = self.name("commit", n);
        let mut args: Vec<&str> = vec!["create", "--name", &name];
        let flags = self.create_flags();
        args.extend(flags.iter().map(String::as_str));
        let base = self.base_image();
        args.extend([base.as_str(), "sh", "-c", "trap 'exit 0' TERM; while sleep 1 & wait $!; do :; done"]);
        self.docker.run(&args).await?;
        self.docker.run(&["start", &name]).await?;
        let project = self.project().display().to_string();
        settle().await;
        let (docker_cp, _) = self.docker.timed(&["cp", &project, &format!("{name}:/workspaces/{PROJECT_DIR}")]).await?;
        let outside = self.outside().join("bench-build-output").display().to_string();
        self.docker.run(&["cp", &outside, &format!("{name}:/opt/bench-build-output")]).await?;
        self.docker.run(&["stop", "-t", "5", &name]).await?;
        settle().await;
        let (took, _) = self.docker.timed(&["commit", &name, &self.commit_image(n)]).await?;
        self.remove_containers(&[name]).await?;
        Ok((docker_cp, took))
    }

    /// `cp -r` of the workspace on the host (into the bench's directory),
    /// timed; the copy is removed after.
    async fn host_copy(&self, n: usize) -> Result<Duration, String> {
        let target = self.work.join(format!("copy-{n}"));
        let started = Instant::now();
        let status = tokio::process::Command::new("cp")
            .arg("-r")
            .arg(self.project())
            .arg(&target)
            .kill_on_drop(true)
            .status()
            .await
            .map_err(|e| format!("cannot run cp: {e}"))?;
        let took = started.elapsed();
        if !status.success() {
            return Err(format!("cp -r of the workspace failed ({status})"));
        }
        tokio::fs::remove_dir_all(&target).await.map_err(|e| format!("cannot remove {}: {e}", target.display()))?;
        Ok(took)
    }

    /// `tar` of the tree on the host into a file, or `tar | zstd`; the time
    /// and the bytes written.
    async fn host_tar(&self, compress: bool) -> Result<(Duration, u64), String> {
        let target = self.work.join(if compress { "tree.tar.zst" } else { "tree.tar" });
        let spawn = |command: &mut tokio::process::Command, what: &str| {
            command.kill_on_drop(true).spawn().map_err(|e| format!("cannot run {what}: {e}"))
        };
        let mut tar = tokio::process::Command::new("tar");
        tar.arg("-C").arg(&self.work).args(["-cf", "-", PROJECT_DIR, "outside"]).stdin(Stdio::null());
        let started = Instant::now();
        let statuses = if compress {
            let mut tar_child = spawn(tar.stdout(Stdio::piped()), "tar")?;
            let pipe: Stdio = tar_child.stdout.take().ok_or("no tar output")?.try_into().map_err(|e| format!("tar's output: {e}"))?;
            let mut zstd = tokio::process::Command::new("zstd");
            zstd.args(["-q", "-f", "-3", "-T0", "-", "-o"]).arg(&target).stdin(pipe);
            let mut zstd_child = spawn(&mut zstd, "zstd (install zstd)")?;
            let (a, b) = tokio::join!(tar_child.wait(), zstd_child.wait());
            vec![a, b]
        } else {
            let file = std::fs::File::create(&target).map_err(|e| format!("cannot create {}: {e}", target.display()))?;
            vec![spawn(tar.stdout(file), "tar")?.wait().await]
        };
        let took = started.elapsed();
        for status in statuses {
            let status = status.map_err(|e| e.to_string())?;
            if !status.success() {
                return Err(format!("the host archive failed ({status})"));
            }
        }
        let bytes = tokio::fs::metadata(&target).await.map_err(|e| e.to_string())?.len();
        let _ = tokio::fs::remove_file(&target).await;
        Ok((took, bytes))
    }

    async fn remove_containers(&self, ids: &[String]) -> Result<(), String> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut args = vec!["rm", "-f"];
        args.extend(ids.iter().map(String::as_str));
        self.docker.run(&args).await.map(|_| ())
    }

    /// Removes every container and image of the run (by the bench label,
    /// the runner ID and name), and says what is left, if anything.
    async fn clean_up(&self) -> Result<(), String> {
        let filters = [format!("label={}", self.label()), format!("label={RUNNER_LABEL}={}", self.runner_id)];
        let mut containers = Vec::new();
        for filter in &filters {
            containers.extend(self.docker.lines(&["ps", "-aq", "--no-trunc", "--filter", filter]).await.unwrap_or_default());
        }
        containers.sort();
        containers.dedup();
        let removed_containers = containers.len();
        if let Err(error) = self.remove_containers(&containers).await {
            eprintln!("clean-up: {error}");
        }
        // Images go children first: an image with children cannot be
        // removed, so every pass removes what it can.
        let mut named: Vec<String> = (0..REPEATS).map(|n| self.commit_image(n)).collect();
        named.push(self.base_image());
        let mut removed_images = 0;
        let mut left = Vec::new();
        for _ in 0..4 {
            let mut images = Vec::new();
            for filter in &filters {
                images.extend(self.docker.lines(&["images", "-aq", "--no-trunc", "--filter", filter]).await.unwrap_or_default());
            }
            for name in &named {
                if let Ok(id) = self.docker.run(&["image", "inspect", "--format", "{{.Id}}", name]).await {
                    images.push(id);
                }
            }
            images.sort();
            images.dedup();
            left = images.clone();
            if images.is_empty() {
                break;
            }
            for image in images {
                if self.docker.run(&["rmi", "-f", &image]).await.is_ok() {
                    removed_images += 1;
                }
            }
        }
        let mut left_containers = Vec::new();
        for filter in &filters {
            left_containers.extend(self.docker.lines(&["ps", "-aq", "--filter", filter]).await.unwrap_or_default());
        }
        println!("\nclean-up: {removed_containers} containers and {removed_images} images removed");
        if left.is_empty() && left_containers.is_empty() {
            Ok(())
        } else {
            Err(format!("clean-up left containers {left_containers:?} and images {left:?} (labelled {})", self.label()))
        }
    }
}

/// Waits until the pool is READY on the snapshot and back at its size: as
/// many running instances as it wants (one, more after claims: the
/// autoscaler follows demand up to maxSize), the rest of maxSize created.
async fn wait_backfilled(client: &mut Prebuilds, pool_id: &str, snapshot_id: &str) -> Result<WarmPoolStatus, String> {
    let started = Instant::now();
    loop {
        let pool = client
            .get_warm_pool(GetWarmPoolRequest { warm_pool_id: pool_id.into() })
            .await
            .map_err(status_text)?
            .into_inner()
            .warm_pool
            .ok_or("GetWarmPool returned no pool")?;
        let status = pool.status.clone().unwrap_or_default();
        let snapshot = pool.spec.as_ref().and_then(|s| s.snapshot_id.as_deref());
        if snapshot == Some(snapshot_id)
            && status.phase == WarmPoolPhase::Ready as i32
            && status.running_instances >= status.desired_size.max(1)
            && status.running_instances + status.stopped_instances == POOL_MAX
        {
            return Ok(status);
        }
        if started.elapsed() > POOL_PATIENCE {
            return Err(format!("the pool did not get back to its size in {} s: {status:?}", POOL_PATIENCE.as_secs()));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn print_prebuilds(all: &[Prebuilt], snapshot_layer: u64) {
    let Some(first) = all.first() else { return };
    let mut header = format!("{:<52}", "step (from the prebuild's log, as it was written), s");
    for n in 1..=all.len() {
        header += &format!(" {:>8}", if n == 1 { "#1 cold".to_string() } else { format!("#{n}") });
    }
    println!("{header} {:>8}", "p50");
    let cell = |d: Option<Duration>| d.map_or(format!(" {:>8}", "n/a"), |d| format!(" {:>8.2}", d.as_secs_f64()));
    for (index, (step, _)) in first.steps.iter().enumerate() {
        let sample: Vec<Option<Duration>> = all.iter().map(|p| p.steps.get(index).and_then(|(_, d)| *d)).collect();
        let known: Vec<Duration> = sample.iter().flatten().copied().collect();
        let line: String = sample.iter().map(|d| cell(*d)).collect();
        println!("{step:<52}{line} {:>8.2}", p50_max(&known).0 / 1000.0);
    }
    let totals: Vec<Duration> = all.iter().map(|p| p.total).collect();
    let line: String = totals.iter().map(|d| cell(Some(*d))).collect();
    println!("{:<52}{line} {:>8.2}", "total: CreatePrebuild to COMPLETED", p50_max(&totals).0 / 1000.0);
    for (n, prebuilt) in all.iter().enumerate() {
        let phases: Vec<String> = prebuilt.phases.iter().map(|(phase, at)| format!("{phase} {:.2}", at.as_secs_f64())).collect();
        println!("#{} phases first seen by GetPrebuild, s: {}", n + 1, phases.join(", "));
    }
    if let Some(last) = all.last() {
        println!(
            "snapshot {}: image {:.1} MB, its layer {:.1} MB",
            Bench::snapshot_image(&last.id),
            mb(last.image_bytes),
            mb(snapshot_layer)
        );
    }
}

/// Writes dirty pages out (untimed), so that one measurement's writeback
/// does not land in the next.
async fn settle() {
    let _ = tokio::process::Command::new("sync").kill_on_drop(true).status().await;
}

fn print_claims(rounds: &[Claim], floor: &[Duration]) {
    let opt = |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.0}", ms(d)));
    println!(
        "{:<6} {:>7} {:>14} {:>14} {:>9} {:>16} {:>16} {:>14}",
        "claim", "pool", "ClaimInstance", "to exec true", "attempts", "promoted start", "new start", "backfilled"
    );
    println!("{:<6} {:>7} {:>14} {:>14} {:>9} {:>16} {:>16} {:>14}", "", "r+s", "ms", "ms", "", "ms", "ms", "s");
    for (n, claim) in rounds.iter().enumerate() {
        println!(
            "{:<6} {:>7} {:>14.1} {:>14.1} {:>9} {:>16} {:>16} {:>14.2}",
            n + 1,
            claim.shape,
            ms(claim.rpc),
            ms(claim.to_shell),
            claim.attempts,
            opt(claim.promoted),
            opt(claim.fresh),
            claim.backfilled.as_secs_f64()
        );
    }
    let stat = |f: fn(&Claim) -> Option<Duration>| p50_max(&rounds.iter().filter_map(f).collect::<Vec<_>>());
    let (rpc, rpc_max) = stat(|c| Some(c.rpc));
    let (shell, shell_max) = stat(|c| Some(c.to_shell));
    let (filled, filled_max) = stat(|c| Some(c.backfilled));
    println!("ClaimInstance: p50 {rpc:.1} ms, max {rpc_max:.1} ms");
    println!("claim to shell (ClaimInstance, then docker exec true answering): p50 {shell:.1} ms, max {shell_max:.1} ms");
    println!("claim to the pool back at its size: p50 {:.2} s, max {:.2} s", filled / 1000.0, filled_max / 1000.0);
    let (exec, exec_max) = p50_max(floor);
    println!("floor: docker exec true in a running container: p50 {exec:.1} ms, max {exec_max:.1} ms");
    println!("(pool r+s: running + created instances before the claim; promoted/new start: Docker's StartedAt of the replacement, from the claim)");
}

/// Instance start and creation times.
#[derive(Default)]
struct Creation {
    create: Vec<Duration>,
    start: Vec<Duration>,
    start_to_shell: Vec<Duration>,
    run: Vec<Duration>,
    run_to_shell: Vec<Duration>,
}

impl Creation {
    fn print(&self, image_bytes: u64) {
        let sum = |a: &[Duration], b: &[Duration]| a.iter().zip(b).map(|(a, b)| *a + *b).collect::<Vec<_>>();
        let create_start = sum(&self.create, &self.start);
        let create_shell = sum(&self.create, &self.start_to_shell);
        println!("{:<56} {:>9} {:>9} {:>10}", format!("({ROUNDS} each; image {:.1} MB)", mb(image_bytes)), "p50 ms", "max ms", "MB/s p50");
        let row = |what: &str, sample: &[Duration], throughput: bool| {
            let (p50, max) = p50_max(sample);
            let rate = if throughput { format!("{:.0}", mb(image_bytes) / (p50 / 1000.0).max(1e-9)) } else { String::new() };
            println!("{what:<56} {p50:>9.1} {max:>9.1} {rate:>10}");
        };
        row("3. docker start of a created instance (CLI returns)", &self.start, false);
        row("3. docker start until docker exec true answers", &self.start_to_shell, false);
        row("4b. docker create (runner's settings)", &self.create, false);
        row("4b. create + start (runner's settings)", &create_start, true);
        row("4b. create + start, until exec answers", &create_shell, true);
        row("4b. baseline: docker run -d (same image, same settings)", &self.run, true);
        row("4b. baseline: docker run -d, until exec answers", &self.run_to_shell, true);
        println!("(overlay2 copies no layer data to make a container: these times do not grow with the image, so MB/s only restates them)");
    }
}

/// A tar of a busybox rootfs: the applets as links to it, root and a `dev`
/// user (UID 1000), `/workspaces` and `/opt`.
fn busybox_rootfs(applets: &[String]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let dir = |builder: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, owner: u64| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(mode);
        header.set_uid(owner);
        header.set_gid(owner);
        header.set_size(0);
        builder.append_data(&mut header, path, std::io::empty())
    };
    for (path, mode, owner) in [
        ("bin", 0o755, 0),
        ("etc", 0o755, 0),
        ("tmp", 0o1777, 0),
        ("root", 0o700, 0),
        ("home", 0o755, 0),
        ("home/dev", 0o755, 1000),
        ("opt", 0o755, 0),
        ("workspaces", 0o755, 0),
        ("proc", 0o755, 0),
        ("sys", 0o755, 0),
        ("dev", 0o755, 0),
    ] {
        dir(&mut builder, path, mode, owner)?;
    }
    let file = |builder: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, content: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_mode(mode);
        header.set_size(content.len() as u64);
        builder.append_data(&mut header, path, content)
    };
    file(&mut builder, "bin/busybox", 0o755, &std::fs::read("/bin/busybox")?)?;
    file(&mut builder, "etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\ndev:x:1000:1000:dev:/home/dev:/bin/sh\n")?;
    file(&mut builder, "etc/group", 0o644, b"root:x:0:\ndev:x:1000:\n")?;
    for applet in applets {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        builder.append_link(&mut header, format!("bin/{applet}"), "busybox")?;
    }
    builder.into_inner()
}

/// Words of source-like text (it compresses about as source does).
const WORDS: &[&str] = &[
    "fn",
    "let",
    "mut",
    "pub",
    "struct",
    "impl",
    "self",
    "match",
    "return",
    "Some(value)",
    "None",
    "Ok(())",
    "Err(error)",
    "=>",
    "{",
    "}",
    "(",
    ");",
    "&str",
    "String",
    "Vec<u8>",
    "usize",
    "config",
    "runner",
    "snapshot",
    "instance",
    "container",
    "workspace",
    "prebuild",
    "pool",
    "async",
    ".await?",
    "if",
    "else",
    "for",
    "in",
    "while",
    "loop",
    "break;",
    "const",
    "use",
    "crate::",
    "super::",
    "where",
    "Clone",
    "Debug",
    "#[derive(Debug)]",
    "assert_eq!",
    "format!(\"{}\",",
    "0",
    "1",
    "42",
    "true",
    "false",
    "//",
    "->",
    "::new()",
];

/// The project: `.devcontainer/devcontainer.json` and the workspace's text
/// files; and, in `outside`, the same number of random bytes as the
/// onCreateCommand writes in the container (for the host baselines).
/// Returns the workspace's size in bytes.
fn generate(project: &Path, outside: &Path, base_image: &str) -> std::io::Result<u64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    std::fs::create_dir_all(project.join(".devcontainer"))?;
    let config = serde_json::json!({ "name": "bench", "image": base_image, "onCreateCommand": on_create() });
    let config = serde_json::to_vec_pretty(&config).map_err(std::io::Error::other)?;
    std::fs::write(project.join(".devcontainer/devcontainer.json"), &config)?;
    let mut bytes = config.len() as u64;
    let mut text = Vec::with_capacity(FILE_BYTES + 256);
    for d in 0..DIRS {
        let dir = project.join("src").join(format!("module_{d:02}"));
        std::fs::create_dir_all(&dir)?;
        for f in 0..FILES_PER_DIR {
            text.clear();
            while text.len() < FILE_BYTES {
                text.extend(std::iter::repeat_n(b' ', 4 * rng.random_range(0..4)));
                for _ in 0..rng.random_range(3..10) {
                    if rng.random_range(0..6) == 0 {
                        for _ in 0..rng.random_range(4..12) {
                            text.push(b"abcdefghijklmnopqrstuvwxyz_0123456789"[rng.random_range(0..37)]);
                        }
                    } else {
                        text.extend_from_slice(WORDS[rng.random_range(0..WORDS.len())].as_bytes());
                    }
                    text.push(b' ');
                }
                text.push(b'\n');
            }
            text.truncate(FILE_BYTES);
            std::fs::write(dir.join(format!("file_{f:03}.rs")), &text)?;
            bytes += text.len() as u64;
        }
    }
    std::fs::create_dir_all(outside)?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(outside.join("bench-build-output"))?);
    let mut chunk = vec![0u8; 1_000_000];
    for _ in 0..OUTSIDE_MB {
        rng.fill_bytes(&mut chunk);
        std::io::Write::write_all(&mut file, &chunk)?;
    }
    std::io::Write::flush(&mut file)?;
    Ok(bytes)
}
