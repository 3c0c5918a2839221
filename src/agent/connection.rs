//! One connection to the server: the hello, the server's messages applied
//! to the engine, and the reports sent back as things change.

use super::{lock, tail, Agent, Job, Pool};
use crate::proto::prebuildd::v1 as pb;
use crate::proto::prebuildd::v1::runner_service_client::RunnerServiceClient;
use crate::runner::remote::wire;
use crate::runner::PrebuildJob;
use pb::attach_request::Message as Up;
use pb::attach_response::Message as Down;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often jobs, pools and logs are looked at for news when the engine
/// raises no event (new log lines raise none).
const REPORT_INTERVAL: Duration = Duration::from_millis(100);
/// How often the engine collects what it made and nothing owns any more (a
/// snapshot removed while a claimed container still used it): the server
/// has the store and knows which prebuilds exist; this side removes what its
/// engine itself gave up.
const COLLECT_EVERY: Duration = Duration::from_secs(5);
/// Messages queued for the server before the reporter waits.
const OUTBOX: usize = 256;

type Outbox = mpsc::Sender<pb::AttachRequest>;

async fn send(outbox: &Outbox, message: Up) {
    // A closed outbox means the connection is ending; the next one resends.
    let _ = outbox.send(pb::AttachRequest { message: Some(message) }).await;
}

