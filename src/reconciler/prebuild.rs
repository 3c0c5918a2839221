//! One prebuild, one step: what to do next, from its stored spec and status
//! and what its runner reports. Pure functions, so every path is testable
//! without a runner or a store.

use crate::clock::timestamp;
use crate::domain::phase_of;
use crate::proto::gitpod::v1::{Prebuild, PrebuildPhase, PrebuildStatus};
use crate::runner::JobState;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The next step for a prebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do now.
    Wait,
    /// Start the job on the runner in `environment_id`. `fresh`: the
    /// prebuild was PENDING and now moves to STARTING; otherwise the runner
    /// lost the job (a restart) and it is started again in its environment.
    Start { environment_id: String, fresh: bool },
    /// Write what the runner reports into the status.
    Report(JobState),
    /// Stop the runner's work, remove the environment, and finish.
    Stop(Finish),
    /// Remove the environment, snapshot and log, then the row (deletion).
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Cancelled,
    Failed(String),
}

/// The environment's creation time: environment IDs are version 7 UUIDs,
/// whose first 48 bits are milliseconds since the epoch. The timeout counts
/// from it, and it survives restarts with the prebuild itself.
pub fn environment_started(environment_id: &str) -> Option<SystemTime> {
    let id = uuid::Uuid::parse_str(environment_id).ok()?;
    let (seconds, nanos) = id.get_timestamp()?.to_unix();
    Some(UNIX_EPOCH + Duration::new(seconds, nanos))
}

fn timeout_of(prebuild: &Prebuild) -> Duration {
    prebuild
        .spec
        .as_ref()
        .and_then(|s| s.timeout.as_ref())
        .map(|t| Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32))
        .unwrap_or(crate::config::DEFAULT_PREBUILD_TIMEOUT)
}

/// Decides the next step. `observed` is the runner's report (`None`: the
/// runner does not know the job); `has_slot`: the runner may start another.
pub fn next_step(prebuild: &Prebuild, observed: Option<&JobState>, now: SystemTime, has_slot: bool) -> Step {
    let status = prebuild.status.clone().unwrap_or_default();
    match phase_of(prebuild) {
        phase if phase.is_deleting() => Step::Remove,
        phase if phase.is_final() => Step::Wait,
        PrebuildPhase::Cancelling => Step::Stop(Finish::Cancelled),
        phase if phase.is_pending() => {
            if has_slot {
                Step::Start { environment_id: uuid::Uuid::now_v7().to_string(), fresh: true }
            } else {
                Step::Wait
            }
        }
        phase => {
            let timeout = timeout_of(prebuild);
            let started = environment_started(&status.environment_id);
            if let Some(started) = started {
                let elapsed = now.duration_since(started).unwrap_or_default();
                if elapsed > timeout {
                    return Step::Stop(Finish::Failed(format!(
                        "the prebuild timed out: it ran longer than its timeout of {} (spec.timeout), and was stopped",
                        humantime::format_duration(timeout)
                    )));
                }
            }
            match observed {
                None if started.is_some() => Step::Start { environment_id: status.environment_id.clone(), fresh: false },
                None => Step::Start { environment_id: uuid::Uuid::now_v7().to_string(), fresh: true },
                Some(state) if reported_phase(state) != phase || differs(&status, state) => Step::Report(state.clone()),
                Some(_) => Step::Wait,
            }
        }
    }
}

/// The phase a runner state is reported as.
pub fn reported_phase(state: &JobState) -> PrebuildPhase {
    match state {
        JobState::Starting => PrebuildPhase::Starting,
        JobState::Running => PrebuildPhase::Running,
        JobState::Stopping => PrebuildPhase::Stopping,
        JobState::Snapshotting { .. } => PrebuildPhase::Snapshotting,
        JobState::Completed { .. } => PrebuildPhase::Completed,
        JobState::Failed { .. } | JobState::Stopped => PrebuildPhase::Failed,
    }
}

fn differs(status: &PrebuildStatus, state: &JobState) -> bool {
    match state {
        JobState::Snapshotting { percent } => status.snapshot_completion_percentage != *percent,
        _ => false,
    }
}

/// Writes a runner report into the status. Returns false if nothing changed.
pub fn apply_report(status: &mut PrebuildStatus, state: &JobState, now: SystemTime) -> bool {
    let before = status.clone();
    status.phase = reported_phase(state) as i32;
    match state {
        JobState::Snapshotting { percent } => status.snapshot_completion_percentage = (*percent).clamp(0, 100),
        JobState::Completed { snapshot_size_bytes, warning, .. } => {
            status.snapshot_completion_percentage = 100;
            status.snapshot_size_bytes = *snapshot_size_bytes;
            status.warning_message = warning.clone().unwrap_or_default();
            status.completion_time = Some(timestamp(now));
        }
        JobState::Failed { message } => {
            status.failure_message = message.clone();
            status.completion_time = Some(timestamp(now));
        }
        JobState::Stopped => {
            status.failure_message = "the runner stopped the prebuild before it finished".into();
            status.completion_time = Some(timestamp(now));
        }
        JobState::Starting | JobState::Running | JobState::Stopping => {}
    }
    *status != before
}

