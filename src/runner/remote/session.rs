//! One connection of a runner member: the hello that adopts what it holds
//! (or refuses a second process under a name that is connected already),
//! the messages it sends, and its end (when the [`Session`] is dropped).

use super::members::{self, Connection, Member, PlacedJob};
use super::{lock, wire, RemoteRunner, State};
use crate::error::{Error, Result};
use crate::proto::prebuildd::v1 as pb;
use pb::attach_request::Message;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::mpsc;

/// The largest log chunk accepted in one message.
const MAX_LOG_CHUNK: usize = 1024 * 1024;

/// A connected member. Dropping it marks the member away (unless a newer
/// connection of the same process has replaced it already).
pub struct Session {
    runner: Arc<RemoteRunner>,
    member: String,
    number: u64,
}

impl RemoteRunner {
    /// Accepts a member's hello: refuses it if another process is connected
    /// under the same member name; otherwise replaces the member's older
    /// connection (a reconnect), adopts the jobs and pools it says it holds,
    /// forgets jobs it no longer has (the reconciler starts those again),
    /// and sends it every pending removal and its share of every pool.
    /// Returns the session and the messages to send on the stream.
    pub fn attach(self: &Arc<Self>, hello: pb::RunnerHello) -> Result<(Session, mpsc::Receiver<pb::AttachResponse>)> {
        let name = if hello.member.is_empty() { members::DEFAULT_MEMBER.to_string() } else { hello.member.clone() };
        if !members::valid_member_name(&name) {
            return Err(Error::InvalidArgument {
                field: "hello.member".into(),
                reason: format!("{name:?} is not a member name: 1 to 63 letters, digits, '.', '-' or '_' (set member in runner.toml)"),
            });
        }
        let mut state = lock(&self.state);
        self.expire(&mut state);
        if let Some(existing) = state.members.get(&name).filter(|m| m.connected() && m.process_id != hello.process_id) {
            let since = humantime::format_rfc3339_seconds(existing.changed_at);
            tracing::warn!(runner = %self.id, member = %name, "refused a second runner process under a member name that is connected already");
            return Err(Error::AlreadyExists(format!(
                "runner {} already has a connected member named {name:?} (another process, connected since {since}); \
                 give each prebuildd runner of this runner ID its own member name (member = \"...\" in runner.toml)",
                self.id
            )));
        }
        let (outbox, messages) = mpsc::channel(super::OUTBOX);
        state.connections += 1;
        let number = state.connections;
        // An older stream's claims cannot be answered any more.
        state.claims.retain(|_, (member, _)| *member != name);
        let member = state.members.entry(name.clone()).or_insert_with(|| Member::new(&hello.process_id));
        member.process_id = hello.process_id.clone();
        member.connection = Some(Connection { number, outbox });
        member.away_since = None;
        member.gone = false;
        member.changed_at = SystemTime::now();
        member.slots = (hello.max_concurrent_prebuilds > 0).then_some(hello.max_concurrent_prebuilds);
        member.engine = hello.engine.clone();
        member.version = hello.version.clone();
        member.send(pb::attach_response::Message::Welcome(pb::RunnerWelcome { runner_id: self.id.clone(), member: name.clone() }));
        adopt(&mut state, &name, &hello);
        resend_everything(&mut state, &name);
        // A new member changes everyone's share of the pools.
        state.place_pools();
        state.place_deletions();
        drop(state);
        // What it holds may differ from what was last known, and it can take
        // work again.
        self.events.changed();
        tracing::info!(runner = %self.id, member = %name, engine = %hello.engine, version = %hello.version, jobs = hello.jobs.len(), "runner connected");
        Ok((Session { runner: self.clone(), member: name, number }, messages))
    }
}

/// Takes in what a member says it holds. A job it holds is its own unless
/// another member runs it now (then it is removed there); jobs given to it
/// that it no longer holds are forgotten.
fn adopt(state: &mut State, name: &str, hello: &pb::RunnerHello) {
    let held: std::collections::HashMap<String, crate::runner::JobState> = hello
        .jobs
        .iter()
        .filter(|report| is_uuid(&report.prebuild_id))
        .filter_map(|report| Some((report.prebuild_id.clone(), wire::job_state(report)?)))
        .collect();
    state.jobs.retain(|id, job| job.member != name || held.contains_key(id));
    let mut elsewhere = Vec::new();
    for (id, job) in held {
        let owed = state.members.get(name).is_some_and(|m| m.job_removals.contains(&id));
        match state.jobs.get(&id) {
            _ if owed => {}
            Some(placed) if placed.member != name => elsewhere.push(id),
            _ => {
                state.jobs.insert(id, PlacedJob { member: name.to_string(), state: job });
            }
        }
    }
    let Some(member) = state.members.get_mut(name) else { return };
    for id in elsewhere {
        member.job_removals.insert(&id);
    }
    for report in &hello.pools {
        if let Some(pool) = member.pools.get_mut(&report.warm_pool_id) {
            pool.observed = wire::pool_observation(report);
        }
    }
}

