//! A fleet of two `prebuildd runner` members with one runner ID, each with a
//! docker engine on its own daemon (the first daemon, and a second one the
//! test starts as the second machine), sharing snapshots through a real
//! registry (Debian's docker-registry on a loopback port, deletes on).
//!
//! A completed snapshot is in the registry under the digest the server
//! recorded (COMPLETED means pushed), and tagged `<class id>-latest`; a
//! pool of four spreads over both members, the second making its instances
//! from the image it pulled by that digest; `docker run` of the `-latest`
//! tag on a daemon starts the prebuilt environment with the lifecycle's
//! files; the member that built is killed (SIGKILL): within its grace
//! period and a few seconds the pool is four on the other, and a prebuild
//! it was running completes on the other; a claim hands out an instance of
//! the member that had to pull; deleting the prebuild deletes its manifest
//! (the registry answers 404) and its images on the members.

use super::harness::*;
use super::registry::Registry;
use super::second_daemon::SecondDaemon;
use crate::common::runner_process::RunnerProcess;
use crate::common::*;
use prebuildd::proto::gitpod::v1::*;
use prebuildd::proto::prebuildd::v1::catalog_service_client::CatalogServiceClient;
use prebuildd::proto::prebuildd::v1::prebuild_source_service_client::PrebuildSourceServiceClient;
use prebuildd::proto::prebuildd::v1::warm_pool_instance_service_client::WarmPoolInstanceServiceClient;
use prebuildd::proto::prebuildd::v1::{ClaimInstanceRequest, ListPrebuildSourcesRequest, ListRunnersRequest, RunnerMember};
use std::path::Path;
use std::time::{Duration, Instant};

const PROJECT: &str = "d0c0e000-0000-4000-8000-000000000051";
const SLOW_PROJECT: &str = "d0c0e000-0000-4000-8000-000000000052";
const TOKEN: &str = "fleet-docker-runner-token";
const GRACE: Duration = Duration::from_secs(5);

/// The server's configuration: the world's docker runner made remote, and
/// a second project beside the first.
fn server_config(world: &World, repo: &Path, slow_repo: &Path) -> String {
    let docker = world.config(&[(PROJECT, repo), (SLOW_PROJECT, slow_repo)]);
    let start = docker.find("kind = \"docker\"").expect("the docker runner entry");
    let end = docker[start..].find("[[environment_classes]]").expect("a class after it") + start;
    format!("{}kind = \"remote\"\ntoken = \"{TOKEN}\"\ndisconnect_grace = \"{}s\"\n{}", &docker[..start], GRACE.as_secs(), &docker[end..])
}

/// A member's `[engine]`: docker, pushing to the registry.
fn engine(world: &World, registry: &Registry, root: &str, extra: &str) -> String {
    format!(
        "kind = \"docker\"\ndevcontainer_cli = \"{}\"\ndocker_cli = \"{}\"\ndefault_image = \"{BASE_IMAGE}\"\nroot = \"{}\"\nregistry = \"{}/prebuilds\"\n{extra}",
        devcontainer_cli().display(),
        docker_cli().display(),
        world.dir.path().join(root).display(),
        registry.host()
    )
}

async fn members(server: &TestServer) -> Vec<RunnerMember> {
    let mut catalog = CatalogServiceClient::with_interceptor(server.channel().await, bearer(TOKEN_A));
    let runners = catalog.list_runners(ListRunnersRequest {}).await.expect("ListRunners").into_inner().runners;
    runners.into_iter().flat_map(|runner| runner.members).collect()
}

