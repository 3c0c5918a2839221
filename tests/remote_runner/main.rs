//! Remote runners as they are deployed: `prebuildd serve` with a
//! `kind = "remote"` runner, and `prebuildd runner` processes with their own
//! data dirs connecting to it. Prebuilds wait for their runner, complete with
//! their log on the server, pools fill and hand out instances, a runner
//! killed with SIGKILL is adopted again, wrong credentials get no work, and
//! a runner that stays away fails its work.

#![allow(deprecated)]

#[path = "../common/mod.rs"]
mod common;
mod fleet;
mod harness;
#[allow(dead_code)]
#[path = "../robustness/process.rs"]
mod process;
mod replicas;

use common::*;
use harness::*;
use prebuildd::proto::gitpod::v1::*;
use prebuildd::proto::prebuildd::v1::warm_pool_instance_service_client::WarmPoolInstanceServiceClient;
use prebuildd::proto::prebuildd::v1::ClaimInstanceRequest;
use process::Workspace;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prebuild_waits_for_its_runner_then_completes_with_its_log_on_the_server() {
    let workspace = Workspace::new(&server_config("60s"));
    let server = workspace.start().await;
    let mut client = server.client(TOKEN_A).await;

    let prebuild = create_prebuild(&mut client, PROJECT_BACKEND).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(phase(&get_prebuild(&mut client, &prebuild.id).await), PrebuildPhase::Pending, "no runner connected: the prebuild waits");

    let runner_dir = tempfile::tempdir().unwrap();
    let runner = RunnerProcess::start(&server.base_url(), RUNNER_TOKEN, &runner_dir.path().join("data"), "100ms");
    let context = || format!("runner log:\n{}\nserver log:\n{}", runner.log_text(), server.log_text());
    let done = wait_phase(&mut client, &prebuild.id, PrebuildPhase::Completed, context).await;
    let status = done.status.unwrap();
    assert!(status.snapshot_size_bytes > 0, "the runner's snapshot size is reported: {status:?}");

    let log = read_log(&server.base_url(), &mut client, &prebuild.id).await;
    assert!(log.contains("starting in environment"), "the server's own lines: {log}");
    for line in ["running the prebuild lifecycle", "writing the snapshot", "completed"] {
        assert!(log.contains(line), "the runner's lines reached the server's log ({line}): {log}");
    }

    assert!(listening_ports(runner.pid()).is_empty(), "the runner listens on no port: {:?}", listening_ports(runner.pid()));
    assert!(!listening_ports(std::process::id()).contains(&0), "the port check reads /proc");
}

