//! `prebuildd.v1.WarmPoolInstanceService`: handing out warm instances.
//! Our own extension; the official API has no claim call.
//!
//! A claim that finds no ready instance waits for one that is being
//! provisioned or started, instead of sending every client into a retry
//! loop of its own: claims of one pool queue up and are served first come,
//! first served, each woken by the runners' events (an instance became
//! ready), up to the request's `wait` (bounded by the call's deadline, see
//! the transports) and at most [`MAX_CLAIM_WAIT`]. A claim answers
//! `unavailable` at once when no instance will come: the pool has no
//! snapshot yet, its runner keeps failing to provision, or the runner is
//! not connected.

use super::Service;
use crate::auth::Caller;
use crate::clock::timestamp;
use crate::domain::{warm_pool_phase, Micros};
use crate::error::{Error, Result};
use crate::proto::gitpod::v1::{WarmPool, WarmPoolPhase};
use crate::proto::prebuildd::v1::{ClaimInstanceRequest, ClaimInstanceResponse, WarmPoolInstance};
use crate::runner::{ClaimedInstance, Runner};
use crate::validate;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// The longest a claim waits for an instance.
pub const MAX_CLAIM_WAIT: Duration = Duration::from_secs(60);
/// Claims that may wait for one pool at once; more are refused at once
/// with `resource_exhausted` (each waiting claim holds a connection).
pub const MAX_WAITING_CLAIMS: usize = 1024;

/// The queue of each pool with claims waiting: a fair (first in, first
/// out) lock, held by the claim whose turn it is. A pool's entry lives as
/// long as a claim holds or waits for it.
#[derive(Default)]
pub(super) struct ClaimLines {
    lines: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl ClaimLines {
    /// The pool's line, with how many claims are in it (this one included).
    fn join(&self, warm_pool_id: &str) -> (Arc<tokio::sync::Mutex<()>>, usize) {
        let mut lines = crate::sync::lock(&self.lines);
        lines.retain(|_, line| line.strong_count() > 0);
        let line = match lines.get(warm_pool_id).and_then(Weak::upgrade) {
            Some(line) => line,
            None => {
                let line = Arc::new(tokio::sync::Mutex::new(()));
                lines.insert(warm_pool_id.to_string(), Arc::downgrade(&line));
                line
            }
        };
        let in_line = Arc::strong_count(&line);
        (line, in_line)
    }
}

/// How long this claim may wait: its `wait`, else the maximum.
fn wait_of(request: &ClaimInstanceRequest) -> Result<Duration> {
    match &request.wait {
        None => Ok(MAX_CLAIM_WAIT),
        Some(wait) => validate::duration_range("wait", wait, 0, MAX_CLAIM_WAIT.as_secs() as i64),
    }
}

/// Bounds a claim's `wait` by the time its caller has left (a gRPC deadline,
/// `Connect-Timeout-Ms`), keeping a margin so that the answer reaches the
/// caller before its deadline: a claim that found nothing says
/// `unavailable`, not the transport's `deadline_exceeded`.
pub fn bound_wait(request: &mut ClaimInstanceRequest, remaining: Duration) {
    let margin = (remaining / 5).min(Duration::from_millis(500));
    let bound = remaining.saturating_sub(margin).min(MAX_CLAIM_WAIT);
    let asked = request.wait.as_ref().and_then(|w| validate::duration_range("wait", w, 0, MAX_CLAIM_WAIT.as_secs() as i64).ok());
    // An invalid `wait` is left for the service to refuse.
    if request.wait.is_none() || asked.is_some_and(|asked| asked > bound) {
        request.wait = Some(pbjson_types::Duration { seconds: bound.as_secs() as i64, nanos: bound.subsec_nanos() as i32 });
    }
}

impl Service {
    /// Takes one ready instance out of the pool, waiting for one if none is
    /// ready yet but one will be; records the claim (the autoscaler's demand
    /// signal) and wakes the reconciler to backfill.
    pub async fn claim_instance(&self, caller: &Caller, request: ClaimInstanceRequest) -> Result<ClaimInstanceResponse> {
        let warm_pool_id = validate::uuid("warm_pool_id", &request.warm_pool_id)?;
        let wait = wait_of(&request)?;
        let deadline = Instant::now() + wait;
        let (pool, runner) = self.claimable_pool(caller, &warm_pool_id).await?;

        let (line, in_line) = self.claim_lines.join(&warm_pool_id);
        if in_line > MAX_WAITING_CLAIMS {
            return Err(Error::ResourceExhausted(format!(
                "{MAX_WAITING_CLAIMS} claims are already waiting for warm pool {warm_pool_id}; try again later"
            )));
        }
        // Subscribed before the first look: an instance that becomes ready
        // after it is not missed.
        let mut changes = self.runners.events().subscribe();
        // Demand first, so that the pool grows for this claim at once, also
        // when it has to wait (or gets nothing).
        self.store.record_claim(&warm_pool_id, Micros::from_system_time(self.clock.now())).await?;
        self.changed();

        let claimed = match tokio::time::timeout_at(deadline, line.lock()).await {
            Ok(_turn) => self.claim_in_turn(caller, pool, runner, &mut changes, deadline, wait).await,
            Err(_) => Err(none_in_time(&warm_pool_id, wait)),
        };
        self.metrics.record_claim(claimed.is_ok());
        let instance = claimed?;
        Ok(ClaimInstanceResponse {
            instance: Some(WarmPoolInstance {
                id: instance.instance_id,
                warm_pool_id,
                snapshot_id: instance.snapshot_id,
                workspace_path: instance.workspace_path,
                container_id: instance.container_id,
                claimed_at: Some(timestamp(self.clock.now())),
                compose_project: instance.compose_project,
                services: instance
                    .services
                    .into_iter()
                    .map(|s| crate::proto::prebuildd::v1::ServiceContainer { service: s.service, container_id: s.container_id })
                    .collect(),
            }),
        })
    }

