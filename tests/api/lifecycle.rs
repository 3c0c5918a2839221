//! Prebuilds and warm pools that really move: the reconciler with the
//! simulated runner, through the public API. Every phase path, restarts,
//! timeouts (with a clock the test moves), logs, claims, schedules and
//! retention.

use crate::common::*;
use prebuildd::proto::gitpod::v1::prebuild_metadata::PrebuildTrigger;
use prebuildd::proto::gitpod::v1::*;
use prebuildd::proto::prebuildd::v1::warm_pool_instance_service_client::WarmPoolInstanceServiceClient;
use prebuildd::proto::prebuildd::v1::ClaimInstanceRequest;
use std::time::{Duration, Instant};
use tonic::Code;

const OK: &str = "0c000000-0000-4000-8000-000000000001";
const FAIL: &str = "0c000000-0000-4000-8000-000000000002";
const WARN: &str = "0c000000-0000-4000-8000-000000000003";
const HANG: &str = "0c000000-0000-4000-8000-000000000004";
const SCHEDULED: &str = "0c000000-0000-4000-8000-000000000005";
const RUNNER_2: &str = "7a000000-0000-4000-8000-000000000002";
const CLASS_OTHER_RUNNER: &str = "c1a55000-0000-4000-8000-000000000009";

fn project(id: &str, name: &str, repository: &str, classes: &[&str], extra: &str) -> String {
    let classes = classes.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
    format!(
        "[[projects]]\nid = \"{id}\"\norganization_id = \"{ORG_A}\"\nname = \"{name}\"\nrepository = \"{repository}\"\ndefault_environment_class_id = \"{CLASS_SMALL}\"\n[projects.prebuilds]\nenabled = true\nenvironment_class_ids = [{classes}]\n{extra}\n"
    )
}

/// Reconciler on, fast; runner 1 runs two prebuilds at a time.
fn config(step: &str, retention: &str, ok_classes: &[&str], scheduled: bool) -> String {
    let mut text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "http://prebuildd.test"
[reconciler]
interval = "40ms"
{retention}
[[organizations]]
id = "{ORG_A}"
name = "Org A"
[[api_keys]]
token = "{TOKEN_A}"
organization_id = "{ORG_A}"
subject_id = "{ALICE}"
[[runners]]
id = "{RUNNER}"
kind = "simulated"
max_concurrent_prebuilds = 2
step_duration = "{step}"
[[runners]]
id = "{RUNNER_2}"
kind = "simulated"
step_duration = "{step}"
[[environment_classes]]
id = "{CLASS_SMALL}"
runner_id = "{RUNNER}"
name = "small"
[[environment_classes]]
id = "{CLASS_LARGE}"
runner_id = "{RUNNER}"
name = "large"
[[environment_classes]]
id = "{CLASS_OTHER_RUNNER}"
runner_id = "{RUNNER_2}"
name = "other"
"#
    );
    text += &project(OK, "ok", "sim://ok", ok_classes, "");
    text += &project(FAIL, "fail", "sim://fail", &[CLASS_SMALL], "");
    text += &project(WARN, "warn", "sim://warn", &[CLASS_SMALL], "");
    text += &project(HANG, "hang", "sim://hang", &[CLASS_SMALL], "timeout = \"300s\"");
    if scheduled {
        let extra = format!("daily_schedule_hour_utc = 0\nexecutor = {{ id = \"{EXECUTOR}\", principal = \"PRINCIPAL_SERVICE_ACCOUNT\" }}");
        text += &project(SCHEDULED, "nightly", "sim://ok", &[CLASS_OTHER_RUNNER], &extra).replace(
            &format!("default_environment_class_id = \"{CLASS_SMALL}\""),
            &format!("default_environment_class_id = \"{CLASS_OTHER_RUNNER}\""),
        );
    }
    text
}

fn default_config() -> String {
    config("60ms", "", &[CLASS_SMALL, CLASS_LARGE], false)
}

const PATIENCE: Duration = Duration::from_secs(20);

async fn get(client: &mut Client, id: &str) -> Result<Prebuild, tonic::Status> {
    client.get_prebuild(GetPrebuildRequest { prebuild_id: id.into() }).await.map(|r| r.into_inner().prebuild.unwrap())
}

