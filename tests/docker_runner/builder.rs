//! The Docker CLI the runner is given: one without the buildx plugin whose
//! BuildKit mode fails (as a Docker 23+ CLI without the plugin does, such as
//! a static CLI from Docker's tarballs) still builds, with the classic
//! builder, and the log says so and what to install; one that cannot build
//! at all fails every prebuild saying which setting to change.

use super::harness::*;
use crate::common::*;

const PROJECT: &str = "b0110000-0000-4000-8000-000000000001";

/// Writes an executable script.
fn executable(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A Docker CLI that behaves like Docker 23+ without buildx: `docker
/// buildx` is unknown, and a build with BuildKit (its default) fails.
fn cli_without_buildx(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("docker-without-buildx");
    executable(
        &path,
        &format!(
            "#!/bin/sh\nif [ \"$1\" = buildx ]; then echo \"docker: 'buildx' is not a docker command.\" >&2; exit 1; fi\n\
             if [ \"$1\" = build ] && [ \"${{DOCKER_BUILDKIT:-1}}\" != 0 ]; then\n  \
             echo 'ERROR: BuildKit is enabled but the buildx component is missing or broken.' >&2; exit 1\nfi\nexec {} \"$@\"\n",
            docker_cli().display()
        ),
    );
    path
}

/// The world's config with the runner using another Docker CLI.
fn config_with_cli(world: &World, repo: &std::path::Path, cli: &std::path::Path) -> String {
    let docker_cli_key = |path: &std::path::Path| format!("docker_cli = \"{}\"", path.display());
    world.config(&[(PROJECT, repo)]).replace(&docker_cli_key(&docker_cli()), &docker_cli_key(cli))
}

#[tokio::test]
async fn a_docker_cli_without_buildx_builds_with_the_classic_builder() {
    let world = World::new();
    let repo = world.dir.path().join("classic-repo");
    super::registry::write_feature(&repo.join(".devcontainer/tool"), "tool", "tool", "");
    repository(
        &repo,
        &[
            (".devcontainer/Dockerfile", &format!("FROM {BASE_IMAGE}\nRUN echo built > /opt/built\n")),
            (
                ".devcontainer/devcontainer.json",
                r#"{ "build": { "dockerfile": "Dockerfile" }, "features": { "./tool": {} }, "onCreateCommand": "tool && cat /opt/built" }"#,
            ),
        ],
    );
    let server = TestServer::start_with(config_with_cli(&world, &repo, &cli_without_buildx(world.dir.path()))).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let prebuild = create_prebuild(&mut client, PROJECT).await;
    completed(&server, &mut client, &prebuild.id).await;
    let log = log_of(&server, &mut client, &prebuild.id).await;
    assert!(log.contains("has no buildx plugin and cannot build with BuildKit"), "{log}");
    assert!(log.contains("images are built with the classic builder") && log.contains("install the buildx plugin"), "{log}");
    assert!(log.contains("hello from tool") && log.contains("built"), "{log}");
}

#[tokio::test]
async fn a_docker_cli_that_cannot_build_fails_prebuilds_naming_the_setting() {
    let world = World::new();
    let repo = world.dir.path().join("broken-cli-repo");
    repository(&repo, &[(".devcontainer/devcontainer.json", &format!(r#"{{ "image": "{BASE_IMAGE}" }}"#))]);
    let cli = world.dir.path().join("docker-that-fails");
    executable(&cli, "#!/bin/sh\necho 'this docker is broken' >&2\nexit 1\n");
    let server = TestServer::start_with(config_with_cli(&world, &repo, &cli)).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let prebuild = create_prebuild(&mut client, PROJECT).await;
    let message = failed(&server, &mut client, &prebuild.id).await;
    assert!(message.contains("cannot build images"), "{message}");
    assert!(message.contains("this docker is broken"), "the CLI's own words: {message}");
    assert!(message.contains("set docker_cli on the runner"), "{message}");
}
