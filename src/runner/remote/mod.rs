//! A runner on other machines (`prebuildd runner`), as the reconciler sees
//! it: one more [`Runner`]. Runner processes connect out to the server over
//! the `prebuildd.v1.RunnerService` stream ([`session`] handles their
//! messages); several may attach with one runner ID and token, each a
//! member of the runner's fleet with a name of its own ([`members`] says how
//! work is spread over them). This side keeps what the reconciler asked for
//! and what each member last reported, and sends the members their work.
//!
//! The server side is the source of truth. Every call records the desired
//! state first and sends it to the members that are connected; a reconnect
//! resends a member all of its share (removals, pool targets), and its hello
//! says what it still holds, so either side may restart. While no member is
//! connected the reconciler starts nothing on the runner
//! ([`Runner::is_available`]).
//!
//! A member away for longer than the grace period is gone: its prebuilds
//! start again on another member (the reconciler finds them unknown), and
//! its share of each pool goes to the others (made from the registry when
//! the snapshot was pushed there). Past the grace period with no member
//! connected at all, the runner's running prebuilds fail and its pools
//! report a failure (DEGRADED), each message naming the runner: with
//! nowhere else to go, that is a single machine's fate.

mod members;
mod session;
pub mod wire;

pub use members::{valid_member_name, DEFAULT_MEMBER};
pub use session::Session;

use super::{ClaimedInstance, JobState, PoolObservation, PoolTarget, PrebuildJob, Runner};
use crate::error::{Error, Result};
use crate::logs::Logs;
use crate::proto::prebuildd::v1 as pb;
use async_trait::async_trait;
use members::{Load, Member, PlacedJob};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::oneshot;

/// How long a claim waits for a member's answer.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(20);

pub struct RemoteRunner {
    id: String,
    grace: Duration,
    /// The runner's `max_concurrent_prebuilds` on the server: each member's
    /// slots unless its own runner.toml sets them (kept current by
    /// [`Runner::slots`], which the reconciler calls every pass).
    configured_slots: AtomicU32,
    logs: Logs,
    state: Mutex<State>,
    /// Told of what the members report (job states, pools, their hellos).
    events: crate::runner::RunnerEvents,
}

impl std::fmt::Debug for RemoteRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRunner").field("id", &self.id).finish_non_exhaustive()
    }
}

struct State {
    /// The fleet, by member name.
    members: BTreeMap<String, Member>,
    /// When this side began: with no member ever connected, the runner has
    /// been away since then.
    created: Instant,
    /// Connections so far, to tell an old stream's end from the current.
    connections: u64,
    /// Jobs given to members, with their last reported state.
    jobs: HashMap<String, PlacedJob>,
    /// Pool targets for the whole runner (members get shares of them).
    pools: HashMap<String, PoolTarget>,
    /// Claims waiting for a member's answer: the member asked, and who waits.
    claims: HashMap<String, (String, oneshot::Sender<pb::ClaimResult>)>,
    /// Pushed snapshots to delete from their registry, by prebuild.
    deletions: HashMap<String, Deletion>,
    /// Pools whose removal was sent to every member.
    removing_pools: std::collections::HashSet<String>,
}

/// A registry deletion under way: the image, the member asked to do it
/// (`None` until one is connected), and whether it answered.
struct Deletion {
    image: String,
    member: Option<String>,
    done: bool,
}

/// Messages that may wait to be sent to a connected member. A member that
/// does not read them as fast as they come is disconnected rather than
/// buffered for: everything the server asks for is kept in this side's
/// state and sent again when it reconnects.
pub(crate) const OUTBOX: usize = 16 * 1024;

use crate::sync::lock;

/// A member of a runner's fleet, for the dashboard and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    pub name: String,
    pub connected: bool,
    /// Away past the grace period: its work went to other members.
    pub gone: bool,
    /// When it connected (connected) or left (away).
    pub since: SystemTime,
    pub engine: String,
    pub version: String,
    /// Its prebuilds that have not ended, and how many it may run.
    pub prebuilds: u32,
    pub slots: u32,
    /// Pool instances it last reported.
    pub running_instances: u32,
    pub stopped_instances: u32,
}

impl State {
    /// Since when no member has been connected; `None` while one is.
    fn away_since(&self) -> Option<Instant> {
        if self.connected().next().is_some() {
            return None;
        }
        Some(self.members.values().filter_map(|m| m.away_since).max().unwrap_or(self.created).max(self.created))
    }

