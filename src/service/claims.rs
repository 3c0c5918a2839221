//! `prebuildd.v1.WarmPoolInstanceService`: handing out warm instances.
//! Our own extension; the official API has no claim call.

use super::Service;
use crate::auth::Caller;
use crate::clock::timestamp;
use crate::domain::{warm_pool_phase, Micros};
use crate::error::{Error, Result};
use crate::proto::prebuildd::v1::{ClaimInstanceRequest, ClaimInstanceResponse, WarmPoolInstance};
use crate::validate;

impl Service {
    /// Takes one ready instance out of the pool, records the claim (the
    /// autoscaler's demand signal) and wakes the reconciler to backfill.
    pub async fn claim_instance(&self, caller: &Caller, request: ClaimInstanceRequest) -> Result<ClaimInstanceResponse> {
        let warm_pool_id = validate::uuid("warm_pool_id", &request.warm_pool_id)?;
        let pool = self
            .store
            .get_warm_pool(&caller.organization_id, &warm_pool_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("warm pool {warm_pool_id} not found")))?;
        if warm_pool_phase(&pool).is_deleting() {
            return Err(Error::FailedPrecondition(format!("warm pool {warm_pool_id} is being deleted")));
        }
        let runner_id = pool.metadata.as_ref().map(|m| m.runner_id.clone()).unwrap_or_default();
        let runner = self
            .runners
            .get(&runner_id)
            .ok_or_else(|| Error::FailedPrecondition(format!("the runner {runner_id} of warm pool {warm_pool_id} is not configured")))?;
        let claimed = runner.claim_instance(&warm_pool_id).await?;
        self.metrics.record_claim(claimed.is_some());
        let now = self.clock.now();
        // Record the demand even when the pool was empty: it should grow.
        self.store.record_claim(&warm_pool_id, Micros::from_system_time(now)).await?;
        self.changed();
        let instance = claimed.ok_or_else(|| {
            Error::Unavailable(format!(
                "no warm instance is ready in warm pool {warm_pool_id} right now; one is being provisioned, retry shortly"
            ))
        })?;
        Ok(ClaimInstanceResponse {
            instance: Some(WarmPoolInstance {
                id: instance.instance_id,
                warm_pool_id,
                snapshot_id: instance.snapshot_id,
                workspace_path: instance.workspace_path,
                container_id: instance.container_id,
                claimed_at: Some(timestamp(now)),
            }),
        })
    }
}
