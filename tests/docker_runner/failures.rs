//! What goes wrong, and what is left after: a failing command names itself,
//! its exit code and its last lines; a missing image and a broken
//! Dockerfile fail with the CLI's reason; a cancel kills the container; and
//! none of them leaves a container or image behind.

use super::harness::*;
use crate::common::*;
use prebuildd::proto::gitpod::v1::*;

const FAILING: &str = "d0c0e000-0000-4000-8000-000000000021";
const MISSING_IMAGE: &str = "d0c0e000-0000-4000-8000-000000000022";
const BROKEN_DOCKERFILE: &str = "d0c0e000-0000-4000-8000-000000000023";
const SLEEPY: &str = "d0c0e000-0000-4000-8000-000000000024";

async fn failed(client: &mut Client, id: &str) -> String {
    let prebuild = wait_for(client, id, &[PrebuildPhase::Failed, PrebuildPhase::Completed, PrebuildPhase::Cancelled]).await;
    let status = prebuild.status.unwrap();
    assert_eq!(status.phase, PrebuildPhase::Failed as i32, "expected a failure: {status:?}");
    status.failure_message
}

fn assert_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} missing from:\n{text}");
    }
}

#[tokio::test]
async fn failures_and_cancels_say_why_and_leave_nothing_behind() {
    let world = World::new();
    let dir = world.dir.path();
    let devcontainer = |body: &str| format!("{{ \"image\": \"{BASE_IMAGE}\", {body} }}");
    repository(
        &dir.join("failing"),
        &[(".devcontainer/devcontainer.json", &devcontainer(r#""onCreateCommand": "echo boom-before-failing; exit 3""#))],
    );
    repository(&dir.join("missing"), &[(".devcontainer/devcontainer.json", r#"{ "image": "prebuildd-missing-image:404" }"#)]);
    repository(
        &dir.join("broken"),
        &[
            (".devcontainer/Dockerfile", &format!("FROM {BASE_IMAGE}\nRUN echo breaking-the-build && exit 42\n")),
            (".devcontainer/devcontainer.json", r#"{ "build": { "dockerfile": "Dockerfile" } }"#),
        ],
    );
    repository(
        &dir.join("sleepy"),
        &[(".devcontainer/devcontainer.json", &devcontainer(r#""onCreateCommand": "echo sleeping-now; sleep 987654""#))],
    );
    let projects = [
        (FAILING, dir.join("failing")),
        (MISSING_IMAGE, dir.join("missing")),
        (BROKEN_DOCKERFILE, dir.join("broken")),
        (SLEEPY, dir.join("sleepy")),
    ];
    let server = TestServer::start_with(world.config(&projects.iter().map(|(id, path)| (*id, path.as_path())).collect::<Vec<_>>())).await;
    let mut client = server.client(Some(TOKEN_A)).await;

    let failing = create_prebuild(&mut client, FAILING).await;
    let missing = create_prebuild(&mut client, MISSING_IMAGE).await;
    let broken = create_prebuild(&mut client, BROKEN_DOCKERFILE).await;
    let sleepy = create_prebuild(&mut client, SLEEPY).await;

    let message = failed(&mut client, &failing.id).await;
    assert_contains(&message, &["onCreateCommand", "echo boom-before-failing; exit 3", "exited with code 3", "boom-before-failing"]);

    let message = failed(&mut client, &missing.id).await;
    assert_contains(&message, &["could not be built", "prebuildd-missing-image:404"]);

    let message = failed(&mut client, &broken.id).await;
    assert_contains(&message, &["could not be built", "42"]);
    assert_contains(&log_of(&server, &mut client, &broken.id).await, &["breaking-the-build"]);

    // Cancel while the command runs: the container is killed and removed.
    wait_for(&mut client, &sleepy.id, &[PrebuildPhase::Running]).await;
    let prebuild_filter = format!("label=dev.prebuildd.prebuild-id={}", sleepy.id);
    log_shows(&server, &mut client, &sleepy.id, "sleeping-now").await;
    let running = world.containers(&[&prebuild_filter, "status=running"]);
    assert_eq!(running.len(), 1, "the prebuild's container runs");
    let settings = docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{json .HostConfig.SecurityOpt}} {{.HostConfig.Privileged}} {{len .Mounts}}",
        &running[0],
    ]);
    assert_eq!(settings, "1000000000 268435456 [\"no-new-privileges\"] false 0", "the class's limits, unprivileged, no mounts");
    client.cancel_prebuild(CancelPrebuildRequest { prebuild_id: sleepy.id.clone() }).await.unwrap();
    wait_for(&mut client, &sleepy.id, &[PrebuildPhase::Cancelled]).await;

    eventually("no prebuild container is left", || world.containers(&[]).is_empty()).await;
    let images = docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    for prebuild in [&failing, &missing, &broken, &sleepy] {
        assert!(!images.contains(&prebuild.id), "an image of {} is left: {images}", prebuild.id);
    }
    eventually("the clones are removed", || std::fs::read_dir(world.root().join("workspaces")).unwrap().count() == 0).await;
}

#[tokio::test]
async fn a_daemon_that_does_not_answer_fails_prebuilds_and_degrades_pools_with_the_reason() {
    let world = World::new();
    let repo = world.dir.path().join("repo");
    repository(&repo, &[]);
    let config = world
        .config(&[(FAILING, &repo)])
        .replace("kind = \"docker\"", "kind = \"docker\"\ndocker_host = \"unix:///nonexistent/docker.sock\"");
    let server = TestServer::start_with(config).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let prebuild = create_prebuild(&mut client, FAILING).await;
    let message = failed(&mut client, &prebuild.id).await;
    assert_contains(&message, &["Docker daemon", "/nonexistent/docker.sock"]);

    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest { project_id: FAILING.into(), environment_class_id: CLASS.into(), ..Default::default() },
    )
    .await;
    let degraded =
        pool_until(&mut client, &pool.id, "DEGRADED", |p| p.status.as_ref().is_some_and(|s| s.phase == WarmPoolPhase::Degraded as i32))
            .await;
    assert_contains(&degraded.status.unwrap().failure_message, &["Docker daemon"]);
}
