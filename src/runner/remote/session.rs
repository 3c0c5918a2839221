//! One connection of a remote runner: the hello that adopts what it holds,
//! the messages it sends, and its end (when the [`Session`] is dropped).

use super::{lock, wire, Connection, RemoteRunner, State};
use crate::error::{Error, Result};
use crate::proto::prebuildd::v1 as pb;
use pb::attach_request::Message;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// The largest log chunk accepted in one message.
const MAX_LOG_CHUNK: usize = 1024 * 1024;

/// A connected runner. Dropping it marks the runner away (unless a newer
/// connection has replaced it already).
pub struct Session {
    runner: Arc<RemoteRunner>,
    number: u64,
}

impl RemoteRunner {
    /// Accepts the runner's hello: replaces any older connection, adopts
    /// the jobs and pools the runner says it holds, forgets jobs it no
    /// longer has (the reconciler starts those again), and sends it every
    /// pending removal and pool target. Returns the session and the
    /// messages to send on the stream.
    pub fn attach(self: &Arc<Self>, hello: pb::RunnerHello) -> (Session, mpsc::Receiver<pb::AttachResponse>) {
        let (outbox, messages) = mpsc::channel(super::OUTBOX);
        let mut state = lock(&self.state);
        state.connections += 1;
        let number = state.connections;
        // An older stream's claims cannot be answered any more.
        state.claims.clear();
        state.connection = Some(Connection { number, outbox });
        state.away_since = None;
        state.send(pb::attach_response::Message::Welcome(pb::RunnerWelcome { runner_id: self.id.clone() }));

        let held: std::collections::HashMap<String, crate::runner::JobState> = hello
            .jobs
            .iter()
            .filter(|report| is_uuid(&report.prebuild_id))
            .filter_map(|report| Some((report.prebuild_id.clone(), wire::job_state(report)?)))
            .collect();
        state.jobs.retain(|id, _| held.contains_key(id));
        for (id, job) in held {
            if state.job_removals.contains(&id) {
                continue;
            }
            state.jobs.insert(id, job);
        }
        for report in &hello.pools {
            if let Some(pool) = state.pools.get_mut(&report.warm_pool_id) {
                pool.observed = wire::pool_observation(report);
            }
        }
        resend_everything(&mut state);
        drop(state);
        // What it holds may differ from what was last known, and it can take
        // work again.
        self.events.changed();
        tracing::info!(runner = %self.id, engine = %hello.engine, version = %hello.version, jobs = hello.jobs.len(), "runner connected");
        (Session { runner: self.clone(), number }, messages)
    }
}

/// Everything the runner must hear again on a new connection. What does
/// not fit in the outbox waits for the next connection (the reconciler asks
/// for pools again at its next pass anyway).
fn resend_everything(state: &mut State) {
    let removals = state.job_removals.iter().map(|id| pb::attach_response::Message::RemoveJob(pb::RemoveJob { prebuild_id: id.clone() }));
    let pool_removals = state
        .pool_removals
        .iter()
        .filter(|(_, removed)| !**removed)
        .map(|(id, _)| pb::attach_response::Message::RemovePool(pb::RemovePool { warm_pool_id: id.clone() }));
    let targets = state.pools.values().map(|pool| pb::attach_response::Message::SetPool(wire::pool_target_to_wire(&pool.target)));
    let messages: Vec<_> = removals.chain(pool_removals).chain(targets).collect();
    let Some(connection) = &state.connection else { return };
    for message in messages {
        if connection.outbox.try_send(pb::AttachResponse { message: Some(message) }).is_err() {
            tracing::warn!(limit = super::OUTBOX, "more to resend to a runner than its outbox holds; the rest goes at its next connection");
            return;
        }
    }
}

fn is_uuid(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok()
}

impl Session {
    /// Applies one message from the runner. An error ends the stream with
    /// that error (the runner reconnects). Reports are runner events: the
    /// reconciler looks at once.
    pub async fn handle(&self, message: pb::AttachRequest) -> Result<()> {
        let news = matches!(
            message.message,
            Some(Message::JobReport(_) | Message::PoolReport(_) | Message::JobRemoved(_) | Message::PoolRemoved(_))
        );
        let applied = self.apply(message).await;
        if news {
            self.runner.events.changed();
        }
        applied
    }

    async fn apply(&self, message: pb::AttachRequest) -> Result<()> {
        let runner = &self.runner;
        match message.message {
            None => Ok(()),
            Some(Message::Hello(_)) => Err(Error::FailedPrecondition("the hello comes once, as the first message".into())),
            Some(Message::JobReport(report)) => {
                let Some(job) = wire::job_state(&report) else { return Ok(()) };
                let mut state = lock(&runner.state);
                // Only jobs this server gave the runner (or adopted from its
                // hello); a removed job's late report is ignored.
                if let Some(known) = state.jobs.get_mut(&report.prebuild_id) {
                    *known = job;
                }
                Ok(())
            }
            Some(Message::PoolReport(report)) => {
                let mut state = lock(&runner.state);
                if let Some(pool) = state.pools.get_mut(&report.warm_pool_id) {
                    pool.observed = wire::pool_observation(&report);
                }
                Ok(())
            }
            Some(Message::LogChunk(chunk)) => self.append_log(chunk).await,
            Some(Message::ClaimResult(result)) => {
                if let Some(waiting) = lock(&runner.state).claims.remove(&result.request_id) {
                    let _ = waiting.send(result);
                }
                Ok(())
            }
            Some(Message::JobRemoved(removed)) => {
                lock(&runner.state).job_removals.remove(&removed.prebuild_id);
                Ok(())
            }
            Some(Message::PoolRemoved(removed)) => {
                if let Some(done) = lock(&runner.state).pool_removals.get_mut(&removed.warm_pool_id) {
                    *done = true;
                }
                Ok(())
            }
        }
    }

    /// Appends a chunk to the prebuild's log on this server, where the log
    /// endpoint (and, on PostgreSQL, the copy to the database) reads it.
    async fn append_log(&self, chunk: pb::LogChunk) -> Result<()> {
        if chunk.data.len() > MAX_LOG_CHUNK {
            return Err(Error::InvalidArgument {
                field: "log_chunk.data".into(),
                reason: format!("at most {MAX_LOG_CHUNK} bytes per message"),
            });
        }
        if !lock(&self.runner.state).jobs.contains_key(&chunk.prebuild_id) {
            // Not (or no longer) a job of this runner: a late line of a
            // removed job, say. Dropped.
            return Ok(());
        }
        let sink = self.runner.logs.sink(&chunk.prebuild_id);
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            sink.open_append().and_then(|mut file| file.write_all(&chunk.data))
        })
        .await
        .map_err(|e| Error::Internal(format!("log append task: {e}")))?
        .map_err(|e| Error::Internal(format!("cannot append to a prebuild log: {e}")))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut state = lock(&self.runner.state);
        if state.connection.as_ref().is_some_and(|c| c.number == self.number) {
            state.connection = None;
            state.away_since = Some(Instant::now());
            state.claims.clear();
            tracing::warn!(runner = %self.runner.id, "runner disconnected");
            drop(state);
            self.runner.events.changed();
        }
    }
}
