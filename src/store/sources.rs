//! What a prebuild builds (`prebuildd.v1.PrebuildSource`), kept beside the
//! prebuild's row by both backends, and the writes that pushes make: a new
//! commit queued, collapsed into the queued prebuild of its branch, or
//! recognised as built already, with the webhook delivery that brought it
//! recorded in the same transaction.
//!
//! The rules every backend follows (the conformance tests check them):
//!
//! - **Collapse**: per (project, environment class, branch), a new commit
//!   joins the PENDING prebuild a push or poll queued for that branch (its
//!   commit becomes the new one and its `specVersion` grows, so a start
//!   decided on the old commit is not written); otherwise it is queued as
//!   a new prebuild.
//! - **Built already**: a commit equal to the newest recorded commit of the
//!   branch (queued, running or finished, whatever its outcome) starts
//!   nothing: a poll that sees the same head again, or a webhook and a poll
//!   that report the same push, make one prebuild. A failed commit is not
//!   retried until a newer one arrives (or someone asks through the API).
//! - **Replays**: a delivery key seen before makes the whole push a replay:
//!   nothing is written.

use crate::domain::Micros;
use crate::error::Result;
use crate::proto::gitpod::v1::prebuild_metadata::PrebuildTrigger;
use crate::proto::gitpod::v1::Prebuild;
use crate::proto::prebuildd::v1::{PrebuildSource, SourceTrigger};
use async_trait::async_trait;

/// One push (or a poll's new head) for a project: a prebuild per class.
#[derive(Debug, Clone)]
pub struct PushBatch {
    /// `provider:project:delivery id` of a webhook delivery; `None` for polls.
    pub delivery: Option<String>,
    pub received_at: Micros,
    /// New PENDING prebuilds with their sources (trigger, provider, branch,
    /// commit), one per environment class; each is inserted only if its
    /// branch has no queued prebuild to join.
    pub prebuilds: Vec<(Prebuild, PrebuildSource)>,
}

/// What became of one prebuild of a [`PushBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued as the new prebuild with this ID.
    Inserted(String),
    /// Joined this queued prebuild of the same branch (now of the new commit).
    Collapsed(String),
    /// The commit is the branch's newest recorded one (this prebuild's).
    Unchanged(String),
}

impl Enqueued {
    pub fn prebuild_id(&self) -> &str {
        match self {
            Enqueued::Inserted(id) | Enqueued::Collapsed(id) | Enqueued::Unchanged(id) => id,
        }
    }
}

/// The outcome of a [`PushBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The delivery was seen before: nothing was written.
    Replayed,
    /// One entry per prebuild of the batch, in its order.
    Enqueued(Vec<Enqueued>),
}

/// An active prebuild that a push or poll started, for the one-at-a-time
/// rule per (project, class, branch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchPrebuild {
    pub prebuild_id: String,
    pub project_id: String,
    pub environment_class_id: String,
    pub branch: String,
    pub commit_sha: String,
    pub phase: i32,
}

/// A completed full prebuild that an incremental one may start from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseCandidate {
    pub prebuild_id: String,
    pub commit_sha: String,
    pub fingerprint: String,
    pub finished_at: Option<Micros>,
    /// Completed incremental prebuilds made from it so far.
    pub incremental_builds: u32,
}

#[async_trait]
pub trait SourceStore: Send + Sync {
    /// Applies a push in one transaction (see the module documentation).
    async fn enqueue_push(&self, push: PushBatch) -> Result<PushOutcome>;
    /// The sources of those prebuilds of the organization that exist, in
    /// the order asked. A prebuild without a recorded trigger reports its
    /// official one as API or SCHEDULE.
    async fn prebuild_sources(&self, organization_id: &str, prebuild_ids: &[String]) -> Result<Vec<PrebuildSource>>;
    /// Records a prebuild's source when it starts (the resolved commit, the
    /// base), only if the prebuild's spec and status versions are still
    /// `seen`. Returns whether it wrote.
    async fn record_source(&self, organization_id: &str, prebuild_id: &str, seen: (u64, u64), source: PrebuildSource) -> Result<bool>;
    /// Records where a prebuild's snapshot was pushed (by digest); nothing
    /// when the prebuild no longer exists.
    async fn record_snapshot_image(&self, prebuild_id: &str, image: &str) -> Result<()>;
    /// Active prebuilds started by a push or a poll.
    async fn active_branch_prebuilds(&self) -> Result<Vec<BranchPrebuild>>;
    /// Completed full prebuilds with a commit of (project, class), newest
    /// first, at most `limit`.
    async fn base_candidates(
        &self,
        organization_id: &str,
        project_id: &str,
        environment_class_id: &str,
        limit: usize,
    ) -> Result<Vec<BaseCandidate>>;
    /// The newest completed prebuild of the project with a commit.
    async fn last_built(&self, organization_id: &str, project_id: &str) -> Result<Option<PrebuildSource>>;
    /// Forgets deliveries received before `before`, and all but the newest
    /// `keep`; returns how many it removed.
    async fn prune_deliveries(&self, before: Micros, keep: usize) -> Result<u64>;
}

/// Deliveries remembered at most (the table stays small whatever the traffic).
pub const MAX_DELIVERIES: usize = 100_000;

/// The trigger of a row that recorded none: its official one.
pub(crate) fn trigger_or_official(stored: i32, triggered_by: i32) -> i32 {
    if stored != SourceTrigger::Unspecified as i32 {
        return stored;
    }
    if triggered_by == PrebuildTrigger::Scheduled as i32 {
        SourceTrigger::Schedule as i32
    } else {
        SourceTrigger::Api as i32
    }
}

/// The spec and status versions of a prebuild (what starts are guarded by).
pub(crate) fn versions_of(prebuild: &Prebuild) -> (u64, u64) {
    (prebuild.spec.as_ref().map_or(0, |s| s.spec_version), prebuild.status.as_ref().map_or(0, |s| s.status_version))
}

/// A queued prebuild taking a newer commit: its spec changed.
pub(crate) fn bump_for_new_commit(prebuild: &mut Prebuild, at: Micros) {
    let spec = prebuild.spec.get_or_insert_with(Default::default);
    spec.spec_version += 1;
    if let Some(metadata) = prebuild.metadata.as_mut() {
        let micros = at.as_i64();
        metadata.updated_at =
            Some(pbjson_types::Timestamp { seconds: micros.div_euclid(1_000_000), nanos: (micros.rem_euclid(1_000_000) * 1000) as i32 });
    }
}
