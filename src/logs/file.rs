//! Logs read straight from their files: the store of a single server.

use super::{internal, LogRead, LogStore};
use crate::error::Result;
use async_trait::async_trait;
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// The most read at once.
const CHUNK: usize = 64 * 1024;

/// `<data_dir>/logs/<prebuild id>.log`.
#[derive(Debug)]
pub struct FileLogs {
    dir: PathBuf,
}

impl FileLogs {
    pub fn new(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("logs");
        std::fs::create_dir_all(&dir)?;
        Ok(FileLogs { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log file of a prebuild. IDs are validated UUIDs before they get
    /// here, so they are safe as file names.
    pub fn path(&self, prebuild_id: &str) -> PathBuf {
        self.dir.join(format!("{prebuild_id}.log"))
    }
}

#[async_trait]
impl LogStore for FileLogs {
    /// The cursor is the offset in the file.
    async fn read(&self, prebuild_id: &str, cursor: u64) -> Result<LogRead> {
        let path = self.path(prebuild_id);
        let unread = |what: &str| internal(format!("cannot {what} the log {}", path.display()));
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LogRead { bytes: Bytes::new(), cursor }),
            Err(e) => return Err(unread("open")(e)),
        };
        file.seek(std::io::SeekFrom::Start(cursor)).await.map_err(unread("seek in"))?;
        let mut buffer = vec![0u8; CHUNK];
        let n = file.read(&mut buffer).await.map_err(unread("read"))?;
        buffer.truncate(n);
        Ok(LogRead { bytes: Bytes::from(buffer), cursor: cursor + n as u64 })
    }

    /// A file is complete once its writer is done: what the runner wrote
    /// before the prebuild ended is there at once.
    fn settling_time(&self) -> Duration {
        Duration::ZERO
    }

    async fn remove(&self, prebuild_id: &str) -> Result<()> {
        match tokio::fs::remove_file(self.path(prebuild_id)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(internal(format!("cannot remove the log of {prebuild_id}"))(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_from_a_cursor_and_a_missing_log_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let logs = FileLogs::new(dir.path()).unwrap();
        assert_eq!(logs.read("p", 0).await.unwrap(), LogRead { bytes: Bytes::new(), cursor: 0 });
        let sink = super::super::LogSink::new(logs.path("p"));
        sink.line("one").await;
        sink.line("two").await;
        let first = logs.read("p", 0).await.unwrap();
        assert_eq!((first.bytes.as_ref(), first.cursor), (&b"one\ntwo\n"[..], 8));
        assert_eq!(logs.read("p", 4).await.unwrap().bytes.as_ref(), b"two\n");
        assert!(logs.read("p", 8).await.unwrap().bytes.is_empty());
        logs.remove("p").await.unwrap();
        logs.remove("p").await.unwrap();
        assert!(logs.read("p", 0).await.unwrap().bytes.is_empty());
    }
}
