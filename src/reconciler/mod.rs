//! The reconciler: drives every prebuild and warm pool from its stored spec
//! toward its desired state through its runner, and writes status back.
//!
//! Level-triggered: each pass reads desired and observed state (store and
//! runners) and takes the next step; nothing a restart would lose lives only
//! in memory (backoff timers are a courtesy, not state). A pass runs on
//! every write (the service's notify), on every runner event (a job changed
//! phase, an instance became ready; see `runner::RunnerEvents`), and on a
//! periodic tick that is only the safety net. It reads only
//! objects not in a final phase, so its cost follows active work, not
//! history. Status writes are guarded by the versions the step saw: a lost
//! race changes nothing and the next pass decides again.

mod collect;
mod phase_times;
pub mod prebuild;
pub mod replicas;
mod retention;
mod schedule;
mod sources;
pub mod warm_pool;

use crate::catalog::Catalog;
use crate::clock::timestamp;
use crate::config::Retention;
use crate::domain::phase_of;
use crate::error::{Error, Result};
use crate::logs::Logs;
use crate::proto::gitpod::v1::{Prebuild, PrebuildPhase};
use crate::runner::{PrebuildJob, Runner, Runners};
use crate::service::Service;
use crate::store::{Change, Store};
use futures::{FutureExt, StreamExt};
use prebuild::{next_step, Step};
use replicas::Replicas;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;

/// How many object steps run at once within a pass.
const STEP_CONCURRENCY: usize = 64;
/// The most active prebuilds one pass looks at.
const MAX_ACTIVE_PER_PASS: usize = 100_000;
const MAX_BACKOFF: Duration = Duration::from_secs(60);

pub struct Reconciler {
    service: Arc<Service>,
    runners: Arc<Runners>,
    logs: Logs,
    changes: Arc<Notify>,
    interval: Duration,
    retention: Retention,
    backoff: Mutex<HashMap<String, (u32, Instant)>>,
    last_retention: Mutex<Option<Instant>>,
    /// (project, class) already scheduled today (see `schedule`).
    schedules_done: Mutex<schedule::ScheduledToday>,
    /// When active prebuilds entered their phases (for the metrics).
    phase_times: phase_times::PhaseTimes,
    /// Whether this process leads, and wake-ups from other replicas.
    replicas: Replicas,
    /// What the reconciler writes through: the service's store, or on
    /// PostgreSQL the same database with every write fenced by the lease.
    store: Arc<dyn Store>,
    /// Held by each pass: passes never overlap, whoever starts them (the
    /// loop, or `Server::reconcile_once`).
    pass_lock: tokio::sync::Mutex<()>,
    /// What starting prebuilds build, settled in the background.
    plans: Arc<sources::Plans>,
}

/// What one pass did, for tests and the benchmark.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub prebuilds_seen: usize,
    pub warm_pools_seen: usize,
    pub steps_taken: usize,
    pub failures: usize,
    /// Steps that end a prebuild holding a runner slot (it completed,
    /// failed or was stopped), and PENDING prebuilds left waiting for one.
    /// When both happened, the slots are free only after this pass: the
    /// next one must follow at once, not at the next event or tick.
    pub slots_freed: usize,
    pub waiting_for_slots: usize,
}

impl Reconciler {
    pub fn new(
        service: Arc<Service>,
        runners: Arc<Runners>,
        logs: Logs,
        changes: Arc<Notify>,
        interval: Duration,
        retention: Retention,
    ) -> Self {
        Reconciler {
            store: service.store().clone(),
            service,
            runners,
            logs,
            changes,
            interval,
            retention,
            backoff: Mutex::new(HashMap::new()),
            last_retention: Mutex::new(None),
            schedules_done: Default::default(),
            phase_times: Default::default(),
            replicas: Replicas::single(),
            pass_lock: tokio::sync::Mutex::new(()),
            plans: Arc::default(),
        }
    }

    /// Runs as one of several replicas: passes only while `replicas` says
    /// this one leads (the default is the only process, always leading).
    pub fn with_replicas(mut self, replicas: Replicas) -> Self {
        if let Some(store) = replicas.store() {
            self.store = store.clone();
        }
        self.replicas = replicas;
        self
    }

