//! The local runner: real prebuilds on this machine.
//!
//! A prebuild's environment is a workspace directory,
//! `<data_dir>/local/<runner id>/workspaces/<prebuild id>`: the project's repository is
//! cloned into it (any git URL or path; a plain directory is copied), the
//! prebuild part of the devcontainer lifecycle runs in it (each command its
//! own process group, so cancel and timeout kill it whole, its output in the
//! prebuild's log), and its snapshot is a zstd-compressed tar at
//! `<data_dir>/local/<runner id>/snapshots/<prebuild id>.tar.zst`.
//!
//! Warm pool instances live under `<data_dir>/local/<runner id>/pools/<pool>/`: a running
//! instance is a workspace extracted from the snapshot, ready to hand out; a
//! stopped one is a reserved slot that costs a marker file, and becomes
//! running by extraction, which is faster than a prebuild.
//!
//! Jobs and instances are tracked in memory; snapshots survive restarts
//! (their paths are derived from the prebuild ID), and leftover workspaces
//! and instances of a previous run are cleared at start.

use super::devcontainer::{self, LifecycleCommand};
use super::{ClaimedInstance, JobState, LogSink, PoolObservation, PoolTarget, PrebuildJob, Runner};
use crate::error::{Error, Result};
use async_trait::async_trait;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many log lines a failure message quotes.
const FAILURE_LOG_LINES: usize = 5;

pub struct LocalRunner {
    root: PathBuf,
    jobs: Mutex<HashMap<String, Job>>,
    pools: Arc<Mutex<HashMap<String, Pool>>>,
}

impl std::fmt::Debug for LocalRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRunner").field("root", &self.root).finish_non_exhaustive()
    }
}

/// A job's shared state: what `observe` reports, and the process groups
/// that `stop` kills.
#[derive(Debug)]
struct Shared {
    state: Mutex<JobState>,
    process_groups: Mutex<Vec<i32>>,
    percent: AtomicI32,
}

struct Job {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Pool {
    instances: Vec<Instance>,
    failure: Option<String>,
}

#[derive(Debug, Clone)]
struct Instance {
    id: String,
    snapshot_id: String,
    /// Running (wanted extracted) or stopped (a reserved slot).
    running: bool,
    /// Extracted and ready to claim.
    ready: bool,
    dir: PathBuf,
}

fn io_error(context: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Internal(format!("{context}: {e}"))
}

impl LocalRunner {
    /// A runner rooted at `root` (`<data_dir>/local/<runner id>`: each local
    /// runner has its own, so one starting never touches another's work),
    /// clearing what a previous run left half-done (workspaces and pool
    /// instances; snapshots are kept).
    pub fn new(root: &Path) -> Result<LocalRunner> {
        let root = root.to_path_buf();
        for dir in ["workspaces", "pools"] {
            let _ = std::fs::remove_dir_all(root.join(dir));
        }
        for dir in ["workspaces", "snapshots", "pools", "claimed"] {
            std::fs::create_dir_all(root.join(dir)).map_err(io_error(format!("cannot create {}", root.join(dir).display())))?;
        }
        Ok(LocalRunner { root, jobs: Mutex::new(HashMap::new()), pools: Arc::default() })
    }

    /// Where a prebuild's snapshot is (also after a restart).
    pub fn snapshot_path(&self, prebuild_id: &str) -> PathBuf {
        self.root.join("snapshots").join(format!("{prebuild_id}.tar.zst"))
    }

    fn workspace(&self, prebuild_id: &str) -> PathBuf {
        self.root.join("workspaces").join(prebuild_id)
    }

