//! Warm pool instances on the local runner's disk: running instances are
//! extracted workspaces, stopped ones marker files; claims move a workspace
//! out of the pool. What to do is decided by `runner::pool_plan`.

use super::snapshot::extract;
use super::LocalRunner;
use crate::error::Result;
use crate::runner::pool_plan::{Instance, InstanceState, Pool};
use crate::runner::process::{blocking, lock, remove_path};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// An instance's files in its pool's directory.
pub(super) struct InstancePaths {
    /// The workspace of a running instance.
    pub(super) dir: PathBuf,
    /// A stopped instance's marker.
    pub(super) marker: PathBuf,
    /// Where an extraction writes before it is complete.
    pub(super) extracting: PathBuf,
}

pub(super) fn instance_paths(pool_dir: &Path, instance_id: &str) -> InstancePaths {
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
pub(super) fn delete_instances(pool_dir: &Path, instances: &[Instance]) {
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
    pub(super) async fn missing_archive(&self, snapshot_id: Option<&str>) -> Option<String> {
        let snapshot_id = snapshot_id?;
        let archive = self.snapshot_path(snapshot_id);
        match tokio::fs::metadata(&archive).await {
            Ok(metadata) if metadata.is_file() => None,
            _ => Some(format!("the snapshot of prebuild {snapshot_id} is missing on this runner ({} does not exist)", archive.display())),
        }
    }

    /// Writes new stopped instances' markers; an instance whose marker could
    /// not be written is dropped and the failure reported.
    pub(super) async fn write_pool_markers(&self, warm_pool_id: &str, markers: Vec<Instance>) -> Result<()> {
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

    pub(super) fn spawn_extraction(&self, warm_pool_id: &str, instance: Instance) {
        let (pools, pool_id, events) = (self.pools.clone(), warm_pool_id.to_string(), self.events.clone());
        let (pool_dir, archive) = (self.pool_dir(warm_pool_id), self.snapshot_path(&instance.snapshot_id));
        tokio::task::spawn_blocking(move || {
            extract_instance(&pools, &pool_id, &pool_dir, &archive, &instance);
            // Ready, or failed: either way the pool has news.
            events.changed();
        });
    }
}
