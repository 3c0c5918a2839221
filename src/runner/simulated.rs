//! The simulated runner: every code path of the reconciler, without real
//! work. Jobs step through STARTING, RUNNING, STOPPING and SNAPSHOTTING, one
//! `step_duration` each; the project's repository chooses the ending:
//!
//! - `sim://ok` completes;
//! - `sim://fail` fails in RUNNING;
//! - `sim://warn` completes with a warning;
//! - `sim://hang` stays RUNNING until stopped (cancel, timeout);
//! - a git repository whose commit the server resolved completes like
//!   `sim://ok` (nothing is cloned); an incremental one says in its log that
//!   it updates its base's snapshot and runs only `updateContentCommand`,
//!   as the real runners do;
//! - anything else fails at once, saying what the simulated runner accepts.
//!
//! A job's state is computed from the time since it started, so thousands
//! of jobs cost no task each; one timer task per runner ([`Alarms`]) turns
//! the moments when a job or instance changes into runner events, so the
//! reconciler sees them at once. Log lines are written as a job passes
//! each phase, and snapshots are small real files under the data dir.
//! Warm pool instances are in-memory records that become ready one step
//! after they are provisioned; "stopped" ones are records marked stopped.
//! Jobs and instances live in memory: after a restart the runner knows
//! none (the reconciler then starts lost jobs again).

use super::{ClaimedInstance, JobState, PoolObservation, PoolTarget, PrebuildJob, Runner, RunnerEvents};
use crate::error::{Error, Result};
use async_trait::async_trait;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Complete,
    Fail,
    Warn,
    Hang,
    Reject,
}

fn ending_of(repository: &str) -> Ending {
    match repository {
        "sim://ok" => Ending::Complete,
        "sim://fail" => Ending::Fail,
        "sim://warn" => Ending::Warn,
        "sim://hang" => Ending::Hang,
        _ => Ending::Reject,
    }
}

#[derive(Debug)]
struct Job {
    job: PrebuildJob,
    ending: Ending,
    started: Instant,
    /// Set when stopped on request: the state it had then is kept.
    stopped: bool,
    /// The last state written to the log, so each transition logs once.
    logged: Option<JobState>,
    /// Once final, the state stays.
    finished: Option<JobState>,
}

#[derive(Debug)]
struct Instance {
    id: String,
    snapshot_id: String,
    running: bool,
    ready_at: Instant,
}

#[derive(Debug, Default)]
struct State {
    jobs: HashMap<String, Job>,
    pools: HashMap<String, Vec<Instance>>,
}

#[derive(Debug)]
pub struct SimulatedRunner {
    step: Duration,
    snapshot_dir: PathBuf,
    state: Mutex<State>,
    alarms: Arc<Alarms>,
}

const SNAPSHOT_BYTES: usize = 4096;

/// The moments at which the runner's jobs and instances change (their
/// states follow from the clock), each turned into a runner event by one
/// timer task.
#[derive(Debug)]
struct Alarms {
    at: Mutex<BinaryHeap<Reverse<Instant>>>,
    /// An earlier moment was set, or the runner is gone.
    rescheduled: Notify,
    closed: AtomicBool,
    started: AtomicBool,
    events: RunnerEvents,
}

impl Alarms {
    fn new(events: RunnerEvents) -> Arc<Alarms> {
        Arc::new(Alarms {
            at: Mutex::default(),
            rescheduled: Notify::new(),
            closed: AtomicBool::new(false),
            started: AtomicBool::new(false),
            events,
        })
    }

