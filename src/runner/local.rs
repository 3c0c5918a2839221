//! The local runner: real prebuilds on this machine, under its own root
//! directory (`<data_dir>/local/<runner id>`: each local runner has its own,
//! so one starting never touches another's work).
//!
//! **Prebuilds.** A prebuild's environment is a workspace directory,
//! `workspaces/<environment id>`. The project's repository is cloned into it
//! (any URL or path `git clone` accepts; a plain directory that is not a git
//! repository is copied), then the prebuild part of the devcontainer
//! lifecycle runs in it (`onCreateCommand`, `updateContentCommand`) on this
//! host, each command in its own process group so that a stop kills it
//! whole, its output appended to the prebuild's log. Its snapshot is a
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
//! This module knows nothing of the store or the API: it does what the
//! [`Runner`] trait asks and reports what exists.

use super::devcontainer::{self, LifecycleCommand};
use super::{ClaimedInstance, JobState, LogSink, PoolObservation, PoolTarget, PrebuildJob, Runner};
use crate::error::{Error, Result};
use async_trait::async_trait;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::AsyncReadExt;

/// How many log lines a failure message quotes: enough to show the error a
/// command printed last, short enough for a status field.
const FAILURE_LOG_LINES: usize = 5;

/// How far back from the end of a log the quoted lines are searched for, so
/// that a failure never reads a whole (possibly huge) log.
const LOG_TAIL_BYTES: u64 = 64 * 1024;

/// zstd's default level: a good ratio at a speed far above disk speed.
const ZSTD_LEVEL: i32 = 3;

/// The warning of a prebuild that had nothing to run.
const NO_DEVCONTAINER: &str = "no .devcontainer/devcontainer.json found; the snapshot holds the repository only";

pub struct LocalRunner {
    /// The runner's own directory, canonical (so that copying a project
    /// directory that holds the data dir can recognise and skip it).
    root: PathBuf,
    jobs: Mutex<HashMap<String, Job>>,
    /// Shared with the blocking threads that finish extractions.
    pools: Arc<Mutex<HashMap<String, Pool>>>,
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

/// What a job's task, `observe` and `stop` share.
#[derive(Debug)]
struct JobShared {
    state: Mutex<JobState>,
    /// Set by `stop`; blocking work (copy, archive) checks it and gives up.
    stopped: AtomicBool,
    /// The process groups started in the environment that may still have
    /// members. Kept until the environment stops, because a command can
    /// leave background processes behind.
    process_groups: Mutex<Vec<i32>>,
    /// The snapshot's progress, updated by the archiving thread.
    percent: AtomicI32,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the runner down with it: the data is
    // plain bookkeeping that stays consistent between statements.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_final(state: &JobState) -> bool {
    matches!(state, JobState::Completed { .. } | JobState::Failed { .. } | JobState::Stopped)
}

impl JobShared {
    fn new() -> Self {
        JobShared {
            state: Mutex::new(JobState::Starting),
            stopped: AtomicBool::new(false),
            process_groups: Mutex::default(),
            percent: AtomicI32::new(0),
        }
    }

    /// Moves to `next`, unless the job was stopped: a stop wins over whatever
    /// the task was about to report.
    fn advance(&self, next: JobState) {
        let mut state = lock(&self.state);
        if *state != JobState::Stopped {
            *state = next;
        }
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Marks the job stopped and kills its processes, unless it already
    /// ended. Returns whether it stopped it.
    fn stop(&self) -> bool {
        {
            let mut state = lock(&self.state);
            if is_final(&state) {
                return false;
            }
            *state = JobState::Stopped;
            self.stopped.store(true, Ordering::SeqCst);
        }
        self.kill_process_groups();
        true
    }

    /// Records a new process group. A stop that came between the spawn and
    /// this call did not see it, so it is killed here.
    fn adopt_process_group(&self, pgid: i32) {
        lock(&self.process_groups).push(pgid);
        if self.is_stopped() {
            self.kill_process_groups();
        }
    }

    /// Forgets a process group once it has no members left (so that a
    /// recycled ID is never signalled); one with survivors stays until the
    /// environment stops.
    fn release_process_group(&self, pgid: i32) {
        // SAFETY: kill(2) with signal 0 only checks that the group exists.
        let alive = unsafe { libc::kill(-pgid, 0) } == 0;
        if !alive {
            lock(&self.process_groups).retain(|p| *p != pgid);
        }
    }

    /// SIGKILL to every process group of the environment: the whole tree of
    /// each command, also what it started in the background.
    fn kill_process_groups(&self) {
        for pgid in lock(&self.process_groups).drain(..) {
            // SAFETY: kill(2) with a negative pid signals a process group; it
            // touches no memory of ours.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

/// What blocking work returns when it gives up because the job was stopped.
/// Not `ErrorKind::Interrupted`: `io::copy` (inside tar) retries those.
fn stopped_error() -> std::io::Error {
    std::io::Error::other("the prebuild was stopped")
}

fn internal(context: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Internal(format!("local runner: {context}: {e}"))
}

/// IDs become path components; anything that could leave its directory is a
/// caller's bug, refused before it touches the disk.
fn checked_id<'a>(kind: &str, id: &'a str) -> Result<&'a str> {
    let safe = !id.is_empty() && id != "." && id != ".." && !id.contains(['/', '\\', '\0']);
    if safe {
        Ok(id)
    } else {
        Err(Error::Internal(format!("local runner: {kind} {id:?} cannot name a directory")))
    }
}

/// Deletes a file or directory tree; a missing one is fine.
fn remove_path(path: &Path) -> std::io::Result<()> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Runs blocking file work on a blocking thread and waits for it.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| Error::Internal(format!("local runner: a file task failed: {e}")))
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
    /// left half-done there.
    pub fn new(root: &Path) -> Result<LocalRunner> {
        for dir in ["workspaces", "snapshots", "pools", "claimed"] {
            let path = root.join(dir);
            std::fs::create_dir_all(&path).map_err(internal(format!("cannot create {}", path.display())))?;
        }
        let root = root.canonicalize().map_err(internal(format!("cannot resolve {}", root.display())))?;
        sweep_leftovers(&root);
        Ok(LocalRunner { root, jobs: Mutex::default(), pools: Arc::default() })
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
            job.shared.kill_process_groups();
            job.task.abort();
        }
    }
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// Spawns a command in its own process group (so that a stop can kill its
/// whole tree) and registers the group with the job. `kill_on_drop` is a
/// backstop for a task dropped before it could kill the group.
fn spawn_in_group(shared: &JobShared, mut command: tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    command.stdin(Stdio::null()).process_group(0).kill_on_drop(true);
    let child = command.spawn()?;
    if let Some(pid) = child.id() {
        shared.adopt_process_group(pid as i32);
    }
    Ok(child)
}

async fn wait_in_group(shared: &JobShared, child: &mut tokio::process::Child) -> std::io::Result<ExitStatus> {
    let pid = child.id();
    let status = child.wait().await?;
    if let Some(pid) = pid {
        shared.release_process_group(pid as i32);
    }
    Ok(status)
}

/// How a process ended, in words.
fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "ended without an exit code".to_string(),
    }
}

