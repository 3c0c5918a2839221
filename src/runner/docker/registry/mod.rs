//! Snapshots in an OCI registry: a docker runner with `registry` set pushes
//! every completed snapshot there (its digest is what the server records),
//! creates pool instances from it by digest (pulling it first where it is
//! missing: on another member of a fleet), and deletes its manifest when
//! the prebuild is deleted. Names are in [`name`]; credentials come from
//! the runner host's Docker config ([`credentials`]); the Engine API moves
//! the bytes ([`transfer`]); the manifest deletion is an HTTP call of its
//! own ([`http`]).
//!
//! Locally a pushed snapshot keeps its `prebuildd-snapshot:<prebuild id>`
//! tag (what collection and adoption know it by) and its digest reference;
//! the registry's tags are removed once pushed, so that removing the
//! snapshot's tag leaves the image to be collected.

pub mod credentials;
mod http;
pub mod name;
mod transfer;

pub use name::{DigestReference, RegistryName};

use super::engine::Engine;
use super::{labels, Core};
use crate::runner::job::JobShared;
use crate::runner::PrebuildJob;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Snapshot progress once the image is committed: the push is the rest.
const COMMITTED_PERCENT: f64 = 5.0;
/// A registry deletion that keeps failing (not refused: unreachable, or
/// 5xx) is given up after this many tries.
const DELETE_ATTEMPTS: u32 = 5;
/// A pull that failed is tried again after this long.
const PULL_RETRY: Duration = Duration::from_secs(10);

/// Pulls under way or failed, by digest reference.
#[derive(Debug, Default)]
pub(super) struct Pulls {
    pulling: HashMap<String, Pull>,
}

#[derive(Debug)]
enum Pull {
    Running,
    Failed { at: Instant, error: String },
}

/// Whether a pool's snapshot image is here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Local {
    /// It is: make instances from this reference.
    Present(String),
    /// Being pulled: nothing to make yet.
    Pulling,
    /// The pull failed (tried again later): the pool's failure.
    Failed(String),
}

impl Core {
    /// The registry's credentials from this host's Docker config.
    async fn credentials(&self, host: &str) -> Result<Option<credentials::Credentials>, String> {
        credentials::for_host(self.cli.docker_config.as_deref(), host).await
    }

    /// Pushes a completed prebuild's snapshot (with the class's `-latest`
    /// tag when the prebuild builds the default branch) and returns it by
    /// digest; `None` when the runner pushes nothing. The snapshot's
    /// progress covers the push.
    pub(super) async fn publish(&self, shared: &JobShared, job: &PrebuildJob) -> Result<Option<String>, String> {
        let Some(registry) = &self.registry else { return Ok(None) };
        let engine = self.engine().await?;
        let log = &job.log;
        let local = labels::snapshot_image(&job.prebuild_id);
        let repository = registry.repository(&job.project_id);
        let credentials = self.credentials(&registry.host).await?;
        shared.percent.store(COMMITTED_PERCENT as i32, Ordering::Relaxed);
        log.line(&format!("pushing the snapshot to {repository}:{}", job.prebuild_id)).await;
        engine.tag(&local, &repository, &job.prebuild_id).await?;
        let started = Instant::now();
        let mut progress = transfer::PushProgress::default();
        let pushed = engine
            .push(&repository, &job.prebuild_id, credentials.as_ref(), &registry.host, |current, total| {
                progress.update(current, total);
                let percent = COMMITTED_PERCENT + (99.0 - COMMITTED_PERCENT) * progress.fraction();
                shared.percent.fetch_max(percent as i32, Ordering::Relaxed);
            })
            .await;
        let untagged = engine.remove_image(&format!("{repository}:{}", job.prebuild_id), false).await;
        let digest = pushed.map_err(|e| format!("the snapshot could not be pushed to {registry}: {e}"))?;
        if let Err(error) = untagged {
            tracing::warn!(prebuild = %job.prebuild_id, %error, "docker runner: cannot remove a pushed tag");
        }
        let reference = format!("{repository}@{digest}");
        log.line(&format!("snapshot pushed as {reference} in {:.1} s", started.elapsed().as_secs_f64())).await;
        if job.tag_latest {
            let latest = RegistryName::latest_tag(&job.environment_class_id);
            engine.tag(&local, &repository, &latest).await?;
            let pushed = engine.push(&repository, &latest, credentials.as_ref(), &registry.host, |_, _| {}).await;
            if let Err(error) = engine.remove_image(&format!("{repository}:{latest}"), false).await {
                tracing::warn!(prebuild = %job.prebuild_id, %error, "docker runner: cannot remove a pushed tag");
            }
            pushed.map_err(|e| format!("the snapshot could not be tagged {repository}:{latest}: {e}"))?;
            log.line(&format!("tagged {repository}:{latest} (the newest snapshot of the default branch on this class)")).await;
        }
        Ok(Some(reference))
    }