    /// Members that are connected, in name order.
    fn connected(&self) -> impl Iterator<Item = (&String, &Member)> {
        self.members.iter().filter(|(_, m)| m.connected())
    }

    /// Jobs given to `member` that have not ended.
    fn running_on(&self, member: &str) -> u32 {
        self.jobs.values().filter(|job| job.member == member && !job.state.is_final()).count() as u32
    }

    /// Sends every placed member its share of the pool (when it changed).
    fn place_pool(&mut self, warm_pool_id: &str) {
        let Some(target) = self.pools.get(warm_pool_id).cloned() else { return };
        let placed: Vec<String> = self.members.iter().filter(|(_, m)| m.placed()).map(|(name, _)| name.clone()).collect();
        for (index, name) in placed.iter().enumerate() {
            let share = members::share_of(&target, index, placed.len());
            let Some(member) = self.members.get_mut(name) else { continue };
            let entry = member.pools.entry(warm_pool_id.to_string()).or_default();
            if entry.share.as_ref() != Some(&share) {
                entry.share = Some(share.clone());
                member.pool_removals.remove(warm_pool_id);
                member.send(pb::attach_response::Message::SetPool(wire::pool_target_to_wire(&share)));
            }
        }
    }

    fn place_pools(&mut self) {
        let ids: Vec<String> = self.pools.keys().cloned().collect();
        for id in ids {
            self.place_pool(&id);
        }
    }

    /// Hands a pending registry deletion to a connected member.
    fn place_deletions(&mut self) {
        let first = self.connected().map(|(name, _)| name.clone()).next();
        let Some(first) = first else { return };
        let unplaced: Vec<(String, String)> = self
            .deletions
            .iter()
            .filter(|(_, d)| !d.done && d.member.as_ref().is_none_or(|m| self.members.get(m).is_none_or(|m| !m.connected())))
            .map(|(id, d)| (id.clone(), d.image.clone()))
            .collect();
        for (prebuild_id, image) in unplaced {
            if let Some(deletion) = self.deletions.get_mut(&prebuild_id) {
                deletion.member = Some(first.clone());
            }
            if let Some(member) = self.members.get_mut(&first) {
                member.send(pb::attach_response::Message::DeleteImage(pb::DeleteImage { prebuild_id, image }));
            }
        }
    }
}

