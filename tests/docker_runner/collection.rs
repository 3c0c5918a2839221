//! Collection of what the docker runner made: a snapshot image whose
//! prebuild is deleted while a claimed container still uses it stays (Docker
//! keeps it for the container), and goes within seconds of the container's
//! removal; the metric of what the runner holds follows. The same after a
//! restart: collection reads the images' labels, it remembers nothing.

use super::harness::*;
use crate::common::*;
use prebuildd::proto::gitpod::v1::*;
use prebuildd::proto::prebuildd::v1::warm_pool_instance_service_client::WarmPoolInstanceServiceClient;
use prebuildd::proto::prebuildd::v1::ClaimInstanceRequest;
use std::time::{Duration, Instant};

const PROJECT: &str = "d0c0e000-0000-4000-8000-000000000031";

/// Whether the image exists (by ID: it may have lost its tag).
fn image_exists(id: &str) -> bool {
    std::process::Command::new("docker").args(["image", "inspect", id]).output().is_ok_and(|output| output.status.success())
}

async fn until(what: &str, limit: Duration, check: impl Fn() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_snapshot_deleted_under_a_claim_goes_once_the_claimed_container_is_removed() {
    let world = World::new();
    let repo = world.dir.path().join("collected-repo");
    repository(
        &repo,
        &[(".devcontainer/devcontainer.json", &format!(r#"{{ "image": "{BASE_IMAGE}", "onCreateCommand": "echo made > made.txt" }}"#))],
    );
    let mut server = TestServer::start_with(world.config(&[(PROJECT, &repo)])).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let prebuild = create_prebuild(&mut client, PROJECT).await;
    completed(&server, &mut client, &prebuild.id).await;
    let snapshot = docker(&["image", "inspect", "--format", "{{.Id}}", &format!("prebuildd-snapshot:{}", prebuild.id)]);
    let series = format!("prebuildd_runner_snapshots{{runner_id=\"{}\"}}", world.runner_id);
    let started = Instant::now();
    while server.metric(&series).await <= 0.0 {
        assert!(started.elapsed() < Duration::from_secs(30), "the runner's snapshot is not reported");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest {
            project_id: PROJECT.into(),
            environment_class_id: CLASS.into(),
            min_size: Some(1),
            max_size: Some(1),
            ..Default::default()
        },
    )
    .await;
    pool_until(&mut client, &pool.id, "ready", |p| p.status.as_ref().is_some_and(|s| s.running_instances == 1)).await;
    let mut claims = WarmPoolInstanceServiceClient::with_interceptor(server.channel().await, bearer(TOKEN_A));
    let claimed = claims
        .claim_instance(ClaimInstanceRequest { warm_pool_id: pool.id.clone(), wait: None })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();

    // The pool, then the prebuild, are deleted; the claimed container is
    // the claimant's and stays, and so does the image it runs on.
    client.delete_warm_pool(DeleteWarmPoolRequest { warm_pool_id: pool.id.clone() }).await.unwrap();
    client.delete_prebuild(DeletePrebuildRequest { prebuild_id: prebuild.id.clone() }).await.unwrap();
    let started = Instant::now();
    while client.get_prebuild(GetPrebuildRequest { prebuild_id: prebuild.id.clone() }).await.is_ok() {
        assert!(started.elapsed() < Duration::from_secs(60), "the prebuild was not removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until("the pool's containers are removed", Duration::from_secs(60), || world.containers(&[]).len() == 1).await;
    // Several collections go by: the image is in use, so it stays.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(image_exists(&snapshot), "the claimed container's image stays while it runs");
    assert_eq!(docker(&["inspect", "--format", "{{.State.Running}}", &claimed.container_id]), "true");
    assert!(server.metric(&series).await > 0.0, "and is still reported as held");

    // A restart forgets nothing that matters: the image is found by label.
    server.restart().await;
    docker(&["rm", "-f", "-v", &claimed.container_id]);
    until("the image goes once nothing uses it", Duration::from_secs(15), || !image_exists(&snapshot)).await;
    let started = Instant::now();
    while server.metric(&series).await != 0.0 {
        assert!(started.elapsed() < Duration::from_secs(15), "the metric still reports the snapshot");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
