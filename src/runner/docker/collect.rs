//! What the docker runner keeps, and collecting what nothing owns: snapshot
//! images (labelled `dev.prebuildd.role=snapshot` with their prebuild) whose
//! prebuild is gone are removed as soon as no container uses them.
//!
//! Removing a prebuild untags its snapshot at once (`remove`), but Docker
//! keeps an image that a container uses, such as a claimed instance: the
//! image stays, untagged, with its labels. Every collection lists the
//! runner's snapshot images by label (so also after a restart) and removes,
//! by ID and without force, the untagged ones and those of prebuilds the
//! server no longer has; one still in use stays until the next collection.

use super::{labels, Core};
use crate::error::{Error, Result};
use crate::runner::HeldSnapshot;
use std::collections::HashSet;

impl Core {
    /// The runner's snapshot images, tagged or not, with their sizes.
    pub(super) async fn snapshots(&self) -> Result<Vec<HeldSnapshot>> {
        Ok(self
            .snapshot_images()
            .await?
            .into_iter()
            .filter_map(|image| {
                let prebuild_id = image.labels.get(labels::PREBUILD_ID)?.clone();
                Some(HeldSnapshot { prebuild_id, bytes: u64::try_from(image.size).unwrap_or(0) })
            })
            .collect())
    }

    /// Removes the snapshot images of `gone` prebuilds and the untagged
    /// ones, unless a container still uses them.
    pub(super) async fn collect_garbage(&self, gone: &[String]) -> Result<()> {
        let gone: HashSet<&str> = gone.iter().map(String::as_str).collect();
        let engine = self.engine().await.map_err(Error::Internal)?;
        for image in self.snapshot_images().await? {
            let prebuild_id = image.labels.get(labels::PREBUILD_ID).map(String::as_str).unwrap_or_default();
            if !(image.tags.is_empty() || gone.contains(prebuild_id)) {
                continue;
            }
            match engine.remove_unused_image(&image.id).await {
                Ok(true) => {
                    tracing::info!(prebuild = %prebuild_id, image = %image.id, "docker runner: removed a snapshot nothing uses any more")
                }
                Ok(false) => {
                    tracing::debug!(prebuild = %prebuild_id, image = %image.id, "docker runner: a container still uses this snapshot")
                }
                Err(error) => tracing::warn!(prebuild = %prebuild_id, image = %image.id, %error, "docker runner: cannot remove a snapshot"),
            }
        }
        Ok(())
    }

    /// Untags a prebuild's snapshot and the images of its stack's services
    /// (Docker keeps one a container still uses until it is collected).
    pub(super) async fn remove_snapshot_images(&self, prebuild_id: &str) -> std::result::Result<(), String> {
        let engine = self.engine().await?;
        engine.remove_image(&labels::snapshot_image(prebuild_id), true).await?;
        let ours =
            [(labels::RUNNER_ID, self.runner_id.as_str()), (labels::PREBUILD_ID, prebuild_id), (labels::ROLE, labels::ROLE_SNAPSHOT)];
        for image in engine.images(&ours).await? {
            for tag in image.tags {
                engine.remove_image(&tag, true).await?;
            }
        }
        Ok(())
    }

    async fn snapshot_images(&self) -> Result<Vec<super::engine::ListedImage>> {
        let engine = self.engine().await.map_err(Error::Internal)?;
        let ours = [(labels::RUNNER_ID, self.runner_id.as_str()), (labels::ROLE, labels::ROLE_SNAPSHOT)];
        engine.images(&ours).await.map_err(|e| Error::Internal(format!("docker runner: {e}")))
    }
}