    fn lock_jobs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Job>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn set_state(shared: &Shared, state: JobState) {
    *shared.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
}

fn kill_groups(shared: &Shared) {
    for pgid in shared.process_groups.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        // SAFETY: kill(2) with a negative pid signals a process group; it
        // touches no memory of ours.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// The last lines of a log, for failure messages.
fn last_lines(log: &LogSink, count: usize) -> String {
    let text = std::fs::read_to_string(log.path()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// Runs a program in `dir` in its own process group with its output in the
/// log; returns its exit code.
async fn run_process(shared: &Shared, log: &LogSink, dir: &Path, program: &str, args: &[String]) -> std::result::Result<i32, String> {
    let stdout = log.open_append().map_err(|e| format!("cannot open the log: {e}"))?;
    let stderr = stdout.try_clone().map_err(|e| format!("cannot open the log: {e}"))?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    if let Some(pid) = child.id() {
        shared.process_groups.lock().unwrap_or_else(|e| e.into_inner()).push(pid as i32);
    }
    let status = child.wait().await.map_err(|e| format!("waiting for {program}: {e}"))?;
    if let Some(pid) = child.id() {
        shared.process_groups.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| *p != pid as i32);
    }
    Ok(status.code().unwrap_or(-1))
}

/// Runs one lifecycle command (parallel parts at once); `Err` says which
/// command failed and how.
fn run_command<'a>(
    shared: &'a Shared,
    log: &'a LogSink,
    dir: &'a Path,
    key: &'a str,
    command: &'a LifecycleCommand,
) -> futures::future::BoxFuture<'a, std::result::Result<(), String>> {
    Box::pin(async move {
        let code = match command {
            LifecycleCommand::Shell(line) => {
                log.line(&format!("$ {line}"));
                run_process(shared, log, dir, "/bin/sh", &["-c".to_string(), line.clone()]).await?
            }
            LifecycleCommand::Exec(argv) => {
                log.line(&format!("$ {}", argv.join(" ")));
                let (program, args) = argv.split_first().ok_or_else(|| format!("{key} is an empty command"))?;
                run_process(shared, log, dir, program, args).await?
            }
            LifecycleCommand::Parallel(commands) => {
                let runs = commands.iter().map(|(name, command)| run_command(shared, log, dir, key, command).map_err_name(name.clone()));
                for result in futures::future::join_all(runs).await {
                    result?;
                }
                return Ok(());
            }
        };
        if code == 0 {
            Ok(())
        } else {
            Err(format!("{key} `{}` exited with code {code}", command.describe()))
        }
    })
}

trait NameErrors<'a> {
    fn map_err_name(self, name: String) -> futures::future::BoxFuture<'a, std::result::Result<(), String>>;
}

impl<'a> NameErrors<'a> for futures::future::BoxFuture<'a, std::result::Result<(), String>> {
    fn map_err_name(self, name: String) -> futures::future::BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move { self.await.map_err(|e| format!("{e} (parallel command \"{name}\")")) })
    }
}

