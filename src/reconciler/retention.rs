//! Automatic deletion ("prebuilds are automatically deleted after some
//! time"): COMPLETED prebuilds older than `retention.completed` that are not
//! the current snapshot of a warm pool, and FAILED or CANCELLED ones older
//! than `retention.failed`, go through the normal delete path.

use super::warm_pool::DEMAND_WINDOW;
use super::Reconciler;
use crate::clock::timestamp;
use crate::domain::Micros;
use crate::error::Result;
use crate::service::mark_deleting;
use std::collections::HashSet;

const BATCH: usize = 500;

pub(super) async fn run(reconciler: &Reconciler) -> Result<()> {
    let now = reconciler.now();
    let store = reconciler.store();
    let completed_before = Micros::before(now, reconciler.retention.completed);
    let failed_before = Micros::before(now, reconciler.retention.failed);
    let expired = store.expired_prebuilds(completed_before, failed_before, BATCH).await?;
    if !expired.is_empty() {
        let in_use: HashSet<String> =
            store.all_warm_pools().await?.into_iter().filter_map(|p| p.spec.and_then(|s| s.snapshot_id)).collect();
        let at = timestamp(now);
        for prebuild in expired.into_iter().filter(|p| !in_use.contains(&p.id)) {
            let organization_id = prebuild.metadata.as_ref().map(|m| m.organization_id.clone()).unwrap_or_default();
            store.update_prebuild(&organization_id, &prebuild.id, Box::new(move |p| Ok(mark_deleting(p, at)))).await?;
            tracing::info!(prebuild = %prebuild.id, "retention: deleting an expired prebuild");
        }
        reconciler.changes.notify_one();
    }
    // Webhook deliveries are remembered for a week (providers redeliver
    // within hours) and at most MAX_DELIVERIES of them.
    store.prune_deliveries(Micros::before(now, DELIVERY_MEMORY), crate::store::sources::MAX_DELIVERIES).await?;
    store.prune_claims(Micros::before(now, DEMAND_WINDOW)).await
}

/// How long a webhook delivery's ID is remembered.
const DELIVERY_MEMORY: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);