    /// Raises an event at each of `moments` (at once for those past).
    fn set(self: &Arc<Self>, moments: impl IntoIterator<Item = Instant>) {
        let earlier = {
            let mut at = crate::sync::lock(&self.at);
            let before = at.peek().map(|Reverse(first)| *first);
            at.extend(moments.into_iter().map(Reverse));
            at.peek().map(|Reverse(first)| *first) != before
        };
        if earlier {
            self.rescheduled.notify_one();
        }
        // The task starts with the first alarm (within a runtime: the
        // runner is made outside one in some tests).
        if !self.started.swap(true, Ordering::SeqCst) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(Self::ring(Arc::downgrade(self)))),
                Err(_) => self.started.store(false, Ordering::SeqCst),
            }
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.rescheduled.notify_one();
    }

    /// Sleeps until the next moment, raises one event for every moment
    /// passed, and again, until the runner is gone.
    async fn ring(alarms: Weak<Alarms>) {
        loop {
            let Some(alarms) = alarms.upgrade() else { return };
            if alarms.closed.load(Ordering::SeqCst) {
                return;
            }
            let now = Instant::now();
            let (passed, next) = {
                let mut at = crate::sync::lock(&alarms.at);
                let mut passed = false;
                while at.peek().is_some_and(|Reverse(first)| *first <= now) {
                    at.pop();
                    passed = true;
                }
                (passed, at.peek().map(|Reverse(first)| *first))
            };
            if passed {
                alarms.events.changed();
            }
            let rescheduled = alarms.rescheduled.notified();
            match next {
                Some(next) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(next.into()) => {}
                        _ = rescheduled => {}
                    }
                }
                None => rescheduled.await,
            }
        }
    }
}

impl SimulatedRunner {
    pub fn new(step: Duration, data_dir: &Path, events: RunnerEvents) -> Self {
        SimulatedRunner {
            step,
            snapshot_dir: data_dir.join("simulated").join("snapshots"),
            state: Mutex::new(State::default()),
            alarms: Alarms::new(events),
        }
    }

    /// When a job started now with `ending` changes state: each step up to
    /// its last one (at once for a job that fails at the start).
    fn changes_of(&self, ending: Ending, started: Instant) -> Vec<Instant> {
        let steps = match ending {
            Ending::Reject => 0,
            Ending::Hang => 1,
            Ending::Fail => 2,
            Ending::Complete | Ending::Warn => 4,
        };
        (0..=steps).filter(|k| *k > 0 || ending == Ending::Reject).map(|k| started + self.step.max(Duration::from_millis(1)) * k).collect()
    }

