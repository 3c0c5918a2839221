//! Prebuild logs: one append-only file per prebuild under `<data_dir>/logs/`,
//! written by runners through a [`LogSink`], read by the log endpoint
//! through a [`LogStore`], and removed with the prebuild.
//!
//! Where a log is read from is the store's business: the files themselves
//! ([`FileLogs`]) on a single server, or on PostgreSQL the database, into
//! which every replica copies its files as they grow ([`SharedLogs`]), so
//! that any replica serves the log of a prebuild another one runs. The log
//! endpoint knows only the trait.

mod file;
mod shared;

pub use file::FileLogs;
pub use shared::{copy_to_database, SharedLogs, COPY_INTERVAL};

use crate::error::{Error, Result};
use async_trait::async_trait;
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What one read of a log returns: the bytes after the cursor it was given
/// (empty when nothing new is there yet), and the cursor to read on from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRead {
    pub bytes: Bytes,
    pub cursor: u64,
}

/// Where the log endpoint reads logs from.
#[async_trait]
pub trait LogStore: Send + Sync + 'static {
    /// What the prebuild's log holds after `cursor` (0 at the start), up to
    /// a chunk's worth. A log not written yet reads as empty. An error is a
    /// failure of the store, never the end of the log.
    async fn read(&self, prebuild_id: &str, cursor: u64) -> Result<LogRead>;
    /// How long after a prebuild ended its log may still grow here (a copy
    /// that lags the file): a follower keeps reading that long.
    fn settling_time(&self) -> Duration;
    /// Removes the prebuild's log from this store (idempotent).
    async fn remove(&self, prebuild_id: &str) -> Result<()>;
}

/// The logs of this process: the files runners write, and the store the
/// log endpoint reads (the files themselves unless they are shared).
#[derive(Clone)]
pub struct Logs {
    files: Arc<FileLogs>,
    /// Where logs are shared with other replicas (PostgreSQL), if they are.
    shared: Option<Arc<dyn LogStore>>,
}

impl std::fmt::Debug for Logs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logs").field("dir", &self.files.dir()).field("shared", &self.shared.is_some()).finish()
    }
}

impl Logs {
    /// Logs in `<data_dir>/logs/` (created here).
    pub fn new(data_dir: &Path) -> std::io::Result<Self> {
        Ok(Logs { files: Arc::new(FileLogs::new(data_dir)?), shared: None })
    }

    /// The same files, read from `shared` (which a copier fills from them).
    pub fn shared_through(mut self, shared: Arc<dyn LogStore>) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Where the log endpoint reads.
    pub fn reader(&self) -> Arc<dyn LogStore> {
        match &self.shared {
            Some(shared) => shared.clone(),
            None => self.files.clone(),
        }
    }

    /// The log files.
    pub fn files(&self) -> &FileLogs {
        &self.files
    }

    /// The log file of a prebuild.
    pub fn path(&self, prebuild_id: &str) -> PathBuf {
        self.files.path(prebuild_id)
    }

    pub fn sink(&self, prebuild_id: &str) -> LogSink {
        LogSink::new(self.path(prebuild_id))
    }

    /// Removes a prebuild's log: the file, and its copy where it is shared
    /// (idempotent).
    pub async fn remove(&self, prebuild_id: &str) -> Result<()> {
        self.files.remove(prebuild_id).await?;
        if let Some(shared) = &self.shared {
            shared.remove(prebuild_id).await?;
        }
        Ok(())
    }
}

/// A prebuild's log as a runner writes it: an append-only file, written by
/// the runner (and its child processes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSink {
    path: PathBuf,
}

impl LogSink {
    pub fn new(path: PathBuf) -> Self {
        LogSink { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line (a trailing newline is added), on a blocking thread:
    /// a slow disk must not stall the runtime. It returns once the line is
    /// written, so a line and the output of a command started after it stay
    /// in order. A failure is logged, never the caller's: a prebuild does not
    /// fail because its log could not be written.
    pub async fn line(&self, text: &str) {
        let (path, text) = (self.path.clone(), text.to_string());
        let written = tokio::task::spawn_blocking(move || append_line(&path, &text)).await;
        let error = match written {
            Ok(Ok(())) => return,
            Ok(Err(error)) => error.to_string(),
            Err(error) => error.to_string(),
        };
        tracing::warn!(path = %self.path.display(), %error, "cannot write a prebuild log line");
    }

    /// [`LogSink::line`] for code already on a blocking thread.
    pub fn line_blocking(&self, text: &str) {
        if let Err(error) = append_line(&self.path, text) {
            tracing::warn!(path = %self.path.display(), %error, "cannot write a prebuild log line");
        }
    }

    /// Opens the log for appending, for a child process's stdout/stderr.
    pub fn open_append(&self) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new().create(true).append(true).open(&self.path)
    }
}

fn append_line(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut line = String::with_capacity(text.len() + 1);
    line.push_str(text);
    line.push('\n');
    // One write of the whole line: an appending writer never interleaves it.
    std::fs::OpenOptions::new().create(true).append(true).open(path)?.write_all(line.as_bytes())
}

fn internal(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Internal(format!("{what}: {e}"))
}