/// Runs a program in `dir` with stdout and stderr appended to the log.
async fn run_logged(shared: &JobShared, log: &LogSink, dir: &Path, program: &str, args: &[String]) -> std::io::Result<ExitStatus> {
    let stdout = log.open_append()?;
    let stderr = stdout.try_clone()?;
    let mut command = tokio::process::Command::new(program);
    command.args(args).current_dir(dir).stdout(stdout).stderr(stderr);
    let mut child = spawn_in_group(shared, command)?;
    wait_in_group(shared, &mut child).await
}

/// The last `count` non-blank lines of a log (searched in its last
/// [`LOG_TAIL_BYTES`]).
fn tail_lines(path: &Path, count: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let length = file.metadata()?.len();
        file.seek(SeekFrom::Start(length.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    let text = read().unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

async fn log_tail(log: &LogSink) -> String {
    let path = log.path().to_path_buf();
    blocking(move || tail_lines(&path, FAILURE_LOG_LINES)).await.unwrap_or_default()
}

// ---------------------------------------------------------------------------
// The prebuild: materialize, lifecycle, snapshot
// ---------------------------------------------------------------------------

/// Whether a directory is a git repository: a work tree (`.git`, a
/// directory or a worktree's file) or a bare repository.
fn is_git_repository(dir: &Path) -> bool {
    dir.join(".git").exists() || (dir.join("HEAD").is_file() && dir.join("objects").is_dir() && dir.join("refs").is_dir())
}

/// Puts the repository into the (new) workspace: a clone, or a copy of a
/// plain directory.
async fn materialize(
    shared: &Arc<JobShared>,
    log: &LogSink,
    repository: &str,
    workspace: &Path,
    root: &Path,
) -> std::result::Result<(), String> {
    if repository.trim().is_empty() {
        return Err("the project has no repository to prebuild".into());
    }
    // A local path is made absolute: git runs elsewhere, and the copy needs
    // a canonical path to recognise the runner's own directory.
    match tokio::fs::canonicalize(repository).await {
        Ok(source) if source.is_dir() && !is_git_repository(&source) => copy_repository(shared, log, &source, workspace, root).await,
        Ok(source) => clone_repository(shared, log, &source.display().to_string(), false, workspace).await,
        Err(_) => clone_repository(shared, log, repository, true, workspace).await,
    }
}

async fn copy_repository(
    shared: &Arc<JobShared>,
    log: &LogSink,
    source: &Path,
    workspace: &Path,
    root: &Path,
) -> std::result::Result<(), String> {
    log.line(&format!("{} is a directory, not a git repository: copying it into the workspace", source.display()));
    let (from, to, skip, task_shared) = (source.to_path_buf(), workspace.to_path_buf(), root.to_path_buf(), shared.clone());
    blocking(move || copy_tree(&from, &to, &skip, &task_shared))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot copy {} into the workspace: {e}", source.display()))?;
    log.line("copied");
    Ok(())
}

/// Copies a directory tree: files with their permissions, symlinks as
/// symlinks; other kinds (sockets, FIFOs) are skipped, and so is `skip` (the
/// runner's own directory, should the source contain the data dir).
fn copy_tree(from: &Path, to: &Path, skip: &Path, shared: &JobShared) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        if shared.is_stopped() {
            return Err(stopped_error());
        }
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if source == skip {
            continue;
        }
        if kind.is_dir() {
            copy_tree(&source, &target, skip, shared)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
        } else if kind.is_file() {
            std::fs::copy(&source, &target)?;
        }
    }
    Ok(())
}

/// `git clone` into the workspace. A URL is cloned shallow (only the newest
/// commit is needed); a local repository is cloned whole, since git ignores
/// `--depth` for local paths (it hardlinks their objects, which is cheaper).
/// git's stderr is read here, so that a failure quotes git's own reason.
async fn clone_repository(
    shared: &JobShared,
    log: &LogSink,
    source: &str,
    shallow: bool,
    workspace: &Path,
) -> std::result::Result<(), String> {
    log.line(&format!("cloning {source}"));
    let stdout = log.open_append().map_err(|e| format!("cannot open the log: {e}"))?;
    let mut command = tokio::process::Command::new("git");
    command.arg("clone").arg("--quiet");
    if shallow {
        command.args(["--depth", "1"]);
    }
    command
        .arg("--")
        .arg(source)
        .arg(workspace)
        // Never wait for a password on a terminal: a private URL fails at once.
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GCM_INTERACTIVE", "never")
        .stdout(stdout)
        .stderr(Stdio::piped());
    if let Some(parent) = workspace.parent() {
        command.current_dir(parent);
    }
    let mut child = spawn_in_group(shared, command).map_err(|e| format!("cannot run git (is it installed?): {e}"))?;
    let mut errors = Vec::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_end(&mut errors).await;
    }
    let status = wait_in_group(shared, &mut child).await.map_err(|e| format!("waiting for git: {e}"))?;
    let errors = String::from_utf8_lossy(&errors);
    for line in errors.lines() {
        log.line(line);
    }
    if status.success() {
        log.line("cloned");
        return Ok(());
    }
    let lines: Vec<&str> = errors.lines().filter(|l| !l.trim().is_empty()).collect();
    let reason = lines[lines.len().saturating_sub(FAILURE_LOG_LINES)..].join("\n");
    Err(format!("git clone of {source} failed ({}): {reason}", describe_exit(status)))
}

