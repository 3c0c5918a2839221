//! Warm pools of containers: one running and one created container for
//! `minSize 1, maxSize 2`, the class's limits on them, a claim that hands
//! out a running container holding the prebuild's work (also outside the
//! workspace) and is backfilled, rotation to a newer snapshot, adoption
//! after a restart, and deletion.

use super::harness::*;
use crate::common::*;
use prebuildd::proto::gitpod::v1::*;
use prebuildd::proto::prebuildd::v1::warm_pool_instance_service_client::WarmPoolInstanceServiceClient;
use prebuildd::proto::prebuildd::v1::ClaimInstanceRequest;

const PROJECT: &str = "d0c0e000-0000-4000-8000-000000000011";

fn status(pool: &WarmPool) -> (i32, i32, i32) {
    let status = pool.status.clone().unwrap_or_default();
    (status.phase, status.running_instances, status.stopped_instances)
}

fn ready_with(snapshot_id: &str) -> impl Fn(&WarmPool) -> bool + '_ {
    move |pool| {
        pool.spec.as_ref().and_then(|s| s.snapshot_id.clone()).as_deref() == Some(snapshot_id)
            && status(pool) == (WarmPoolPhase::Ready as i32, 1, 1)
    }
}

#[tokio::test]
async fn a_pool_of_containers_claims_backfills_rotates_survives_a_restart_and_goes() {
    let world = World::new();
    let repo = world.dir.path().join("pool-repo");
    repository(
        &repo,
        &[(
            ".devcontainer/devcontainer.json",
            &format!(r#"{{ "image": "{BASE_IMAGE}", "onCreateCommand": "date +%s%N > /opt/made-by-prebuild && echo ws > in-workspace" }}"#),
        )],
    );
    let mut server = TestServer::start_with(world.config(&[(PROJECT, &repo)])).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let first = create_prebuild(&mut client, PROJECT).await;
    completed(&server, &mut client, &first.id).await;

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
    pool_until(&mut client, &pool.id, "1 running and 1 stopped", ready_with(&first.id)).await;
    let pool_filter = format!("label=dev.prebuildd.warm-pool-id={}", pool.id);
    let running = world.containers(&[&pool_filter, "status=running"]);
    let created = world.containers(&[&pool_filter, "status=created"]);
    assert_eq!((running.len(), created.len()), (1, 1), "Docker has one running and one created container");
    for container in running.iter().chain(&created) {
        let limits = docker(&[
            "inspect",
            "--format",
            "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{json .HostConfig.SecurityOpt}} {{len .Mounts}}",
            container,
        ]);
        assert_eq!(limits, "1000000000 268435456 [\"no-new-privileges\"] 0", "the class's limits, no privileges, no mounts");
        let labels = docker(&["inspect", "--format", "{{json .Config.Labels}}", container]);
        for key in ["dev.prebuildd.runner-id", "dev.prebuildd.warm-pool-id", "dev.prebuildd.snapshot-id", "dev.prebuildd.instance-id"] {
            assert!(labels.contains(key), "{key} missing from {labels}");
        }
    }

    // A claim hands out the running container: a shell answers in it, and it
    // holds what the prebuild wrote outside and inside the workspace.
    let mut claims = WarmPoolInstanceServiceClient::with_interceptor(server.channel().await, bearer(TOKEN_A));
    let instance = claims
        .claim_instance(ClaimInstanceRequest { warm_pool_id: pool.id.clone(), wait: None })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert!(running[0].starts_with(&instance.container_id) || instance.container_id == running[0], "{instance:?} vs {running:?}");
    assert_eq!(instance.workspace_path, "/workspaces/pool-repo");
    let inside =
        docker(&["exec", &instance.container_id, "sh", "-c", "test -s /opt/made-by-prebuild && cat /workspaces/pool-repo/in-workspace"]);
    assert_eq!(inside, "ws");

    // Backfill: the created one is started, a new one is created, and the
    // claimed container is left alone.
    pool_until(&mut client, &pool.id, "backfilled", |p| {
        status(p).1 == 1 && status(p).2 == 1 && p.status.as_ref().unwrap().phase == WarmPoolPhase::Ready as i32
    })
    .await;
    eventually("the stopped one was promoted", || world.containers(&[&pool_filter, "status=running"]).contains(&created[0])).await;
    let claimed_state = docker(&["inspect", "--format", "{{.State.Running}} {{.Name}}", &instance.container_id]);
    assert!(claimed_state.starts_with("true /prebuildd-claimed-"), "{claimed_state}");

    // Restart: the pool keeps its containers.
    let before: Vec<String> = world.containers(&[&pool_filter]);
    server.restart().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    pool_until(&mut client, &pool.id, "ready after the restart", ready_with(&first.id)).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let mut after = world.containers(&[&pool_filter]);
    let mut before_sorted = before.clone();
    before_sorted.sort();
    after.sort();
    assert_eq!(after, before_sorted, "the restarted runner adopted the pool's containers");

    // Rotation: a newer snapshot replaces every instance, the new ones first.
    let second = create_prebuild(&mut client, PROJECT).await;
    completed(&server, &mut client, &second.id).await;
    pool_until(&mut client, &pool.id, "rotated", ready_with(&second.id)).await;
    let old_snapshot = format!("label=dev.prebuildd.snapshot-id={}", first.id);
    eventually("the old snapshot's instances are removed", || {
        world.containers(&[&pool_filter, &old_snapshot]).iter().all(|id| {
            // A container removed between the listing and this look is gone, as wanted.
            let name = std::process::Command::new("docker").args(["inspect", "--format", "{{.Name}}", id]).output().unwrap();
            !name.status.success() || String::from_utf8_lossy(&name.stdout).starts_with("/prebuildd-claimed-")
        })
    })
    .await;
    let new_snapshot = format!("label=dev.prebuildd.snapshot-id={}", second.id);
    eventually("two instances of the new snapshot", || world.containers(&[&pool_filter, &new_snapshot]).len() == 2).await;

    // Deletion removes the pool's containers, never the claimed one.
    client.delete_warm_pool(DeleteWarmPoolRequest { warm_pool_id: pool.id.clone() }).await.unwrap();
    eventually("the pool's containers are removed", || world.containers(&[&pool_filter]) == vec![instance.container_id.clone()]).await;
    assert_eq!(docker(&["inspect", "--format", "{{.State.Running}}", &instance.container_id]), "true", "the claimant's container runs on");
}
