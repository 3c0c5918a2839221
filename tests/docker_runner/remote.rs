//! The docker runner on another machine: `prebuildd runner` with a docker
//! engine, connected to a server whose runner is remote. A prebuild runs in
//! a dev container there (the project's chosen configuration, with a
//! feature and a capability its class allows) with its log on the server;
//! a pool of containers
//! fills, survives a kill -9 of the runner (the restarted runner adopts its
//! containers by label; none is made again) and a claim through the server
//! hands out one of them.

use super::harness::*;
use crate::common::runner_process::RunnerProcess;
use crate::common::*;
use prebuildd::proto::gitpod::v1::*;
use prebuildd::proto::prebuildd::v1::warm_pool_instance_service_client::WarmPoolInstanceServiceClient;
use prebuildd::proto::prebuildd::v1::ClaimInstanceRequest;

const PROJECT: &str = "d0c0e000-0000-4000-8000-000000000041";
const TOKEN: &str = "remote-docker-runner-token";

#[tokio::test]
async fn a_remote_docker_runner_builds_fills_a_pool_and_adopts_it_after_a_kill_9() {
    let world = World::new();
    let repo = world.dir.path().join("remote-repo");
    // The configuration the project chose (not the one at the default
    // place), with a local feature and a capability its class allows: the
    // choice and the class's policy cross the wire to the runner.
    super::registry::write_feature(&repo.join(".devcontainer/remote/tool"), "tool", "tool", "");
    repository(
        &repo,
        &[
            (".devcontainer/devcontainer.json", r#"{ "image": "not-the-chosen-configuration:0" }"#),
            (
                ".devcontainer/remote/devcontainer.json",
                &format!(
                    r#"{{ "image": "{BASE_IMAGE}", "features": {{ "./tool": {{}} }}, "runArgs": ["--cap-add=SYS_PTRACE"], "onCreateCommand": "tool && echo built-remotely" }}"#
                ),
            ),
        ],
    );
    let docker_config = world
        .config(&[(PROJECT, &repo)])
        .replace("name = \"docker\"\n", "name = \"docker\"\nallow_capabilities = [\"SYS_PTRACE\"]\n")
        .replace(
            "default_environment_class_id",
            "devcontainer_path = \".devcontainer/remote/devcontainer.json\"\ndefault_environment_class_id",
        );
    let (config, engine) = remote_config(&docker_config, TOKEN);
    let server = TestServer::start_with(config).await;
    let data = world.dir.path().join("runner-data");
    let mut runner = RunnerProcess::start_with_engine(&server.base_url(), &world.runner_id, TOKEN, &data, &engine);
    runner.wait_connected().await;

    let mut client = server.client(Some(TOKEN_A)).await;
    let prebuild = create_prebuild(&mut client, PROJECT).await;
    let done = wait_for(&mut client, &prebuild.id, &[PrebuildPhase::Completed, PrebuildPhase::Failed]).await;
    assert_eq!(
        done.status.as_ref().unwrap().phase,
        PrebuildPhase::Completed as i32,
        "{done:?}\nrunner log:\n{}\nprebuild log:\n{}",
        runner.log_text(),
        log_of(&server, &mut client, &prebuild.id).await
    );
    log_shows(&server, &mut client, &prebuild.id, "built-remotely").await;
    log_shows(&server, &mut client, &prebuild.id, "hello from tool").await;
    let snapshot = docker(&["images", "-q", "--filter", &format!("label=dev.prebuildd.prebuild-id={}", prebuild.id)]);
    assert!(!snapshot.is_empty(), "the snapshot image is on the runner's Docker");

    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest {
            project_id: PROJECT.into(),
            environment_class_id: CLASS.into(),
            min_size: Some(1),
            max_size: Some(2),
            ..Default::default()
        },
    )
    .await;
    let ready = |p: &WarmPool| {
        let status = p.status.clone().unwrap_or_default();
        (status.phase, status.running_instances, status.stopped_instances) == (WarmPoolPhase::Ready as i32, 1, 1)
    };
    pool_until(&mut client, &pool.id, "1 running and 1 stopped", ready).await;
    let pool_filter = format!("label=dev.prebuildd.warm-pool-id={}", pool.id);
    let mut before = world.containers(&[&pool_filter]);
    before.sort();
    assert_eq!(before.len(), 2, "two containers on the runner's Docker");
    for container in &before {
        assert_eq!(docker(&["inspect", "--format", "{{json .HostConfig.CapAdd}}", container]), r#"["SYS_PTRACE"]"#, "as granted");
    }

    runner.kill9();
    let runner = RunnerProcess::start_with_engine(&server.base_url(), &world.runner_id, TOKEN, &data, &engine);
    runner.wait_connected().await;
    pool_until(&mut client, &pool.id, "ready after the runner's restart", ready).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let mut after = world.containers(&[&pool_filter]);
    after.sort();
    assert_eq!(after, before, "the restarted runner adopted the pool's containers; runner log:\n{}", runner.log_text());

    let mut claims = WarmPoolInstanceServiceClient::with_interceptor(server.channel().await, bearer(TOKEN_A));
    let instance = claims
        .claim_instance(ClaimInstanceRequest { warm_pool_id: pool.id.clone(), wait: None })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert!(
        before.iter().any(|id| id.starts_with(&instance.container_id) || instance.container_id.starts_with(id.as_str())),
        "{instance:?}"
    );
    // (That a claimed container answers a shell is checked in pools.rs; here
    // the point is that the runner's answer crosses the server.)

    client.delete_warm_pool(DeleteWarmPoolRequest { warm_pool_id: pool.id.clone() }).await.expect("delete the pool");
    eventually("the pool's unclaimed containers are removed", || {
        world
            .containers(&[&pool_filter])
            .iter()
            .all(|id| id.starts_with(&instance.container_id) || instance.container_id.starts_with(id.as_str()))
    })
    .await;
}
