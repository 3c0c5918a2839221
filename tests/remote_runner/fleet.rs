//! Fleets: several `prebuildd runner` processes attached with one runner
//! ID and token, each under its own member name. Prebuilds and pool
//! instances spread over the members; a member killed for good hands its
//! prebuilds and its share of the pool to the other within the grace
//! period and a few seconds; a second process under a connected member's
//! name is refused (and takes over once the first is gone). The members
//! show in `CatalogService/ListRunners` and `/metrics`.

use super::harness::*;
use crate::common::*;
use prebuildd::proto::gitpod::v1::*;
use prebuildd::proto::prebuildd::v1::catalog_service_client::CatalogServiceClient;
use prebuildd::proto::prebuildd::v1::{ListRunnersRequest, RunnerMember};
use std::path::Path;
use std::time::{Duration, Instant};

const ENGINE: &str = "kind = \"simulated\"\nstep_duration = \"1s\"\n";

async fn members(server: &crate::process::Process) -> Vec<RunnerMember> {
    let channel = tonic::transport::Channel::from_shared(server.base_url()).unwrap().connect().await.unwrap();
    let mut catalog = CatalogServiceClient::with_interceptor(channel, bearer(TOKEN_A));
    let runners = catalog.list_runners(ListRunnersRequest {}).await.expect("ListRunners").into_inner().runners;
    let runner = runners.into_iter().find(|r| r.id == RUNNER).expect("the remote runner is listed");
    assert_eq!(runner.kind, "remote");
    runner.members
}

/// Waits until the members satisfy `check`.
async fn members_until(server: &crate::process::Process, what: &str, check: impl Fn(&[RunnerMember]) -> bool) -> Vec<RunnerMember> {
    let started = Instant::now();
    loop {
        let listed = members(server).await;
        if check(&listed) {
            return listed;
        }
        assert!(started.elapsed() < PATIENCE, "the members never showed {what}: {listed:?}\nserver log:\n{}", server.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn member<'a>(listed: &'a [RunnerMember], name: &str) -> Option<&'a RunnerMember> {
    listed.iter().find(|m| m.name == name)
}

async fn members_metric(server: &crate::process::Process) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", server.base_url())).await.unwrap().text().await.unwrap();
    let series = format!("prebuildd_runner_members{{runner_id=\"{RUNNER}\"}} ");
    text.lines().find_map(|line| line.strip_prefix(&series)).and_then(|value| value.trim().parse().ok())
}

