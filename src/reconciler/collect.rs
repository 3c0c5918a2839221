//! Garbage collection of what runners hold: every [`COLLECT_EVERY`], each
//! runner says which snapshots it holds, the store says which of their
//! prebuilds still exist, and the runner removes the rest (and its own
//! leftovers) as soon as nothing uses them. A snapshot a runner could not
//! remove (a claimed container still uses it) is asked for again at the
//! next collection, and one that a restart left behind is found the same
//! way: collection reads what exists, it does not remember.
//!
//! It also reports what each runner holds (`prebuildd_runner_snapshots`),
//! and how many members each remote runner has connected
//! (`prebuildd_runner_members`).

use super::Reconciler;
use std::collections::HashSet;
use std::time::Duration;

/// How often collection runs (on the leader, between passes): a snapshot
/// is gone within this long of the last container that used it.
pub const COLLECT_EVERY: Duration = Duration::from_secs(2);

pub(super) async fn run(reconciler: &Reconciler) {
    for (runner_id, runner) in reconciler.runners.all() {
        if let Some(remote) = reconciler.runners.remote(&runner_id) {
            let connected = remote.members().iter().filter(|member| member.connected).count();
            reconciler.service.metrics().set_runner_members(&runner_id, connected);
        }
        let held = match runner.snapshots().await {
            Ok(held) => held,
            Err(error) => {
                tracing::warn!(runner = %runner_id, %error, "collection: cannot list what the runner holds");
                continue;
            }
        };
        reconciler.service.metrics().set_runner_snapshots(&runner_id, held.iter().map(|s| s.bytes).sum());
        let ids: Vec<String> = held.into_iter().map(|s| s.prebuild_id).collect::<HashSet<_>>().into_iter().collect();
        let existing = match reconciler.store().existing_prebuild_ids(&ids).await {
            Ok(existing) => existing,
            Err(error) => {
                tracing::warn!(%error, "collection: cannot read which prebuilds exist");
                return;
            }
        };
        let gone: Vec<String> = ids.into_iter().filter(|id| !existing.contains(id)).collect();
        if let Err(error) = runner.collect_garbage(&gone).await {
            tracing::warn!(runner = %runner_id, %error, "collection: the runner could not remove everything");
        }
    }
}
