//! Logs shared through PostgreSQL: every replica copies what is new in its
//! log files into the database ([`copy_to_database`]), and any replica
//! reads a log from there ([`SharedLogs`]).

use super::{FileLogs, LogRead, LogStore, Logs};
use crate::error::{Error, Result};
use crate::store::postgres::PostgresStore;
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::HashMap;
use std::time::Duration;

/// How often new log lines are copied into the database.
pub const COPY_INTERVAL: Duration = Duration::from_millis(200);
/// The largest chunk copied at once.
const COPY_CHUNK: usize = 64 * 1024;
/// Chunks read from the database at once.
const READ_CHUNKS: i64 = 64;

/// Logs read from the database (`prebuild_log_chunks`).
#[derive(Debug, Clone)]
pub struct SharedLogs {
    store: PostgresStore,
}

impl SharedLogs {
    pub fn new(store: PostgresStore) -> Self {
        SharedLogs { store }
    }
}

#[async_trait]
impl LogStore for SharedLogs {
    /// The cursor is the sequence number of the last chunk read.
    async fn read(&self, prebuild_id: &str, cursor: u64) -> Result<LogRead> {
        let after = i64::try_from(cursor).unwrap_or(i64::MAX);
        let chunks = self.store.log_chunks_after(prebuild_id, after, READ_CHUNKS).await?;
        let Some((last, _)) = chunks.last() else { return Ok(LogRead { bytes: Bytes::new(), cursor }) };
        let cursor = u64::try_from(*last).unwrap_or(cursor);
        let bytes: Vec<u8> = chunks.into_iter().flat_map(|(_, chunk)| chunk).collect();
        Ok(LogRead { bytes: Bytes::from(bytes), cursor })
    }

    /// The lines a runner wrote last are copied up to [`COPY_INTERVAL`]
    /// after it wrote them, so a reader waits a few intervals more.
    fn settling_time(&self) -> Duration {
        COPY_INTERVAL * 5
    }

    async fn remove(&self, prebuild_id: &str) -> Result<()> {
        self.store.remove_log(prebuild_id).await
    }
}

/// The name this data dir's copies carry in the database
/// (`<data_dir>/logs/source-id`, made on first use), so that a restarted
/// process resumes its files where it left them.
async fn source_id(files: &FileLogs) -> std::io::Result<String> {
    let path = files.dir().join("source-id");
    match tokio::fs::read_to_string(&path).await {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        Ok(_) => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} is empty", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4().to_string();
            tokio::fs::write(&path, &id).await?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

/// Copies what is new in this data dir's log files into the database every
/// [`COPY_INTERVAL`], until `shutdown` resolves (then once more).
pub async fn copy_to_database(logs: Logs, store: PostgresStore, shutdown: impl std::future::Future<Output = ()>) {
    let files = logs.files();
    let source = match source_id(files).await {
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
        if let Err(error) = copy_new_lines(files, &store, &source, &mut copied).await {
            tracing::warn!(%error, "cannot copy prebuild logs into the database; trying again");
        }
        if stop {
            return;
        }
    }
}

async fn copy_new_lines(files: &FileLogs, store: &PostgresStore, source: &str, copied: &mut HashMap<String, u64>) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let io = |e: std::io::Error| Error::Internal(format!("reading the log dir {}: {e}", files.dir().display()));
    let mut entries = tokio::fs::read_dir(files.dir()).await.map_err(io)?;
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
