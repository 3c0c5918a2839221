//! Polling, for git servers that cannot reach this one (the common
//! self-hosted case behind NAT): every `poll_interval`, `git ls-remote` of
//! the repository; a tracked branch whose head moved since the last look
//! becomes a [`Push`] like a webhook's, so a new commit starts a prebuild
//! within one interval.
//!
//! Polls are started by reconciler passes (so only the replica that leads
//! polls), at most [`MAX_CONCURRENT_POLLS`] at once, each in a task of its
//! own that never holds up a pass. The next poll of a project is due one
//! interval later, less up to a tenth at random (so projects with the same
//! interval spread out and a commit is never seen later than one interval);
//! after failures it waits twice as long each time, up to 16 intervals or
//! an hour, whichever is shorter. The heads seen live in memory: after a
//! restart the first poll compares with nothing, and the store recognises
//! a head that was built already.

use super::{Push, PushResult};
use crate::proto::prebuildd::v1::SourceTrigger;
use crate::service::Service;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Polls that may run at once (each is one `git ls-remote`, and a fetch
/// when a path filter needs the diff).
pub const MAX_CONCURRENT_POLLS: usize = 4;
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

#[derive(Debug, Default)]
struct ProjectPoll {
    next_due: Option<Instant>,
    failures: u32,
    running: bool,
    /// Each tracked branch's head at the last successful poll.
    heads: HashMap<String, String>,
}

/// The pollers' schedule and what they saw.
#[derive(Debug)]
pub struct PollState {
    projects: Mutex<HashMap<String, ProjectPoll>>,
    slots: Arc<Semaphore>,
}

impl Default for PollState {
    fn default() -> Self {
        PollState { projects: Mutex::default(), slots: Arc::new(Semaphore::new(MAX_CONCURRENT_POLLS)) }
    }
}

/// When the next poll is due after one that ended now.
fn next_delay(interval: Duration, failures: u32) -> Duration {
    if failures == 0 {
        let jitter = interval.mul_f64(rand::random::<f64>() / 10.0);
        return interval.saturating_sub(jitter);
    }
    interval.saturating_mul(1 << failures.min(4)).min(MAX_BACKOFF.max(interval))
}

/// Starts the polls that are due (called by every reconciler pass).
pub fn start_due(service: &Arc<Service>) {
    let catalog = service.catalog();
    let state = &service.triggers().polls;
    let now = Instant::now();
    for project in catalog.projects.values() {
        let Some(interval) = project.prebuilds.git.as_ref().and_then(|git| git.poll_interval) else { continue };
        if !project.prebuilds.enabled {
            continue;
        }
        {
            let mut projects = crate::sync::lock(&state.projects);
            let poll = projects.entry(project.id.clone()).or_default();
            if poll.running || poll.next_due.is_some_and(|due| now < due) {
                continue;
            }
            let Ok(slot) = state.slots.clone().try_acquire_owned() else { return };
            poll.running = true;
            let (service, project_id) = (service.clone(), project.id.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let outcome = poll_once(&service, &project_id).await;
                let mut projects = crate::sync::lock(&service.triggers().polls.projects);
                let poll = projects.entry(project_id.clone()).or_default();
                poll.running = false;
                match outcome {
                    Ok(heads) => {
                        poll.failures = 0;
                        poll.heads.extend(heads);
                    }
                    Err(error) => {
                        poll.failures += 1;
                        tracing::warn!(project = %project_id, failures = poll.failures, %error, "polling the repository failed; backing off");
                    }
                }
                poll.next_due = Some(Instant::now() + next_delay(interval, poll.failures));
            });
        }
    }
}

/// One poll of a project: returns the heads it acted on.
async fn poll_once(service: &Arc<Service>, project_id: &str) -> crate::error::Result<Vec<(String, String)>> {
    let catalog = service.catalog();
    let Some(project) = catalog.projects.get(project_id) else { return Ok(Vec::new()) };
    let Some(git) = project.prebuilds.git.as_ref() else { return Ok(Vec::new()) };
    let triggers = service.triggers();
    let heads = crate::git::ls_remote(&project.repository).await.map_err(|e| crate::error::Error::Unavailable(e.0))?;
    if let Some(default) = &heads.default_branch {
        triggers.remember_default_branch(project_id, default);
    }
    let seen = crate::sync::lock(&triggers.polls.projects).get(project_id).map(|poll| poll.heads.clone()).unwrap_or_default();
    let mut acted = Vec::new();
    for (branch, sha) in &heads.branches {
        if !git.tracks(branch, heads.default_branch.as_deref()) || seen.get(branch) == Some(sha) {
            continue;
        }
        let push = Push {
            project_id: project_id.to_string(),
            branch: branch.clone(),
            commit_sha: sha.clone(),
            before_sha: seen.get(branch).cloned(),
            trigger: SourceTrigger::Poll,
            provider: String::new(),
            delivery: None,
        };
        match triggers.push(service, push).await? {
            PushResult::Queued(outcomes) => tracing::debug!(project = %project_id, %branch, commit = %sha, ?outcomes, "poll: new head"),
            other => tracing::debug!(project = %project_id, %branch, commit = %sha, ?other, "poll: new head, nothing to start"),
        }
        acted.push((branch.clone(), sha.clone()));
    }
    Ok(acted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_poll_is_within_one_interval_and_backs_off() {
        let interval = Duration::from_secs(120);
        for _ in 0..100 {
            let delay = next_delay(interval, 0);
            assert!(delay <= interval && delay >= interval.mul_f64(0.9), "{delay:?}");
        }
        assert_eq!(next_delay(interval, 1), Duration::from_secs(240));
        assert_eq!(next_delay(interval, 3), Duration::from_secs(960));
        assert_eq!(next_delay(interval, 9), Duration::from_secs(1920), "16 intervals at most");
        assert_eq!(next_delay(Duration::from_secs(600), 9), Duration::from_secs(3600), "or an hour");
        assert_eq!(next_delay(Duration::from_secs(7200), 2), Duration::from_secs(7200), "never less than one interval");
    }
}