/// Clones or copies the repository into the (empty) workspace.
async fn materialize(shared: &Shared, log: &LogSink, repository: &str, workspace: &Path) -> std::result::Result<(), String> {
    let source = Path::new(repository);
    let parent = workspace.parent().ok_or("the workspace has no parent directory")?;
    if source.is_dir() && !source.join(".git").exists() {
        log.line(&format!("copying {repository} into the workspace"));
        let (from, to) = (source.to_path_buf(), workspace.to_path_buf());
        return tokio::task::spawn_blocking(move || copy_dir(&from, &to))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot copy {repository}: {e}"));
    }
    log.line(&format!("cloning {repository}"));
    let mut args = vec!["clone".to_string(), "--quiet".to_string()];
    if !source.exists() {
        // A URL: only the newest commit is needed.
        args.extend(["--depth".to_string(), "1".to_string()]);
    }
    args.extend([repository.to_string(), workspace.display().to_string()]);
    match run_process(shared, log, parent, "git", &args).await? {
        0 => Ok(()),
        code => {
            Err(format!("git clone of {repository} failed with exit code {code}; last log lines:\n{}", last_lines(log, FAILURE_LOG_LINES)))
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// A reader that counts what passes through it.
struct Counting<R> {
    inner: R,
    done: Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn total_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => total_size(&e.path()),
                    Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
                    _ => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn append_tree(
    builder: &mut tar::Builder<impl std::io::Write>,
    dir: &Path,
    prefix: &Path,
    done: &Arc<std::sync::atomic::AtomicU64>,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::result::Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = prefix.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            builder.append_dir(&name, &path)?;
            append_tree(builder, &path, &name, done)?;
        } else if kind.is_file() {
            let file = std::fs::File::open(&path)?;
            let mut header = tar::Header::new_gnu();
            header.set_metadata(&file.metadata()?);
            builder.append_data(&mut header, &name, Counting { inner: file, done: done.clone() })?;
        } else if kind.is_symlink() {
            builder.append_path_with_name(&path, &name)?;
        }
    }
    Ok(())
}

/// Writes the workspace's snapshot (temp file, fsync, rename), updating
/// `percent` as it goes; returns its size.
fn write_snapshot(workspace: &Path, target: &Path, percent: &AtomicI32) -> std::io::Result<u64> {
    let total = total_size(workspace).max(1);
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let temporary = target.with_extension("tmp");
    let file = std::fs::File::create(&temporary)?;
    let encoder = zstd::Encoder::new(file, 3)?;
    let mut builder = tar::Builder::new(encoder);
    builder.follow_symlinks(false);
    let progress = {
        let done = done.clone();
        move || ((done.load(Ordering::Relaxed) * 100 / total) as i32).clamp(0, 99)
    };
    let finished = std::sync::atomic::AtomicBool::new(false);
    let walked = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !finished.load(Ordering::Relaxed) {
                percent.store(progress(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let result = append_tree(&mut builder, workspace, Path::new("."), &done);
        finished.store(true, Ordering::Relaxed);
        result
    });
    walked?;
    let file = builder.into_inner()?.finish()?;
    file.sync_all()?;
    std::fs::rename(&temporary, target)?;
    std::fs::metadata(target).map(|m| m.len())
}

/// The whole prebuild of one job.
async fn prebuild(shared: Arc<Shared>, job: PrebuildJob, workspace: PathBuf, snapshot: PathBuf) -> JobState {
    let log = job.log.clone();
    let _ = tokio::fs::remove_dir_all(&workspace).await;
    if let Err(message) = materialize(&shared, &log, &job.repository, &workspace).await {
        return JobState::Failed { message };
    }

    set_state(&shared, JobState::Running);
    let devcontainer =
        [workspace.join(".devcontainer").join("devcontainer.json"), workspace.join(".devcontainer.json")].into_iter().find(|p| p.is_file());
    let mut warning = None;
    match devcontainer {
        None => {
            let text = "no .devcontainer/devcontainer.json found; the snapshot holds the repository only".to_string();
            log.line(&format!("warning: {text}"));
            warning = Some(text);
        }
        Some(path) => {
            let text = match tokio::fs::read_to_string(&path).await {
                Ok(text) => text,
                Err(e) => return JobState::Failed { message: format!("cannot read {}: {e}", path.display()) },
            };
            let lifecycle = match devcontainer::parse(&text) {
                Ok(lifecycle) => lifecycle,
                Err(message) => return JobState::Failed { message },
            };
            for (key, command) in &lifecycle.commands {
                if let Err(failure) = run_command(&shared, &log, &workspace, key, command).await {
                    return JobState::Failed { message: format!("{failure}; last log lines:\n{}", last_lines(&log, FAILURE_LOG_LINES)) };
                }
            }
        }
    }

    set_state(&shared, JobState::Stopping);
    log.line("stopping the environment");
    kill_groups(&shared);

    set_state(&shared, JobState::Snapshotting { percent: 0 });
    log.line("writing the snapshot");
    let progress = shared.clone();
    let (from, to) = (workspace.clone(), snapshot.clone());
    let written = tokio::task::spawn_blocking(move || write_snapshot(&from, &to, &progress.percent)).await;
    let _ = tokio::fs::remove_dir_all(&workspace).await;
    match written {
        Ok(Ok(size)) => {
            log.line(&format!("snapshot written: {size} bytes"));
            JobState::Completed { snapshot_size_bytes: size as i64, warning }
        }
        Ok(Err(e)) => JobState::Failed { message: format!("cannot write the snapshot: {e}") },
        Err(e) => JobState::Failed { message: format!("the snapshot writer failed: {e}") },
    }
}

fn extract(snapshot: &Path, into: &Path) -> std::io::Result<()> {
    let temporary = into.with_extension("extracting");
    let _ = std::fs::remove_dir_all(&temporary);
    std::fs::create_dir_all(&temporary)?;
    let decoder = zstd::Decoder::new(std::fs::File::open(snapshot)?)?;
    tar::Archive::new(decoder).unpack(&temporary)?;
    std::fs::rename(&temporary, into)
}

#[async_trait]
impl Runner for LocalRunner {
    async fn start(&self, job: PrebuildJob) -> Result<()> {
        let mut jobs = self.lock_jobs();
        if jobs.contains_key(&job.prebuild_id) {
            return Ok(());
        }
        let shared =
            Arc::new(Shared { state: Mutex::new(JobState::Starting), process_groups: Mutex::default(), percent: AtomicI32::new(0) });
        let (workspace, snapshot) = (self.workspace(&job.prebuild_id), self.snapshot_path(&job.prebuild_id));
        let id = job.prebuild_id.clone();
        let task_shared = shared.clone();
        let task = tokio::spawn(async move {
            let log = job.log.clone();
            let end = prebuild(task_shared.clone(), job, workspace, snapshot).await;
            if let JobState::Failed { message } = &end {
                log.line(&format!("failed: {message}"));
            }
            kill_groups(&task_shared);
            set_state(&task_shared, end);
        });
        jobs.insert(id, Job { shared, task });
        Ok(())
    }

    async fn observe(&self, prebuild_id: &str) -> Option<JobState> {
        let jobs = self.lock_jobs();
        let job = jobs.get(prebuild_id)?;
        let state = job.shared.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Some(match state {
            JobState::Snapshotting { .. } => JobState::Snapshotting { percent: job.shared.percent.load(Ordering::Relaxed) },
            other => other,
        })
    }

    async fn stop(&self, prebuild_id: &str) -> Result<()> {
        let jobs = self.lock_jobs();
        if let Some(job) = jobs.get(prebuild_id) {
            let mut state = job.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            if !matches!(*state, JobState::Completed { .. } | JobState::Failed { .. } | JobState::Stopped) {
                job.task.abort();
                kill_groups(&job.shared);
                *state = JobState::Stopped;
            }
        }
        Ok(())
    }

    async fn remove(&self, prebuild_id: &str) -> Result<()> {
        self.stop(prebuild_id).await?;
        self.lock_jobs().remove(prebuild_id);
        let (workspace, snapshot) = (self.workspace(prebuild_id), self.snapshot_path(prebuild_id));
        tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(&workspace);
            match std::fs::remove_file(&snapshot) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(Error::Internal(format!("cannot remove {}: {e}", snapshot.display())))
                }
                _ => Ok(()),
            }
        })
        .await
        .map_err(|e| Error::Internal(format!("removing a prebuild's files: {e}")))?
    }

    async fn sync_pool(&self, target: PoolTarget) -> Result<PoolObservation> {
        let pool_dir = self.root.join("pools").join(&target.warm_pool_id);
        let mut extractions = Vec::new();
        let observation = {
            let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
            let pool = pools.entry(target.warm_pool_id.clone()).or_default();
            let Some(snapshot_id) = target.snapshot_id.clone() else {
                pool.instances.clear();
                let _ = std::fs::remove_dir_all(&pool_dir);
                return Ok(PoolObservation::default());
            };
            let archive = self.snapshot_path(&snapshot_id);
            if !archive.is_file() {
                pool.failure = Some(format!("the snapshot of prebuild {snapshot_id} is missing on this runner"));
            } else {
                let current = |i: &Instance| i.snapshot_id == snapshot_id;
                // Running instances: promote stopped ones first, then add.
                let mut running = pool.instances.iter().filter(|i| current(i) && i.running).count() as u32;
                for instance in pool.instances.iter_mut().filter(|i| i.snapshot_id == snapshot_id && !i.running) {
                    if running >= target.running {
                        break;
                    }
                    instance.running = true;
                    extractions.push(instance.clone());
                    running += 1;
                }
                while running < target.running {
                    let id = uuid::Uuid::now_v7().to_string();
                    let instance = Instance { dir: pool_dir.join(&id), id, snapshot_id: snapshot_id.clone(), running: true, ready: false };
                    extractions.push(instance.clone());
                    pool.instances.push(instance);
                    running += 1;
                }
                let stopped = pool.instances.iter().filter(|i| current(i) && !i.running).count() as u32;
                for _ in stopped..target.stopped {
                    let id = uuid::Uuid::now_v7().to_string();
                    let dir = pool_dir.join(&id);
                    // A stopped instance is a marker naming its snapshot.
                    if std::fs::create_dir_all(&pool_dir).and_then(|_| std::fs::write(dir.with_extension("stopped"), &snapshot_id)).is_ok()
                    {
                        pool.instances.push(Instance { dir, id, snapshot_id: snapshot_id.clone(), running: false, ready: false });
                    }
                }
                // Scale down surplus instances of the current snapshot.
                let (mut keep_running, mut keep_stopped) = (target.running, target.stopped);
                pool.instances.retain(|i| {
                    if i.snapshot_id != snapshot_id {
                        return true;
                    }
                    let budget = if i.running { &mut keep_running } else { &mut keep_stopped };
                    if *budget == 0 {
                        let _ = std::fs::remove_dir_all(&i.dir);
                        let _ = std::fs::remove_file(i.dir.with_extension("stopped"));
                        return false;
                    }
                    *budget -= 1;
                    true
                });
                // Rotation: drop old-snapshot instances once the new ones are ready.
                let ready = pool.instances.iter().filter(|i| current(i) && i.running && i.ready).count() as u32;
                if ready >= target.running {
                    pool.instances.retain(|i| {
                        let keep = i.snapshot_id == snapshot_id;
                        if !keep {
                            let _ = std::fs::remove_dir_all(&i.dir);
                            let _ = std::fs::remove_file(i.dir.with_extension("stopped"));
                        }
                        keep
                    });
                }
            }
            PoolObservation {
                running: pool.instances.iter().filter(|i| i.snapshot_id == snapshot_id && i.running && i.ready).count() as u32,
                stopped: pool.instances.iter().filter(|i| i.snapshot_id == snapshot_id && !i.running).count() as u32,
                outdated: pool.instances.iter().filter(|i| i.snapshot_id != snapshot_id).count() as u32,
                failure: pool.failure.clone(),
            }
        };
        // Extract in the background; the next sync sees them ready.
        for instance in extractions {
            let pools = self.pools.clone();
            let archive = self.snapshot_path(&instance.snapshot_id);
            let pool_id = target.warm_pool_id.clone();
            tokio::spawn(async move {
                let dir = instance.dir.clone();
                let marker = dir.with_extension("stopped");
                let result = tokio::task::spawn_blocking(move || {
                    let _ = std::fs::remove_file(&marker);
                    extract(&archive, &dir)
                })
                .await;
                let mut pools = pools.lock().unwrap_or_else(|e| e.into_inner());
                let Some(pool) = pools.get_mut(&pool_id) else { return };
                match result {
                    Ok(Ok(())) => {
                        pool.failure = None;
                        if let Some(i) = pool.instances.iter_mut().find(|i| i.id == instance.id) {
                            i.ready = true;
                        }
                    }
                    Ok(Err(e)) => {
                        pool.failure = Some(format!("cannot make an instance from snapshot {}: {e}", instance.snapshot_id));
                        pool.instances.retain(|i| i.id != instance.id);
                    }
                    Err(e) => {
                        pool.failure = Some(format!("an instance extraction failed: {e}"));
                        pool.instances.retain(|i| i.id != instance.id);
                    }
                }
            });
        }
        Ok(observation)
    }

    async fn claim_instance(&self, warm_pool_id: &str) -> Result<Option<ClaimedInstance>> {
        let instance = {
            let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
            let Some(pool) = pools.get_mut(warm_pool_id) else { return Ok(None) };
            // The newest snapshot's instances were provisioned last: highest ID.
            let best = pool
                .instances
                .iter()
                .enumerate()
                .filter(|(_, i)| i.running && i.ready)
                .max_by(|(_, a), (_, b)| a.id.cmp(&b.id))
                .map(|(index, _)| index);
            match best {
                Some(index) => pool.instances.remove(index),
                None => return Ok(None),
            }
        };
        let claimed = self.root.join("claimed").join(&instance.id);
        let from = instance.dir.clone();
        let to = claimed.clone();
        tokio::task::spawn_blocking(move || std::fs::rename(&from, &to))
            .await
            .map_err(|e| Error::Internal(format!("claiming an instance: {e}")))?
            .map_err(io_error(format!("cannot hand out instance {}", instance.id)))?;
        Ok(Some(ClaimedInstance {
            instance_id: instance.id,
            snapshot_id: instance.snapshot_id,
            workspace_path: claimed.display().to_string(),
        }))
    }

    async fn remove_pool(&self, warm_pool_id: &str) -> Result<bool> {
        self.pools.lock().unwrap_or_else(|e| e.into_inner()).remove(warm_pool_id);
        let dir = self.root.join("pools").join(warm_pool_id);
        tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Internal(format!("cannot remove {}: {e}", dir.display()))),
            _ => Ok(true),
        })
        .await
        .map_err(|e| Error::Internal(format!("removing a pool: {e}")))?
    }
}