/// Everything a member must hear again on a new connection. What does not
/// fit in the outbox waits for the next connection (the reconciler asks for
/// pools again at its next pass anyway).
fn resend_everything(state: &mut State, name: &str) {
    let deletions: Vec<pb::attach_response::Message> = state
        .deletions
        .iter()
        .filter(|(_, d)| !d.done && d.member.as_deref() == Some(name))
        .map(|(id, d)| pb::attach_response::Message::DeleteImage(pb::DeleteImage { prebuild_id: id.clone(), image: d.image.clone() }))
        .collect();
    let Some(member) = state.members.get_mut(name) else { return };
    let removals = member.job_removals.iter().map(|id| pb::attach_response::Message::RemoveJob(pb::RemoveJob { prebuild_id: id.clone() }));
    let pool_removals =
        member.pool_removals.iter().map(|id| pb::attach_response::Message::RemovePool(pb::RemovePool { warm_pool_id: id.clone() }));
    let shares = member
        .pools
        .values()
        .filter_map(|pool| pool.share.as_ref())
        .map(|share| pb::attach_response::Message::SetPool(wire::pool_target_to_wire(share)));
    let messages: Vec<_> = removals.chain(pool_removals).chain(shares).chain(deletions).collect();
    let Some(connection) = &member.connection else { return };
    for message in messages {
        if connection.outbox.try_send(pb::AttachResponse { message: Some(message) }).is_err() {
            tracing::warn!(
                limit = super::OUTBOX,
                "more to resend to a runner member than its outbox holds; the rest goes at its next connection"
            );
            return;
        }
    }
}

fn is_uuid(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok()
}

impl Session {
    /// The member's name.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// Applies one message from the member. An error ends the stream with
    /// that error (the member reconnects). Reports are runner events: the
    /// reconciler looks at once.
    pub async fn handle(&self, message: pb::AttachRequest) -> Result<()> {
        let news = matches!(
            message.message,
            Some(
                Message::JobReport(_)
                    | Message::PoolReport(_)
                    | Message::JobRemoved(_)
                    | Message::PoolRemoved(_)
                    | Message::ImageDeleted(_)
            )
        );
        let applied = self.apply(message).await;
        if news {
            self.runner.events.changed();
        }
        applied
    }

    async fn apply(&self, message: pb::AttachRequest) -> Result<()> {
        let runner = &self.runner;
        let name = self.member.as_str();
        match message.message {
            None => Ok(()),
            Some(Message::Hello(_)) => Err(Error::FailedPrecondition("the hello comes once, as the first message".into())),
            Some(Message::JobReport(report)) => {
                let Some(job) = wire::job_state(&report) else { return Ok(()) };
                let mut state = lock(&runner.state);
                // Only jobs this server gave the member (or adopted from its
                // hello); a removed or moved job's late report is ignored.
                if let Some(known) = state.jobs.get_mut(&report.prebuild_id).filter(|known| known.member == name) {
                    known.state = job;
                }
                Ok(())
            }
            Some(Message::PoolReport(report)) => {
                let mut state = lock(&runner.state);
                if let Some(pool) = state.members.get_mut(name).and_then(|m| m.pools.get_mut(&report.warm_pool_id)) {
                    pool.observed = wire::pool_observation(&report);
                }
                Ok(())
            }
            Some(Message::LogChunk(chunk)) => self.append_log(chunk).await,
            Some(Message::ClaimResult(result)) => {
                if let Some((_, waiting)) = lock(&runner.state).claims.remove(&result.request_id) {
                    let _ = waiting.send(result);
                }
                Ok(())
            }
            Some(Message::JobRemoved(removed)) => {
                if let Some(member) = lock(&runner.state).members.get_mut(name) {
                    member.job_removals.remove(&removed.prebuild_id);
                }
                Ok(())
            }
            Some(Message::PoolRemoved(removed)) => {
                if let Some(member) = lock(&runner.state).members.get_mut(name) {
                    member.pool_removals.remove(&removed.warm_pool_id);
                }
                Ok(())
            }
            Some(Message::ImageDeleted(deleted)) => {
                if let Some(deletion) = lock(&runner.state).deletions.get_mut(&deleted.prebuild_id) {
                    deletion.done = true;
                }
                if !deleted.error_message.is_empty() {
                    tracing::warn!(runner = %runner.id, member = %name, prebuild = %deleted.prebuild_id, error = %deleted.error_message, "a pushed snapshot could not be deleted from its registry");
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
        if lock(&self.runner.state).jobs.get(&chunk.prebuild_id).is_none_or(|job| job.member != self.member) {
            // Not (or no longer) a job of this member: a late line of a
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
        let Some(member) = state.members.get_mut(&self.member) else { return };
        if member.connection.as_ref().is_none_or(|c| c.number != self.number) {
            return;
        }
        member.leave();
        let name = self.member.clone();
        state.claims.retain(|_, (member, _)| *member != name);
        tracing::warn!(runner = %self.runner.id, member = %self.member, "runner member disconnected");
        drop(state);
        self.runner.events.changed();
    }
}