impl RemoteRunner {
    pub fn new(id: &str, grace: Duration, slots: u32, logs: Logs, events: crate::runner::RunnerEvents) -> Self {
        let state = State {
            members: BTreeMap::new(),
            created: Instant::now(),
            connections: 0,
            jobs: HashMap::new(),
            pools: HashMap::new(),
            claims: HashMap::new(),
            deletions: HashMap::new(),
            removing_pools: Default::default(),
        };
        RemoteRunner { id: id.to_string(), grace, configured_slots: AtomicU32::new(slots), logs, state: Mutex::new(state), events }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Ends every member's connection from this side (they reconnect,
    /// wherever the load balancer sends them).
    pub fn disconnect(&self) {
        let mut state = lock(&self.state);
        let mut any = false;
        for member in state.members.values_mut() {
            any |= member.connected();
            member.leave();
        }
        if any {
            state.claims.clear();
            tracing::info!(runner = %self.id, "runner members disconnected by this replica");
        }
    }

    /// The fleet's members, in name order.
    pub fn members(&self) -> Vec<MemberStatus> {
        let configured_slots = self.configured_slots.load(Ordering::Relaxed);
        let mut state = lock(&self.state);
        self.expire(&mut state);
        state
            .members
            .iter()
            .map(|(name, member)| {
                let reported = member.pools.values().map(|p| &p.observed);
                MemberStatus {
                    name: name.clone(),
                    connected: member.connected(),
                    gone: member.gone,
                    since: member.changed_at,
                    engine: member.engine.clone(),
                    version: member.version.clone(),
                    prebuilds: state.running_on(name),
                    slots: member.slots.unwrap_or(configured_slots),
                    running_instances: reported.clone().map(|o| o.running).sum(),
                    stopped_instances: reported.map(|o| o.stopped).sum(),
                }
            })
            .collect()
    }

    /// Members away past the grace period become gone: their jobs are
    /// forgotten (the reconciler starts them again elsewhere) and removed
    /// from them should they come back; their pool shares go to the others.
    fn expire(&self, state: &mut State) {
        let expired: Vec<String> = state
            .members
            .iter()
            .filter(|(_, m)| !m.gone && !m.connected() && m.away_since.is_some_and(|since| since.elapsed() > self.grace))
            .map(|(name, _)| name.clone())
            .collect();
        if expired.is_empty() {
            return;
        }
        for name in &expired {
            let jobs: Vec<String> = state.jobs.iter().filter(|(_, job)| &job.member == name).map(|(id, _)| id.clone()).collect();
            for id in &jobs {
                state.jobs.remove(id);
            }
            if let Some(member) = state.members.get_mut(name) {
                member.gone = true;
                for id in &jobs {
                    member.job_removals.insert(id);
                }
                member.pools.clear();
            }
            tracing::warn!(
                runner = %self.id,
                member = %name,
                prebuilds = jobs.len(),
                "a runner member has been away longer than its grace period: its prebuilds start again and its pool instances are made again on the other members"
            );
        }
        state.place_pools();
        self.events.changed();
    }

    /// Whether the whole runner has been away longer than the grace
    /// period (no member connected since then).
    fn gone(&self, state: &State) -> Option<String> {
        let since = state.away_since()?;
        (since.elapsed() > self.grace).then(|| {
            format!("runner {} has not been connected for more than {} (its grace period)", self.id, humantime::format_duration(self.grace))
        })
    }

    /// Asks one member for an instance of the pool.
    async fn claim_from(&self, member: &str, warm_pool_id: &str) -> Result<Option<ClaimedInstance>> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let (answer, answered) = oneshot::channel();
        {
            let mut state = lock(&self.state);
            let Some(target) = state.members.get_mut(member).filter(|m| m.connected()) else {
                return Err(Error::Unavailable(format!("member {member} of runner {} left before the claim", self.id)));
            };
            target.send(pb::attach_response::Message::ClaimInstance(pb::ClaimInstance {
                request_id: request_id.clone(),
                warm_pool_id: warm_pool_id.to_string(),
            }));
            state.claims.insert(request_id.clone(), (member.to_string(), answer));
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
}

#[async_trait]
impl Runner for RemoteRunner {
    fn is_available(&self) -> bool {
        lock(&self.state).connected().next().is_some()
    }

    fn slots(&self, configured: u32) -> u32 {
        self.configured_slots.store(configured, Ordering::Relaxed);
        lock(&self.state).connected().map(|(_, member)| member.slots.unwrap_or(configured)).sum()
    }

    async fn start(&self, job: PrebuildJob) -> Result<()> {
        let mut state = lock(&self.state);
        self.expire(&mut state);
        let configured = self.configured_slots.load(Ordering::Relaxed);
        let placed = state.jobs.get(&job.prebuild_id).map(|placed| placed.member.clone());
        let member = match placed.filter(|name| state.members.get(name).is_some_and(Member::connected)) {
            Some(member) => member,
            None => {
                let loads: Vec<Load> = state
                    .connected()
                    .map(|(name, member)| Load { member: name, slots: member.slots.unwrap_or(configured), running: state.running_on(name) })
                    .collect();
                match members::choose_member(&loads) {
                    Some(member) => member.to_string(),
                    None => return Err(Error::Unavailable(format!("runner {} is not connected", self.id))),
                }
            }
        };
        // Starting as far as this side knows, until the member reports: an
        // unknown job would look lost to the reconciler.
        let placed = state.jobs.entry(job.prebuild_id.clone()).or_insert(PlacedJob { member: member.clone(), state: JobState::Starting });
        placed.member = member.clone();
        let Some(target) = state.members.get_mut(&member) else { return Ok(()) };
        target.job_removals.remove(&job.prebuild_id);
        target.send(pb::attach_response::Message::StartJob(wire::start_job(&job)));
        Ok(())
    }

    async fn observe(&self, prebuild_id: &str) -> Option<JobState> {
        let mut state = lock(&self.state);
        self.expire(&mut state);
        if let Some(message) = self.gone(&state) {
            // The work there is given up; if a member comes back with the
            // job, it is removed.
            if let Some(job) = state.jobs.remove(prebuild_id) {
                if let Some(member) = state.members.get_mut(&job.member) {
                    member.job_removals.insert(prebuild_id);
                }
            }
            return Some(JobState::Failed { message: format!("{message}; the prebuild's work there is lost") });
        }
        state.jobs.get(prebuild_id).map(|job| job.state.clone())
    }

    async fn stop(&self, prebuild_id: &str) -> Result<()> {
        // A stop is a removal that keeps nothing: the member's engine stops
        // the work before it removes it.
        self.remove(prebuild_id).await
    }

    /// Every member removes the job and its snapshot: the one that ran it,
    /// and those that pulled the snapshot for a pool.
    async fn remove(&self, prebuild_id: &str) -> Result<()> {
        let mut state = lock(&self.state);
        state.jobs.remove(prebuild_id);
        for member in state.members.values_mut() {
            member.job_removals.insert(prebuild_id);
            member.send(pb::attach_response::Message::RemoveJob(pb::RemoveJob { prebuild_id: prebuild_id.to_string() }));
        }
        Ok(())
    }

    async fn sync_pool(&self, target: PoolTarget) -> Result<PoolObservation> {
        let mut state = lock(&self.state);
        self.expire(&mut state);
        let id = target.warm_pool_id.clone();
        state.pools.insert(id.clone(), target);
        state.place_pool(&id);
        let count = state.members.values().filter(|m| m.placed()).count();
        let reported: Vec<(&str, &PoolObservation)> =
            state.connected().filter_map(|(name, member)| member.pools.get(&id).map(|pool| (name.as_str(), &pool.observed))).collect();
        let mut observed = members::combine(&reported, count);
        if let Some(message) = self.gone(&state) {
            observed.failure = Some(message);
        }
        Ok(observed)
    }

    /// Asks the connected members that report ready instances of the pool,
    /// most first, until one hands one out.
    async fn claim_instance(&self, warm_pool_id: &str) -> Result<Option<ClaimedInstance>> {
        let candidates: Vec<String> = {
            let state = lock(&self.state);
            if state.connected().next().is_none() {
                return Err(Error::Unavailable(format!("runner {} of this warm pool is not connected; try again later", self.id)));
            }
            let mut ready: Vec<(u32, String)> = state
                .connected()
                .filter_map(|(name, member)| {
                    let running = member.pools.get(warm_pool_id).map_or(0, |pool| pool.observed.running);
                    (running > 0).then(|| (running, name.clone()))
                })
                .collect();
            ready.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            ready.into_iter().map(|(_, name)| name).collect()
        };
        let mut failure = None;
        for member in &candidates {
            match self.claim_from(member, warm_pool_id).await {
                Ok(Some(instance)) => return Ok(Some(instance)),
                Ok(None) => {}
                Err(error) => failure = Some(error),
            }
        }
        match failure {
            // Every member asked failed: say why.
            Some(error) if candidates.len() == 1 => Err(error),
            _ => Ok(None),
        }
    }

    /// Every member is told (also one that never had an instance, or is
    /// away: it hears it when it comes back); done once every placed member
    /// confirmed.
    async fn remove_pool(&self, warm_pool_id: &str) -> Result<bool> {
        let mut state = lock(&self.state);
        self.expire(&mut state);
        state.pools.remove(warm_pool_id);
        if state.removing_pools.insert(warm_pool_id.to_string()) {
            for member in state.members.values_mut() {
                member.pools.remove(warm_pool_id);
                member.pool_removals.insert(warm_pool_id.to_string());
                member.send(pb::attach_response::Message::RemovePool(pb::RemovePool { warm_pool_id: warm_pool_id.to_string() }));
            }
        }
        let pending = state.members.values().any(|m| m.placed() && m.pool_removals.contains(warm_pool_id));
        if !pending {
            state.removing_pools.remove(warm_pool_id);
        }
        Ok(!pending)
    }

    /// A connected member deletes the image (it has the registry's
    /// credentials); done when it answers. With no member left for good,
    /// nothing can: given up, and logged.
    async fn delete_image(&self, prebuild_id: &str, image: &str) -> Result<bool> {
        let mut state = lock(&self.state);
        self.expire(&mut state);
        if state.deletions.get(prebuild_id).is_some_and(|d| d.done) {
            state.deletions.remove(prebuild_id);
            return Ok(true);
        }
        if state.connected().next().is_none() {
            if let Some(message) = self.gone(&state) {
                tracing::warn!(prebuild = %prebuild_id, %image, "{message}: the snapshot stays in its registry (delete it there)");
                state.deletions.remove(prebuild_id);
                return Ok(true);
            }
        }
        state.deletions.entry(prebuild_id.to_string()).or_insert_with(|| Deletion { image: image.to_string(), member: None, done: false });
        state.place_deletions();
        Ok(false)
    }
}
