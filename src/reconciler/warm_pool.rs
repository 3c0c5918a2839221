//! One warm pool, one step: follow the newest snapshot, scale with demand,
//! ask the runner for the instances, report what exists.

// Pools created with the deprecated `desired_size` read it as their size.
#![allow(deprecated)]

use super::{PassReport, Reconciler};
use crate::catalog::Catalog;
use crate::clock::timestamp;
use crate::domain::{warm_pool_phase, Micros};
use crate::error::Result;
use crate::proto::gitpod::v1::{WarmPool, WarmPoolPhase, WarmPoolStatus};
use crate::runner::PoolTarget;
use crate::service::mark_pool_deleting;
use crate::store::Change;
use std::time::Duration;

/// How far back claims count as demand. A claim keeps the pool larger for
/// this long, so the pool grows at once with demand and shrinks only as
/// claims age out: slowly.
pub const DEMAND_WINDOW: Duration = Duration::from_secs(10 * 60);

/// The autoscaler: as many running instances as claims in the window,
/// within `[min_size, max_size]`. `min_size = 0` with no demand scales to zero.
pub fn desired_size(min_size: i32, max_size: i32, recent_claims: u32) -> i32 {
    let max_size = max_size.max(min_size);
    (recent_claims.min(i32::MAX as u32) as i32).clamp(min_size, max_size)
}

/// The phase a pool reports from what exists.
pub fn observed_phase(has_snapshot: bool, failure: Option<&str>, running: u32, desired: i32) -> WarmPoolPhase {
    if failure.is_some() {
        WarmPoolPhase::Degraded
    } else if has_snapshot && running as i64 >= desired as i64 {
        WarmPoolPhase::Ready
    } else {
        WarmPoolPhase::Pending
    }
}

pub(super) async fn pass(reconciler: &Reconciler, catalog: &Catalog, report: &mut PassReport) -> Result<()> {
    let pools = reconciler.store().all_warm_pools().await?;
    report.warm_pools_seen = pools.len();
    let metrics = reconciler.service.metrics();
    metrics.retain_warm_pools(&pools.iter().map(|p| p.id.as_str()).collect());
    for pool in pools {
        if reconciler.backing_off(&pool.id) {
            continue;
        }
        let id = pool.id.clone();
        if reconciler.guarded(&id, step(reconciler, catalog, pool)).await.is_err() {
            report.failures += 1;
        }
    }
    Ok(())
}