    /// The pool and its runner, if a claim may take from it.
    async fn claimable_pool(&self, caller: &Caller, warm_pool_id: &str) -> Result<(WarmPool, Arc<dyn Runner>)> {
        let pool = self
            .store
            .get_warm_pool(&caller.organization_id, warm_pool_id)
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
        Ok((pool, runner))
    }

    /// This claim's turn: takes a ready instance, or waits for the runner's
    /// next event and looks again, until the deadline or until no instance
    /// will come.
    async fn claim_in_turn(
        &self,
        caller: &Caller,
        mut pool: WarmPool,
        runner: Arc<dyn Runner>,
        changes: &mut tokio::sync::watch::Receiver<u64>,
        deadline: Instant,
        wait: Duration,
    ) -> Result<ClaimedInstance> {
        let warm_pool_id = pool.id.clone();
        loop {
            changes.borrow_and_update();
            if let Some(instance) = runner.claim_instance(&warm_pool_id).await? {
                return Ok(instance);
            }
            if let Some(reason) = none_will_come(&pool, runner.as_ref()) {
                return Err(Error::Unavailable(format!(
                    "no warm instance is ready in warm pool {warm_pool_id}, and none will come: {reason}"
                )));
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Err(none_in_time(&warm_pool_id, wait));
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return Err(none_in_time(&warm_pool_id, wait)),
            }
            // What the pool says now (a new snapshot, a failure, a deletion).
            pool = self.claimable_pool(caller, &warm_pool_id).await?.0;
        }
    }
}

/// Why no instance will come to a pool that has none ready, if none will.
fn none_will_come(pool: &WarmPool, runner: &dyn Runner) -> Option<String> {
    if !runner.is_available() {
        return Some("its runner is not connected".into());
    }
    if pool.spec.as_ref().and_then(|s| s.snapshot_id.as_ref()).is_none() {
        return Some("it has no snapshot yet (no prebuild of its project and class has completed)".into());
    }
    let status = pool.status.clone().unwrap_or_default();
    if warm_pool_phase(pool) == WarmPoolPhase::Degraded {
        return Some(format!("its runner cannot provision instances: {}", status.failure_message));
    }
    None
}

fn none_in_time(warm_pool_id: &str, wait: Duration) -> Error {
    Error::Unavailable(format!(
        "no warm instance became ready in warm pool {warm_pool_id} within {} (the claim's wait); retry later",
        humantime::format_duration(wait)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(wait: Option<Duration>) -> ClaimInstanceRequest {
        ClaimInstanceRequest {
            warm_pool_id: String::new(),
            wait: wait.map(|w| pbjson_types::Duration { seconds: w.as_secs() as i64, nanos: w.subsec_nanos() as i32 }),
        }
    }

    #[test]
    fn the_wait_is_bounded_by_the_callers_deadline_with_a_margin() {
        let mut unset = request(None);
        bound_wait(&mut unset, Duration::from_secs(5));
        assert_eq!(wait_of(&unset).unwrap(), Duration::from_millis(4500), "a 500 ms margin");
        let mut short = request(Some(Duration::from_secs(1)));
        bound_wait(&mut short, Duration::from_secs(30));
        assert_eq!(wait_of(&short).unwrap(), Duration::from_secs(1), "the request's own wait when shorter");
        let mut tight = request(Some(Duration::from_secs(10)));
        bound_wait(&mut tight, Duration::from_millis(500));
        assert_eq!(wait_of(&tight).unwrap(), Duration::from_millis(400), "a fifth of a short deadline");
        let mut long = request(None);
        bound_wait(&mut long, Duration::from_secs(3600));
        assert_eq!(wait_of(&long).unwrap(), MAX_CLAIM_WAIT);
        assert_eq!(wait_of(&request(None)).unwrap(), MAX_CLAIM_WAIT, "no deadline, no wait: the maximum");
        assert_eq!(wait_of(&request(Some(Duration::ZERO))).unwrap(), Duration::ZERO);
        let error = wait_of(&request(Some(Duration::from_secs(61)))).unwrap_err();
        assert!(error.to_string().starts_with("wait: "), "{error}");
        let mut invalid = request(Some(Duration::from_secs(61)));
        bound_wait(&mut invalid, Duration::from_secs(5));
        assert!(wait_of(&invalid).is_err(), "an invalid wait is still refused, not silently shortened");
    }

    #[tokio::test]
    async fn claims_of_a_pool_queue_first_come_first_served() {
        let lines = ClaimLines::default();
        let (first, in_line) = lines.join("pool");
        assert_eq!(in_line, 1);
        let turn = first.lock().await;
        let (second, in_line) = lines.join("pool");
        assert_eq!(in_line, 2, "the second joins the same line");
        let (third, _) = lines.join("pool");
        let order = Arc::new(Mutex::new(Vec::new()));
        let waiting: Vec<_> = [(2, second), (3, third)]
            .into_iter()
            .map(|(n, line)| {
                let order = order.clone();
                let task = tokio::spawn(async move {
                    let _turn = line.lock().await;
                    crate::sync::lock(&order).push(n);
                });
                (n, task)
            })
            .collect();
        // On this single-threaded runtime both run, in the order spawned, up
        // to their lock before this task goes on: queued behind the first.
        tokio::task::yield_now().await;
        drop(turn);
        for (_, task) in waiting {
            task.await.unwrap();
        }
        assert_eq!(*crate::sync::lock(&order), vec![2, 3]);
        drop(first);
        assert_eq!(lines.join("other").1, 1);
        assert_eq!(crate::sync::lock(&lines.lines).len(), 1, "lines nobody is in are forgotten");
    }
}
