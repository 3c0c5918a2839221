//! Child processes and blocking file work shared by the runners that run
//! real commands: process groups (so that a stop kills a command's whole
//! tree), exits in words, the tail of a log for failure messages, and the
//! small file helpers every runner root needs.

use super::LogSink;
use crate::error::{Error, Result};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// How many log lines a failure message quotes: enough to show the error a
/// command printed last, short enough for a status field.
pub(crate) const FAILURE_LOG_LINES: usize = 5;

/// How far back from the end of a log the quoted lines are searched for, so
/// that a failure never reads a whole (possibly huge) log.
const LOG_TAIL_BYTES: u64 = 64 * 1024;

/// The runners take their locks the crate's one way.
pub(crate) use crate::sync::lock;

/// The process groups of one job's environment, and whether the job was
/// stopped. Groups are kept until the environment stops, because a command
/// can leave background processes behind.
#[derive(Debug, Default)]
pub(crate) struct JobProcesses {
    groups: Mutex<Vec<i32>>,
    /// Set by a stop; blocking work (copy, archive) checks it and gives up.
    stopped: AtomicBool,
}

impl JobProcesses {
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Marks the job stopped (the caller kills the groups after).
    pub(crate) fn mark_stopped(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// Records a new process group. A stop that came between the spawn and
    /// this call did not see it, so it is killed here.
    fn adopt(&self, pgid: i32) {
        lock(&self.groups).push(pgid);
        if self.is_stopped() {
            self.kill_all();
        }
    }

    /// Forgets a process group once it has no members left (so that a
    /// recycled ID is never signalled); one with survivors stays until the
    /// environment stops.
    fn release(&self, pgid: i32) {
        // SAFETY: kill(2) with signal 0 only checks that the group exists.
        let alive = unsafe { libc::kill(-pgid, 0) } == 0;
        if !alive {
            lock(&self.groups).retain(|p| *p != pgid);
        }
    }

    /// SIGKILL to every process group of the environment: the whole tree of
    /// each command, also what it started in the background.
    pub(crate) fn kill_all(&self) {
        for pgid in lock(&self.groups).drain(..) {
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
pub(crate) fn stopped_error() -> std::io::Error {
    std::io::Error::other("the prebuild was stopped")
}

/// IDs become path components; anything that could leave its directory is a
/// caller's bug, refused before it touches the disk.
pub(crate) fn checked_id<'a>(kind: &str, id: &'a str) -> Result<&'a str> {
    let safe = !id.is_empty() && id != "." && id != ".." && !id.contains(['/', '\\', '\0']);
    if safe {
        Ok(id)
    } else {
        Err(Error::Internal(format!("runner: {kind} {id:?} cannot name a directory")))
    }
}

/// Deletes a file or directory tree; a missing one is fine.
pub(crate) fn remove_path(path: &Path) -> std::io::Result<()> {
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
pub(crate) async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| Error::Internal(format!("runner: a file task failed: {e}")))
}

/// Spawns a command in its own process group (so that a stop can kill its
/// whole tree) and registers the group with the job. `kill_on_drop` is a
/// backstop for a task dropped before it could kill the group.
pub(crate) fn spawn_in_group(processes: &JobProcesses, mut command: tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    command.stdin(Stdio::null()).process_group(0).kill_on_drop(true);
    let child = command.spawn()?;
    if let Some(pid) = child.id() {
        processes.adopt(pid as i32);
    }
    Ok(child)
}

pub(crate) async fn wait_in_group(processes: &JobProcesses, child: &mut tokio::process::Child) -> std::io::Result<ExitStatus> {
    let pid = child.id();
    let status = child.wait().await?;
    if let Some(pid) = pid {
        processes.release(pid as i32);
    }
    Ok(status)
}

/// How a process ended, in words.
pub(crate) fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "ended without an exit code".to_string(),
    }
}

/// Runs a prepared command (the caller sets its program, arguments,
/// directory and environment, or wraps it in a sandbox) in its own process
/// group, with stdout and stderr appended to the log.
pub(crate) async fn run_logged(
    processes: &JobProcesses,
    log: &LogSink,
    mut command: tokio::process::Command,
) -> std::io::Result<ExitStatus> {
    let stdout = log.open_append()?;
    let stderr = stdout.try_clone()?;
    command.stdout(stdout).stderr(stderr);
    let mut child = spawn_in_group(processes, command)?;
    wait_in_group(processes, &mut child).await
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

pub(crate) async fn log_tail(log: &LogSink) -> String {
    let path = log.path().to_path_buf();
    blocking(move || tail_lines(&path, FAILURE_LOG_LINES)).await.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
