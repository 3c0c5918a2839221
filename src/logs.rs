//! Where prebuild logs live: one append-only file per prebuild under
//! `<data_dir>/logs/`, written by runners, streamed by the log endpoint,
//! and removed with the prebuild.
//!
//! On PostgreSQL the files are also copied, as they grow, into the database
//! ([`copy_to_database`]), and the log endpoint reads from there, so every
//! replica serves the log of a prebuild that another one runs.

use crate::runner::LogSink;
use crate::store::postgres::PostgresStore;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often new log lines are copied into the database.
pub const COPY_INTERVAL: Duration = Duration::from_millis(200);
/// The largest chunk copied at once.
const COPY_CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct Logs {
    dir: PathBuf,
    /// Where logs are shared with other replicas, on PostgreSQL.
    shared: Option<PostgresStore>,
}

impl Logs {
    pub fn new(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("logs");
        std::fs::create_dir_all(&dir)?;
        Ok(Logs { dir, shared: None })
    }

    /// Logs shared through `store`'s database: read from there, and copied
    /// there by [`copy_to_database`].
    pub fn shared_through(mut self, store: PostgresStore) -> Self {
        self.shared = Some(store);
        self
    }

    /// The database logs are read from, when they are shared.
    pub fn shared(&self) -> Option<&PostgresStore> {
        self.shared.as_ref()
    }

    /// The log file of a prebuild. IDs are validated UUIDs before they get
    /// here, so they are safe as file names.
    pub fn path(&self, prebuild_id: &str) -> PathBuf {
        self.dir.join(format!("{prebuild_id}.log"))
    }

    pub fn sink(&self, prebuild_id: &str) -> LogSink {
        LogSink::new(self.path(prebuild_id))
    }

    /// Removes a prebuild's log, and its copy in the database (idempotent).
    pub async fn remove(&self, prebuild_id: &str) -> crate::error::Result<()> {
        match std::fs::remove_file(self.path(prebuild_id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(crate::error::Error::Internal(format!("cannot remove the log of {prebuild_id}: {e}")))
            }
            _ => {}
        }
        if let Some(store) = &self.shared {
            store.remove_log(prebuild_id).await?;
        }
        Ok(())
    }
}

/// The name this data dir's copies carry in the database
/// (`<data_dir>/logs/source-id`, made on first use), so that a restarted
/// process resumes its files where it left them.
fn source_id(logs: &Logs) -> std::io::Result<String> {
    let path = logs.dir.join("source-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        Ok(_) => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} is empty", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4().to_string();
            std::fs::write(&path, &id)?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

/// Copies what is new in this data dir's log files into the database every
/// [`COPY_INTERVAL`], until `shutdown` resolves (then once more).
pub async fn copy_to_database(logs: Logs, store: PostgresStore, shutdown: impl std::future::Future<Output = ()>) {
    let source = match source_id(&logs) {
        Ok(source) => source,
        Err(error) => {
            tracing::error!(%error, "cannot name this data dir's logs: prebuild logs are not shared with other replicas");
            return;
        }
    };
    tokio::pin!(shutdown);
    // How much of each file is copied, as far as this process knows.
    let mut copied: HashMap<String, u64> = HashMap::new();
    loop {
        let stop = tokio::select! {
            _ = tokio::time::sleep(COPY_INTERVAL) => false,
            _ = &mut shutdown => true,
        };
        if let Err(error) = copy_new_lines(&logs, &store, &source, &mut copied).await {
            tracing::warn!(%error, "cannot copy prebuild logs into the database; trying again");
        }
        if stop {
            return;
        }
    }
}

async fn copy_new_lines(logs: &Logs, store: &PostgresStore, source: &str, copied: &mut HashMap<String, u64>) -> crate::error::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let io = |e: std::io::Error| crate::error::Error::Internal(format!("reading the log dir {}: {e}", logs.dir.display()));
    let mut entries = tokio::fs::read_dir(&logs.dir).await.map_err(io)?;
    let mut present = std::collections::HashSet::new();
    while let Some(entry) = entries.next_entry().await.map_err(io)? {
        let name = entry.file_name();
        let Some(prebuild_id) = name.to_str().and_then(|n| n.strip_suffix(".log")) else { continue };
        let prebuild_id = prebuild_id.to_string();
        present.insert(prebuild_id.clone());
        let Ok(metadata) = entry.metadata().await else { continue };
        let done = match copied.get(&prebuild_id) {
            Some(done) => *done,
            None => {
                let done = store.copied_log_length(&prebuild_id, source).await?;
                copied.insert(prebuild_id.clone(), done);
                done
            }
        };
        if metadata.len() <= done {
            continue;
        }
        let Ok(mut file) = tokio::fs::File::open(entry.path()).await else { continue };
        file.seek(std::io::SeekFrom::Start(done)).await.map_err(io)?;
        let mut offset = done;
        let mut buffer = vec![0u8; COPY_CHUNK];
        loop {
            let n = file.read(&mut buffer).await.map_err(io)?;
            if n == 0 {
                break;
            }
            store.append_log_chunk(&prebuild_id, source, offset, &buffer[..n]).await?;
            offset += n as u64;
            copied.insert(prebuild_id.clone(), offset);
        }
    }
    copied.retain(|id, _| present.contains(id));
    Ok(())
}