/// Runs the workspace's prebuild lifecycle. Returns the warning to report,
/// if any, or why it failed.
async fn run_lifecycle(shared: &JobShared, log: &LogSink, workspace: &Path) -> std::result::Result<Option<String>, String> {
    let Some(path) = devcontainer::locate(workspace) else {
        log.line(&format!("warning: {NO_DEVCONTAINER}"));
        return Ok(Some(NO_DEVCONTAINER.to_string()));
    };
    let name = path.strip_prefix(workspace).unwrap_or(&path).display().to_string();
    let text = tokio::fs::read_to_string(&path).await.map_err(|e| format!("cannot read {name}: {e}"))?;
    let lifecycle = devcontainer::parse(&text).map_err(|e| format!("{name}: {e}"))?;
    log.line(&format!("read {name}"));
    if !lifecycle.container_keys.is_empty() {
        let verb = if lifecycle.container_keys.len() == 1 { "is" } else { "are" };
        log.line(&format!("note: this runner runs the commands on its host; {} {verb} not used", lifecycle.container_keys.join(", ")));
    }
    if lifecycle.commands.is_empty() {
        log.line("no onCreateCommand or updateContentCommand; nothing to run");
    }
    for (key, command) in &lifecycle.commands {
        log.line(&format!("running {key}"));
        if let Err(failure) = run_command(shared, log, workspace, key, command).await {
            return Err(format!("{failure}; last log lines:\n{}", log_tail(log).await));
        }
    }
    Ok(None)
}

/// Runs one lifecycle command; the parts of an object run at once, and the
/// first failure ends the others (their groups are killed when the job ends).
async fn run_command(
    shared: &JobShared,
    log: &LogSink,
    dir: &Path,
    key: &str,
    command: &LifecycleCommand,
) -> std::result::Result<(), String> {
    match command {
        LifecycleCommand::Parallel(parts) => {
            let runs = parts.iter().map(|(name, part)| run_single(shared, log, dir, format!("{key}.{name}"), part));
            futures::future::try_join_all(runs).await.map(|_| ())
        }
        single => run_single(shared, log, dir, key.to_string(), single).await,
    }
}

/// Runs a string (by `/bin/sh -c`) or an array (directly, no shell). `Err`
/// names the command as written and how it ended.
async fn run_single(
    shared: &JobShared,
    log: &LogSink,
    dir: &Path,
    label: String,
    command: &LifecycleCommand,
) -> std::result::Result<(), String> {
    let written = command.describe();
    let (program, args) = match command {
        LifecycleCommand::Shell(line) => ("/bin/sh".to_string(), vec!["-c".to_string(), line.clone()]),
        LifecycleCommand::Exec(argv) => match argv.split_first() {
            Some((program, args)) => (program.clone(), args.to_vec()),
            None => return Ok(()),
        },
        LifecycleCommand::Parallel(_) => return Err(format!("{label}: parallel commands do not nest")),
    };
    log.line(&format!("[{label}] $ {written}"));
    let status = run_logged(shared, log, dir, &program, &args).await.map_err(|e| format!("{label} `{written}` could not start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{label} `{written}` {}", describe_exit(status)))
    }
}

/// The whole prebuild of one job. Returns the snapshot's size and warning,
/// or why it failed.
async fn prebuild(
    shared: &Arc<JobShared>,
    job: &PrebuildJob,
    workspace: &Path,
    snapshot: &Path,
    root: &Path,
) -> std::result::Result<(u64, Option<String>), String> {
    let log = &job.log;
    // A job started again after a restart begins from a clean environment.
    let stale = workspace.to_path_buf();
    blocking(move || remove_path(&stale)).await.map_err(|e| e.to_string())?.map_err(|e| format!("cannot clear the workspace: {e}"))?;
    materialize(shared, log, &job.repository, workspace, root).await?;

    shared.advance(JobState::Running);
    let warning = run_lifecycle(shared, log, workspace).await?;

    shared.advance(JobState::Stopping);
    log.line("stopping the environment");
    shared.kill_process_groups();

    shared.advance(JobState::Snapshotting { percent: 0 });
    log.line("writing the snapshot");
    let (task_shared, from, to) = (shared.clone(), workspace.to_path_buf(), snapshot.to_path_buf());
    let size = blocking(move || write_snapshot(&from, &to, &task_shared))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot write the snapshot: {e}"))?;
    log.line(&format!("snapshot written: {size} bytes"));
    Ok((size, warning))
}

/// A job's task: the prebuild, then its end state, with the environment's
/// processes and workspace gone (the snapshot is all that stays).
async fn run_job(shared: Arc<JobShared>, job: PrebuildJob, workspace: PathBuf, snapshot: PathBuf, root: PathBuf) {
    let end = match prebuild(&shared, &job, &workspace, &snapshot, &root).await {
        Ok((size, warning)) => JobState::Completed { snapshot_size_bytes: i64::try_from(size).unwrap_or(i64::MAX), warning },
        Err(message) => {
            if !shared.is_stopped() {
                job.log.line(&format!("failed: {message}"));
            }
            JobState::Failed { message }
        }
    };
    shared.kill_process_groups();
    if let Ok(Err(error)) = blocking(move || remove_path(&workspace)).await {
        tracing::warn!(prebuild = %job.prebuild_id, %error, "local runner: cannot remove a finished workspace");
    }
    shared.advance(end);
}

// ---------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------