fn phase(p: &Prebuild) -> PrebuildPhase {
    PrebuildPhase::try_from(p.status.as_ref().unwrap().phase).unwrap()
}

/// Polls until the prebuild reaches `want`, returning it and every phase seen.
async fn wait_phase(client: &mut Client, id: &str, want: PrebuildPhase) -> (Prebuild, Vec<PrebuildPhase>) {
    let started = Instant::now();
    let mut seen = Vec::new();
    loop {
        let prebuild = get(client, id).await.expect("get");
        let now = phase(&prebuild);
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        if now == want {
            return (prebuild, seen);
        }
        assert!(started.elapsed() < PATIENCE, "prebuild {id} never reached {want:?}; phases seen: {seen:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn read_log(server: &TestServer, client: &mut Client, id: &str) -> String {
    let token = client
        .create_prebuild_logs_token(CreatePrebuildLogsTokenRequest { prebuild_id: id.into() })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let response =
        reqwest::Client::new().get(format!("{}/logs/prebuilds/{id}", server.base_url())).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

#[tokio::test]
async fn a_prebuild_passes_every_phase_to_completed() {
    let server = TestServer::start_with(default_config()).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let created = create_prebuild(&mut client, OK).await;
    let (done, seen) = wait_phase(&mut client, &created.id, PrebuildPhase::Completed).await;
    assert!(seen.len() >= 3, "several phases are visible on the way: {seen:?}");
    let order = [
        PrebuildPhase::Pending,
        PrebuildPhase::Starting,
        PrebuildPhase::Running,
        PrebuildPhase::Stopping,
        PrebuildPhase::Snapshotting,
        PrebuildPhase::Completed,
    ];
    let positions: Vec<usize> = seen.iter().map(|p| order.iter().position(|o| o == p).expect("only lifecycle phases")).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "phases in lifecycle order: {seen:?}");
    let status = done.status.as_ref().unwrap();
    assert!(prebuildd::validate::is_uuid(&status.environment_id));
    assert!(status.completion_time.is_some());
    assert_eq!((status.snapshot_size_bytes, status.snapshot_completion_percentage), (4096, 100));
    assert!(status.status_version >= seen.len() as u64, "every status change bumps the version");
    assert_eq!(status.failure_message, "");
    assert_eq!(done.spec.as_ref().unwrap().spec_version, 1, "the reconciler changes status, not spec");
    assert!(instant(&done.metadata.as_ref().unwrap().updated_at) > instant(&done.metadata.as_ref().unwrap().created_at));

    let log = read_log(&server, &mut client, &created.id).await;
    assert!(log.contains("starting in environment") && log.contains("[simulated] completed"), "{log}");
}

#[tokio::test]
async fn failures_and_warnings_are_reported() {
    let server = TestServer::start_with(default_config()).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let failing = create_prebuild(&mut client, FAIL).await;
    let warning = create_prebuild(&mut client, WARN).await;
    let (failed, _) = wait_phase(&mut client, &failing.id, PrebuildPhase::Failed).await;
    let status = failed.status.unwrap();
    assert!(status.failure_message.contains("exited with code 1"), "{}", status.failure_message);
    assert!(status.completion_time.is_some());
    let (warned, _) = wait_phase(&mut client, &warning.id, PrebuildPhase::Completed).await;
    assert!(warned.status.unwrap().warning_message.contains("devcontainer"));
    assert!(read_log(&server, &mut client, &failing.id).await.contains("failed"));
}

#[tokio::test]
async fn cancel_stops_a_running_prebuild() {
    let server = TestServer::start_with(default_config()).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let hanging = create_prebuild(&mut client, HANG).await;
    wait_phase(&mut client, &hanging.id, PrebuildPhase::Running).await;
    let cancelling =
        client.cancel_prebuild(CancelPrebuildRequest { prebuild_id: hanging.id.clone() }).await.unwrap().into_inner().prebuild.unwrap();
    assert_eq!(phase(&cancelling), PrebuildPhase::Cancelling);
    let (cancelled, _) = wait_phase(&mut client, &hanging.id, PrebuildPhase::Cancelled).await;
    assert!(cancelled.status.unwrap().completion_time.is_some());
    assert!(read_log(&server, &mut client, &hanging.id).await.contains("[simulated] stopped"));
}

#[tokio::test]
async fn the_timeout_fails_a_prebuild_that_runs_too_long() {
    let server = TestServer::start_with(default_config()).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let hanging = create_prebuild(&mut client, HANG).await;
    wait_phase(&mut client, &hanging.id, PrebuildPhase::Running).await;
    server.clock.advance(Duration::from_secs(301));
    let (failed, _) = wait_phase(&mut client, &hanging.id, PrebuildPhase::Failed).await;
    let message = failed.status.unwrap().failure_message;
    assert!(message.contains("timed out") && message.contains("5m"), "says it timed out and after how long: {message}");
}

/// With a 30 s interval no tick comes during the test: every phase change
/// after the create is seen because the runner says so.
#[tokio::test]
async fn runner_events_move_a_prebuild_without_waiting_for_the_interval() {
    let server =
        TestServer::start_with(config("50ms", "", &[CLASS_SMALL], false).replace("interval = \"40ms\"", "interval = \"30s\"")).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    // The pass at start is over: from here on only wake-ups make passes.
    server.reconcile_once().await;
    let started = Instant::now();
    let created = create_prebuild(&mut client, OK).await;
    let (done, seen) = wait_phase(&mut client, &created.id, PrebuildPhase::Completed).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "completed after {took:?}; phases seen: {seen:?}");
    assert_eq!(done.status.unwrap().snapshot_size_bytes, 4096);
    // A failure in RUNNING, and a cancel of a hanging one, end as fast.
    let failing = create_prebuild(&mut client, FAIL).await;
    let (failed, _) = wait_phase(&mut client, &failing.id, PrebuildPhase::Failed).await;
    assert!(failed.status.unwrap().failure_message.contains("simulated failure"));
    let hanging = create_prebuild(&mut client, HANG).await;
    wait_phase(&mut client, &hanging.id, PrebuildPhase::Running).await;
    client.cancel_prebuild(CancelPrebuildRequest { prebuild_id: hanging.id.clone() }).await.unwrap();
    wait_phase(&mut client, &hanging.id, PrebuildPhase::Cancelled).await;
    assert!(started.elapsed() < Duration::from_secs(4), "all three within seconds, not ticks: {:?}", started.elapsed());

    // The runner takes two at a time: the two that queue start as soon as
    // the first two end, in the pass that follows at once.
    let started = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(create_prebuild(&mut client, OK).await.id);
    }
    for id in &ids {
        wait_phase(&mut client, id, PrebuildPhase::Completed).await;
    }
    assert!(started.elapsed() < Duration::from_secs(3), "two rounds of four 50 ms steps, not a tick: {:?}", started.elapsed());
}

