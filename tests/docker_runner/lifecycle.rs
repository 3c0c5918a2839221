//! A prebuild in the project's dev container, through the public API and
//! checked with the docker CLI: the lifecycle runs in the container in
//! order with containerEnv, postCreateCommand and initializeCommand do not
//! run, a Dockerfile build works offline, the snapshot image is labelled
//! and holds what the commands installed outside the workspace, and nothing
//! of the prebuild is left but its snapshot.

use super::harness::*;
use crate::common::*;
use prebuildd::proto::gitpod::v1::*;

const IMAGE_PROJECT: &str = "d0c0e000-0000-4000-8000-000000000001";
const BUILD_PROJECT: &str = "d0c0e000-0000-4000-8000-000000000002";
const PLAIN_PROJECT: &str = "d0c0e000-0000-4000-8000-000000000003";

#[tokio::test]
async fn the_lifecycle_runs_in_the_dev_container_and_the_snapshot_is_an_image() {
    let world = World::new();
    let host_marker = world.dir.path().join("initialize-ran");
    let image_repo = world.dir.path().join("image-repo");
    repository(
        &image_repo,
        &[(
            ".devcontainer/devcontainer.json",
            &format!(
                r#"{{
              // runs as root: writes outside the workspace
              "image": "{BASE_IMAGE}",
              "containerEnv": {{ "GREETING": "hello-from-containerEnv" }},
              "initializeCommand": "touch {}",
              "onCreateCommand": "echo \"onCreate $GREETING\" && echo oncreate >> order && mkdir -p /opt/tools && echo installed > /opt/tools/marker",
              "updateContentCommand": ["sh", "-c", "echo updateContent && echo update >> order"],
              "postCreateCommand": "echo POSTCREATE-RAN && touch post-create-ran",
            }}"#,
                host_marker.display()
            ),
        )],
    );
    let build_repo = world.dir.path().join("build-repo");
    repository(
        &build_repo,
        &[
            (
                ".devcontainer/Dockerfile",
                &format!("FROM {BASE_IMAGE}\nRUN mkdir -p /opt/built && echo from-dockerfile > /opt/built/marker\n"),
            ),
            (
                ".devcontainer/devcontainer.json",
                r#"{ "build": { "dockerfile": "Dockerfile" }, "remoteUser": "dev",
                     "onCreateCommand": "id -un > whoami && cat /opt/built/marker && echo written-by-dev > owned-by-dev" }"#,
            ),
        ],
    );
    let plain_repo = world.dir.path().join("plain-repo");
    repository(&plain_repo, &[]);
    let server =
        TestServer::start_with(world.config(&[(IMAGE_PROJECT, &image_repo), (BUILD_PROJECT, &build_repo), (PLAIN_PROJECT, &plain_repo)]))
            .await;
    let mut client = server.client(Some(TOKEN_A)).await;

    let image_prebuild = create_prebuild(&mut client, IMAGE_PROJECT).await;
    let build_prebuild = create_prebuild(&mut client, BUILD_PROJECT).await;
    let plain_prebuild = create_prebuild(&mut client, PLAIN_PROJECT).await;

    // image: the lifecycle in order, with containerEnv; nothing after it.
    let done = completed(&server, &mut client, &image_prebuild.id).await;
    let log = log_of(&server, &mut client, &image_prebuild.id).await;
    let (on_create, update) = (log.find("onCreate hello-from-containerEnv").expect(&log), log.find("updateContent\n").expect(&log));
    assert!(on_create < update, "onCreate before updateContent:\n{log}");
    assert!(!log.lines().any(|line| line.trim() == "POSTCREATE-RAN"), "postCreateCommand must not run:\n{log}");
    let ignored = "initializeCommand in .devcontainer/devcontainer.json was ignored: the spec runs it on the host";
    assert!(log.contains(ignored), "{log}");
    assert!(done.status.as_ref().unwrap().warning_message.contains(ignored), "the warning says so: {done:?}");
    assert!(!host_marker.exists(), "initializeCommand ran on the host");

    // The snapshot: an image labelled with its prebuild, of the size reported.
    let image = format!("prebuildd-snapshot:{}", image_prebuild.id);
    let labels = docker(&["image", "inspect", "--format", "{{json .Config.Labels}}", &image]);
    for label in [
        format!("\"dev.prebuildd.prebuild-id\":\"{}\"", image_prebuild.id),
        format!("\"dev.prebuildd.runner-id\":\"{}\"", world.runner_id),
        "\"dev.prebuildd.role\":\"snapshot\"".to_string(),
    ] {
        assert!(labels.contains(&label), "{label} missing from {labels}");
    }
    let size: i64 = docker(&["image", "inspect", "--format", "{{.Size}}", &image]).parse().unwrap();
    assert_eq!(done.status.unwrap().snapshot_size_bytes, size, "snapshotSizeBytes is the image's size");
    // It holds the workspace and what was installed outside it.
    let shown = docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        &image,
        "-c",
        "cat /opt/tools/marker /workspaces/image-repo/order; ls /workspaces/image-repo",
    ]);
    assert!(shown.starts_with("installed\noncreate\nupdate\n"), "{shown}");
    assert!(shown.contains("README.md") && !shown.contains("post-create-ran"), "{shown}");

    // build.dockerfile, offline; the workspace belongs to remoteUser.
    completed(&server, &mut client, &build_prebuild.id).await;
    let image = format!("prebuildd-snapshot:{}", build_prebuild.id);
    let shown = docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        &image,
        "-c",
        "cd /workspaces/build-repo && cat whoami owned-by-dev && stat -c %U owned-by-dev README.md",
    ]);
    assert_eq!(shown, "dev\nwritten-by-dev\ndev\ndev", "commands ran as dev, who owns the workspace");
    let log = log_of(&server, &mut client, &build_prebuild.id).await;
    assert!(log.contains("from-dockerfile"), "{log}");

    // No devcontainer.json: the default image, with a warning.
    let plain = completed(&server, &mut client, &plain_prebuild.id).await;
    assert!(plain.status.unwrap().warning_message.contains(&format!("default image {BASE_IMAGE}")));

    // Nothing is left of the prebuilds but their snapshots.
    eventually("no prebuild container is left", || world.containers(&[]).is_empty()).await;
    let images = docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    for prebuild in [&image_prebuild, &build_prebuild, &plain_prebuild] {
        let environment_id = client
            .get_prebuild(GetPrebuildRequest { prebuild_id: prebuild.id.clone() })
            .await
            .unwrap()
            .into_inner()
            .prebuild
            .unwrap()
            .status
            .unwrap()
            .environment_id;
        assert!(!images.contains(&format!("prebuildd-build-{}:{}", world.runner_id, prebuild.id)), "the build image is removed: {images}");
        assert!(!images.contains(&format!("vsc-{environment_id}")), "the CLI's images are removed: {images}");
    }
    let workspaces = std::fs::read_dir(world.root().join("workspaces")).unwrap().count();
    assert_eq!(workspaces, 0, "the clones are removed");

    // Deleting a prebuild removes its snapshot image.
    client.delete_prebuild(DeletePrebuildRequest { prebuild_id: plain_prebuild.id.clone() }).await.unwrap();
    let gone = format!("prebuildd-snapshot:{}", plain_prebuild.id);
    eventually("the deleted prebuild's snapshot is removed", || {
        !std::process::Command::new("docker").args(["image", "inspect", &gone]).output().unwrap().status.success()
    })
    .await;
}
