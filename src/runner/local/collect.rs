//! What the local runner keeps, and collecting what nothing owns: snapshot
//! archives of prebuilds the server no longer has, and workspaces (with
//! their commands' homes) of jobs the runner no longer has. Claimed
//! instances are their claimants', and pools are the pool code's.

use super::LocalRunner;
use crate::error::{Error, Result};
use crate::runner::process::{blocking, lock, remove_path};
use crate::runner::HeldSnapshot;
use std::collections::HashSet;
use std::path::Path;

/// The suffix of a finished snapshot archive.
const ARCHIVE: &str = ".tar.zst";

/// The entries of a directory by name (empty if it cannot be read).
fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).into_iter().flatten().flatten().filter_map(|entry| entry.file_name().into_string().ok()).collect()
}

impl LocalRunner {
    /// The finished snapshot archives, with their sizes.
    pub(super) async fn held_snapshots(&self) -> Result<Vec<HeldSnapshot>> {
        let dir = self.root.join("snapshots");
        blocking(move || {
            names_in(&dir)
                .into_iter()
                .filter_map(|name| {
                    let prebuild_id = name.strip_suffix(ARCHIVE)?.to_string();
                    let bytes = std::fs::metadata(dir.join(&name)).ok()?.len();
                    Some(HeldSnapshot { prebuild_id, bytes })
                })
                .collect()
        })
        .await
    }

    /// Removes the archives of `gone` prebuilds (but not of one a job still
    /// works on: its own removal comes) and the workspaces of no job.
    pub(super) async fn collect(&self, gone: &[String]) -> Result<()> {
        let workspaces_dir = self.root.join("workspaces");
        // Listed before the jobs are read: a job started after that makes
        // its workspace after the listing, so it is never taken for a
        // leftover.
        let dir = workspaces_dir.clone();
        let listed = blocking(move || names_in(&dir)).await?;
        let (working, keep): (HashSet<String>, HashSet<String>) = {
            let jobs = lock(&self.jobs);
            let working = jobs.keys().cloned().collect();
            let keep = jobs
                .values()
                .flat_map(|job| {
                    let workspace = workspaces_dir.join(&job.environment_id);
                    [workspace.clone(), super::sandbox::home_of(&workspace)]
                })
                .filter_map(|path| path.file_name().and_then(|n| n.to_str()).map(str::to_string))
                .collect();
            (working, keep)
        };
        let leftovers: Vec<_> = listed.into_iter().filter(|name| !keep.contains(name)).map(|name| workspaces_dir.join(name)).collect();
        let archives: Vec<_> = gone
            .iter()
            .filter(|id| !working.contains(*id))
            .filter_map(|id| crate::runner::process::checked_id("prebuild ID", id).ok())
            .map(|id| self.snapshot_path(id))
            .collect();
        blocking(move || {
            for path in leftovers.iter().chain(&archives) {
                match remove_path(path) {
                    Ok(()) => tracing::info!(path = %path.display(), "local runner: removed what nothing owns any more"),
                    Err(error) => return Err(Error::Internal(format!("local runner: cannot remove {}: {error}", path.display()))),
                }
            }
            Ok(())
        })
        .await?
    }
}
