//! The local runner on its own (no server): real prebuilds of repositories
//! made here, their snapshots and logs, failures, stops that kill whole
//! process trees (`prebuilds.rs`), warm pools made from the snapshots
//! (`pools.rs`), the sandbox the lifecycle commands run in (`sandbox.rs`;
//! it needs bubblewrap, `bwrap`, and fails without it) and its network
//! (`network.rs`; it needs root, slirp4netns, nftables and iproute2).
//!
//! Every test is bounded in time (`within`), and the git it uses needs no
//! global identity. Fixtures live under the build's temporary directory,
//! not `/tmp`: the sandbox has a `/tmp` of its own, which would hide a data
//! dir there whatever else it did.

#[path = "../common/network.rs"]
#[allow(dead_code)]
mod fixtures;
mod network;
mod pools;
mod prebuilds;
mod sandbox;

use prebuildd::runner::local::{LocalRunner, SandboxSettings};
use prebuildd::runner::{JobState, LogSink, PoolObservation, PoolTarget, PrebuildJob, Runner, RunnerEvents};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The bound on a whole test.
const TEST_LIMIT: Duration = Duration::from_secs(120);
/// The bound on one wait inside a test.
const PATIENCE: Duration = Duration::from_secs(60);

async fn within<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_LIMIT, test).await.expect("the test took too long")
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

/// A repository with a README, `extra` files, and optionally a
/// `.devcontainer/devcontainer.json`; committed if `as_git`.
fn repository(dir: &Path, devcontainer: Option<&str>, extra: &[(&str, &str)], as_git: bool) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("README.md"), "a test repository\n").unwrap();
    if let Some(text) = devcontainer {
        std::fs::create_dir_all(dir.join(".devcontainer")).unwrap();
        std::fs::write(dir.join(".devcontainer/devcontainer.json"), text).unwrap();
    }
    for (name, text) in extra {
        std::fs::write(dir.join(name), text).unwrap();
    }
    if as_git {
        git(dir, &["init", "-q"]);
        git(dir, &["add", "."]);
        git(dir, &["commit", "-q", "-m", "initial"]);
    }
}

/// The devcontainer.json of the main test: comments, a trailing comma, an
/// onCreateCommand string, and an updateContentCommand object whose two
/// commands (a string and an array) run in parallel.
const DEVCONTAINER: &str = r#"{
  // The prebuild runs onCreateCommand, then updateContentCommand.
  "name": "test // not a comment",
  "image": "mcr.microsoft.com/devcontainers/base", /* not used on the host */
  "onCreateCommand": "echo creating-the-environment && mkdir -p out && echo built > out/result.txt",
  "updateContentCommand": {
    "a": "echo parallel-a > out/a.txt && echo log-from-a",
    "b": ["sh", "-c", "echo parallel-b > out/b.txt && echo log-from-b"],
  },
  "postCreateCommand": "echo not-in-a-prebuild > out/post.txt",
}"#;

/// The runner's own directory under a data dir, as the runner registry
/// chooses it: `<data_dir>/local/<runner id>`.
const ROOT: &str = "data/local/3f1a2b3c-4d5e-4f60-8a7b-1c2d3e4f5a6b";

/// Where a fixture's configuration file would be (the sandbox hides it).
const CONFIG_FILE: &str = "etc/prebuildd.toml";

struct Fixture {
    /// Repositories, logs and the runner's root; removed at the end.
    dir: tempfile::TempDir,
    runner: LocalRunner,
}

/// A runner on the fixture directory `dir`, told to hide the data dir and
/// the configuration file as the server tells it; sandboxed or not.
fn runner_in(dir: &Path, sandboxed: bool) -> LocalRunner {
    let hidden = vec![dir.join("data"), dir.join(CONFIG_FILE)];
    LocalRunner::new(&dir.join(ROOT), SandboxSettings::new(sandboxed, hidden), RunnerEvents::new()).unwrap()
}

impl Fixture {
    /// A sandboxed runner (the default configuration).
    fn new() -> Fixture {
        Fixture::with_sandbox(true)
    }