/// A reader that counts the bytes archived, publishes the percentage, and
/// gives up once the job is stopped.
struct Progress<'a, R> {
    inner: R,
    shared: &'a JobShared,
    done: &'a AtomicU64,
    total: u64,
}

impl<R: Read> Read for Progress<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.shared.is_stopped() {
            return Err(stopped_error());
        }
        let n = self.inner.read(buf)?;
        let done = self.done.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        // 100 is for Completed: the archive is not durable until it is renamed.
        let percent = (done.saturating_mul(100) / self.total).min(99);
        self.shared.percent.store(percent as i32, Ordering::Relaxed);
        Ok(n)
    }
}

/// The bytes of the regular files in a tree (symlinks are not followed):
/// what the archive's progress counts.
fn tree_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            total += tree_size(&entry.path())?;
        } else if kind.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// Appends a directory's contents to the archive under `prefix` (relative
/// names, sorted, so that equal trees give equal archives).
fn append_tree<W: std::io::Write>(
    builder: &mut tar::Builder<W>,
    dir: &Path,
    prefix: &Path,
    shared: &JobShared,
    done: &AtomicU64,
    total: u64,
) -> std::io::Result<()> {
    let mut entries = std::fs::read_dir(dir)?.collect::<std::io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let (path, name) = (entry.path(), prefix.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            builder.append_dir(&name, &path)?;
            append_tree(builder, &path, &name, shared, done, total)?;
        } else if kind.is_file() {
            let file = std::fs::File::open(&path)?;
            let mut header = tar::Header::new_gnu();
            header.set_metadata(&file.metadata()?);
            builder.append_data(&mut header, &name, Progress { inner: file, shared, done, total })?;
        } else if kind.is_symlink() {
            builder.append_path_with_name(&path, &name)?;
        }
    }
    Ok(())
}

/// The temporary name an archive is written under until it is complete.
fn partial_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    target.with_file_name(name)
}

/// Writes the workspace's snapshot: to a temporary name, fsynced, then
/// renamed into place (so a snapshot that exists is whole), with the
/// progress in `shared.percent`. A stop discards it. Returns its size.
fn write_snapshot(workspace: &Path, target: &Path, shared: &JobShared) -> std::io::Result<u64> {
    let total = tree_size(workspace)?.max(1);
    let partial = partial_path(target);
    let written = (|| {
        let file = std::fs::File::create(&partial)?;
        let mut builder = tar::Builder::new(zstd::Encoder::new(file, ZSTD_LEVEL)?);
        builder.follow_symlinks(false);
        append_tree(&mut builder, workspace, Path::new(""), shared, &AtomicU64::new(0), total)?;
        let file = builder.into_inner()?.finish()?;
        file.sync_all()
    })();
    let committed = written.and_then(|()| {
        // Under the state lock, so that a stop either comes first (and the
        // archive is discarded) or after (and `remove` deletes it).
        let state = lock(&shared.state);
        if *state == JobState::Stopped {
            return Err(stopped_error());
        }
        std::fs::rename(&partial, target)?;
        drop(state);
        if let Some(dir) = target.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(std::fs::metadata(target)?.len())
    });
    if committed.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    committed
}

/// Extracts a snapshot archive into `into` (created here).
fn extract(archive: &Path, into: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(into)?;
    let decoder = zstd::Decoder::new(std::fs::File::open(archive)?)?;
    tar::Archive::new(decoder).unpack(into)
}

// ---------------------------------------------------------------------------
// Warm pools
// ---------------------------------------------------------------------------

/// A pool's instances as this runner knows them.
#[derive(Debug, Default)]
struct Pool {
    /// The snapshot of the last target: the newest, the one claims prefer.
    snapshot_id: Option<String>,
    instances: Vec<Instance>,
    /// Why the last extraction failed; cleared by a success or a new snapshot.
    extraction_failure: Option<String>,
    /// Extractions under way: their files may still appear, so the pool is
    /// not gone until they end.
    extracting: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InstanceState {
    /// A reserved slot: a marker file.
    Stopped,
    /// Being extracted (new, or promoted from stopped).
    Starting,
    /// Extracted: ready to claim.
    Running,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Instance {
    id: String,
    snapshot_id: String,
    state: InstanceState,
}

/// The file work one sync decided on, done after the pool's lock is released.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    /// New stopped instances, whose marker files are to be written.
    markers: Vec<Instance>,
    /// Instances to extract (new, or promoted from stopped).
    extractions: Vec<Instance>,
    /// Instances dropped (surplus, outdated), whose files are to be deleted.
    discarded: Vec<Instance>,
}

/// The states that count toward a pool's running target.
const ACTIVE: [InstanceState; 2] = [InstanceState::Starting, InstanceState::Running];

impl Pool {
    fn count(&self, snapshot_id: &str, states: &[InstanceState]) -> u32 {
        self.instances.iter().filter(|i| i.snapshot_id == snapshot_id && states.contains(&i.state)).count() as u32
    }

    /// Removes the instances `drop` selects, into `plan.discarded`.
    fn discard_where(&mut self, plan: &mut Plan, mut drop: impl FnMut(&Instance) -> bool) {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.instances).into_iter().partition(|i| drop(i));
        self.instances = kept;
        plan.discarded.extend(gone);
    }

    /// Drops the newest `surplus` instances of `snapshot_id` in `state`.
    fn trim(&mut self, plan: &mut Plan, snapshot_id: &str, state: InstanceState, mut surplus: u32) {
        let mut index = self.instances.len();
        while surplus > 0 && index > 0 {
            index -= 1;
            if self.instances[index].snapshot_id == snapshot_id && self.instances[index].state == state {
                plan.discarded.push(self.instances.remove(index));
                surplus -= 1;
            }
        }
    }

