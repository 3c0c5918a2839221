//! A runner on another machine (`prebuildd runner`), as the reconciler sees
//! it: one more [`Runner`]. The runner connects out to the server over the
//! `prebuildd.v1.RunnerService` stream ([`session`] handles its messages);
//! this side keeps what the reconciler asked for and what the runner last
//! reported, and sends the runner its work.
//!
//! The server side is the source of truth. Every call records the desired
//! state first and sends it if the runner is connected; a reconnect resends
//! all of it (removals, pool targets), and the runner's hello says what it
//! still holds, so either side may restart. While the runner is away the
//! reconciler starts nothing on it ([`Runner::is_available`]); past the
//! grace period its running prebuilds fail and its pools report a failure
//! (DEGRADED), each message naming the runner.

mod session;
pub mod wire;

pub use session::Session;

use super::{ClaimedInstance, JobState, PoolObservation, PoolTarget, PrebuildJob, Runner};
use crate::error::{Error, Result};
use crate::logs::Logs;
use crate::proto::prebuildd::v1 as pb;
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How long a claim waits for the runner's answer.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(20);

pub struct RemoteRunner {
    id: String,
    grace: Duration,
    logs: Logs,
    state: Mutex<State>,
    /// Told of what the runner reports (job states, pools, its hello).
    events: crate::runner::RunnerEvents,
}

impl std::fmt::Debug for RemoteRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRunner").field("id", &self.id).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    /// The open stream, if the runner is connected.
    connection: Option<Connection>,
    /// Since when the runner has been away (`None` while connected). A new
    /// server counts from its own start.
    away_since: Option<Instant>,
    /// Connections so far, to tell an old stream's end from the current.
    connections: u64,
    /// Jobs the runner has, with their last reported state.
    jobs: HashMap<String, JobState>,
    /// Jobs to remove, until the runner confirms.
    job_removals: HashSet<String>,
    /// Pool targets, with what the runner last reported.
    pools: HashMap<String, Pool>,
    /// Pools to remove, until the runner confirms; `true` once confirmed.
    pool_removals: HashMap<String, bool>,
    /// Claims waiting for the runner's answer.
    claims: HashMap<String, oneshot::Sender<pb::ClaimResult>>,
}

struct Connection {
    number: u64,
    outbox: mpsc::Sender<pb::AttachResponse>,
}

/// Messages that may wait to be sent to a connected runner. A runner that
/// does not read them as fast as they come is disconnected rather than
/// buffered for: everything the server asks for is kept in this side's
/// state and sent again when it reconnects.
pub(crate) const OUTBOX: usize = 16 * 1024;

struct Pool {
    target: PoolTarget,
    observed: PoolObservation,
}

use crate::sync::lock;

impl State {
    /// Queues a message for the runner. A full outbox ends the connection
    /// (see [`OUTBOX`]); a closed one means the stream is ending already.
    fn send(&mut self, message: pb::attach_response::Message) {
        let Some(connection) = &self.connection else { return };
        if let Err(mpsc::error::TrySendError::Full(_)) = connection.outbox.try_send(pb::AttachResponse { message: Some(message) }) {
            tracing::warn!(limit = OUTBOX, "a runner does not read its messages as fast as they come; disconnecting it");
            self.connection = None;
            self.away_since = Some(Instant::now());
            self.claims.clear();
        }
    }
}

impl RemoteRunner {
    pub fn new(id: &str, grace: Duration, logs: Logs, events: crate::runner::RunnerEvents) -> Self {
        let state = State { away_since: Some(Instant::now()), ..Default::default() };
        RemoteRunner { id: id.to_string(), grace, logs, state: Mutex::new(state), events }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Ends the runner's connection from this side (the runner reconnects,
    /// wherever the load balancer sends it).
    pub fn disconnect(&self) {
        let mut state = lock(&self.state);
        if state.connection.take().is_some() {
            state.away_since = Some(Instant::now());
            state.claims.clear();
            tracing::info!(runner = %self.id, "runner disconnected by this replica");
        }
    }

    /// Whether the runner has been away longer than the grace period.
    fn gone(&self, state: &State) -> Option<String> {
        let since = state.away_since?;
        (since.elapsed() > self.grace).then(|| {
            format!("runner {} has not been connected for more than {} (its grace period)", self.id, humantime::format_duration(self.grace))
        })
    }
}

#[async_trait]
impl Runner for RemoteRunner {
    fn is_available(&self) -> bool {
        lock(&self.state).connection.is_some()
    }