#[tokio::test]
async fn delete_removes_work_log_and_row() {
    let server = TestServer::start_with(default_config()).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let running = create_prebuild(&mut client, HANG).await;
    let completed = create_prebuild(&mut client, OK).await;
    wait_phase(&mut client, &running.id, PrebuildPhase::Running).await;
    wait_phase(&mut client, &completed.id, PrebuildPhase::Completed).await;
    let log_path = server.data_dir().join("logs").join(format!("{}.log", completed.id));
    let snapshot_path = server.data_dir().join("simulated").join("snapshots").join(format!("{}.snapshot", completed.id));
    assert!(log_path.exists() && snapshot_path.exists());
    for id in [&running.id, &completed.id] {
        client.delete_prebuild(DeletePrebuildRequest { prebuild_id: id.clone() }).await.unwrap();
    }
    for id in [&running.id, &completed.id] {
        let started = Instant::now();
        while get(&mut client, id).await.is_ok() {
            assert!(started.elapsed() < PATIENCE, "deletion never finished");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_status(get(&mut client, id).await, Code::NotFound, "not found");
    }
    assert!(!log_path.exists(), "the log goes with the prebuild");
    assert!(!snapshot_path.exists(), "the snapshot goes with the prebuild");
}

#[tokio::test]
async fn a_runner_runs_at_most_its_limit_oldest_first() {
    let server = TestServer::start_with(default_config()).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(create_prebuild(&mut client, HANG).await.id);
    }
    wait_phase(&mut client, &ids[0], PrebuildPhase::Running).await;
    wait_phase(&mut client, &ids[1], PrebuildPhase::Running).await;
    // A whole pass with the runner full starts nothing more.
    server.reconcile_once().await;
    for id in &ids[2..] {
        assert_eq!(phase(&get(&mut client, id).await.unwrap()), PrebuildPhase::Pending, "queued while the runner is full");
    }
    client.cancel_prebuild(CancelPrebuildRequest { prebuild_id: ids[0].clone() }).await.unwrap();
    wait_phase(&mut client, &ids[2], PrebuildPhase::Running).await;
    assert_eq!(phase(&get(&mut client, &ids[3]).await.unwrap()), PrebuildPhase::Pending, "the oldest waiting one went first");
}