/// Writes the end of a stop: CANCELLED, or FAILED with the reason.
pub fn apply_finish(status: &mut PrebuildStatus, finish: &Finish, now: SystemTime) {
    match finish {
        Finish::Cancelled => status.phase = PrebuildPhase::Cancelled as i32,
        Finish::Failed(message) => {
            status.phase = PrebuildPhase::Failed as i32;
            status.failure_message = message.clone();
        }
    }
    status.completion_time = Some(timestamp(now));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::gitpod::v1::PrebuildSpec;

    fn prebuild(phase: PrebuildPhase, environment_id: &str, timeout_seconds: i64) -> Prebuild {
        Prebuild {
            id: "p".into(),
            spec: Some(PrebuildSpec { timeout: Some(pbjson_types::Duration { seconds: timeout_seconds, nanos: 0 }), ..Default::default() }),
            status: Some(PrebuildStatus { phase: phase as i32, environment_id: environment_id.into(), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn pending_starts_only_with_a_free_slot() {
        let now = SystemTime::now();
        let p = prebuild(PrebuildPhase::Pending, "", 3600);
        assert!(matches!(next_step(&p, None, now, true), Step::Start { fresh: true, .. }));
        assert_eq!(next_step(&p, None, now, false), Step::Wait);
    }

    #[test]
    fn running_mirrors_the_runner_and_resumes_lost_jobs() {
        let env = uuid::Uuid::now_v7().to_string();
        let now = SystemTime::now();
        let p = prebuild(PrebuildPhase::Starting, &env, 3600);
        assert_eq!(next_step(&p, Some(&JobState::Starting), now, false), Step::Wait);
        assert_eq!(next_step(&p, Some(&JobState::Running), now, false), Step::Report(JobState::Running));
        assert_eq!(next_step(&p, None, now, false), Step::Start { environment_id: env.clone(), fresh: false });
        let snapshotting = prebuild(PrebuildPhase::Snapshotting, &env, 3600);
        assert_eq!(
            next_step(&snapshotting, Some(&JobState::Snapshotting { percent: 40 }), now, false),
            Step::Report(JobState::Snapshotting { percent: 40 })
        );
    }

    #[test]
    fn the_timeout_counts_from_the_environment_start() {
        let env = uuid::Uuid::now_v7().to_string();
        let p = prebuild(PrebuildPhase::Running, &env, 300);
        let later = SystemTime::now() + Duration::from_secs(301);
        match next_step(&p, Some(&JobState::Running), later, false) {
            Step::Stop(Finish::Failed(message)) => assert!(message.contains("timed out") && message.contains("5m"), "{message}"),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert_eq!(next_step(&p, Some(&JobState::Running), SystemTime::now() + Duration::from_secs(299), false), Step::Wait);
    }

    #[test]
    fn cancel_delete_and_final_phases() {
        let now = SystemTime::now();
        assert_eq!(next_step(&prebuild(PrebuildPhase::Cancelling, "", 300), None, now, false), Step::Stop(Finish::Cancelled));
        assert_eq!(next_step(&prebuild(PrebuildPhase::Deleting, "", 300), None, now, false), Step::Remove);
        for phase in [PrebuildPhase::Completed, PrebuildPhase::Failed, PrebuildPhase::Cancelled] {
            assert_eq!(next_step(&prebuild(phase, "", 300), None, now, true), Step::Wait);
        }
    }

    #[test]
    fn reports_fill_the_status() {
        let now = SystemTime::now();
        let mut status = PrebuildStatus::default();
        assert!(apply_report(
            &mut status,
            &JobState::Completed { snapshot_size_bytes: 7, warning: Some("careful".into()), snapshot_image: None },
            now
        ));
        assert_eq!(
            (status.phase, status.snapshot_size_bytes, status.snapshot_completion_percentage),
            (PrebuildPhase::Completed as i32, 7, 100)
        );
        assert_eq!(status.warning_message, "careful");
        assert!(status.completion_time.is_some());
        let mut again = status.clone();
        assert!(
            !apply_report(
                &mut again,
                &JobState::Completed { snapshot_size_bytes: 7, warning: Some("careful".into()), snapshot_image: None },
                now
            ),
            "no change, no write"
        );
        let mut failed = PrebuildStatus::default();
        apply_finish(&mut failed, &Finish::Failed("timed out".into()), now);
        assert_eq!((failed.phase, failed.failure_message.as_str()), (PrebuildPhase::Failed as i32, "timed out"));
    }
}
