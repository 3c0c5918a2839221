//! The local runner on its own (no server): real prebuilds of repositories
//! made here, their snapshots and logs, failures, stops that kill whole
//! process trees, and warm pools made from the snapshots.
//!
//! Every test is bounded in time (`within`), and the git it uses needs no
//! global identity.

use prebuildd::runner::local::LocalRunner;
use prebuildd::runner::{JobState, LogSink, PoolObservation, PoolTarget, PrebuildJob, Runner};
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

struct Fixture {
    /// Repositories, logs and the runner's root; removed at the end.
    dir: tempfile::TempDir,
    runner: LocalRunner,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data/logs")).unwrap();
        let runner = LocalRunner::new(&dir.path().join(ROOT)).unwrap();
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
        let (prebuild_id, environment_id) = (uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().to_string());
        let job = PrebuildJob {
            prebuild_id: prebuild_id.clone(),
            environment_id: environment_id.clone(),
            project_id: uuid::Uuid::new_v4().to_string(),
            environment_class_id: uuid::Uuid::new_v4().to_string(),
            repository: repository.to_string(),
            resources: Default::default(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prebuild_runs_the_lifecycle_and_snapshots_the_workspace() {
    within(async {
        let fixture = Fixture::new();
        let repo = fixture.path("repo");
        repository(&repo, Some(DEVCONTAINER), &[], true);

        let (prebuild_id, environment_id) = fixture.start(&repo.display().to_string()).await;
        let (state, seen) = fixture.finish(&prebuild_id).await;
        let log = fixture.log(&prebuild_id);
        let JobState::Completed { snapshot_size_bytes, warning } = state else { panic!("{state:?}\n{log}") };
        assert_eq!(warning, None);
        assert_eq!(seen.first(), Some(&JobState::Starting), "{seen:?}");

        // The snapshot: at the deterministic path, of the real size, holding
        // the repository and what the commands wrote (and nothing a
        // prebuild does not run).
        let archive = fixture.runner.snapshot_path(&prebuild_id);
        assert_eq!(archive, fixture.root().join("snapshots").join(format!("{prebuild_id}.tar.zst")));
        assert_eq!(snapshot_size_bytes as u64, std::fs::metadata(&archive).unwrap().len());
        let unpacked = unpack(&archive);
        let read = |name: &str| std::fs::read_to_string(unpacked.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(read("out/result.txt"), "built\n");
        assert_eq!(read("out/a.txt"), "parallel-a\n");
        assert_eq!(read("out/b.txt"), "parallel-b\n");
        assert_eq!(read("README.md"), "a test repository\n");
        assert!(unpacked.path().join(".git").is_dir(), "the snapshot is the whole workspace");
        assert!(!unpacked.path().join("out/post.txt").exists(), "postCreateCommand is not part of a prebuild");

        // The log: what happened, and the commands' own output.
        for line in ["cloning", "creating-the-environment", "log-from-a", "log-from-b", "image is not used", "snapshot written"] {
            assert!(log.contains(line), "{line:?} missing from the log:\n{log}");
        }
        assert!(!fixture.workspace(&environment_id).exists(), "the workspace goes once the snapshot is written");

        // Final states stay final.
        fixture.runner.stop(&prebuild_id).await.unwrap();
        assert!(matches!(fixture.runner.observe(&prebuild_id).await, Some(JobState::Completed { .. })));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_survive_a_new_runner_and_remove_deletes_them() {
    within(async {
        let fixture = Fixture::new();
        let repo = fixture.path("repo");
        repository(&repo, None, &[], true);
        let prebuild_id = fixture.completed_prebuild(&repo).await;
        let Fixture { dir, runner } = fixture;
        let archive = runner.snapshot_path(&prebuild_id);
        drop(runner);

        let again = LocalRunner::new(&dir.path().join(ROOT)).unwrap();
        assert_eq!(again.snapshot_path(&prebuild_id), archive);
        assert!(archive.is_file(), "a snapshot outlives its runner");
        assert_eq!(again.observe(&prebuild_id).await, None, "jobs do not");

        again.remove(&prebuild_id).await.unwrap();
        assert!(!archive.exists());
        again.remove(&prebuild_id).await.unwrap();
        again.remove("0190aaaa-0000-7000-8000-000000000000").await.unwrap();
        again.stop("0190aaaa-0000-7000-8000-000000000000").await.unwrap();
        assert_eq!(again.observe("0190aaaa-0000-7000-8000-000000000000").await, None);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_names_itself_its_exit_code_and_the_last_lines() {
    within(async {
        let fixture = Fixture::new();
        let repo = fixture.path("repo");
        let devcontainer = r#"{
          "onCreateCommand": "echo line-1; echo line-2; echo about-to-fail >&2; exit 3",
          "updateContentCommand": "echo never > never.txt", // not reached
        }"#;
        repository(&repo, Some(devcontainer), &[], true);
        let (prebuild_id, environment_id) = fixture.start(&repo.display().to_string()).await;
        let (state, _) = fixture.finish(&prebuild_id).await;
        let JobState::Failed { message } = state else { panic!("{state:?}") };
        for part in
            ["onCreateCommand", "echo line-1; echo line-2; echo about-to-fail >&2; exit 3", "exited with code 3", "line-2\nabout-to-fail"]
        {
            assert!(message.contains(part), "{part:?} missing from {message:?}");
        }
        assert!(message.lines().count() <= 7, "a few lines, not the whole log: {message:?}");
        assert!(!fixture.runner.snapshot_path(&prebuild_id).exists());
        assert!(!fixture.workspace(&environment_id).exists());
        assert!(fixture.log(&prebuild_id).contains("failed: onCreateCommand"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_devcontainer_the_snapshot_holds_the_repository_with_a_warning() {
    within(async {
        let fixture = Fixture::new();
        let repo = fixture.path("repo");
        repository(&repo, None, &[("main.c", "int main;\n")], true);
        let (prebuild_id, _) = fixture.start(&repo.display().to_string()).await;
        let (state, _) = fixture.finish(&prebuild_id).await;
        let JobState::Completed { warning: Some(warning), .. } = state else { panic!("{state:?}") };
        assert!(warning.contains("no .devcontainer/devcontainer.json found"), "{warning}");
        let unpacked = unpack(&fixture.runner.snapshot_path(&prebuild_id));
        assert_eq!(std::fs::read_to_string(unpacked.path().join("main.c")).unwrap(), "int main;\n");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_devcontainer_json_is_the_fallback() {
    within(async {
        let fixture = Fixture::new();
        let repo = fixture.path("repo");
        repository(&repo, None, &[(".devcontainer.json", r#"{"onCreateCommand": ["touch", "from-root-file"],}"#)], true);
        let prebuild_id = fixture.completed_prebuild(&repo).await;
        assert!(unpack(&fixture.runner.snapshot_path(&prebuild_id)).path().join("from-root-file").exists());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_directory_is_copied() {
    within(async {
        let fixture = Fixture::new();
        let plain = fixture.path("plain");
        repository(&plain, Some(r#"{"onCreateCommand": "echo made > made.txt"}"#), &[("notes.txt", "not in git\n")], false);
        std::fs::create_dir_all(plain.join("deep/er")).unwrap();
        std::fs::write(plain.join("deep/er/file"), "deep\n").unwrap();
        let prebuild_id = fixture.completed_prebuild(&plain).await;
        let unpacked = unpack(&fixture.runner.snapshot_path(&prebuild_id));
        assert_eq!(std::fs::read_to_string(unpacked.path().join("notes.txt")).unwrap(), "not in git\n");
        assert_eq!(std::fs::read_to_string(unpacked.path().join("deep/er/file")).unwrap(), "deep\n");
        assert_eq!(std::fs::read_to_string(unpacked.path().join("made.txt")).unwrap(), "made\n");
        assert!(!unpacked.path().join(".git").exists());
        assert!(fixture.log(&prebuild_id).contains("copying"));
        assert!(!plain.join("made.txt").exists(), "the source is left alone");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_clone_fails_with_gits_reason() {
    within(async {
        let fixture = Fixture::new();
        let missing = fixture.path("no-such-repository");
        let (prebuild_id, _) = fixture.start(&missing.display().to_string()).await;
        let (state, _) = fixture.finish(&prebuild_id).await;
        let JobState::Failed { message } = state else { panic!("{state:?}") };
        assert!(message.starts_with("git clone of"), "{message}");
        assert!(message.contains("does not exist"), "git's own reason: {message}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_every_process_of_the_environment_quickly() {
    within(async {
        let fixture = Fixture::new();
        let repo = fixture.path("repo");
        // A shell with a background child and a foreground one, beside an
        // array command whose shell spawns its own children. The durations
        // are unique, so that only this run's processes are counted.
        let base = 10_000_000 + (uuid::Uuid::new_v4().as_u128() % 80_000_000) as u64;
        let sleepers: Vec<String> = (0..4).map(|n| format!("sleep {}", base + n)).collect();
        let devcontainer = format!(
            r#"{{
              "onCreateCommand": {{
                "shell": "{} & {}; echo never",
                "exec": ["sh", "-c", "{} & {} & wait"],
              }},
            }}"#,
            sleepers[0], sleepers[1], sleepers[2], sleepers[3]
        );
        repository(&repo, Some(&devcontainer), &[], true);
        let (prebuild_id, environment_id) = fixture.start(&repo.display().to_string()).await;
        eventually("all four sleeps run", PATIENCE, || sleepers.iter().all(|s| !processes_with(s).is_empty())).await;
        assert_eq!(fixture.runner.observe(&prebuild_id).await, Some(JobState::Running));

        let started = Instant::now();
        fixture.runner.stop(&prebuild_id).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(1), "stop is quick: {:?}", started.elapsed());
        assert_eq!(fixture.runner.observe(&prebuild_id).await, Some(JobState::Stopped));
        eventually("every sleep is gone", Duration::from_secs(5), || sleepers.iter().all(|s| processes_with(s).is_empty())).await;

        fixture.runner.stop(&prebuild_id).await.unwrap();
        assert_eq!(fixture.runner.observe(&prebuild_id).await, Some(JobState::Stopped), "stop is idempotent");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(fixture.runner.observe(&prebuild_id).await, Some(JobState::Stopped), "and stays stopped");
        assert!(!fixture.log(&prebuild_id).lines().any(|line| line == "never"), "the rest of the command never ran");

        fixture.runner.remove(&prebuild_id).await.unwrap();
        assert_eq!(fixture.runner.observe(&prebuild_id).await, None);
        assert!(!fixture.workspace(&environment_id).exists());
        assert!(!fixture.runner.snapshot_path(&prebuild_id).exists());
    })
    .await;
}

/// Syncs until the observation is `wanted`, checking `each` on every one.
async fn converge(runner: &LocalRunner, target: &PoolTarget, wanted: PoolObservation, mut each: impl FnMut(&PoolObservation)) {
    let started = Instant::now();
    loop {
        let observed = runner.sync_pool(target.clone()).await.unwrap();
        each(&observed);
        if observed == wanted {
            return;
        }
        assert!(started.elapsed() < PATIENCE, "the pool never converged to {wanted:?}: {observed:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pool's directory: instance directories and stopped markers.
fn pool_contents(root: &Path, warm_pool_id: &str) -> (usize, usize) {
    let entries: Vec<String> = std::fs::read_dir(root.join("pools").join(warm_pool_id))
        .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let markers = entries.iter().filter(|n| n.ends_with(".stopped")).count();
    let dirs = entries.iter().filter(|n| !n.contains('.')).count();
    (dirs, markers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pool_converges_hands_out_rotates_and_empties() {
    within(async {
        let fixture = Fixture::new();
        let repo = fixture.path("repo");
        repository(&repo, Some(DEVCONTAINER), &[], true);
        let first = fixture.completed_prebuild(&repo).await;
        let runner = &fixture.runner;
        let pool_id = uuid::Uuid::now_v7().to_string();
        let target = |snapshot: &str| PoolTarget {
            warm_pool_id: pool_id.clone(),
            snapshot_id: Some(snapshot.into()),
            running: 2,
            stopped: 1,
            resources: Default::default(),
        };
        let ready = PoolObservation { running: 2, stopped: 1, outdated: 0, failure: None };

        // Converges: two extracted workspaces and one marker.
        let started = Instant::now();
        let observed = runner.sync_pool(target(&first)).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(1), "sync does not wait for extractions");
        assert_eq!(observed.stopped, 1, "a stopped instance is only a marker: there at once");
        converge(runner, &target(&first), ready.clone(), |_| {}).await;
        assert_eq!(pool_contents(&fixture.root(), &pool_id), (2, 1));

        // A claim hands out a workspace with the repository and the prebuild's output.
        let claimed = runner.claim_instance(&pool_id).await.unwrap().expect("a ready instance");
        assert_eq!(claimed.snapshot_id, first);
        let workspace = Path::new(&claimed.workspace_path);
        assert_eq!(workspace, fixture.root().join("claimed").join(&claimed.instance_id));
        assert_eq!(std::fs::read_to_string(workspace.join("README.md")).unwrap(), "a test repository\n");
        assert_eq!(std::fs::read_to_string(workspace.join("out/result.txt")).unwrap(), "built\n");

        // The next syncs backfill (the stopped one is promoted, a new slot reserved).
        let observed = runner.sync_pool(target(&first)).await.unwrap();
        assert_eq!((observed.running, observed.stopped), (1, 1), "{observed:?}");
        converge(runner, &target(&first), ready.clone(), |_| {}).await;

        // Rotation: a new snapshot; a claimable instance exists throughout.
        std::fs::write(repo.join("NEW.md"), "second version\n").unwrap();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", "second"]);
        let second = fixture.completed_prebuild(&repo).await;
        let observed = runner.sync_pool(target(&second)).await.unwrap();
        assert!(observed.running + observed.outdated >= 2, "old instances stay until new ones are ready: {observed:?}");
        let during = runner.claim_instance(&pool_id).await.unwrap().expect("a claim finds an instance mid-rotation");
        assert!(during.snapshot_id == first || during.snapshot_id == second);
        converge(runner, &target(&second), ready.clone(), |observed| {
            assert!(observed.running + observed.outdated >= 1, "nothing claimable mid-rotation: {observed:?}");
        })
        .await;
        // Their files are deleted in the background.
        eventually("the old instances' files are gone", PATIENCE, || pool_contents(&fixture.root(), &pool_id) == (2, 1)).await;
        let after = runner.claim_instance(&pool_id).await.unwrap().expect("a ready instance");
        assert_eq!(after.snapshot_id, second);
        assert!(Path::new(&after.workspace_path).join("NEW.md").is_file());

        // Removal empties it.
        let started = Instant::now();
        while !runner.remove_pool(&pool_id).await.unwrap() {
            assert!(started.elapsed() < PATIENCE, "the pool never emptied");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!fixture.root().join("pools").join(&pool_id).exists());
        assert!(runner.remove_pool(&pool_id).await.unwrap(), "removing again is harmless");
        assert_eq!(runner.claim_instance(&pool_id).await.unwrap(), None);
        assert!(Path::new(&claimed.workspace_path).is_dir(), "claimed instances belong to their claimants");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_without_a_snapshot_provisions_nothing_and_a_missing_archive_says_why() {
    within(async {
        let fixture = Fixture::new();
        let runner = &fixture.runner;
        let pool_id = uuid::Uuid::now_v7().to_string();
        let none = PoolTarget { warm_pool_id: pool_id.clone(), snapshot_id: None, running: 2, stopped: 3, resources: Default::default() };
        assert_eq!(runner.sync_pool(none).await.unwrap(), PoolObservation::default());
        assert_eq!(pool_contents(&fixture.root(), &pool_id), (0, 0));
        assert_eq!(runner.claim_instance(&pool_id).await.unwrap(), None);

        let missing = "0190bbbb-0000-7000-8000-000000000000";
        let target = PoolTarget {
            warm_pool_id: pool_id.clone(),
            snapshot_id: Some(missing.into()),
            running: 1,
            stopped: 1,
            resources: Default::default(),
        };
        let observed = runner.sync_pool(target).await.unwrap();
        let failure = observed.failure.expect("a failure");
        assert!(failure.contains(missing) && failure.contains("missing"), "{failure}");
        assert_eq!((observed.running, observed.stopped), (0, 0));
        assert!(runner.remove_pool(&pool_id).await.unwrap());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_progress_is_reported_as_it_goes() {
    within(async {
        let fixture = Fixture::new();
        let repo = fixture.path("repo");
        // Incompressible bytes, so that archiving takes a while.
        repository(&repo, Some(r#"{"onCreateCommand": "head -c 40000000 /dev/urandom > blob"}"#), &[], true);
        let (prebuild_id, _) = fixture.start(&repo.display().to_string()).await;
        let started = Instant::now();
        let mut percents = Vec::new();
        let end = loop {
            match fixture.runner.observe(&prebuild_id).await.expect("known") {
                JobState::Snapshotting { percent } => percents.push(percent),
                state @ (JobState::Completed { .. } | JobState::Failed { .. }) => break state,
                _ => {}
            }
            assert!(started.elapsed() < PATIENCE, "never ended");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        assert!(matches!(end, JobState::Completed { snapshot_size_bytes, .. } if snapshot_size_bytes > 40_000_000), "{end:?}");
        assert!(!percents.is_empty(), "the snapshot phase was observed");
        assert!(percents.windows(2).all(|w| w[0] <= w[1]), "progress never goes back: {percents:?}");
        assert!(percents.iter().all(|p| (0..=99).contains(p)), "100 only once completed: {percents:?}");
        // 40 MB take far longer to archive than the 2 ms between observations.
        assert!(percents.iter().any(|p| (1..99).contains(p)), "progress between the ends was seen: {percents:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_snapshotting_leaves_no_archive() {
    within(async {
        let fixture = Fixture::new();
        let repo = fixture.path("repo");
        repository(&repo, Some(r#"{"onCreateCommand": "head -c 40000000 /dev/urandom > blob"}"#), &[], true);
        let (prebuild_id, _) = fixture.start(&repo.display().to_string()).await;
        let started = Instant::now();
        while !matches!(fixture.runner.observe(&prebuild_id).await, Some(JobState::Snapshotting { .. })) {
            assert!(started.elapsed() < PATIENCE, "never snapshotted: {:?}", fixture.runner.observe(&prebuild_id).await);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        fixture.runner.stop(&prebuild_id).await.unwrap();
        assert_eq!(fixture.runner.observe(&prebuild_id).await, Some(JobState::Stopped));
        let snapshots = fixture.root().join("snapshots");
        // The archiving thread notices the stop and deletes its partial file.
        eventually("the snapshots directory is empty", PATIENCE, || std::fs::read_dir(&snapshots).unwrap().next().is_none()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(std::fs::read_dir(&snapshots).unwrap().next().is_none(), "and stays empty");
        assert_eq!(fixture.runner.observe(&prebuild_id).await, Some(JobState::Stopped));
        fixture.runner.remove(&prebuild_id).await.unwrap();
    })
    .await;
}