    /// Decides one step toward `target` (level-triggered: deciding again on
    /// the same state changes nothing). `can_provision` is false while the
    /// snapshot's archive is missing: then nothing new is made, and nothing
    /// that could still be claimed is dropped.
    fn plan(&mut self, target: &PoolTarget, can_provision: bool, mut new_id: impl FnMut() -> String) -> Plan {
        let mut plan = Plan::default();
        let Some(snapshot_id) = target.snapshot_id.clone() else {
            self.snapshot_id = None;
            self.discard_where(&mut plan, |_| true);
            return plan;
        };
        if self.snapshot_id.as_deref() != Some(snapshot_id.as_str()) {
            self.snapshot_id = Some(snapshot_id.clone());
            self.extraction_failure = None;
        }
        // Outdated instances that cannot be claimed are of no use.
        self.discard_where(&mut plan, |i| i.snapshot_id != snapshot_id && i.state != InstanceState::Running);

        if can_provision {
            self.provision(&mut plan, &snapshot_id, target, &mut new_id);
        }
        // Scale down: instances not yet ready go first.
        let surplus = self.count(&snapshot_id, &ACTIVE).saturating_sub(target.running);
        let starting = surplus.min(self.count(&snapshot_id, &[InstanceState::Starting]));
        self.trim(&mut plan, &snapshot_id, InstanceState::Starting, starting);
        self.trim(&mut plan, &snapshot_id, InstanceState::Running, surplus - starting);
        let stopped_surplus = self.count(&snapshot_id, &[InstanceState::Stopped]).saturating_sub(target.stopped);
        self.trim(&mut plan, &snapshot_id, InstanceState::Stopped, stopped_surplus);

        // Rotation: outdated running instances stay claimable until the new
        // snapshot's are ready.
        if self.count(&snapshot_id, &[InstanceState::Running]) >= target.running {
            self.discard_where(&mut plan, |i| i.snapshot_id != snapshot_id);
        }
        plan
    }

    /// Adds what is missing: running instances (promoting stopped ones
    /// first, since their slot is reserved already), then stopped ones.
    fn provision(&mut self, plan: &mut Plan, snapshot_id: &str, target: &PoolTarget, new_id: &mut impl FnMut() -> String) {
        let mut active = self.count(snapshot_id, &ACTIVE);
        for instance in self.instances.iter_mut().filter(|i| i.snapshot_id == snapshot_id && i.state == InstanceState::Stopped) {
            if active >= target.running {
                break;
            }
            instance.state = InstanceState::Starting;
            plan.extractions.push(instance.clone());
            active += 1;
        }
        for _ in active..target.running {
            let instance = Instance { id: new_id(), snapshot_id: snapshot_id.to_string(), state: InstanceState::Starting };
            plan.extractions.push(instance.clone());
            self.instances.push(instance);
        }
        for _ in self.count(snapshot_id, &[InstanceState::Stopped])..target.stopped {
            let instance = Instance { id: new_id(), snapshot_id: snapshot_id.to_string(), state: InstanceState::Stopped };
            plan.markers.push(instance.clone());
            self.instances.push(instance);
        }
    }

    fn observe(&self, missing_archive: Option<String>) -> PoolObservation {
        let Some(snapshot_id) = self.snapshot_id.as_deref() else {
            return PoolObservation { outdated: self.instances.len() as u32, ..Default::default() };
        };
        PoolObservation {
            running: self.count(snapshot_id, &[InstanceState::Running]),
            stopped: self.count(snapshot_id, &[InstanceState::Stopped]),
            outdated: self.instances.iter().filter(|i| i.snapshot_id != snapshot_id).count() as u32,
            failure: missing_archive.or_else(|| self.extraction_failure.clone()),
        }
    }

    /// Takes the running instance a claim gets: one of the newest snapshot,
    /// else (mid-rotation) the newest outdated one.
    fn take_for_claim(&mut self) -> Option<Instance> {
        let newest = self.snapshot_id.clone();
        let index = self
            .instances
            .iter()
            .enumerate()
            .filter(|(_, i)| i.state == InstanceState::Running)
            // Instance IDs are version 7 UUIDs: a later ID was made later.
            .max_by_key(|(_, i)| (Some(&i.snapshot_id) == newest.as_ref(), i.id.clone()))
            .map(|(index, _)| index)?;
        Some(self.instances.remove(index))
    }
}

/// An instance's files in its pool's directory.
struct InstancePaths {
    /// The workspace of a running instance.
    dir: PathBuf,
    /// A stopped instance's marker.
    marker: PathBuf,
    /// Where an extraction writes before it is complete.
    extracting: PathBuf,
}

fn instance_paths(pool_dir: &Path, instance_id: &str) -> InstancePaths {
    InstancePaths {
        dir: pool_dir.join(instance_id),
        marker: pool_dir.join(format!("{instance_id}.stopped")),
        extracting: pool_dir.join(format!("{instance_id}.extracting")),
    }
}

/// Writes stopped instances' markers: the snapshot and archive they will be
/// made from. Returns the instances whose marker could not be written.
fn write_markers(pool_dir: &Path, archive: &Path, instances: &[Instance]) -> Vec<(String, String)> {
    if let Err(e) = std::fs::create_dir_all(pool_dir) {
        return instances.iter().map(|i| (i.id.clone(), e.to_string())).collect();
    }
    instances
        .iter()
        .filter_map(|instance| {
            let text = format!("snapshot {}\narchive {}\n", instance.snapshot_id, archive.display());
            std::fs::write(instance_paths(pool_dir, &instance.id).marker, text).err().map(|e| (instance.id.clone(), e.to_string()))
        })
        .collect()
}

/// Deletes discarded instances' files (a starting one's partial extraction
/// is deleted by its extraction when it ends).
fn delete_instances(pool_dir: &Path, instances: &[Instance]) {
    for instance in instances {
        let paths = instance_paths(pool_dir, &instance.id);
        for path in [paths.dir, paths.marker] {
            if let Err(error) = remove_path(&path) {
                tracing::warn!(path = %path.display(), %error, "local runner: cannot remove a warm pool instance");
            }
        }
    }
}