    /// Where a pool's instances come from: the snapshot's image by digest
    /// when it was pushed (pulled first if this daemon lacks it, in the
    /// background), else the local snapshot tag. Checks nothing else.
    pub(super) async fn snapshot_source(self: &std::sync::Arc<Self>, engine: &Engine, snapshot_id: &str, image: Option<&str>) -> Local {
        let Some(image) = image else { return Local::Present(labels::snapshot_image(snapshot_id)) };
        match engine.references(image).await {
            Ok(Some(_)) => return Local::Present(image.to_string()),
            Ok(None) => {}
            Err(error) => return Local::Failed(format!("cannot inspect {image}: {error}")),
        }
        {
            let mut pulls = crate::sync::lock(&self.pulls);
            match pulls.pulling.get(image) {
                Some(Pull::Running) => return Local::Pulling,
                Some(Pull::Failed { at, error }) if at.elapsed() < PULL_RETRY => return Local::Failed(error.clone()),
                _ => {}
            }
            pulls.pulling.insert(image.to_string(), Pull::Running);
        }
        let (core, image, snapshot_id) = (self.clone(), image.to_string(), snapshot_id.to_string());
        tokio::spawn(async move {
            let outcome = core.pull_snapshot(&image, &snapshot_id).await;
            let mut pulls = crate::sync::lock(&core.pulls);
            match outcome {
                Ok(took) => {
                    tracing::info!(runner = %core.runner_id, %image, seconds = took.as_secs_f64(), "docker runner: pulled a snapshot");
                    pulls.pulling.remove(&image);
                }
                Err(error) => {
                    tracing::warn!(runner = %core.runner_id, %image, %error, "docker runner: cannot pull a snapshot");
                    pulls.pulling.insert(image, Pull::Failed { at: Instant::now(), error });
                }
            }
            drop(pulls);
            // The pool's next sync makes its instances (or reports why not).
            core.events.changed();
        });
        Local::Pulling
    }

    /// Pulls an incremental prebuild's base snapshot (pushed by another
    /// member of the fleet) and tags it as the local snapshot.
    pub(super) async fn pull_base(&self, image: &str, prebuild_id: &str) -> Result<(), String> {
        self.pull_snapshot(image, prebuild_id).await.map(|_| ()).map_err(|e| format!("cannot pull the base snapshot: {e}"))
    }

    /// Pulls a snapshot by digest and tags it as the local snapshot, so it
    /// stays until the prebuild is removed.
    async fn pull_snapshot(&self, image: &str, snapshot_id: &str) -> Result<Duration, String> {
        let reference = DigestReference::parse(image)?;
        let engine = self.engine().await?;
        let credentials = self.credentials(&reference.host).await?;
        let started = Instant::now();
        engine.pull(image, credentials.as_ref(), &reference.host).await?;
        engine.tag(image, labels::SNAPSHOT_REPOSITORY, snapshot_id).await?;
        Ok(started.elapsed())
    }

    /// Removes every local reference of a prebuild's snapshot (its tag, the
    /// registry's digest references and tags), so that Docker removes the
    /// image, or leaves it untagged for collection while a container uses it.
    pub(super) async fn remove_snapshot_references(&self, engine: &Engine, prebuild_id: &str) -> Result<(), String> {
        let local = labels::snapshot_image(prebuild_id);
        let Some((tags, digests)) = engine.references(&local).await? else { return Ok(()) };
        for reference in digests.iter().chain(tags.iter().filter(|tag| **tag != local)) {
            engine.remove_image(reference, true).await?;
        }
        engine.remove_image(&local, true).await
    }

    /// Deletes a pushed snapshot's manifest from its registry. `Ok(true)`:
    /// done or given up (refused, or failing too often: logged); `Err`: try
    /// again later.
    pub(super) async fn delete_pushed(&self, prebuild_id: &str, image: &str) -> crate::error::Result<bool> {
        let reference = match DigestReference::parse(image) {
            Ok(reference) => reference,
            Err(error) => {
                tracing::warn!(prebuild = %prebuild_id, %image, %error, "docker runner: not an image to delete");
                return Ok(true);
            }
        };
        let outcome = match self.credentials(&reference.host).await {
            Ok(credentials) => http::delete_manifest(&reference, credentials.as_ref(), self.cli.ca_file.as_deref()).await,
            Err(error) => Err(error),
        };
        match outcome {
            Ok(http::Deleted::Gone) => {
                crate::sync::lock(&self.delete_attempts).remove(prebuild_id);
                tracing::info!(prebuild = %prebuild_id, %image, "docker runner: deleted a snapshot from its registry");
                Ok(true)
            }
            Ok(http::Deleted::Refused(why)) => {
                crate::sync::lock(&self.delete_attempts).remove(prebuild_id);
                tracing::warn!(prebuild = %prebuild_id, %image, "docker runner: the snapshot stays in its registry: {why}");
                Ok(true)
            }
            Err(error) => {
                let attempts = {
                    let mut attempts = crate::sync::lock(&self.delete_attempts);
                    let count = attempts.entry(prebuild_id.to_string()).or_default();
                    *count += 1;
                    *count
                };
                if attempts >= DELETE_ATTEMPTS {
                    crate::sync::lock(&self.delete_attempts).remove(prebuild_id);
                    tracing::warn!(prebuild = %prebuild_id, %image, %error, attempts, "docker runner: giving up deleting a snapshot from its registry");
                    return Ok(true);
                }
                Err(crate::error::Error::Unavailable(format!("cannot delete {image} from its registry yet: {error}")))
            }
        }
    }
}
