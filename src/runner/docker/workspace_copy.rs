//! Copying a prebuild's clone into its container: a tar archive with every
//! entry owned by the user the lifecycle runs as (so `remoteUser` can write
//! to its workspace), streamed into the container at the workspace folder
//! through the Engine API while it is written.

use super::engine::Engine;
use crate::runner::job::JobShared;
use crate::runner::LogSink;
use bytes::Bytes;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// The numeric user and group of `user` in the container (a name, a UID
/// or `uid:gid`), from its `/etc/passwd`; root if unset.
async fn user_ids(engine: &super::engine::Engine, container_id: &str, user: &str) -> Result<(u64, u64), String> {
    let (name, group) = user.split_once(':').map_or((user, None), |(u, g)| (u, Some(g)));
    if name.is_empty() || name == "root" {
        return Ok((0, 0));
    }
    let passwd = engine.read_file(container_id, "/etc/passwd").await?.unwrap_or_default();
    let passwd = String::from_utf8_lossy(&passwd);
    let entry = passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() > 3 && (fields[0] == name || fields[2] == name));
    let uid = match (&entry, name.parse::<u64>()) {
        (Some(fields), _) => fields[2].parse().map_err(|_| format!("the container's /etc/passwd has a bad entry for {name}"))?,
        (None, Ok(uid)) => uid,
        (None, Err(_)) => return Err(format!("the container has no user {name:?} (remoteUser or containerUser)")),
    };
    let gid = match (group.and_then(|g| g.parse().ok()), &entry) {
        (Some(gid), _) => gid,
        (None, Some(fields)) => fields[3].parse().unwrap_or(uid),
        (None, None) => uid,
    };
    Ok((uid, gid))
}

/// Copies the clone into the container at `folder`, owned by the user the
/// lifecycle runs as, through a tar archive in the runner's root.
pub(super) async fn copy_workspace_in(
    engine: &Engine,
    shared: &Arc<JobShared>,
    log: &LogSink,
    workspace: &Path,
    container_id: &str,
    user: &str,
    folder: &str,
) -> Result<(), String> {
    let (uid, gid) = user_ids(engine, container_id, user).await?;
    log.line(&format!(
        "copying the workspace into the container at {folder} (owned by {}, uid {uid})",
        if user.is_empty() { "root" } else { user }
    ))
    .await;
    // The archive is written on a blocking thread straight into the
    // request body: no temporary file, and the upload starts at once.
    let (sender, receiver) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
    let (from, prefix, task_shared) = (workspace.to_path_buf(), folder.trim_start_matches('/').to_string(), shared.clone());
    let archiving = tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter { sender, buffer: Vec::with_capacity(CHUNK_BYTES) };
        let written = write_owned_tar(&from, &mut out, Path::new(&prefix), uid, gid, &task_shared).and_then(|()| out.send());
        if let Err(error) = &written {
            // The upload sees the archive end in an error, not as complete.
            let _ = out.sender.blocking_send(Err(std::io::Error::new(error.kind(), error.to_string())));
        }
        written
    });
    let uploaded = engine.upload(container_id, tokio_stream::wrappers::ReceiverStream::new(receiver)).await;
    let archived = archiving.await.map_err(|e| format!("the archiving task failed: {e}"))?;
    archived.map_err(|e| format!("cannot archive the workspace: {e}"))?;
    uploaded.map_err(|e| format!("cannot copy the workspace into the container: {e}"))
}

/// Bytes per chunk of the upload, and chunks buffered between the archiving
/// thread and the request: enough to keep both busy, little memory.
const CHUNK_BYTES: usize = 256 * 1024;
const CHUNKS_IN_FLIGHT: usize = 8;

/// A `Write` that hands the bytes to the upload in chunks.
struct ChunkWriter {
    sender: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buffer: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK_BYTES)));
        self.sender.blocking_send(Ok(chunk)).map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload ended early"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A tar of `dir` under `prefix`, every entry owned by `uid:gid`.
fn write_owned_tar(dir: &Path, out: impl Write, prefix: &Path, uid: u64, gid: u64, shared: &JobShared) -> std::io::Result<()> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut header = tar::Header::new_gnu();
    header.set_metadata(&std::fs::metadata(dir)?);
    header.set_uid(uid);
    header.set_gid(gid);
    builder.append_data(&mut header, prefix, std::io::empty())?;
    append_owned(&mut builder, dir, prefix, uid, gid, shared)?;
    builder.into_inner()?.flush()
}

fn append_owned<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: &Path,
    prefix: &Path,
    uid: u64,
    gid: u64,
    shared: &JobShared,
) -> std::io::Result<()> {
    let mut entries = std::fs::read_dir(dir)?.collect::<std::io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if shared.is_stopped() {
            return Err(crate::runner::process::stopped_error());
        }
        let (path, name) = (entry.path(), prefix.join(entry.file_name()));
        let metadata = std::fs::symlink_metadata(&path)?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata(&metadata);
        header.set_uid(uid);
        header.set_gid(gid);
        if metadata.is_dir() {
            builder.append_data(&mut header, &name, std::io::empty())?;
            append_owned(builder, &path, &name, uid, gid, shared)?;
        } else if metadata.is_file() {
            builder.append_data(&mut header, &name, std::fs::File::open(&path)?)?;
        } else if metadata.file_type().is_symlink() {
            builder.append_link(&mut header, &name, std::fs::read_link(&path)?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_archive_is_owned_by_the_containers_user() {
        let dir = tempfile::tempdir().unwrap();
        let workspace = dir.path().join("ws");
        std::fs::create_dir_all(workspace.join("src")).unwrap();
        std::fs::write(workspace.join("src/main.rs"), "fn main() {}\n").unwrap();
        std::os::unix::fs::symlink("src/main.rs", workspace.join("link")).unwrap();
        let mut archive = Vec::new();
        write_owned_tar(&workspace, &mut archive, Path::new("workspaces/app"), 1000, 1001, &JobShared::new()).unwrap();
        let mut tar = tar::Archive::new(archive.as_slice());
        let mut seen = Vec::new();
        for entry in tar.entries().unwrap() {
            let entry = entry.unwrap();
            let header = entry.header();
            assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (1000, 1001));
            seen.push(entry.path().unwrap().display().to_string());
        }
        assert_eq!(seen, vec!["workspaces/app", "workspaces/app/link", "workspaces/app/src", "workspaces/app/src/main.rs"]);
    }
}