/// Extracts one instance (on a blocking thread) and records the result:
/// ready, or the pool's failure. An instance discarded meanwhile (scale
/// down, rotation, pool removal) has its files deleted instead.
fn extract_instance(pools: &Mutex<HashMap<String, Pool>>, warm_pool_id: &str, pool_dir: &Path, archive: &Path, instance: &Instance) {
    let paths = instance_paths(pool_dir, &instance.id);
    let _ = remove_path(&paths.extracting);
    let extracted = extract(archive, &paths.extracting);
    let kept = {
        let mut pools = lock(pools);
        let pool = pools.get_mut(warm_pool_id);
        match pool.and_then(|pool| {
            let index = pool.instances.iter().position(|i| i.id == instance.id && i.state == InstanceState::Starting)?;
            Some((pool, index))
        }) {
            // The rename is quick; under the lock, so that a claim or a
            // discard never sees a ready instance without its files.
            Some((pool, index)) => match extracted.and_then(|()| std::fs::rename(&paths.extracting, &paths.dir)) {
                Ok(()) => {
                    pool.instances[index].state = InstanceState::Running;
                    pool.extraction_failure = None;
                    true
                }
                Err(e) => {
                    pool.instances.remove(index);
                    pool.extraction_failure =
                        Some(format!("cannot make an instance from the snapshot of prebuild {}: {e}", instance.snapshot_id));
                    false
                }
            },
            None => false,
        }
    };
    if !kept {
        let _ = remove_path(&paths.extracting);
    }
    // A promoted instance is no longer stopped (and a failed one is gone).
    let _ = remove_path(&paths.marker);
    if let Some(pool) = lock(pools).get_mut(warm_pool_id) {
        pool.extracting = pool.extracting.saturating_sub(1);
    }
}

impl LocalRunner {
    /// Why a pool's snapshot cannot be extracted, if it cannot.
    async fn missing_archive(&self, snapshot_id: Option<&str>) -> Option<String> {
        let snapshot_id = snapshot_id?;
        let archive = self.snapshot_path(snapshot_id);
        match tokio::fs::metadata(&archive).await {
            Ok(metadata) if metadata.is_file() => None,
            _ => Some(format!("the snapshot of prebuild {snapshot_id} is missing on this runner ({} does not exist)", archive.display())),
        }
    }

    /// Writes new stopped instances' markers; an instance whose marker could
    /// not be written is dropped and the failure reported.
    async fn write_pool_markers(&self, warm_pool_id: &str, markers: Vec<Instance>) -> Result<()> {
        let Some(snapshot_id) = markers.first().map(|i| i.snapshot_id.clone()) else { return Ok(()) };
        let (pool_dir, archive) = (self.pool_dir(warm_pool_id), self.snapshot_path(&snapshot_id));
        let failed = blocking(move || write_markers(&pool_dir, &archive, &markers)).await?;
        if let Some((_, error)) = failed.first() {
            if let Some(pool) = lock(&self.pools).get_mut(warm_pool_id) {
                pool.instances.retain(|i| !failed.iter().any(|(id, _)| *id == i.id));
                pool.extraction_failure = Some(format!("cannot reserve a stopped instance: {error}"));
            }
        }
        Ok(())
    }

    fn spawn_extraction(&self, warm_pool_id: &str, instance: Instance) {
        let (pools, pool_id) = (self.pools.clone(), warm_pool_id.to_string());
        let (pool_dir, archive) = (self.pool_dir(warm_pool_id), self.snapshot_path(&instance.snapshot_id));
        tokio::task::spawn_blocking(move || extract_instance(&pools, &pool_id, &pool_dir, &archive, &instance));
    }
}

// ---------------------------------------------------------------------------
// The trait
// ---------------------------------------------------------------------------

#[async_trait]
impl Runner for LocalRunner {
    async fn start(&self, job: PrebuildJob) -> Result<()> {
        checked_id("prebuild ID", &job.prebuild_id)?;
        checked_id("environment ID", &job.environment_id)?;
        let mut jobs = lock(&self.jobs);
        if jobs.contains_key(&job.prebuild_id) {
            return Ok(());
        }
        let shared = Arc::new(JobShared::new());
        let (workspace, snapshot) = (self.workspace(&job.environment_id), self.snapshot_path(&job.prebuild_id));
        let (prebuild_id, environment_id) = (job.prebuild_id.clone(), job.environment_id.clone());
        let task = tokio::spawn(run_job(shared.clone(), job, workspace, snapshot, self.root.clone()));
        jobs.insert(prebuild_id, Job { environment_id, shared, task });
        Ok(())
    }