    fn snapshot_path(&self, prebuild_id: &str) -> PathBuf {
        self.snapshot_dir.join(format!("{prebuild_id}.snapshot"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// The state a job has `elapsed` after it started.
    fn state_at(&self, ending: Ending, elapsed: Duration) -> JobState {
        if ending == Ending::Reject {
            return JobState::Failed {
                message: "the simulated runner runs only sim://ok, sim://fail, sim://warn and sim://hang repositories".into(),
            };
        }
        let step = self.step.max(Duration::from_millis(1));
        let steps = elapsed.as_secs_f64() / step.as_secs_f64();
        match steps {
            s if s < 1.0 => JobState::Starting,
            s if s < 2.0 || ending == Ending::Hang => JobState::Running,
            _ if ending == Ending::Fail => {
                JobState::Failed { message: "simulated failure: the onCreateCommand `make prebuild` exited with code 1".into() }
            }
            s if s < 3.0 => JobState::Stopping,
            s if s < 4.0 => JobState::Snapshotting { percent: (((s - 3.0) * 100.0) as i32).clamp(0, 99) },
            _ => JobState::Completed {
                snapshot_size_bytes: SNAPSHOT_BYTES as i64,
                warning: (ending == Ending::Warn)
                    .then(|| "simulated warning: the devcontainer build failed; the environment is usable without it".into()),
                snapshot_image: None,
            },
        }
    }

    /// The log lines of every phase the job passed since the last ones
    /// written, so the log reads like a real runner's even when the
    /// reconciler looks only now and then. The caller writes them once it
    /// has let go of the runner's lock.
    fn log_transition(job: &mut Job, state: &JobState) -> Vec<String> {
        let rank = |s: &JobState| match s {
            JobState::Starting => 0,
            JobState::Running => 1,
            JobState::Stopping => 2,
            JobState::Snapshotting { .. } => 3,
            JobState::Completed { .. } | JobState::Failed { .. } | JobState::Stopped => 4,
        };
        let from = job.logged.as_ref().map_or(0, |logged| rank(logged) + 1);
        let to = rank(state);
        if job.logged.is_some() && from > to {
            return Vec::new();
        }
        let failed_early = matches!(state, JobState::Failed { .. } | JobState::Stopped);
        let mut lines = Vec::new();
        for step in from..=to {
            let line = match step {
                0 => format!("[simulated] creating environment {}", job.job.environment_id),
                1 => match (&job.job.source.base, &job.job.source.commit) {
                    (Some(base), Some(commit)) => format!(
                        "[simulated] incremental: updating the snapshot of prebuild {} from commit {} to {commit}; running updateContentCommand only",
                        base.prebuild_id, base.commit
                    ),
                    (None, Some(commit)) => {
                        format!("[simulated] running the prebuild lifecycle of {} at commit {commit}", job.job.repository)
                    }
                    _ => format!("[simulated] running the prebuild lifecycle of {}", job.job.repository),
                },
                // A failed or stopped job never reached these.
                2 | 3 if failed_early => continue,
                2 => "[simulated] stopping the environment".to_string(),
                3 => "[simulated] writing the snapshot".to_string(),
                _ => match state {
                    JobState::Completed { warning: Some(warning), .. } => format!("[simulated] completed with a warning: {warning}"),
                    JobState::Completed { .. } => "[simulated] completed".to_string(),
                    JobState::Failed { message } => format!("[simulated] failed: {message}"),
                    _ => "[simulated] stopped".to_string(),
                },
            };
            lines.push(line);
        }
        job.logged = Some(state.clone());
        lines
    }
}

impl Drop for SimulatedRunner {
    /// Its alarms' task ends with it.
    fn drop(&mut self) {
        self.alarms.close();
    }
}

#[async_trait]
impl Runner for SimulatedRunner {
    async fn start(&self, job: PrebuildJob) -> Result<()> {
        let mut state = self.lock();
        if state.jobs.contains_key(&job.prebuild_id) {
            return Ok(());
        }
        let ending = match ending_of(&job.repository) {
            Ending::Reject if job.source.commit.is_some() => Ending::Complete,
            ending => ending,
        };
        let started = Instant::now();
        state.jobs.insert(job.prebuild_id.clone(), Job { job, ending, started, stopped: false, logged: None, finished: None });
        drop(state);
        self.alarms.set(self.changes_of(ending, started));
        Ok(())
    }

    async fn observe(&self, prebuild_id: &str) -> Option<JobState> {
        let (current, log, lines) = {
            let mut state = self.lock();
            let job = state.jobs.get_mut(prebuild_id)?;
            if let Some(finished) = &job.finished {
                return Some(finished.clone());
            }
            let current = self.state_at(job.ending, job.started.elapsed());
            let lines = Self::log_transition(job, &current);
            if matches!(current, JobState::Failed { .. }) {
                job.finished = Some(current.clone());
            }
            (current, job.job.log.clone(), lines)
        };
        let mut current = current;
        if matches!(current, JobState::Completed { .. }) {
            // The snapshot: a small real file, written on a blocking thread.
            let (dir, path) = (self.snapshot_dir.clone(), self.snapshot_path(prebuild_id));
            let written = tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, [0u8; SNAPSHOT_BYTES]))
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            if let Err(error) = written {
                current = JobState::Failed { message: format!("cannot write the snapshot: {error}") };
            }
            // Two observers may both get here; the first result stays.
            let mut state = self.lock();
            let job = state.jobs.get_mut(prebuild_id)?;
            current = job.finished.get_or_insert(current).clone();
        }
        for line in lines {
            log.line(&line).await;
        }
        Some(current)
    }

    async fn stop(&self, prebuild_id: &str) -> Result<()> {
        let written = {
            let mut state = self.lock();
            match state.jobs.get_mut(prebuild_id) {
                Some(job) if job.finished.is_none() && !job.stopped => {
                    job.stopped = true;
                    job.finished = Some(JobState::Stopped);
                    Some((job.job.log.clone(), Self::log_transition(job, &JobState::Stopped)))
                }
                _ => None,
            }
        };
        if let Some((log, lines)) = written {
            self.alarms.events.changed();
            for line in lines {
                log.line(&line).await;
            }
        }
        Ok(())
    }

    async fn remove(&self, prebuild_id: &str) -> Result<()> {
        self.stop(prebuild_id).await?;
        self.lock().jobs.remove(prebuild_id);
        match tokio::fs::remove_file(self.snapshot_path(prebuild_id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Internal(format!("cannot remove the snapshot of {prebuild_id}: {e}"))),
        }
    }

    async fn snapshots(&self) -> Result<Vec<super::HeldSnapshot>> {
        let mut held = Vec::new();
        let Ok(mut entries) = tokio::fs::read_dir(&self.snapshot_dir).await else { return Ok(held) };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name();
            let Some(prebuild_id) = name.to_str().and_then(|n| n.strip_suffix(".snapshot")) else { continue };
            let bytes = entry.metadata().await.map(|m| m.len()).unwrap_or(0);
            held.push(super::HeldSnapshot { prebuild_id: prebuild_id.to_string(), bytes });
        }
        Ok(held)
    }

