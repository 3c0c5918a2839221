//! A running job's state as a runner's task, `observe` and `stop` share it:
//! the state the reconciler observes, the environment's processes, and the
//! snapshot's progress. A stop wins over whatever the task reports after it.
//! Every change of state is a runner event, so the reconciler looks at once.

use super::process::{lock, JobProcesses};
use super::{JobState, RunnerEvents};
use std::sync::atomic::AtomicI32;
use std::sync::{Arc, Mutex};

/// What a job's task, `observe` and `stop` share.
#[derive(Debug)]
pub(crate) struct JobShared {
    pub(crate) state: Mutex<JobState>,
    /// The environment's process groups, and whether `stop` was called.
    pub(crate) processes: Arc<JobProcesses>,
    /// The snapshot's progress, updated by the archiving thread.
    pub(crate) percent: AtomicI32,
    /// Told of every change of state.
    events: Option<RunnerEvents>,
}

impl JobShared {
    /// A job whose changes nobody is told of (tests of the parts).
    pub(crate) fn new() -> Self {
        JobShared { state: Mutex::new(JobState::Starting), processes: Arc::default(), percent: AtomicI32::new(0), events: None }
    }

    /// A job whose every change of state is an event on `events`.
    pub(crate) fn reporting_to(events: RunnerEvents) -> Self {
        JobShared { events: Some(events), ..Self::new() }
    }

    fn changed(&self) {
        if let Some(events) = &self.events {
            events.changed();
        }
    }

    /// Moves to `next`, unless the job was stopped: a stop wins over whatever
    /// the task was about to report.
    pub(crate) fn advance(&self, next: JobState) {
        let changed = {
            let mut state = lock(&self.state);
            let changed = *state != JobState::Stopped && *state != next;
            if *state != JobState::Stopped {
                *state = next;
            }
            changed
        };
        if changed {
            self.changed();
        }
    }

    /// The state as `Runner::observe` reports it, with the snapshot's
    /// progress as it is now.
    pub(crate) fn observed(&self) -> JobState {
        match lock(&self.state).clone() {
            JobState::Snapshotting { .. } => JobState::Snapshotting { percent: self.percent.load(std::sync::atomic::Ordering::Relaxed) },
            other => other,
        }
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.processes.is_stopped()
    }

    /// Marks the job stopped and kills its processes, unless it already
    /// ended. Returns whether it stopped it.
    pub(crate) fn stop(&self) -> bool {
        {
            let mut state = lock(&self.state);
            if state.is_final() {
                return false;
            }
            *state = JobState::Stopped;
            self.processes.mark_stopped();
        }
        self.processes.kill_all();
        self.changed();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_wins_over_later_reports_and_every_change_is_an_event() {
        let events = RunnerEvents::new();
        let mut seen = events.subscribe();
        let job = JobShared::reporting_to(events.clone());
        job.advance(JobState::Running);
        assert!(seen.has_changed().unwrap(), "a change of state is an event");
        seen.borrow_and_update();
        job.advance(JobState::Running);
        assert!(!seen.has_changed().unwrap(), "the same state again is none");
        assert!(job.stop());
        assert!(seen.has_changed().unwrap(), "a stop is an event");
        seen.borrow_and_update();
        job.advance(JobState::Completed { snapshot_size_bytes: 1, warning: None, snapshot_image: None });
        assert_eq!(job.observed(), JobState::Stopped, "what the task reports after a stop is not taken");
        assert!(!seen.has_changed().unwrap());
        assert!(!job.stop(), "a second stop changes nothing");
        assert!(job.is_stopped());
    }
}