/// Connects, says hello, and serves the connection until it ends. `Ok`:
/// the server ended it; `Err`: it could not be opened or broke.
pub(super) async fn attach(agent: &Arc<Agent>) -> Result<(), tonic::Status> {
    let endpoint = tonic::transport::Endpoint::from_shared(agent.config.server.clone())
        .map_err(|e| tonic::Status::invalid_argument(format!("server: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        // Pings find a dead server (or path) that TCP alone would not.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let channel =
        endpoint.connect().await.map_err(|e| tonic::Status::unavailable(format!("cannot connect to {}: {e}", agent.config.server)))?;
    let mut client = RunnerServiceClient::new(channel).max_decoding_message_size(crate::transport::MAX_MESSAGE_BYTES);

    let (outbox, messages) = mpsc::channel(OUTBOX);
    send(&outbox, Up::Hello(hello(agent).await)).await;
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(messages));
    let bearer =
        format!("Bearer {}", agent.config.token).parse().map_err(|_| tonic::Status::invalid_argument("token: not a valid header value"))?;
    request.metadata_mut().insert("authorization", bearer);
    let mut incoming = client.attach(request).await?.into_inner();

    let reporter = tokio::spawn(report_changes(agent.clone(), outbox.clone()));
    let result = async {
        while let Some(message) = incoming.message().await? {
            apply(agent, &outbox, message).await;
        }
        Ok(())
    }
    .await;
    reporter.abort();
    result
}

/// What this runner holds: every job with its state, every pool with what
/// exists for it. Reports are sent again from here on.
async fn hello(agent: &Agent) -> pb::RunnerHello {
    let ids: Vec<String> = lock(&agent.state).jobs.iter().filter(|(_, job)| !job.removing).map(|(id, _)| id.clone()).collect();
    let mut jobs = Vec::new();
    for id in ids {
        if let Some(state) = agent.engine.observe(&id).await {
            jobs.push(wire::job_report(&id, &state));
            if let Some(job) = lock(&agent.state).jobs.get_mut(&id) {
                job.reported = Some(state);
            }
        }
    }
    let pools = lock(&agent.state)
        .pools
        .iter()
        .filter_map(|(id, pool)| pool.reported.as_ref().map(|observed| wire::pool_report(id, observed)))
        .collect();
    pb::RunnerHello {
        runner_id: agent.config.runner_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        engine: format!("{:?}", agent.config.engine.kind).to_lowercase(),
        jobs,
        pools,
        member: agent.config.member.clone(),
        process_id: agent.process_id.clone(),
        max_concurrent_prebuilds: agent.config.member_slots.unwrap_or(0),
    }
}

async fn apply(agent: &Arc<Agent>, outbox: &Outbox, message: pb::AttachResponse) {
    match message.message {
        None => {}
        Some(Down::Welcome(welcome)) => tracing::info!(runner = %welcome.runner_id, member = %welcome.member, "connected to the server"),
        Some(Down::StartJob(start)) => start_job(agent, outbox, start).await,
        Some(Down::RemoveJob(remove)) => {
            if let Some(job) = lock(&agent.state).jobs.get_mut(&remove.prebuild_id) {
                job.removing = true;
            }
            let (agent, outbox) = (agent.clone(), outbox.clone());
            tokio::spawn(async move { remove_job(&agent, &outbox, remove.prebuild_id).await });
        }
        Some(Down::SetPool(target)) => {
            let target = wire::pool_target_from_wire(&target);
            let mut state = lock(&agent.state);
            state.removing_pools.remove(&target.warm_pool_id);
            match state.pools.get_mut(&target.warm_pool_id) {
                Some(pool) => pool.target = target,
                None => {
                    state.pools.insert(target.warm_pool_id.clone(), Pool { target, reported: None });
                }
            }
        }
        Some(Down::RemovePool(remove)) => {
            let mut state = lock(&agent.state);
            state.pools.remove(&remove.warm_pool_id);
            state.removing_pools.insert(remove.warm_pool_id);
        }
        Some(Down::DeleteImage(delete)) => {
            let (agent, outbox) = (agent.clone(), outbox.clone());
            tokio::spawn(async move { delete_image(&agent, &outbox, delete).await });
        }
        Some(Down::ClaimInstance(claim)) => {
            let (agent, outbox) = (agent.clone(), outbox.clone());
            tokio::spawn(async move {
                let outcome = agent.engine.claim_instance(&claim.warm_pool_id).await;
                send(&outbox, Up::ClaimResult(wire::claim_result(&claim.request_id, &outcome))).await;
            });
        }
    }
}

async fn start_job(agent: &Agent, outbox: &Outbox, start: pb::StartJob) {
    if uuid::Uuid::parse_str(&start.prebuild_id).is_err() {
        tracing::warn!(prebuild = %start.prebuild_id, "ignoring a job whose ID is not a UUID");
        return;
    }
    let log = agent.logs.sink(&start.prebuild_id);
    {
        let mut state = lock(&agent.state);
        if !state.jobs.contains_key(&start.prebuild_id) {
            // Output of an earlier run of this job (before a restart) was
            // sent then, or is lost with it: send only what comes now.
            let log_offset = tail::current_length(log.path());
            state.jobs.insert(start.prebuild_id.clone(), Job { reported: None, log_offset, removing: false });
        }
    }
    let prebuild_id = start.prebuild_id.clone();
    let mut source = crate::runner::JobSource::from_source(&crate::proto::prebuildd::v1::PrebuildSource {
        branch: start.branch,
        commit_sha: start.commit_sha,
        incremental: !start.base_prebuild_id.is_empty(),
        base_prebuild_id: start.base_prebuild_id,
        base_commit_sha: start.base_commit_sha,
        ..Default::default()
    });
    if let Some(base) = source.base.as_mut() {
        base.image = (!start.base_snapshot_image.is_empty()).then_some(start.base_snapshot_image);
    }
    let job = PrebuildJob {
        prebuild_id: start.prebuild_id,
        environment_id: start.environment_id,
        project_id: start.project_id,
        environment_class_id: start.environment_class_id,
        repository: start.repository,
        resources: wire::resources_from_wire(start.resources.as_ref()),
        policy: wire::policy_from_wire(start.policy.as_ref()),
        devcontainer_path: (!start.devcontainer_path.is_empty()).then_some(start.devcontainer_path),
        tag_latest: start.tag_latest,
        source,
        log,
    };
    if let Err(error) = agent.engine.start(job).await {
        // Reported as the job's end, so the prebuild fails with the reason
        // instead of waiting for a state that never comes.
        tracing::warn!(prebuild = %prebuild_id, %error, "the engine cannot start the job");
        let failed = crate::runner::JobState::Failed { message: format!("the runner cannot start the prebuild: {error}") };
        if let Some(job) = lock(&agent.state).jobs.get_mut(&prebuild_id) {
            job.reported = Some(failed.clone());
        }
        send(outbox, Up::JobReport(wire::job_report(&prebuild_id, &failed))).await;
    }
}

async fn remove_job(agent: &Agent, outbox: &Outbox, prebuild_id: String) {
    match agent.engine.remove(&prebuild_id).await {
        Ok(()) => {
            // The last lines first, then the confirmation.
            send_new_log(agent, outbox, &prebuild_id).await;
            lock(&agent.state).jobs.remove(&prebuild_id);
            if let Err(error) = tokio::fs::remove_file(agent.logs.path(&prebuild_id)).await {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(prebuild = %prebuild_id, %error, "cannot remove the job's local log");
                }
            }
            send(outbox, Up::JobRemoved(pb::JobRemoved { prebuild_id })).await;
        }
        // The server sends the removal again on a reconnect, and its
        // reconciler asks again.
        Err(error) => tracing::warn!(prebuild = %prebuild_id, %error, "cannot remove the job yet"),
    }
}

/// How many times a registry deletion is tried before it is given up.
const DELETE_ATTEMPTS: u32 = 5;

/// Deletes a pushed snapshot from its registry (the engine gives up on a
/// registry that refuses), trying a few times on other failures, then says
/// it is done either way: a deletion is not retried forever.
async fn delete_image(agent: &Agent, outbox: &Outbox, delete: pb::DeleteImage) {
    let mut error_message = String::new();
    for attempt in 1..=DELETE_ATTEMPTS {
        match agent.engine.delete_image(&delete.prebuild_id, &delete.image).await {
            Ok(true) => {
                error_message.clear();
                break;
            }
            Ok(false) => error_message = "the deletion is still under way".into(),
            Err(error) => {
                tracing::warn!(prebuild = %delete.prebuild_id, image = %delete.image, attempt, %error, "cannot delete a pushed snapshot yet");
                error_message = error.to_string();
            }
        }
        tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
    }
    send(outbox, Up::ImageDeleted(pb::ImageDeleted { prebuild_id: delete.prebuild_id, error_message })).await;
}

/// Sends the job's log lines written since the last send.
async fn send_new_log(agent: &Agent, outbox: &Outbox, prebuild_id: &str) {
    loop {
        let Some(offset) = lock(&agent.state).jobs.get(prebuild_id).map(|job| job.log_offset) else { return };
        let path = agent.logs.path(prebuild_id);
        let read = tokio::task::spawn_blocking(move || tail::read_new_lines(&path, offset)).await;
        let (data, next) = match read {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => return,
            Ok(Err(error)) => {
                tracing::warn!(prebuild = %prebuild_id, %error, "cannot read the job's log");
                return;
            }
            Err(_) => return,
        };
        send(outbox, Up::LogChunk(pb::LogChunk { prebuild_id: prebuild_id.to_string(), data })).await;
        if let Some(job) = lock(&agent.state).jobs.get_mut(prebuild_id) {
            job.log_offset = next;
        }
    }
}

/// At every engine event, and every [`REPORT_INTERVAL`] otherwise: new log
/// lines, changed job states, pools converged and their changed
/// observations, finished pool removals.
async fn report_changes(agent: Arc<Agent>, outbox: Outbox) {
    let mut collected = std::time::Instant::now();
    loop {
        if collected.elapsed() >= COLLECT_EVERY {
            collected = std::time::Instant::now();
            if let Err(error) = agent.engine.collect_garbage(&[]).await {
                tracing::warn!(%error, "the engine could not remove everything it no longer needs");
            }
        }
        let jobs: Vec<String> = lock(&agent.state).jobs.iter().filter(|(_, job)| !job.removing).map(|(id, _)| id.clone()).collect();
        for id in jobs {
            // Observe first, send the lines written up to now, then the
            // state: a follower of the log has every line written before
            // the change when it sees the prebuild end.
            let state = agent.engine.observe(&id).await;
            send_new_log(&agent, &outbox, &id).await;
            let Some(state) = state else { continue };
            let changed = {
                let mut agent_state = lock(&agent.state);
                match agent_state.jobs.get_mut(&id) {
                    Some(job) if !job.removing && job.reported.as_ref() != Some(&state) => {
                        job.reported = Some(state.clone());
                        true
                    }
                    _ => false,
                }
            };
            if changed {
                send(&outbox, Up::JobReport(wire::job_report(&id, &state))).await;
            }
        }

        let targets: Vec<_> = lock(&agent.state).pools.values().map(|pool| pool.target.clone()).collect();
        for target in targets {
            let id = target.warm_pool_id.clone();
            let observed = match agent.engine.sync_pool(target).await {
                Ok(observed) => observed,
                Err(error) => crate::runner::PoolObservation { failure: Some(error.to_string()), ..Default::default() },
            };
            let changed = match lock(&agent.state).pools.get_mut(&id) {
                Some(pool) if pool.reported.as_ref() != Some(&observed) => {
                    pool.reported = Some(observed.clone());
                    true
                }
                _ => false,
            };
            if changed {
                send(&outbox, Up::PoolReport(wire::pool_report(&id, &observed))).await;
            }
        }

        let removing: Vec<String> = lock(&agent.state).removing_pools.iter().cloned().collect();
        for id in removing {
            match agent.engine.remove_pool(&id).await {
                Ok(true) => {
                    lock(&agent.state).removing_pools.remove(&id);
                    send(&outbox, Up::PoolRemoved(pb::PoolRemoved { warm_pool_id: id })).await;
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(pool = %id, %error, "cannot remove the pool's instances yet"),
            }
        }
        tokio::select! {
            _ = agent.events.woken() => {}
            _ = tokio::time::sleep(REPORT_INTERVAL) => {}
        }
    }
}