    /// Removes the snapshot files of `gone` prebuilds (a job's own removal
    /// takes care of the prebuilds it still has).
    async fn collect_garbage(&self, gone: &[String]) -> Result<()> {
        for prebuild_id in gone {
            if self.lock().jobs.contains_key(prebuild_id) {
                continue;
            }
            match tokio::fs::remove_file(self.snapshot_path(prebuild_id)).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::Internal(format!("cannot remove the snapshot of {prebuild_id}: {e}")))
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn sync_pool(&self, target: PoolTarget) -> Result<PoolObservation> {
        let now = Instant::now();
        let mut state = self.lock();
        let instances = state.pools.entry(target.warm_pool_id.clone()).or_default();
        let Some(snapshot_id) = target.snapshot_id.clone() else {
            instances.clear();
            return Ok(PoolObservation::default());
        };
        let current = |i: &Instance| i.snapshot_id == snapshot_id;
        let ready = |i: &Instance| i.running && i.ready_at <= now;
        // When the instances started now become ready: alarms.
        let mut readying = Vec::new();
        // Promote stopped instances first: faster than provisioning anew.
        let mut running = instances.iter().filter(|i| current(i) && i.running).count() as u32;
        for instance in instances.iter_mut().filter(|i| i.snapshot_id == snapshot_id && !i.running) {
            if running >= target.running {
                break;
            }
            instance.running = true;
            instance.ready_at = now + self.step / 2;
            readying.push(instance.ready_at);
            running += 1;
        }
        while running < target.running {
            instances.push(Instance {
                id: uuid::Uuid::now_v7().to_string(),
                snapshot_id: snapshot_id.clone(),
                running: true,
                ready_at: now + self.step,
            });
            readying.push(now + self.step);
            running += 1;
        }
        let stopped = instances.iter().filter(|i| current(i) && !i.running).count() as u32;
        for _ in stopped..target.stopped {
            instances.push(Instance {
                id: uuid::Uuid::now_v7().to_string(),
                snapshot_id: snapshot_id.clone(),
                running: false,
                ready_at: now + self.step,
            });
        }
        // Scale down: drop surplus instances of the current snapshot.
        let mut keep_running = target.running;
        let mut keep_stopped = target.stopped;
        instances.retain(|i| {
            if i.snapshot_id != snapshot_id {
                return true;
            }
            let budget = if i.running { &mut keep_running } else { &mut keep_stopped };
            if *budget == 0 {
                return false;
            }
            *budget -= 1;
            true
        });
        // Rotation: old-snapshot instances go once the new ones are ready.
        let new_ready = instances.iter().filter(|i| current(i) && ready(i)).count() as u32;
        if new_ready >= target.running {
            instances.retain(|i| i.snapshot_id == snapshot_id);
        }
        let observation = PoolObservation {
            running: new_ready,
            stopped: instances.iter().filter(|i| current(i) && !i.running).count() as u32,
            outdated: instances.iter().filter(|i| !current(i)).count() as u32,
            failure: None,
        };
        drop(state);
        if !readying.is_empty() {
            self.alarms.set(readying);
        }
        Ok(observation)
    }

    async fn claim_instance(&self, warm_pool_id: &str) -> Result<Option<ClaimedInstance>> {
        let now = Instant::now();
        let mut state = self.lock();
        let Some(instances) = state.pools.get_mut(warm_pool_id) else { return Ok(None) };
        // Prefer the newest snapshot: instance IDs are time-ordered, and
        // newer snapshots' instances were provisioned later.
        let best = instances
            .iter()
            .enumerate()
            .filter(|(_, i)| i.running && i.ready_at <= now)
            .max_by(|(_, a), (_, b)| a.id.cmp(&b.id))
            .map(|(index, _)| index);
        Ok(best.map(|index| {
            let instance = instances.remove(index);
            ClaimedInstance {
                workspace_path: format!("sim://instances/{}", instance.id),
                instance_id: instance.id,
                snapshot_id: instance.snapshot_id,
                ..Default::default()
            }
        }))
    }

    async fn remove_pool(&self, warm_pool_id: &str) -> Result<bool> {
        self.lock().pools.remove(warm_pool_id);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::LogSink;

    fn job(dir: &Path, repository: &str) -> PrebuildJob {
        PrebuildJob {
            prebuild_id: "p1".into(),
            environment_id: "e1".into(),
            project_id: "x".into(),
            environment_class_id: "c".into(),
            repository: repository.into(),
            tag_latest: false,
            resources: Default::default(),
            policy: Default::default(),
            devcontainer_path: None,
            source: Default::default(),
            log: LogSink::new(dir.join("p1.log")),
        }
    }

    #[test]
    fn the_repository_chooses_the_ending() {
        let dir = tempfile::tempdir().unwrap();
        let runner = SimulatedRunner::new(Duration::from_secs(1), dir.path(), RunnerEvents::new());
        let s = Duration::from_millis;
        assert_eq!(runner.state_at(Ending::Complete, s(500)), JobState::Starting);
        assert_eq!(runner.state_at(Ending::Complete, s(1500)), JobState::Running);
        assert_eq!(runner.state_at(Ending::Complete, s(2500)), JobState::Stopping);
        assert_eq!(runner.state_at(Ending::Complete, s(3500)), JobState::Snapshotting { percent: 50 });
        assert!(matches!(runner.state_at(Ending::Complete, s(4500)), JobState::Completed { warning: None, .. }));
        assert!(matches!(runner.state_at(Ending::Warn, s(4500)), JobState::Completed { warning: Some(_), .. }));
        assert!(matches!(runner.state_at(Ending::Fail, s(2500)), JobState::Failed { .. }));
        assert_eq!(runner.state_at(Ending::Hang, s(1_000_000)), JobState::Running);
        assert!(matches!(runner.state_at(Ending::Reject, s(0)), JobState::Failed { .. }));
    }

    #[tokio::test]
    async fn jobs_log_complete_stop_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let runner = SimulatedRunner::new(Duration::from_millis(1), dir.path(), RunnerEvents::new());
        runner.start(job(dir.path(), "sim://ok")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(matches!(runner.observe("p1").await, Some(JobState::Completed { snapshot_size_bytes: 4096, .. })));
        assert!(runner.snapshot_path("p1").exists());
        let log = std::fs::read_to_string(dir.path().join("p1.log")).unwrap();
        for line in ["creating environment", "running the prebuild lifecycle", "stopping", "writing the snapshot", "[simulated] completed"]
        {
            assert!(log.contains(line), "every phase is logged even if observed only at the end: {log}");
        }
        runner.remove("p1").await.unwrap();
        assert_eq!(runner.observe("p1").await, None);
        assert!(!runner.snapshot_path("p1").exists());

        runner.start(job(dir.path(), "sim://hang")).await.unwrap();
        runner.stop("p1").await.unwrap();
        assert_eq!(runner.observe("p1").await, Some(JobState::Stopped));
    }

    #[tokio::test]
    async fn pools_fill_rotate_and_hand_out_instances() {
        let dir = tempfile::tempdir().unwrap();
        let runner = SimulatedRunner::new(Duration::from_millis(2), dir.path(), RunnerEvents::new());
        let target = |snapshot: &str| PoolTarget {
            warm_pool_id: "w".into(),
            snapshot_id: Some(snapshot.into()),
            snapshot_image: None,
            running: 2,
            stopped: 1,
            resources: Default::default(),
            policy: Default::default(),
        };
        runner.sync_pool(target("s1")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let observed = runner.sync_pool(target("s1")).await.unwrap();
        assert_eq!((observed.running, observed.stopped), (2, 1));
        let claimed = runner.claim_instance("w").await.unwrap().unwrap();
        assert_eq!(claimed.snapshot_id, "s1");

        let rotating = runner.sync_pool(target("s2")).await.unwrap();
        assert!(rotating.outdated > 0, "old instances stay until new ones are ready");
        assert!(runner.claim_instance("w").await.unwrap().is_some(), "a claim finds one during rotation");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let rotated = runner.sync_pool(target("s2")).await.unwrap();
        assert_eq!((rotated.running, rotated.outdated), (2, 0));
        assert!(runner.remove_pool("w").await.unwrap());
    }
}