/// With a 30 s interval on the server, what moves a prebuild is the
/// runner's engine events (reported at once over the stream) and the
/// reports waking the server's reconciler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runners_reports_move_its_prebuilds_without_waiting_for_the_interval() {
    let config = server_config("60s").replace("interval = \"100ms\"", "interval = \"30s\"");
    assert!(config.contains("interval = \"30s\""), "the config edit applied");
    let workspace = Workspace::new(&config);
    let server = workspace.start().await;
    let mut client = server.client(TOKEN_A).await;
    let runner_dir = tempfile::tempdir().unwrap();
    let runner = RunnerProcess::start(&server.base_url(), RUNNER_TOKEN, &runner_dir.path().join("data"), "50ms");
    let context = || format!("runner log:\n{}\nserver log:\n{}", runner.log_text(), server.log_text());
    // The first one waits for the runner to connect (its hello wakes the
    // reconciler too).
    let first = create_prebuild(&mut client, PROJECT_BACKEND).await;
    wait_phase(&mut client, &first.id, PrebuildPhase::Completed, context).await;
    let started = std::time::Instant::now();
    let second = create_prebuild(&mut client, PROJECT_BACKEND).await;
    wait_phase(&mut client, &second.id, PrebuildPhase::Completed, context).await;
    assert!(started.elapsed() < Duration::from_secs(2), "completed after {:?}, not at a tick", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_on_the_remote_runner_becomes_ready_and_a_claim_is_answered_by_the_runner() {
    let workspace = Workspace::new(&server_config("60s"));
    let server = workspace.start().await;
    let mut client = server.client(TOKEN_A).await;
    let runner_dir = tempfile::tempdir().unwrap();
    let runner = RunnerProcess::start(&server.base_url(), RUNNER_TOKEN, &runner_dir.path().join("data"), "50ms");
    let context = || format!("runner log:\n{}\nserver log:\n{}", runner.log_text(), server.log_text());

    let snapshot = create_prebuild(&mut client, PROJECT_BACKEND).await;
    wait_phase(&mut client, &snapshot.id, PrebuildPhase::Completed, context).await;
    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest {
            project_id: PROJECT_BACKEND.into(),
            environment_class_id: CLASS_SMALL.into(),
            min_size: Some(1),
            max_size: Some(2),
            ..Default::default()
        },
    )
    .await;
    let ready = |p: &WarmPool| {
        let status = p.status.clone().unwrap_or_default();
        status.phase == WarmPoolPhase::Ready as i32 && status.running_instances == 1 && status.stopped_instances == 1
    };
    wait_pool(&mut client, &pool.id, ready, context).await;

    let channel = tonic::transport::Channel::from_shared(server.base_url()).unwrap().connect().await.unwrap();
    let mut claims = WarmPoolInstanceServiceClient::with_interceptor(channel, bearer(TOKEN_A));
    let instance = claims
        .claim_instance(ClaimInstanceRequest { warm_pool_id: pool.id.clone(), wait: None })
        .await
        .unwrap_or_else(|status| panic!("the claim failed: {status:?}\n{}", context()))
        .into_inner()
        .instance
        .unwrap();
    assert_eq!(instance.snapshot_id, snapshot.id);
    assert!(!instance.id.is_empty());
    // The claim triggers a backfill on the runner: another instance is
    // handed out once it is running (until then: unavailable, retry).
    let started = std::time::Instant::now();
    let second = loop {
        match claims.claim_instance(ClaimInstanceRequest { warm_pool_id: pool.id.clone(), wait: None }).await {
            Ok(response) => break response.into_inner().instance.unwrap(),
            Err(status) if status.code() == tonic::Code::Unavailable && started.elapsed() < PATIENCE => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(status) => panic!("the second claim failed: {status:?}\n{}", context()),
        }
    };
    assert_ne!(second.id, instance.id, "every claim hands out another instance");
    // Backfilled again (claims may raise the desired size up to max_size).
    let backfilled = |p: &WarmPool| p.status.as_ref().is_some_and(|s| s.phase == WarmPoolPhase::Ready as i32 && s.running_instances >= 1);
    wait_pool(&mut client, &pool.id, backfilled, context).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_of_the_runner_and_a_restart_a_cancel_is_obeyed_and_new_work_completes() {
    let workspace = Workspace::new(&server_config("60s"));
    let server = workspace.start().await;
    let mut client = server.client(TOKEN_A).await;
    let runner_dir = tempfile::tempdir().unwrap();
    let data = runner_dir.path().join("data");
    let mut runner = RunnerProcess::start(&server.base_url(), RUNNER_TOKEN, &data, "100ms");

    let hanging = create_prebuild(&mut client, PROJECT_FRONTEND).await;
    wait_phase(&mut client, &hanging.id, PrebuildPhase::Running, || runner.log_text()).await;
    let before = runner.log_text();
    runner.kill9();

    // While the runner is away (within its grace period) nothing fails.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(phase(&get_prebuild(&mut client, &hanging.id).await), PrebuildPhase::Running, "the runner was killed:\n{before}");

    let runner = RunnerProcess::start(&server.base_url(), RUNNER_TOKEN, &data, "100ms");
    runner.wait_connected().await;
    let context = || format!("runner log:\n{}\nserver log:\n{}", runner.log_text(), server.log_text());
    // The restarted runner lost the job; the server starts it again there.
    let started = std::time::Instant::now();
    while !server.log_text().contains("runner connected") || !runner_log_file(&data, &hanging.id).exists() {
        assert!(started.elapsed() < PATIENCE, "the job never reached the restarted runner\n{}", context());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_phase(&mut client, &hanging.id, PrebuildPhase::Running, context).await;

    client.cancel_prebuild(CancelPrebuildRequest { prebuild_id: hanging.id.clone() }).await.expect("cancel");
    wait_phase(&mut client, &hanging.id, PrebuildPhase::Cancelled, context).await;
    // Obeyed on the runner: the job is removed there, its local log with it.
    let started = std::time::Instant::now();
    while runner_log_file(&data, &hanging.id).exists() {
        assert!(started.elapsed() < PATIENCE, "the runner never removed the cancelled job\n{}", context());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let fresh = create_prebuild(&mut client, PROJECT_BACKEND).await;
    wait_phase(&mut client, &fresh.id, PrebuildPhase::Completed, context).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_and_a_users_key_get_no_work_and_the_runner_says_why() {
    let workspace = Workspace::new(&server_config("60s"));
    let server = workspace.start().await;
    let mut client = server.client(TOKEN_A).await;
    let prebuild = create_prebuild(&mut client, PROJECT_BACKEND).await;
    let runner_dir = tempfile::tempdir().unwrap();

    for (token, says) in [("not-the-runner-token", "unauthenticated"), (TOKEN_A, "permission_denied")] {
        let mut runner = RunnerProcess::start(&server.base_url(), token, &runner_dir.path().join("data"), "50ms");
        let status = runner.wait_exit(PATIENCE).await.unwrap_or_else(|| panic!("the runner gave up on {token}: {}", runner.log_text()));
        assert!(!status.success(), "refused credentials are an error exit");
        let log = runner.log_text();
        assert!(log.contains("the server refused this runner") && log.contains(says), "the runner says why ({says}):\n{log}");
    }
    assert_eq!(phase(&get_prebuild(&mut client, &prebuild.id).await), PrebuildPhase::Pending, "no work went anywhere");
    assert!(!runner_log_file(&runner_dir.path().join("data"), &prebuild.id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_away_past_its_grace_period_fails_its_prebuilds_and_degrades_its_pools() {
    let workspace = Workspace::new(&server_config("2s"));
    let server = workspace.start().await;
    let mut client = server.client(TOKEN_A).await;
    let runner_dir = tempfile::tempdir().unwrap();
    let mut runner = RunnerProcess::start(&server.base_url(), RUNNER_TOKEN, &runner_dir.path().join("data"), "50ms");
    let context = || String::new();

    let snapshot = create_prebuild(&mut client, PROJECT_BACKEND).await;
    wait_phase(&mut client, &snapshot.id, PrebuildPhase::Completed, context).await;
    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest {
            project_id: PROJECT_BACKEND.into(),
            environment_class_id: CLASS_SMALL.into(),
            min_size: Some(1),
            max_size: Some(1),
            ..Default::default()
        },
    )
    .await;
    wait_pool(&mut client, &pool.id, |p| p.status.as_ref().is_some_and(|s| s.phase == WarmPoolPhase::Ready as i32), context).await;
    let hanging = create_prebuild(&mut client, PROJECT_FRONTEND).await;
    wait_phase(&mut client, &hanging.id, PrebuildPhase::Running, context).await;

    runner.kill9();
    let failed = wait_phase(&mut client, &hanging.id, PrebuildPhase::Failed, || server.log_text()).await;
    let message = failed.status.unwrap().failure_message;
    assert!(message.contains(RUNNER) && message.contains("grace period"), "the failure names the runner: {message}");
    let degraded =
        wait_pool(&mut client, &pool.id, |p| p.status.as_ref().is_some_and(|s| s.phase == WarmPoolPhase::Degraded as i32), context).await;
    let message = degraded.status.unwrap().failure_message;
    assert!(message.contains(RUNNER), "the pool's failure names the runner: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_of_the_server_the_reconnected_runner_keeps_its_job() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = server_config("60s").replacen("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""), 1);
    let workspace = Workspace::new(&config);
    let mut server = workspace.start().await;
    let mut client = server.client(TOKEN_A).await;
    let runner_dir = tempfile::tempdir().unwrap();
    let data = runner_dir.path().join("data");
    let runner = RunnerProcess::start(&server.base_url(), RUNNER_TOKEN, &data, "100ms");
    let hanging = create_prebuild(&mut client, PROJECT_FRONTEND).await;
    wait_phase(&mut client, &hanging.id, PrebuildPhase::Running, || runner.log_text()).await;

    server.kill9();
    drop(server);
    let server = workspace.start().await;
    let mut client = server.client(TOKEN_A).await;
    let context = || format!("runner log:\n{}\nserver log:\n{}", runner.log_text(), server.log_text());
    let started = std::time::Instant::now();
    while !server.log_text().contains("runner connected") {
        assert!(started.elapsed() < PATIENCE, "the runner never reconnected\n{}", context());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Adopted from the runner's hello: still running, never started again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(phase(&get_prebuild(&mut client, &hanging.id).await), PrebuildPhase::Running, "{}", context());
    let log = read_log_so_far(&server.base_url(), &mut client, &hanging.id).await;
    assert!(!log.contains("lost this prebuild"), "the job was adopted, not started again: {log}");

    client.cancel_prebuild(CancelPrebuildRequest { prebuild_id: hanging.id.clone() }).await.expect("cancel");
    wait_phase(&mut client, &hanging.id, PrebuildPhase::Cancelled, context).await;
    let started = std::time::Instant::now();
    while runner_log_file(&data, &hanging.id).exists() {
        assert!(started.elapsed() < PATIENCE, "the runner never removed the cancelled job\n{}", context());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_runner_does_not_hold_up_a_graceful_shutdown() {
    let workspace = Workspace::new(&server_config("60s"));
    let mut server = workspace.start().await;
    let runner_dir = tempfile::tempdir().unwrap();
    let runner = RunnerProcess::start(&server.base_url(), RUNNER_TOKEN, &runner_dir.path().join("data"), "100ms");
    runner.wait_connected().await;
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(10)).await;
    let status = status.unwrap_or_else(|| panic!("the server still runs 10 s after SIGTERM; log:\n{}", server.log_text()));
    assert!(status.success(), "{status:?}");
    // The runner stays up and tries again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(runner.log_text().contains("reconnecting") || runner.log_text().contains("retrying"), "{}", runner.log_text());
}