    fn with_sandbox(sandboxed: bool) -> Fixture {
        let dir = tempfile::Builder::new().prefix("local-runner-").tempdir_in(outside_tmp()).unwrap();
        std::fs::create_dir_all(dir.path().join("data/logs")).unwrap();
        let runner = runner_in(dir.path(), sandboxed);
        Fixture { dir, runner }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn data_dir(&self) -> PathBuf {
        self.path("data")
    }

    /// The runner's root (canonical, as the paths it reports are).
    fn root(&self) -> PathBuf {
        self.path(ROOT).canonicalize().unwrap()
    }

    fn log_path(&self, prebuild_id: &str) -> PathBuf {
        self.data_dir().join("logs").join(format!("{prebuild_id}.log"))
    }

    fn log(&self, prebuild_id: &str) -> String {
        std::fs::read_to_string(self.log_path(prebuild_id)).unwrap_or_default()
    }

    fn workspace(&self, environment_id: &str) -> PathBuf {
        self.root().join("workspaces").join(environment_id)
    }

    /// Starts a job for `repository`; returns its prebuild and environment IDs.
    async fn start(&self, repository: &str) -> (String, String) {
        self.start_in_class(repository, Default::default()).await
    }

    /// Starts a job for `repository` in a class with `policy`.
    async fn start_in_class(&self, repository: &str, policy: prebuildd::catalog::ClassPolicy) -> (String, String) {
        let (prebuild_id, environment_id) = (uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().to_string());
        let job = PrebuildJob {
            prebuild_id: prebuild_id.clone(),
            environment_id: environment_id.clone(),
            project_id: uuid::Uuid::new_v4().to_string(),
            environment_class_id: uuid::Uuid::new_v4().to_string(),
            repository: repository.to_string(),
            tag_latest: false,
            resources: Default::default(),
            policy,
            devcontainer_path: None,
            source: Default::default(),
            log: LogSink::new(self.log_path(&prebuild_id)),
        };
        self.runner.start(job.clone()).await.unwrap();
        self.runner.start(job).await.unwrap();
        (prebuild_id, environment_id)
    }

    /// Polls until the job reaches a final state; returns it and every
    /// state seen on the way.
    async fn finish(&self, prebuild_id: &str) -> (JobState, Vec<JobState>) {
        let started = Instant::now();
        let mut seen: Vec<JobState> = Vec::new();
        loop {
            let state = self.runner.observe(prebuild_id).await.expect("the runner knows the job");
            if seen.last() != Some(&state) {
                seen.push(state.clone());
            }
            if matches!(state, JobState::Completed { .. } | JobState::Failed { .. } | JobState::Stopped) {
                return (state, seen);
            }
            assert!(started.elapsed() < PATIENCE, "the job never ended: {seen:?}\nlog:\n{}", self.log(prebuild_id));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A prebuild of `repository` that must complete; returns its ID.
    async fn completed_prebuild(&self, repository: &Path) -> String {
        let (prebuild_id, _) = self.start(&repository.display().to_string()).await;
        let (state, _) = self.finish(&prebuild_id).await;
        assert!(matches!(state, JobState::Completed { .. }), "{state:?}\n{}", self.log(&prebuild_id));
        prebuild_id
    }
}

/// Unpacks a snapshot archive into a new temporary directory.
fn unpack(archive: &Path) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    tar::Archive::new(zstd::Decoder::new(std::fs::File::open(archive).unwrap()).unwrap()).unpack(out.path()).unwrap();
    out
}

/// Live (not zombie) processes whose command line is `command`.
fn processes_with(command: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // The state follows the command name's closing parenthesis.
        let zombie = stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmdline).replace('\0', " ").trim_end() == command {
            found.push(pid);
        }
    }
    found
}

async fn eventually(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Where fixtures go that sandboxed commands must see as the host has them:
/// not under /tmp (a sandbox has its own), wherever the checkout lies.
fn outside_tmp() -> &'static Path {
    Path::new("/var/tmp")
}