/// Which of the members' data dirs holds the prebuild's local log.
fn runs_on<'a>(prebuild_id: &str, dirs: &[(&'a str, &Path)]) -> Vec<&'a str> {
    dirs.iter().filter(|(_, dir)| runner_log_file(dir, prebuild_id).exists()).map(|(name, _)| *name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_shares_prebuilds_and_a_pool_and_a_member_gone_for_good_hands_its_work_to_the_other() {
    let grace = Duration::from_secs(3);
    let workspace = crate::process::Workspace::new(&server_config("3s"));
    let server = workspace.start().await;
    let mut client = server.client(TOKEN_A).await;
    let dirs = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (dirs.path().join("a"), dirs.path().join("b"));
    let runner_a = RunnerProcess::start_member(&server.base_url(), RUNNER, RUNNER_TOKEN, &dir_a, ENGINE, "a");
    let mut runner_b = RunnerProcess::start_member(&server.base_url(), RUNNER, RUNNER_TOKEN, &dir_b, ENGINE, "b");
    runner_a.wait_connected().await;
    runner_b.wait_connected().await;
    let log_b = runner_b.log_reader();
    let context = || format!("a:\n{}\nb:\n{}\nserver:\n{}", runner_a.log_text(), log_b(), server.log_text());
    let listed = members_until(&server, "a and b connected", |m| m.len() == 2 && m.iter().all(|m| m.connected)).await;
    assert!(listed.iter().all(|m| m.engine == "simulated" && !m.version.is_empty() && m.slots == 4), "{listed:?}");

    let snapshot = create_prebuild(&mut client, PROJECT_BACKEND).await;
    wait_phase(&mut client, &snapshot.id, PrebuildPhase::Completed, context).await;
    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest {
            project_id: PROJECT_BACKEND.into(),
            environment_class_id: CLASS_SMALL.into(),
            min_size: Some(4),
            max_size: Some(4),
            ..Default::default()
        },
    )
    .await;
    let four = |p: &WarmPool| p.status.as_ref().is_some_and(|s| s.phase == WarmPoolPhase::Ready as i32 && s.running_instances == 4);
    wait_pool(&mut client, &pool.id, four, context).await;
    members_until(&server, "two instances each", |m| m.iter().all(|m| m.running_instances == 2)).await;
    let started = Instant::now();
    while members_metric(&server).await != Some(2.0) {
        assert!(started.elapsed() < PATIENCE, "prebuildd_runner_members never said 2: {:?}", members_metric(&server).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Two prebuilds at once (another class, so the pool keeps its
    // snapshot): one on each member, both having every slot free.
    let first = create_prebuild_in_class(&mut client, PROJECT_BACKEND, Some(CLASS_LARGE)).await;
    let second = create_prebuild_in_class(&mut client, PROJECT_BACKEND, Some(CLASS_LARGE)).await;
    let places = [("a", dir_a.as_path()), ("b", dir_b.as_path())];
    let started = Instant::now();
    while runs_on(&first.id, &places).len() + runs_on(&second.id, &places).len() < 2 {
        assert!(started.elapsed() < PATIENCE, "the prebuilds never reached the members\n{}", context());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut spread = [runs_on(&first.id, &places), runs_on(&second.id, &places)].concat();
    spread.sort();
    assert_eq!(spread, vec!["a", "b"], "one prebuild on each member");
    let on_b = if runs_on(&first.id, &places) == ["b"] { first.id.clone() } else { second.id.clone() };
    wait_phase(&mut client, &on_b, PrebuildPhase::Running, context).await;

    runner_b.kill9();
    let killed = Instant::now();
    // Within the grace period the pool keeps b's share for it (a restart
    // would adopt it); past it, a makes b's instances.
    let listed = members_until(&server, "b gone and a holding four", |m| {
        member(m, "b").is_some_and(|b| b.gone && !b.connected) && member(m, "a").is_some_and(|a| a.running_instances == 4)
    })
    .await;
    wait_pool(&mut client, &pool.id, four, context).await;
    let took = killed.elapsed();
    assert!(took < grace + Duration::from_secs(10), "the pool took {took:?} to be whole again: {listed:?}");
    let started = Instant::now();
    while members_metric(&server).await != Some(1.0) {
        assert!(started.elapsed() < PATIENCE, "prebuildd_runner_members never said 1: {:?}", members_metric(&server).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The prebuild b was running starts again on a and completes there.
    let done = wait_phase(&mut client, &on_b, PrebuildPhase::Completed, context).await;
    assert!(runner_log_file(&dir_a, &on_b).exists(), "a ran it");
    let log = read_log(&server.base_url(), &mut client, &on_b).await;
    assert!(log.contains("starting it again"), "its log says it started again: {log}");
    assert!(done.status.unwrap().snapshot_size_bytes > 0);
    let other = if on_b == first.id { &second.id } else { &first.id };
    wait_phase(&mut client, other, PrebuildPhase::Completed, context).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_under_a_connected_members_name_is_refused_and_takes_over_once_the_first_is_gone() {
    let workspace = crate::process::Workspace::new(&server_config("60s"));
    let server = workspace.start().await;
    let mut client = server.client(TOKEN_A).await;
    let dirs = tempfile::tempdir().unwrap();
    let (dir_1, dir_2) = (dirs.path().join("first"), dirs.path().join("second"));
    let mut first = RunnerProcess::start_member(&server.base_url(), RUNNER, RUNNER_TOKEN, &dir_1, ENGINE, "build-1");
    first.wait_connected().await;
    let second = RunnerProcess::start_member(&server.base_url(), RUNNER, RUNNER_TOKEN, &dir_2, ENGINE, "build-1");
    let log_1 = first.log_reader();
    let context = || format!("first:\n{}\nsecond:\n{}\nserver:\n{}", log_1(), second.log_text(), server.log_text());
    let started = Instant::now();
    while !second.log_text().contains("already has a connected member named") {
        assert!(started.elapsed() < PATIENCE, "the second process was never refused\n{}", context());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(second.log_text().contains("member = "), "the refusal says what to set: {}", second.log_text());

    // The first keeps its connection and gets the work; nothing is
    // duplicated on the second.
    let prebuild = create_prebuild(&mut client, PROJECT_BACKEND).await;
    wait_phase(&mut client, &prebuild.id, PrebuildPhase::Completed, context).await;
    assert!(runner_log_file(&dir_1, &prebuild.id).exists() && !runner_log_file(&dir_2, &prebuild.id).exists());
    assert_eq!(log_1().matches("connected to the server").count(), 1, "never replaced\n{}", context());
    assert!(!second.log_text().contains("connected to the server"), "{}", context());
    assert!(!server.log_text().contains("runner member disconnected"), "{}", context());
    let listed = members(&server).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].connected && listed[0].name == "build-1");

    // Once the first is gone, the second takes its place.
    first.kill9();
    second.wait_connected().await;
    let again = create_prebuild(&mut client, PROJECT_BACKEND).await;
    wait_phase(&mut client, &again.id, PrebuildPhase::Completed, context).await;
    assert!(runner_log_file(&dir_2, &again.id).exists());
}