#[tokio::test]
async fn a_restart_in_the_middle_resumes_the_prebuild() {
    let mut server = TestServer::start_with(config("250ms", "", &[CLASS_SMALL], false)).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let created = create_prebuild(&mut client, OK).await;
    let (running, _) = wait_phase(&mut client, &created.id, PrebuildPhase::Running).await;
    server.restart().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let (done, _) = wait_phase(&mut client, &created.id, PrebuildPhase::Completed).await;
    assert_eq!(done.status.as_ref().unwrap().environment_id, running.status.unwrap().environment_id, "resumed in its environment");
    assert!(read_log(&server, &mut client, &created.id).await.contains("starting it again"));
}

#[tokio::test]
async fn logs_stream_live_and_need_the_right_token() {
    let server = TestServer::start_with(default_config()).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let hanging = create_prebuild(&mut client, HANG).await;
    let other = create_prebuild(&mut client, OK).await;
    wait_phase(&mut client, &hanging.id, PrebuildPhase::Running).await;
    let token = client
        .create_prebuild_logs_token(CreatePrebuildLogsTokenRequest { prebuild_id: hanging.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let url = format!("{}/logs/prebuilds/{}", server.base_url(), hanging.id);

    let mut response = reqwest::Client::new().get(format!("{url}?access_token={token}")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let first = tokio::time::timeout(PATIENCE, response.chunk()).await.expect("live lines arrive").unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("starting"), "{first:?}");
    client.cancel_prebuild(CancelPrebuildRequest { prebuild_id: hanging.id.clone() }).await.unwrap();
    let rest = tokio::time::timeout(PATIENCE, response.text()).await.expect("the stream ends when the prebuild does").unwrap();
    assert!(rest.contains("[simulated] stopped"), "{rest}");

    let other_url = format!("{}/logs/prebuilds/{}", server.base_url(), other.id);
    for (url, token) in [(other_url.as_str(), Some(token.as_str())), (url.as_str(), None), (url.as_str(), Some("forged"))] {
        let mut request = reqwest::Client::new().get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{url} {token:?}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "unauthenticated");
    }
}

async fn claims_client(
    server: &TestServer,
) -> WarmPoolInstanceServiceClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>> {
    WarmPoolInstanceServiceClient::with_interceptor(server.channel().await, bearer(TOKEN_A))
}

async fn wait_pool(client: &mut Client, id: &str, check: impl Fn(&WarmPool) -> bool) -> WarmPool {
    let started = Instant::now();
    loop {
        let pool = client.get_warm_pool(GetWarmPoolRequest { warm_pool_id: id.into() }).await.unwrap().into_inner().warm_pool.unwrap();
        if check(&pool) {
            return pool;
        }
        assert!(started.elapsed() < PATIENCE, "warm pool never got there: {pool:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn pool_phase(pool: &WarmPool) -> WarmPoolPhase {
    WarmPoolPhase::try_from(pool.status.as_ref().unwrap().phase).unwrap()
}

#[tokio::test]
async fn warm_pools_follow_the_newest_snapshot_and_hand_out_instances() {
    let server = TestServer::start_with(default_config()).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let mut claims = claims_client(&server).await;
    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest {
            project_id: OK.into(),
            environment_class_id: CLASS_SMALL.into(),
            min_size: Some(1),
            max_size: Some(3),
            ..Default::default()
        },
    )
    .await;
    server.reconcile_once().await;
    let waiting = client.get_warm_pool(GetWarmPoolRequest { warm_pool_id: pool.id.clone() }).await.unwrap().into_inner().warm_pool.unwrap();
    assert_eq!(pool_phase(&waiting), WarmPoolPhase::Pending, "no snapshot yet");
    assert_status(
        claims.claim_instance(ClaimInstanceRequest { warm_pool_id: pool.id.clone(), wait: None }).await,
        Code::Unavailable,
        "no warm instance is ready",
    );

    let first = create_prebuild(&mut client, OK).await;
    wait_phase(&mut client, &first.id, PrebuildPhase::Completed).await;
    let ready = wait_pool(&mut client, &pool.id, |p| pool_phase(p) == WarmPoolPhase::Ready).await;
    assert_eq!(ready.spec.as_ref().unwrap().snapshot_id.as_deref(), Some(first.id.as_str()));
    let status = ready.status.as_ref().unwrap();
    assert!(status.running_instances >= status.desired_size && status.desired_size >= 1);
    assert_eq!(status.running_instances + status.stopped_instances, 3, "stopped instances fill up to max_size");

    let claimed = claims
        .claim_instance(ClaimInstanceRequest { warm_pool_id: pool.id.clone(), wait: None })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert_eq!(claimed.snapshot_id, first.id);
    assert_eq!(claimed.warm_pool_id, pool.id);
    assert!(!claimed.workspace_path.is_empty() && claimed.claimed_at.is_some());

    let second = create_prebuild(&mut client, OK).await;
    wait_phase(&mut client, &second.id, PrebuildPhase::Completed).await;
    let rotated = wait_pool(&mut client, &pool.id, |p| {
        p.spec.as_ref().unwrap().snapshot_id.as_deref() == Some(second.id.as_str()) && pool_phase(p) == WarmPoolPhase::Ready
    })
    .await;
    assert!(
        rotated.spec.as_ref().unwrap().spec_version > ready.spec.as_ref().unwrap().spec_version,
        "the snapshot is spec: its change bumps specVersion"
    );
    let claimed = claims
        .claim_instance(ClaimInstanceRequest { warm_pool_id: pool.id.clone(), wait: None })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert_eq!(claimed.snapshot_id, second.id, "claims hand out the newest snapshot");

    client.delete_warm_pool(DeleteWarmPoolRequest { warm_pool_id: pool.id.clone() }).await.unwrap();
    let started = Instant::now();
    while client.get_warm_pool(GetWarmPoolRequest { warm_pool_id: pool.id.clone() }).await.is_ok() {
        assert!(started.elapsed() < PATIENCE, "the pool was never removed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn pools_scale_with_demand_and_to_zero() {
    let server = TestServer::start_with(default_config()).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let mut claims = claims_client(&server).await;
    let prebuild = create_prebuild(&mut client, OK).await;
    wait_phase(&mut client, &prebuild.id, PrebuildPhase::Completed).await;
    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest {
            project_id: OK.into(),
            environment_class_id: CLASS_SMALL.into(),
            min_size: Some(0),
            max_size: Some(3),
            ..Default::default()
        },
    )
    .await;
    let idle = wait_pool(&mut client, &pool.id, |p| pool_phase(p) == WarmPoolPhase::Ready).await;
    assert_eq!(
        (idle.status.as_ref().unwrap().desired_size, idle.status.as_ref().unwrap().running_instances),
        (0, 0),
        "min_size 0: scaled to zero"
    );
    // A claim that may not wait gets nothing from a pool at zero, but its
    // demand counts: the pool grows.
    let at_once = Some(pbjson_types::Duration { seconds: 0, nanos: 0 });
    assert_status(
        claims.claim_instance(ClaimInstanceRequest { warm_pool_id: pool.id.clone(), wait: at_once }).await,
        Code::Unavailable,
        "ready",
    );
    let grown = wait_pool(&mut client, &pool.id, |p| p.status.as_ref().unwrap().running_instances >= 1).await;
    assert_eq!(grown.status.as_ref().unwrap().desired_size, 1, "one claim of demand: one running instance");
    claims.claim_instance(ClaimInstanceRequest { warm_pool_id: pool.id.clone(), wait: None }).await.expect("the pool grew with demand");
    wait_pool(&mut client, &pool.id, |p| p.status.as_ref().unwrap().desired_size == 2).await;
    // A claim that waits (the default) rides the pool's growth: it is
    // answered with the instance its own demand made.
    let idle_again = wait_pool(&mut client, &pool.id, |p| p.status.as_ref().unwrap().running_instances == 2).await;
    assert_eq!(idle_again.status.unwrap().desired_size, 2);
    for _ in 0..2 {
        claims.claim_instance(ClaimInstanceRequest { warm_pool_id: pool.id.clone(), wait: None }).await.expect("a ready one");
    }
    let started = Instant::now();
    let waited = claims.claim_instance(ClaimInstanceRequest { warm_pool_id: pool.id.clone(), wait: None }).await.expect("one made for it");
    assert!(waited.into_inner().instance.is_some());
    assert!(started.elapsed() < PATIENCE, "{:?}", started.elapsed());
}

#[tokio::test]
async fn pools_go_when_the_project_stops_allowing_them() {
    let mut server = TestServer::start_with(default_config()).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let large = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest { project_id: OK.into(), environment_class_id: CLASS_LARGE.into(), ..Default::default() },
    )
    .await;
    let small = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest { project_id: OK.into(), environment_class_id: CLASS_SMALL.into(), ..Default::default() },
    )
    .await;
    server.reload(config("60ms", "", &[CLASS_SMALL], false));
    let started = Instant::now();
    while client.get_warm_pool(GetWarmPoolRequest { warm_pool_id: large.id.clone() }).await.is_ok() {
        assert!(started.elapsed() < PATIENCE, "the pool of the dropped class was never deleted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client.get_warm_pool(GetWarmPoolRequest { warm_pool_id: small.id.clone() }).await.expect("the listed class keeps its pool");
}

#[tokio::test]
async fn schedules_make_one_prebuild_per_class_per_day_across_restarts() {
    let mut server = TestServer::start_with(config("60ms", "", &[CLASS_SMALL], true)).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let scheduled = |client: &mut Client| {
        let request = ListPrebuildsRequest {
            pagination: None,
            filter: Some(list_prebuilds_request::Filter {
                project_ids: vec![SCHEDULED.into()],
                triggered_by: vec![PrebuildTrigger::Scheduled as i32],
                ..Default::default()
            }),
        };
        let mut client = client.clone();
        async move { client.list_prebuilds(request).await.unwrap().into_inner().prebuilds }
    };
    let started = Instant::now();
    let mut found = scheduled(&mut client).await;
    while found.is_empty() {
        assert!(started.elapsed() < PATIENCE, "no scheduled prebuild was made");
        tokio::time::sleep(Duration::from_millis(20)).await;
        found = scheduled(&mut client).await;
    }
    assert_eq!(found.len(), 1, "one per listed class");
    let metadata = found[0].metadata.as_ref().unwrap();
    assert_eq!(metadata.creator.as_ref().unwrap().id, EXECUTOR, "scheduled prebuilds are created by the executor");
    assert_eq!(metadata.executor, metadata.creator);
    server.restart().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    server.reconcile_once().await;
    assert_eq!(scheduled(&mut client).await.len(), 1, "still exactly one today after a restart");
}

#[tokio::test]
async fn retention_deletes_old_finished_prebuilds_but_not_a_pools_snapshot() {
    let server = TestServer::start_with(config("30ms", "[retention]\ncompleted = \"1h\"\nfailed = \"1h\"", &[CLASS_SMALL], false)).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let kept_for_pool = create_prebuild(&mut client, OK).await;
    wait_phase(&mut client, &kept_for_pool.id, PrebuildPhase::Completed).await;
    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest { project_id: OK.into(), environment_class_id: CLASS_SMALL.into(), ..Default::default() },
    )
    .await;
    assert_eq!(pool.spec.unwrap().snapshot_id.as_deref(), Some(kept_for_pool.id.as_str()));
    let failed = create_prebuild(&mut client, FAIL).await;
    wait_phase(&mut client, &failed.id, PrebuildPhase::Failed).await;
    let recent = create_prebuild(&mut client, WARN).await;

    server.clock.advance(Duration::from_secs(2 * 3600));
    let started = Instant::now();
    while get(&mut client, &failed.id).await.is_ok() {
        assert!(started.elapsed() < PATIENCE, "the expired failed prebuild was never deleted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    get(&mut client, &kept_for_pool.id).await.expect("the pool's current snapshot is kept");
    get(&mut client, &recent.id).await.expect("a prebuild that finished after the cutoff is kept");
}