async fn step(reconciler: &Reconciler, catalog: &Catalog, pool: WarmPool) -> Result<()> {
    let store = reconciler.store();
    let metadata = pool.metadata.clone().unwrap_or_default();
    let runner = reconciler.runners.get(&metadata.runner_id);
    let now = reconciler.now();

    if warm_pool_phase(&pool).is_deleting() {
        let drained = match &runner {
            Some(runner) => runner.remove_pool(&pool.id).await?,
            None => true,
        };
        if drained {
            store.remove_warm_pool(&pool.id).await?;
        }
        return Ok(());
    }

    // The reference: pools are deleted when the project disables prebuilds
    // or drops the class from its prebuild configuration.
    let allowed = catalog
        .project_in(&metadata.organization_id, &metadata.project_id)
        .is_some_and(|p| Catalog::prebuild_class_allowed(p, &metadata.environment_class_id));
    if !allowed {
        let at = timestamp(now);
        store.update_warm_pool(&metadata.organization_id, &pool.id, Box::new(move |p| Ok(mark_pool_deleting(p, at)))).await?;
        return Ok(());
    }

    // Follow the newest completed prebuild of the pair.
    let newest =
        store.newest_completed_prebuild_id(&metadata.organization_id, &metadata.project_id, &metadata.environment_class_id).await?;
    let mut pool = pool;
    let spec = pool.spec.clone().unwrap_or_default();
    if newest.is_some() && newest != spec.snapshot_id {
        let seen_version = spec.spec_version;
        let snapshot_id = newest.clone();
        let at = timestamp(now);
        let updated = store
            .update_warm_pool(
                &metadata.organization_id,
                &pool.id,
                Box::new(move |p| {
                    let spec = p.spec.get_or_insert_with(Default::default);
                    if spec.spec_version != seen_version {
                        return Ok(Change::Unchanged);
                    }
                    spec.snapshot_id = snapshot_id.clone();
                    spec.spec_version += 1;
                    // In the same write: the status spoke of the old snapshot's
                    // instances, and none of the new one's exist yet. Left as
                    // it was, a reader would see the new snapshot READY.
                    let status = p.status.get_or_insert_with(Default::default);
                    status.phase = WarmPoolPhase::Pending as i32;
                    status.running_instances = 0;
                    status.stopped_instances = 0;
                    status.status_version += 1;
                    if let Some(m) = p.metadata.as_mut() {
                        m.updated_at = Some(at);
                    }
                    Ok(Change::Changed)
                }),
            )
            .await?;
        match updated {
            Some(updated) => pool = updated,
            None => return Ok(()),
        }
    }

    let spec = pool.spec.clone().unwrap_or_default();
    let min_size = spec.min_size.unwrap_or(spec.desired_size);
    let max_size = spec.max_size.unwrap_or(spec.desired_size).max(min_size);
    let since = Micros::before(now, DEMAND_WINDOW);
    let claims = store.claims_since(&pool.id, since).await?;
    let desired = desired_size(min_size, max_size, claims);

    let (running, stopped, failure) = match &runner {
        Some(runner) => {
            let class = catalog.environment_classes.get(&metadata.environment_class_id);
            // The snapshot in its registry, when it was pushed: members
            // that lack it pull it from there.
            let snapshot_image = match &spec.snapshot_id {
                Some(snapshot_id) => store
                    .prebuild_sources(&metadata.organization_id, std::slice::from_ref(snapshot_id))
                    .await?
                    .into_iter()
                    .next()
                    .map(|source| source.snapshot_image)
                    .filter(|image| !image.is_empty()),
                None => None,
            };
            let target = PoolTarget {
                warm_pool_id: pool.id.clone(),
                snapshot_id: spec.snapshot_id.clone(),
                snapshot_image,
                running: desired as u32,
                stopped: (max_size - desired).max(0) as u32,
                resources: class.map(|c| c.resources).unwrap_or_default(),
                policy: class.map(|c| c.policy.clone()).unwrap_or_default(),
            };
            let observed = runner.sync_pool(target).await?;
            (observed.running, observed.stopped, observed.failure)
        }
        None => (0, 0, Some(format!("runner {} is not configured", metadata.runner_id))),
    };
    reconciler.service.metrics().set_warm_pool_instances(&pool.id, running, stopped);
    let phase = observed_phase(spec.snapshot_id.is_some(), failure.as_deref(), running, desired);
    let next = WarmPoolStatus {
        phase: phase as i32,
        failure_message: failure.unwrap_or_default(),
        status_version: 0,
        running_instances: running as i32,
        stopped_instances: stopped as i32,
        desired_size: desired,
    };
    let current = pool.status.clone().unwrap_or_default();
    if (WarmPoolStatus { status_version: 0, ..current.clone() }) == next {
        return Ok(());
    }
    let seen_version = current.status_version;
    let at = timestamp(now);
    store
        .update_warm_pool(
            &metadata.organization_id,
            &pool.id,
            Box::new(move |p| {
                let status = p.status.get_or_insert_with(Default::default);
                if status.status_version != seen_version || warm_pool_phase(p).is_deleting() {
                    return Ok(Change::Unchanged);
                }
                let status = p.status.get_or_insert_with(Default::default);
                *status = WarmPoolStatus { status_version: seen_version + 1, ..next.clone() };
                if let Some(m) = p.metadata.as_mut() {
                    m.updated_at = Some(at);
                }
                Ok(Change::Changed)
            }),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desired_size_follows_demand_within_bounds() {
        assert_eq!(desired_size(0, 5, 0), 0, "scale to zero");
        assert_eq!(desired_size(1, 5, 0), 1);
        assert_eq!(desired_size(1, 5, 3), 3);
        assert_eq!(desired_size(1, 5, 30), 5);
        assert_eq!(desired_size(2, 2, 9), 2);
    }

    #[test]
    fn phases_report_what_exists() {
        assert_eq!(observed_phase(false, None, 0, 1), WarmPoolPhase::Pending);
        assert_eq!(observed_phase(true, None, 0, 1), WarmPoolPhase::Pending);
        assert_eq!(observed_phase(true, None, 1, 1), WarmPoolPhase::Ready);
        assert_eq!(observed_phase(true, None, 0, 0), WarmPoolPhase::Ready, "scaled to zero is ready");
        assert_eq!(observed_phase(true, Some("no snapshot"), 0, 1), WarmPoolPhase::Degraded);
    }
}