    /// Runs passes until `shutdown` resolves, while this replica leads; a
    /// follower passes its writes' wake-ups on to the leader instead.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut leadership = self.replicas.leadership();
        let mut collection = tokio::time::interval(collect::COLLECT_EVERY);
        collection.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if leadership.borrow_and_update().is_none() {
                self.phase_times.clear();
                tokio::select! {
                    changed = leadership.changed() => {
                        if changed.is_err() {
                            // No one decides leadership any more (shutting down).
                            (&mut shutdown).await;
                            return;
                        }
                    }
                    _ = self.changes.notified() => self.replicas.announce().await,
                    _ = &mut shutdown => return,
                }
                continue;
            }
            let report = self.pass().await;
            if report.failures > 0 {
                tracing::debug!(?report, "reconciler pass had failures");
            }
            if report.slots_freed > 0 && report.waiting_for_slots > 0 {
                // Those waiting can start now: pass again at once.
                self.changes.notify_one();
            }
            // Until a reason for the next pass, collecting runners' garbage
            // every few seconds (the tick is not reset by collections).
            let tick = tokio::time::sleep(self.interval);
            tokio::pin!(tick);
            loop {
                tokio::select! {
                    _ = self.changes.notified() => break,
                    _ = self.replicas.remote_changes().notified() => break,
                    // A runner's job or pool changed: look now, not at the tick.
                    _ = self.runners.events().woken() => break,
                    _ = &mut tick => break,
                    _ = leadership.changed() => break,
                    _ = collection.tick() => {
                        if self.replicas.is_leader() {
                            collect::run(&self).await;
                        }
                    }
                    _ = &mut shutdown => return,
                }
            }
        }
    }

    /// One pass over every active prebuild and every warm pool (after the
    /// pass under way, if there is one).
    pub async fn pass(&self) -> PassReport {
        let _only_pass = self.pass_lock.lock().await;
        let started = Instant::now();
        let report = self.pass_steps().await;
        self.service.metrics().record_pass(started.elapsed());
        report
    }

    async fn pass_steps(&self) -> PassReport {
        let mut report = PassReport::default();
        let catalog = self.service.catalog();
        // Polls run in tasks of their own; this only starts those due.
        crate::triggers::poll::start_due(&self.service);
        if let Err(error) = schedule::run(self, &catalog).await {
            tracing::warn!(%error, "scheduled prebuilds");
            report.failures += 1;
        }
        match self.prebuild_pass(&catalog, &mut report).await {
            Ok(()) => {}
            Err(error) => {
                tracing::warn!(%error, "prebuild pass");
                report.failures += 1;
            }
        }
        match warm_pool::pass(self, &catalog, &mut report).await {
            Ok(()) => {}
            Err(error) => {
                tracing::warn!(%error, "warm pool pass");
                report.failures += 1;
            }
        }
        if self.retention_due() {
            if let Err(error) = retention::run(self).await {
                tracing::warn!(%error, "retention");
                report.failures += 1;
            }
        }
        report
    }

    fn retention_due(&self) -> bool {
        let mut last = crate::sync::lock(&self.last_retention);
        // Every ten passes' worth of time: the query is indexed and cheap,
        // but there is no hurry.
        if last.is_some_and(|at| at.elapsed() < self.interval * 10) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    fn now(&self) -> SystemTime {
        self.service.clock().now()
    }

    fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whether an object is waiting out a backoff after failures.
    fn backing_off(&self, id: &str) -> bool {
        crate::sync::lock(&self.backoff).get(id).is_some_and(|(_, until)| Instant::now() < *until)
    }

    fn record(&self, id: &str, result: &Result<()>) {
        let mut backoff = crate::sync::lock(&self.backoff);
        match result {
            Ok(()) => {
                backoff.remove(id);
            }
            Err(error) => {
                let failures = backoff.get(id).map_or(0, |(n, _)| *n) + 1;
                let delay = Duration::from_millis(100u64.saturating_mul(1 << failures.min(10))).min(MAX_BACKOFF);
                tracing::warn!(object = id, failures, ?delay, %error, "reconcile step failed; backing off");
                backoff.insert(id.to_string(), (failures, Instant::now() + delay));
            }
        }
    }

    /// Runs one object's step, catching panics so one bad object cannot stop
    /// the others; failures back off exponentially.
    async fn guarded(&self, id: &str, step: impl std::future::Future<Output = Result<()>>) -> Result<()> {
        // A replica that lost the lease during the pass starts no more
        // steps: the new leader may already be taking them.
        if !self.replicas.is_leader() {
            return Ok(());
        }
        let result = match AssertUnwindSafe(step).catch_unwind().await {
            Ok(result) => result,
            Err(_) => Err(Error::Internal(format!("a reconcile step for {id} panicked"))),
        };
        self.record(id, &result);
        result
    }

    async fn prebuild_pass(&self, catalog: &Catalog, report: &mut PassReport) -> Result<()> {
        let active = self.store().active_prebuilds(MAX_ACTIVE_PER_PASS).await?;
        report.prebuilds_seen = active.len();
        let now = self.now();
        self.phase_times.observe_pass(self.service.metrics(), &active, now);

        // Slots in use per runner; PENDING prebuilds take free ones oldest first.
        let mut busy: HashMap<String, u32> = HashMap::new();
        for prebuild in &active {
            if phase_of(prebuild).occupies_slot() {
                if let Some(runner_id) = runner_id_of(catalog, prebuild) {
                    *busy.entry(runner_id).or_default() += 1;
                }
            }
        }

        // Pushes' prebuilds run one at a time per branch.
        let held_back = sources::held_back(&self.store().active_branch_prebuilds().await?);
        let mut planned = Vec::new();
        for prebuild in active {
            if self.backing_off(&prebuild.id) {
                continue;
            }
            if held_back.contains(&prebuild.id) && phase_of(&prebuild).is_pending() {
                continue;
            }
            let phase = phase_of(&prebuild);
            let runner_id = runner_id_of(catalog, &prebuild);
            let runner = runner_id.as_deref().and_then(|id| self.runners.get(id));
            let Some((runner_id, runner)) = runner_id.zip(runner) else {
                if !phase.is_deleting() {
                    planned.push((
                        prebuild,
                        Step::Stop(prebuild::Finish::Failed("its environment class or runner is no longer configured".into())),
                        None,
                    ));
                } else {
                    planned.push((prebuild, Step::Remove, None));
                }
                continue;
            };
            let observed = if phase.is_running() { runner.observe(&prebuild.id).await } else { None };
            let limit = runner.slots(catalog.runners.get(&runner_id).map_or(1, |r| r.max_concurrent_prebuilds));
            let available = runner.is_available();
            let used = busy.entry(runner_id).or_default();
            let step = next_step(&prebuild, observed.as_ref(), now, available && *used < limit);
            // An unavailable runner (one on another machine, not connected)
            // gets no work, and a job it has not reported is not lost: wait.
            if !available && matches!(step, Step::Start { .. }) {
                continue;
            }
            if matches!(step, Step::Start { fresh: true, .. }) && phase.is_pending() {
                *used += 1;
            }
            if phase.is_pending() && step == Step::Wait {
                report.waiting_for_slots += 1;
            }
            let ends_work = match &step {
                Step::Stop(_) => true,
                Step::Report(state) => state.is_final(),
                _ => false,
            };
            if ends_work && phase.occupies_slot() {
                report.slots_freed += 1;
            }
            if step != Step::Wait {
                planned.push((prebuild, step, Some(runner)));
            }
        }
        report.steps_taken += planned.len();
        // Boxed so the stream's item type names no closure lifetimes (which
        // trips the compiler's Send inference for spawned tasks).
        let steps: Vec<futures::future::BoxFuture<'_, bool>> = planned
            .into_iter()
            .map(|(prebuild, step, runner)| {
                async move {
                    let id = prebuild.id.clone();
                    self.guarded(&id, self.take_step(catalog, prebuild, step, runner)).await.is_err()
                }
                .boxed()
            })
            .collect();
        let failures =
            futures::stream::iter(steps).buffer_unordered(STEP_CONCURRENCY).filter(|failed| std::future::ready(*failed)).count().await;
        report.failures += failures;
        Ok(())
    }

    async fn take_step(&self, catalog: &Catalog, prebuild: Prebuild, step: Step, runner: Option<Arc<dyn Runner>>) -> Result<()> {
        match step {
            Step::Wait => Ok(()),
            Step::Start { environment_id, fresh } => {
                let runner = runner.ok_or_else(|| Error::Internal("no runner".into()))?;
                let metadata = prebuild.metadata.clone().unwrap_or_default();
                let project = catalog.projects.get(&metadata.project_id);
                let Some(project) = project else {
                    return self.finish(&prebuild, prebuild::Finish::Failed("its project is no longer configured".into())).await;
                };
                let log = self.logs.sink(&prebuild.id);
                let Some((mut source, tag_latest)) = self.job_source(&prebuild, project, fresh, &log).await? else {
                    return Ok(());
                };
                // An incremental prebuild's base, where it was pushed: a
                // member of a fleet that lacks it pulls it.
                if let Some(base) = source.base.as_mut() {
                    let organization_id = metadata.organization_id.as_str();
                    let found = self.store().prebuild_sources(organization_id, std::slice::from_ref(&base.prebuild_id)).await?;
                    base.image = found.into_iter().next().map(|s| s.snapshot_image).filter(|image| !image.is_empty());
                }
                // Recording the source bumped nothing the status write
                // guards, so the versions this pass read still hold.
                if fresh {
                    // Record STARTING with the environment first: if we crash
                    // before the runner starts, the next pass resumes it.
                    let env = environment_id.clone();
                    let written = self.write_status(&prebuild, move |status| {
                        status.phase = PrebuildPhase::Starting as i32;
                        status.environment_id = env.clone();
                        true
                    });
                    if !written.await? {
                        return Ok(());
                    }
                    self.logs.sink(&prebuild.id).line(&format!("prebuild {} starting in environment {environment_id}", prebuild.id)).await;
                } else {
                    self.logs.sink(&prebuild.id).line("the runner lost this prebuild (a restart?); starting it again").await;
                }
                let class = catalog.environment_classes.get(&metadata.environment_class_id);
                runner
                    .start(PrebuildJob {
                        prebuild_id: prebuild.id.clone(),
                        environment_id,
                        project_id: metadata.project_id.clone(),
                        environment_class_id: metadata.environment_class_id.clone(),
                        repository: project.repository.clone(),
                        resources: class.map(|c| c.resources).unwrap_or_default(),
                        policy: class.map(|c| c.policy.clone()).unwrap_or_default(),
                        devcontainer_path: project.devcontainer_path.clone(),
                        source,
                        tag_latest,
                        log: self.logs.sink(&prebuild.id),
                    })
                    .await
            }
            Step::Report(state) => {
                // Where the snapshot was pushed goes in first: once the
                // prebuild says COMPLETED, pools may want to pull it.
                if let crate::runner::JobState::Completed { snapshot_image: Some(image), .. } = &state {
                    self.store().record_snapshot_image(&prebuild.id, image).await?;
                }
                let now = self.now();
                self.write_status(&prebuild, move |status| prebuild::apply_report(status, &state, now)).await.map(|_| ())
            }
            Step::Stop(finish) => {
                if let Some(runner) = &runner {
                    runner.remove(&prebuild.id).await?;
                }
                if let prebuild::Finish::Failed(message) = &finish {
                    self.logs.sink(&prebuild.id).line(&format!("failed: {message}")).await;
                }
                self.finish(&prebuild, finish).await
            }
            Step::Remove => {
                if let Some(runner) = &runner {
                    // A pushed snapshot leaves its registry first (the
                    // runner has the credentials); asked again until done.
                    let organization_id = prebuild.metadata.as_ref().map(|m| m.organization_id.clone()).unwrap_or_default();
                    let sources = self.store().prebuild_sources(&organization_id, std::slice::from_ref(&prebuild.id)).await?;
                    if let Some(image) = sources.first().map(|s| s.snapshot_image.clone()).filter(|image| !image.is_empty()) {
                        if !runner.delete_image(&prebuild.id, &image).await? {
                            return Ok(());
                        }
                    }
                    runner.remove(&prebuild.id).await?;
                }
                self.logs.remove(&prebuild.id).await?;
                self.store().remove_prebuild(&prebuild.id).await?;
                self.phase_times.removed(self.service.metrics(), &prebuild, self.now());
                Ok(())
            }
        }
    }

    async fn finish(&self, prebuild: &Prebuild, finish: prebuild::Finish) -> Result<()> {
        let now = self.now();
        self.write_status(prebuild, move |status| {
            prebuild::apply_finish(status, &finish, now);
            true
        })
        .await
        .map(|_| ())
    }

    /// Writes a status change, guarded by the versions the step saw: if the
    /// prebuild changed since (a cancel, say), nothing is written and the
    /// next pass decides again. Returns whether it wrote.
    async fn write_status(
        &self,
        seen: &Prebuild,
        change: impl Fn(&mut crate::proto::gitpod::v1::PrebuildStatus) -> bool + Send + Sync + 'static,
    ) -> Result<bool> {
        let organization_id = seen.metadata.as_ref().map(|m| m.organization_id.clone()).unwrap_or_default();
        let versions = versions_of(seen);
        let now = timestamp(self.now());
        let wrote = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = wrote.clone();
        let updated = self
            .store()
            .update_prebuild(
                &organization_id,
                &seen.id,
                Box::new(move |prebuild| {
                    if versions_of(prebuild) != versions {
                        return Ok(Change::Unchanged);
                    }
                    let status = prebuild.status.get_or_insert_with(Default::default);
                    if !change(status) {
                        return Ok(Change::Unchanged);
                    }
                    status.status_version += 1;
                    if let Some(metadata) = prebuild.metadata.as_mut() {
                        metadata.updated_at = Some(now);
                    }
                    flag.store(true, std::sync::atomic::Ordering::Relaxed);
                    Ok(Change::Changed)
                }),
            )
            .await?;
        let wrote = wrote.load(std::sync::atomic::Ordering::Relaxed);
        if let Some(updated) = updated.as_ref().filter(|_| wrote) {
            self.phase_times.changed(self.service.metrics(), seen, updated, self.now());
        }
        Ok(wrote)
    }
}

fn versions_of(prebuild: &Prebuild) -> (u64, u64) {
    (prebuild.spec.as_ref().map_or(0, |s| s.spec_version), prebuild.status.as_ref().map_or(0, |s| s.status_version))
}

fn runner_id_of(catalog: &Catalog, prebuild: &Prebuild) -> Option<String> {
    let class_id = &prebuild.metadata.as_ref()?.environment_class_id;
    catalog.environment_classes.get(class_id).map(|c| c.runner_id.clone())
}