    async fn start(&self, job: PrebuildJob) -> Result<()> {
        let mut state = lock(&self.state);
        if state.connection.is_none() {
            return Err(Error::Unavailable(format!("runner {} is not connected", self.id)));
        }
        state.job_removals.remove(&job.prebuild_id);
        // Starting as far as this side knows, until the runner reports: an
        // unknown job would look lost to the reconciler.
        state.jobs.entry(job.prebuild_id.clone()).or_insert(JobState::Starting);
        state.send(pb::attach_response::Message::StartJob(pb::StartJob {
            prebuild_id: job.prebuild_id,
            environment_id: job.environment_id,
            project_id: job.project_id,
            environment_class_id: job.environment_class_id,
            repository: job.repository,
            resources: Some(wire::resources_to_wire(&job.resources)),
            policy: Some(wire::policy_to_wire(&job.policy)),
            devcontainer_path: job.devcontainer_path.unwrap_or_default(),
            branch: job.source.branch.unwrap_or_default(),
            commit_sha: job.source.commit.unwrap_or_default(),
            base_prebuild_id: job.source.base.as_ref().map(|b| b.prebuild_id.clone()).unwrap_or_default(),
            base_commit_sha: job.source.base.map(|b| b.commit).unwrap_or_default(),
        }));
        Ok(())
    }

    async fn observe(&self, prebuild_id: &str) -> Option<JobState> {
        let mut state = lock(&self.state);
        if let Some(message) = self.gone(&state) {
            // The work there is given up; if the runner comes back with the
            // job, it is removed.
            if state.jobs.remove(prebuild_id).is_some() {
                state.job_removals.insert(prebuild_id.to_string());
            }
            return Some(JobState::Failed { message: format!("{message}; the prebuild's work there is lost") });
        }
        state.jobs.get(prebuild_id).cloned()
    }

    async fn stop(&self, prebuild_id: &str) -> Result<()> {
        // A stop is a removal that keeps nothing: the runner's engine stops
        // the work before it removes it.
        self.remove(prebuild_id).await
    }

    async fn remove(&self, prebuild_id: &str) -> Result<()> {
        let mut state = lock(&self.state);
        state.jobs.remove(prebuild_id);
        state.job_removals.insert(prebuild_id.to_string());
        state.send(pb::attach_response::Message::RemoveJob(pb::RemoveJob { prebuild_id: prebuild_id.to_string() }));
        Ok(())
    }

    async fn sync_pool(&self, target: PoolTarget) -> Result<PoolObservation> {
        let mut state = lock(&self.state);
        let id = target.warm_pool_id.clone();
        state.pool_removals.remove(&id);
        let changed = state.pools.get(&id).is_none_or(|pool| pool.target != target);
        if changed {
            state.send(pb::attach_response::Message::SetPool(wire::pool_target_to_wire(&target)));
        }
        let pool = state.pools.entry(id).or_insert_with(|| Pool { target: target.clone(), observed: Default::default() });
        pool.target = target;
        let mut observed = pool.observed.clone();
        if let Some(message) = self.gone(&state) {
            observed.failure = Some(message);
        }
        Ok(observed)
    }

    async fn claim_instance(&self, warm_pool_id: &str) -> Result<Option<ClaimedInstance>> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let (answer, answered) = oneshot::channel();
        {
            let mut state = lock(&self.state);
            if state.connection.is_none() {
                return Err(Error::Unavailable(format!("runner {} of this warm pool is not connected; try again later", self.id)));
            }
            state.claims.insert(request_id.clone(), answer);
            state.send(pb::attach_response::Message::ClaimInstance(pb::ClaimInstance {
                request_id: request_id.clone(),
                warm_pool_id: warm_pool_id.to_string(),
            }));
        }
        let result = tokio::time::timeout(CLAIM_TIMEOUT, answered).await;
        lock(&self.state).claims.remove(&request_id);
        let result = match result {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => return Err(Error::Unavailable(format!("runner {} disconnected during the claim; try again", self.id))),
            Err(_) => return Err(Error::Unavailable(format!("runner {} did not answer the claim in time; try again", self.id))),
        };
        if !result.error_message.is_empty() {
            return Err(Error::Internal(format!("runner {}: claim failed: {}", self.id, result.error_message)));
        }
        Ok(result.claimed.then_some(ClaimedInstance {
            instance_id: result.instance_id,
            snapshot_id: result.snapshot_id,
            workspace_path: result.workspace_path,
            container_id: result.container_id,
            compose_project: result.compose_project,
            services: result
                .services
                .into_iter()
                .map(|s| super::ServiceContainer { service: s.service, container_id: s.container_id })
                .collect(),
        }))
    }

    async fn remove_pool(&self, warm_pool_id: &str) -> Result<bool> {
        let mut state = lock(&self.state);
        state.pools.remove(warm_pool_id);
        match state.pool_removals.get(warm_pool_id) {
            Some(true) => {
                state.pool_removals.remove(warm_pool_id);
                Ok(true)
            }
            Some(false) => Ok(false),
            None => {
                state.pool_removals.insert(warm_pool_id.to_string(), false);
                state.send(pb::attach_response::Message::RemovePool(pb::RemovePool { warm_pool_id: warm_pool_id.to_string() }));
                Ok(false)
            }
        }
    }
}
