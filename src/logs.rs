//! Where prebuild logs live: one append-only file per prebuild under
//! `<data_dir>/logs/`, written by runners, streamed by the log endpoint,
//! and removed with the prebuild.

use crate::runner::LogSink;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Logs {
    dir: PathBuf,
}

impl Logs {
    pub fn new(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("logs");
        std::fs::create_dir_all(&dir)?;
        Ok(Logs { dir })
    }

    /// The log file of a prebuild. IDs are validated UUIDs before they get
    /// here, so they are safe as file names.
    pub fn path(&self, prebuild_id: &str) -> PathBuf {
        self.dir.join(format!("{prebuild_id}.log"))
    }

    pub fn sink(&self, prebuild_id: &str) -> LogSink {
        LogSink::new(self.path(prebuild_id))
    }

    /// Removes a prebuild's log (idempotent).
    pub fn remove(&self, prebuild_id: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(prebuild_id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}
