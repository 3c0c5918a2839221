//! Snapshots on the local runner: a zstd-compressed tar of the workspace,
//! written under a temporary name and renamed when whole, with progress;
//! and extraction back into a directory for warm pool instances.

use crate::runner::job::JobShared;
use crate::runner::process::{lock, stopped_error};
use crate::runner::JobState;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// zstd's default level: a good ratio at a speed far above disk speed.
const ZSTD_LEVEL: i32 = 3;

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
pub(crate) fn partial_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    target.with_file_name(name)
}

/// Writes the workspace's snapshot: to a temporary name, fsynced, then
/// renamed into place (so a snapshot that exists is whole), with the
/// progress in `shared.percent`. A stop discards it. Returns its size.
pub(crate) fn write_snapshot(workspace: &Path, target: &Path, shared: &JobShared) -> std::io::Result<u64> {
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
pub(crate) fn extract(archive: &Path, into: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(into)?;
    let decoder = zstd::Decoder::new(std::fs::File::open(archive)?)?;
    tar::Archive::new(decoder).unpack(into)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::workspace::tests_support::sample_tree;

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
}