    async fn observe(&self, prebuild_id: &str) -> Option<JobState> {
        let jobs = lock(&self.jobs);
        let shared = &jobs.get(prebuild_id)?.shared;
        let state = lock(&shared.state).clone();
        Some(match state {
            JobState::Snapshotting { .. } => JobState::Snapshotting { percent: shared.percent.load(Ordering::Relaxed) },
            other => other,
        })
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const OLD: &str = "01900000-0000-7000-8000-000000000001";
    const NEW: &str = "01900000-0000-7000-8000-000000000002";

    fn target(snapshot_id: Option<&str>, running: u32, stopped: u32) -> PoolTarget {
        PoolTarget { warm_pool_id: "pool".into(), snapshot_id: snapshot_id.map(str::to_string), running, stopped }
    }

    /// IDs that sort in creation order, as version 7 UUIDs do.
    fn ids() -> impl FnMut() -> String {
        let mut next = 0;
        move || {
            next += 1;
            format!("instance-{next:03}")
        }
    }

    /// Marks every starting instance extracted, as the extraction threads would.
    fn finish_extractions(pool: &mut Pool) {
        for instance in &mut pool.instances {
            if instance.state == InstanceState::Starting {
                instance.state = InstanceState::Running;
            }
        }
    }

    fn observed(pool: &Pool) -> (u32, u32, u32) {
        let o = pool.observe(None);
        (o.running, o.stopped, o.outdated)
    }

    #[test]
    fn a_pool_fills_then_holds_still() {
        let (mut pool, mut new_id) = (Pool::default(), ids());
        let plan = pool.plan(&target(Some(OLD), 2, 1), true, &mut new_id);
        assert_eq!((plan.extractions.len(), plan.markers.len(), plan.discarded.len()), (2, 1, 0));
        assert_eq!(observed(&pool), (0, 1, 0), "extractions are not ready yet");
        assert_eq!(pool.plan(&target(Some(OLD), 2, 1), true, &mut new_id), Plan::default(), "deciding again changes nothing");
        finish_extractions(&mut pool);
        assert_eq!(observed(&pool), (2, 1, 0));
        assert_eq!(pool.plan(&target(Some(OLD), 2, 1), true, &mut new_id), Plan::default());
    }

    #[test]
    fn a_claim_is_backfilled_by_promoting_a_stopped_instance_first() {
        let (mut pool, mut new_id) = (Pool::default(), ids());
        pool.plan(&target(Some(OLD), 2, 1), true, &mut new_id);
        finish_extractions(&mut pool);
        let stopped = pool.instances.iter().find(|i| i.state == InstanceState::Stopped).cloned().unwrap();
        assert!(pool.take_for_claim().is_some());
        let plan = pool.plan(&target(Some(OLD), 2, 1), true, &mut new_id);
        assert_eq!(plan.extractions.iter().map(|i| i.id.clone()).collect::<Vec<_>>(), vec![stopped.id], "the stopped one is promoted");
        assert_eq!(plan.markers.len(), 1, "and its slot reserved again");
        finish_extractions(&mut pool);
        assert_eq!(observed(&pool), (2, 1, 0));
    }

    #[test]
    fn rotation_keeps_old_instances_until_the_new_ones_are_ready() {
        let (mut pool, mut new_id) = (Pool::default(), ids());
        pool.plan(&target(Some(OLD), 2, 1), true, &mut new_id);
        finish_extractions(&mut pool);

        let plan = pool.plan(&target(Some(NEW), 2, 1), true, &mut new_id);
        assert_eq!((plan.extractions.len(), plan.markers.len()), (2, 1));
        assert_eq!(plan.discarded.len(), 1, "only the old stopped one (it cannot be claimed) goes now");
        assert_eq!(observed(&pool), (0, 1, 2));
        let claimed = pool.take_for_claim().unwrap();
        assert_eq!(claimed.snapshot_id, OLD, "mid-rotation, a claim still finds an instance");
        assert!(pool.plan(&target(Some(NEW), 2, 1), true, &mut new_id).discarded.is_empty(), "not ready: the old one stays");

        finish_extractions(&mut pool);
        assert_eq!(pool.take_for_claim().unwrap().snapshot_id, NEW, "the newest snapshot is preferred");
        pool.plan(&target(Some(NEW), 2, 1), true, &mut new_id);
        finish_extractions(&mut pool);
        let plan = pool.plan(&target(Some(NEW), 2, 1), true, &mut new_id);
        assert_eq!(plan.discarded.iter().map(|i| i.snapshot_id.as_str()).collect::<Vec<_>>(), vec![OLD], "now the old one goes");
        assert_eq!(observed(&pool), (2, 1, 0));
    }

    #[test]
    fn scaling_down_drops_instances_not_yet_ready_first() {
        let (mut pool, mut new_id) = (Pool::default(), ids());
        pool.plan(&target(Some(OLD), 1, 2), true, &mut new_id);
        finish_extractions(&mut pool);
        pool.plan(&target(Some(OLD), 3, 2), true, &mut new_id);
        let plan = pool.plan(&target(Some(OLD), 1, 0), true, &mut new_id);
        let states: Vec<_> = plan.discarded.iter().map(|i| i.state).collect();
        assert_eq!(
            states.iter().filter(|s| **s == InstanceState::Starting).count(),
            2,
            "the two still extracting go, the ready one stays: {states:?}"
        );
        assert_eq!(observed(&pool), (1, 0, 0));
    }

    #[test]
    fn a_missing_archive_provisions_nothing_and_no_snapshot_keeps_nothing() {
        let (mut pool, mut new_id) = (Pool::default(), ids());
        assert_eq!(pool.plan(&target(Some(OLD), 2, 1), false, &mut new_id), Plan::default());
        let observation = pool.observe(Some("missing".into()));
        assert_eq!(observation.failure.as_deref(), Some("missing"));

        pool.plan(&target(Some(OLD), 1, 1), true, &mut new_id);
        finish_extractions(&mut pool);
        let plan = pool.plan(&target(Some(NEW), 1, 1), false, &mut new_id);
        assert!(plan.extractions.is_empty() && plan.markers.is_empty());
        assert_eq!(observed(&pool), (0, 0, 1), "the old running one stays claimable");

        let plan = pool.plan(&target(None, 1, 1), true, &mut new_id);
        assert_eq!(plan.discarded.len(), 1);
        assert_eq!(pool.observe(None), PoolObservation::default());
    }

    #[test]
    fn ids_that_could_leave_their_directory_are_refused() {
        for id in ["", ".", "..", "a/b", "../x", "a\\b", "a\0b"] {
            assert!(checked_id("test", id).is_err(), "{id:?}");
        }
        assert_eq!(checked_id("test", "0190a2b3-aaaa-7000-8000-000000000000").unwrap(), "0190a2b3-aaaa-7000-8000-000000000000");
    }

    #[test]
    fn exits_read_as_words() {
        assert_eq!(describe_exit(ExitStatus::from_raw(3 << 8)), "exited with code 3");
        assert_eq!(describe_exit(ExitStatus::from_raw(libc::SIGKILL)), "was killed by signal 9");
    }

    #[test]
    fn the_tail_of_a_log_skips_blank_lines_and_reads_only_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut text = "x".repeat(LOG_TAIL_BYTES as usize * 2);
        text.push_str("\none\ntwo\n\nthree\nfour\nfive\nsix\n\n");
        std::fs::write(&path, text).unwrap();
        assert_eq!(tail_lines(&path, 5), "two\nthree\nfour\nfive\nsix");
        assert_eq!(tail_lines(&dir.path().join("missing"), 5), "");
    }

