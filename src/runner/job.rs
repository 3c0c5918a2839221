//! A running job's state as a runner's task, `observe` and `stop` share it:
//! the state the reconciler observes, the environment's processes, and the
//! snapshot's progress. A stop wins over whatever the task reports after it.

use super::process::{lock, JobProcesses};
use super::JobState;
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
}

impl JobShared {
    pub(crate) fn new() -> Self {
        JobShared { state: Mutex::new(JobState::Starting), processes: Arc::default(), percent: AtomicI32::new(0) }
    }

    /// Moves to `next`, unless the job was stopped: a stop wins over whatever
    /// the task was about to report.
    pub(crate) fn advance(&self, next: JobState) {
        let mut state = lock(&self.state);
        if *state != JobState::Stopped {
            *state = next;
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
        true
    }
}