async fn members_until(server: &TestServer, what: &str, check: impl Fn(&[RunnerMember]) -> bool) -> Vec<RunnerMember> {
    let started = Instant::now();
    loop {
        let listed = members(server).await;
        if check(&listed) {
            return listed;
        }
        assert!(started.elapsed() < PATIENCE, "the members never showed {what}: {listed:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn member<'a>(listed: &'a [RunnerMember], name: &str) -> Option<&'a RunnerMember> {
    listed.iter().find(|m| m.name == name)
}

/// The digest reference the server recorded for a prebuild's snapshot.
async fn snapshot_image(server: &TestServer, prebuild_id: &str) -> String {
    let mut sources = PrebuildSourceServiceClient::with_interceptor(server.channel().await, bearer(TOKEN_A));
    let answer = sources
        .list_prebuild_sources(ListPrebuildSourcesRequest { prebuild_ids: vec![prebuild_id.to_string()] })
        .await
        .expect("ListPrebuildSources")
        .into_inner();
    answer.sources.first().map(|s| s.snapshot_image.clone()).unwrap_or_default()
}

/// The registry's answer for a manifest (by digest or tag): its status and
/// the digest it names.
async fn manifest(registry: &Registry, path: &str, reference: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/v2/{path}/manifests/{reference}", registry.port))
        .header("accept", "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .expect("the registry answers");
    let digest = response.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    (response.status().as_u16(), digest)
}

#[tokio::test]
async fn a_fleet_on_two_daemons_shares_snapshots_through_a_registry() {
    let world = World::new();
    let registry = Registry::start();
    // Declared before the members: dropped after them.
    let second = SecondDaemon::start(&[BASE_IMAGE]);
    let repo = world.dir.path().join("fleet-repo");
    repository(
        &repo,
        &[(
            ".devcontainer/devcontainer.json",
            &format!(r#"{{ "image": "{BASE_IMAGE}", "onCreateCommand": "echo made-by-the-lifecycle > lifecycle.txt" }}"#),
        )],
    );
    let slow_repo = world.dir.path().join("slow-repo");
    repository(
        &slow_repo,
        &[(
            ".devcontainer/devcontainer.json",
            &format!(r#"{{ "image": "{BASE_IMAGE}", "onCreateCommand": "sleep 15 && echo slow > slow.txt" }}"#),
        )],
    );
    let server = TestServer::start_with(server_config(&world, &repo, &slow_repo)).await;
    let (data_a, data_b) = (world.dir.path().join("data-a"), world.dir.path().join("data-b"));
    let engine_a = engine(&world, &registry, "root-a", "");
    // Two daemons on one host would claim one bridge name for the runner's
    // network (it is named after the runner, and both members are that
    // runner): the second machine's member runs without isolation here.
    let engine_b = engine(&world, &registry, "root-b", &format!("docker_host = \"{}\"\nnetwork_isolation = false\n", second.host()));
    let mut member_a = RunnerProcess::start_member(&server.base_url(), &world.runner_id, TOKEN, &data_a, &engine_a, "a");
    let member_b = RunnerProcess::start_member(&server.base_url(), &world.runner_id, TOKEN, &data_b, &engine_b, "b");
    member_a.wait_connected().await;
    member_b.wait_connected().await;
    let log_a = member_a.log_reader();
    let context = || format!("member a:\n{}\nmember b:\n{}\nsecond daemon:\n{}", log_a(), member_b.log_text(), second.log());
    members_until(&server, "a and b", |m| m.len() == 2 && m.iter().all(|m| m.connected && m.engine == "docker")).await;

    // COMPLETED means pushed: the registry has it under the recorded digest.
    let mut client = server.client(Some(TOKEN_A)).await;
    let prebuild = create_prebuild(&mut client, PROJECT).await;
    let done = wait_for(&mut client, &prebuild.id, &[PrebuildPhase::Completed, PrebuildPhase::Failed]).await;
    assert_eq!(
        done.status.as_ref().unwrap().phase,
        PrebuildPhase::Completed as i32,
        "{done:?}\n{}\nprebuild log:\n{}",
        context(),
        log_of(&server, &mut client, &prebuild.id).await
    );
    let image = snapshot_image(&server, &prebuild.id).await;
    let repository = format!("{}/prebuilds/{PROJECT}", registry.host());
    assert!(image.starts_with(&format!("{repository}@sha256:")), "recorded by digest: {image:?}");
    let digest = image.split_once('@').unwrap().1.to_string();
    let path = format!("prebuilds/{PROJECT}");
    assert_eq!(manifest(&registry, &path, &digest).await, (200, digest.clone()), "the registry has the snapshot");
    assert_eq!(manifest(&registry, &path, &prebuild.id).await, (200, digest.clone()), "tagged with the prebuild's ID");
    let latest = format!("{CLASS}-latest");
    assert_eq!(manifest(&registry, &path, &latest).await, (200, digest.clone()), "and as its class's latest");
    let log = log_of(&server, &mut client, &prebuild.id).await;
    assert!(log.contains("snapshot pushed as") && log.contains(&digest), "{log}");
    assert!(data_a.join("logs").join(format!("{}.log", prebuild.id)).exists(), "a built it (first by name, both idle)");

    // A pool of four: two on each member; b makes its two from the image
    // it pulled by digest.
    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest {
            project_id: PROJECT.into(),
            environment_class_id: CLASS.into(),
            min_size: Some(4),
            max_size: Some(4),
            ..Default::default()
        },
    )
    .await;
    let four = |p: &WarmPool| p.status.as_ref().is_some_and(|s| s.phase == WarmPoolPhase::Ready as i32 && s.running_instances == 4);
    pool_until(&mut client, &pool.id, "4 running", four).await;
    members_until(&server, "two instances each", |m| m.iter().all(|m| m.running_instances == 2)).await;
    let pool_filter = format!("label=dev.prebuildd.warm-pool-id={}", pool.id);
    let on_b = second.docker_lines(&["ps", "-q", "--no-trunc", "--filter", &pool_filter]);
    assert_eq!(on_b.len(), 2, "{}", context());
    for container in &on_b {
        assert_eq!(second.docker(&["inspect", "--format", "{{.Config.Image}}", container]), image, "made by digest");
    }
    let pulled = second.docker(&["image", "inspect", "--format", "{{json .RepoDigests}}", &image]);
    assert!(pulled.contains(&image), "the same digest was pulled: {pulled}");
    assert_eq!(world.containers(&[&pool_filter, "status=running"]).len(), 2, "two on the first daemon");

    // The prebuilt image by its -latest tag, on the second daemon: the
    // registry resolves the tag; the lifecycle's file is in the workspace.
    let folder = second.docker(&["image", "inspect", "--format", "{{index .Config.Labels \"dev.prebuildd.workspace-folder\"}}", &image]);
    // `docker run` starts it as the dev container did (its entrypoint keeps
    // it running); a shell in it finds the lifecycle's output.
    let started = second.docker(&["run", "-d", "--pull", "always", &format!("{repository}:{latest}")]);
    let said = second.docker(&["exec", &started, "cat", &format!("{folder}/lifecycle.txt")]);
    assert_eq!(said, "made-by-the-lifecycle");
    assert_eq!(second.docker(&["inspect", "--format", "{{.State.Running}}", &started]), "true", "it keeps running");
    second.docker(&["rm", "-f", "-v", &started]);

    // A slow prebuild starts on a (fewest prebuilds: both idle, a by name).
    let slow = create_prebuild(&mut client, SLOW_PROJECT).await;
    wait_for(&mut client, &slow.id, &[PrebuildPhase::Running]).await;
    assert!(data_a.join("logs").join(format!("{}.log", slow.id)).exists(), "a runs it\n{}", context());

    member_a.kill9();
    let killed = Instant::now();
    let listed = members_until(&server, "a gone and b holding four", |m| {
        member(m, "a").is_some_and(|a| a.gone) && member(m, "b").is_some_and(|b| b.running_instances == 4)
    })
    .await;
    pool_until(&mut client, &pool.id, "4 running again", four).await;
    let took = killed.elapsed();
    assert!(took < GRACE + Duration::from_secs(30), "the pool took {took:?} to be whole again: {listed:?}\n{}", context());
    let on_b = second.docker_lines(&["ps", "-q", "--no-trunc", "--filter", &pool_filter, "--filter", "status=running"]);
    assert_eq!(on_b.len(), 4, "{}", context());
    for container in &on_b {
        assert_eq!(second.docker(&["inspect", "--format", "{{.Config.Image}}", container]), image, "made by digest");
    }

    // The slow prebuild starts again on b and completes there.
    let done = wait_for(&mut client, &slow.id, &[PrebuildPhase::Completed, PrebuildPhase::Failed]).await;
    assert_eq!(done.status.as_ref().unwrap().phase, PrebuildPhase::Completed as i32, "{done:?}\n{}", context());
    let log = log_of(&server, &mut client, &slow.id).await;
    assert!(log.contains("starting it again"), "{log}");
    assert!(snapshot_image(&server, &slow.id).await.starts_with(&format!("{}/prebuilds/{SLOW_PROJECT}@sha256:", registry.host())));

    // A claim is answered by b, whose instance is from the pulled image.
    let mut claims = WarmPoolInstanceServiceClient::with_interceptor(server.channel().await, bearer(TOKEN_A));
    let instance = claims
        .claim_instance(ClaimInstanceRequest { warm_pool_id: pool.id.clone(), wait: None })
        .await
        .expect("a claim")
        .into_inner()
        .instance
        .unwrap();
    let said = second.docker(&["exec", &instance.container_id, "cat", &format!("{}/lifecycle.txt", instance.workspace_path)]);
    assert_eq!(said, "made-by-the-lifecycle");

    // Deleting the pool, then the prebuild: its manifest leaves the
    // registry, its images leave the members.
    client.delete_warm_pool(DeleteWarmPoolRequest { warm_pool_id: pool.id.clone() }).await.expect("delete the pool");
    client.delete_prebuild(DeletePrebuildRequest { prebuild_id: prebuild.id.clone() }).await.expect("delete the prebuild");
    let started = Instant::now();
    while manifest(&registry, &path, &digest).await.0 != 404 {
        assert!(started.elapsed() < PATIENCE, "the manifest is still in the registry\n{}", context());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eventually("the pool's containers leave the second daemon", || {
        second.docker_lines(&["ps", "-aq", "--filter", &pool_filter]).iter().all(|id| instance.container_id.starts_with(id.as_str()))
    })
    .await;
    // The claimed instance is its user's; once it is gone, nothing uses
    // the snapshot there.
    second.docker(&["rm", "-f", "-v", &instance.container_id]);
    let snapshot_filter = format!("label=dev.prebuildd.prebuild-id={}", prebuild.id);
    eventually("the snapshot leaves the second daemon", || second.docker_lines(&["images", "-q", "--filter", &snapshot_filter]).is_empty())
        .await;
}