    #[test]
    fn git_repositories_are_told_from_plain_directories() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_git_repository(dir.path()));
        std::fs::create_dir_all(dir.path().join("bare/objects")).unwrap();
        std::fs::create_dir_all(dir.path().join("bare/refs")).unwrap();
        std::fs::write(dir.path().join("bare/HEAD"), "ref: refs/heads/main\n").unwrap();
        assert!(is_git_repository(&dir.path().join("bare")), "a bare repository");
        std::fs::create_dir_all(dir.path().join("work/.git")).unwrap();
        assert!(is_git_repository(&dir.path().join("work")), "a work tree");
    }

    fn sample_tree(dir: &Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir.join("src/empty")).unwrap();
        std::fs::write(dir.join("src/main.rs"), "fn main() {}\n").unwrap();
        std::fs::write(dir.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("big"), vec![7u8; 300_000]).unwrap();
        std::os::unix::fs::symlink("src/main.rs", dir.join("link")).unwrap();
    }

    #[test]
    fn a_snapshot_holds_the_tree_and_extracts_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let workspace = dir.path().join("workspace");
        sample_tree(&workspace);
        let archive = dir.path().join("snap.tar.zst");
        let shared = JobShared::new();
        let size = write_snapshot(&workspace, &archive, &shared).unwrap();
        assert_eq!(size, std::fs::metadata(&archive).unwrap().len());
        assert_eq!(shared.percent.load(Ordering::Relaxed), 99, "all bytes archived; 100 is for Completed");
        assert!(!partial_path(&archive).exists());

        let out = dir.path().join("out");
        extract(&archive, &out).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("src/main.rs")).unwrap(), "fn main() {}\n");
        assert!(out.join("src/empty").is_dir());
        assert_eq!(std::fs::metadata(out.join("run.sh")).unwrap().permissions().mode() & 0o777, 0o755);
        assert_eq!(std::fs::read_link(out.join("link")).unwrap(), Path::new("src/main.rs"));
        assert_eq!(std::fs::read(out.join("big")).unwrap().len(), 300_000);
    }

    #[test]
    fn a_stopped_job_leaves_no_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        sample_tree(&dir.path().join("workspace"));
        let archive = dir.path().join("snap.tar.zst");
        let shared = JobShared::new();
        assert!(shared.stop());
        assert!(!shared.stop(), "stopping twice is harmless");
        assert!(write_snapshot(&dir.path().join("workspace"), &archive, &shared).is_err());
        assert!(!archive.exists() && !partial_path(&archive).exists());
    }

    #[test]
    fn a_copy_skips_the_runners_own_directory() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("project");
        sample_tree(&source);
        std::fs::create_dir_all(source.join("data/local/workspaces")).unwrap();
        let target = dir.path().join("copy");
        copy_tree(&source, &target, &source.join("data/local"), &JobShared::new()).unwrap();
        assert!(target.join("src/main.rs").is_file() && target.join("data").is_dir());
        assert!(!target.join("data/local").exists());
        assert_eq!(std::fs::read_link(target.join("link")).unwrap(), Path::new("src/main.rs"));
    }

    async fn run(command: LifecycleCommand) -> (std::result::Result<(), String>, String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let log = LogSink::new(dir.path().join("log"));
        let shared = JobShared::new();
        let result =
            tokio::time::timeout(Duration::from_secs(30), run_command(&shared, &log, dir.path(), "updateContentCommand", &command))
                .await
                .expect("the command ends");
        let text = std::fs::read_to_string(log.path()).unwrap_or_default();
        (result, text, dir)
    }

    #[tokio::test]
    async fn a_string_runs_in_a_shell_in_the_workspace() {
        let (result, log, dir) = run(LifecycleCommand::Shell("echo $((1 + 2)) > sum && cat sum && echo to-stderr >&2".into())).await;
        result.unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("sum")).unwrap(), "3\n");
        assert!(log.contains("[updateContentCommand] $ echo $((1 + 2))"), "{log}");
        assert!(log.contains("3\n") && log.contains("to-stderr"), "stdout and stderr go to the log: {log}");
    }

    #[tokio::test]
    async fn an_array_runs_without_a_shell() {
        let (result, log, _dir) = run(LifecycleCommand::Exec(vec!["echo".into(), "$HOME".into(), "a;b".into()])).await;
        result.unwrap();
        assert!(log.contains("$HOME a;b\n"), "no expansion, no splitting: {log}");
    }

    #[tokio::test]
    async fn an_objects_commands_run_at_the_same_time() {
        // Each waits for the other's file: this ends only if both run at once.
        let wait =
            |mine: &str, theirs: &str| format!("touch {mine}; for i in $(seq 200); do [ -f {theirs} ] && exit 0; sleep 0.05; done; exit 1");
        let (result, _log, _dir) = run(LifecycleCommand::Parallel(vec![
            ("a".into(), LifecycleCommand::Shell(wait("a", "b"))),
            ("b".into(), LifecycleCommand::Exec(vec!["sh".into(), "-c".into(), wait("b", "a")])),
        ]))
        .await;
        result.unwrap();
    }

    #[tokio::test]
    async fn a_failing_part_is_named_with_its_exit_code() {
        let (result, log, _dir) = run(LifecycleCommand::Parallel(vec![
            ("fine".into(), LifecycleCommand::Shell("true".into())),
            ("broken".into(), LifecycleCommand::Exec(vec!["sh".into(), "-c".into(), "echo oops; exit 7".into()])),
        ]))
        .await;
        assert_eq!(result.unwrap_err(), r#"updateContentCommand.broken `["sh","-c","echo oops; exit 7"]` exited with code 7"#);
        assert!(log.contains("oops"), "{log}");
    }

    #[tokio::test]
    async fn a_missing_program_says_it_could_not_start() {
        let (result, _log, _dir) = run(LifecycleCommand::Exec(vec!["/nonexistent/program".into()])).await;
        let message = result.unwrap_err();
        assert!(message.starts_with("updateContentCommand `[\"/nonexistent/program\"]` could not start"), "{message}");
    }
}
