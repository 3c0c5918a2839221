//! A feature from a registry that wants a password and serves TLS with a
//! private CA's certificate: the runner's own Docker config (what `docker
//! login` writes; `docker_config`) gives the CLI the credentials and its
//! `ca_file` the CA, deliberately, since the CLI runs with a clean
//! environment. Without either, the prebuild fails saying why. A feature
//! from a tarball URL, served over HTTPS with the same CA, works too.

use super::harness::*;
use super::registry::{write_feature, Registry, TarballServer};
use crate::common::*;

const PROJECT: &str = "c3ed0000-0000-4000-8000-000000000001";

#[tokio::test]
async fn registry_credentials_and_a_private_ca_come_from_the_runners_settings() {
    let world = World::new();
    let registry = Registry::start_secured("alice", "s3cret-pass");
    let published = world.dir.path().join("published");
    write_feature(&published.join("private"), "private", "private-tool", "");
    registry.publish_features(&published, "acme/features");
    write_feature(&published.join("packed"), "packed", "packed-tool", "");
    let tarballs = TarballServer::start(registry.secured(), &published.join("packed"), "packed");
    let repo = world.dir.path().join("private-feature-repo");
    repository(
        &repo,
        &[(
            ".devcontainer/devcontainer.json",
            &format!(
                r#"{{ "image": "{BASE_IMAGE}", "features": {{ "{}/acme/features/private:1": {{}}, "{}": {{ "greeting": "unpacked" }} }},
                     "onCreateCommand": "private-tool && packed-tool" }}"#,
                registry.host(),
                tarballs.url("packed")
            ),
        )],
    );
    let secured = registry.secured();
    let empty_docker_config = world.dir.path().join("empty-docker-config");
    std::fs::create_dir_all(&empty_docker_config).unwrap();
    let with = |docker_config: &std::path::Path, ca_file: Option<&std::path::Path>| {
        let mut keys = format!("docker_config = \"{}\"\n", docker_config.display());
        if let Some(ca_file) = ca_file {
            keys += &format!("ca_file = \"{}\"\n", ca_file.display());
        }
        world.config(&[(PROJECT, &repo)]).replace("kind = \"docker\"\n", &format!("kind = \"docker\"\n{keys}"))
    };

    // Both given: the feature is pulled and installed.
    {
        let server = TestServer::start_with(with(&secured.docker_config, Some(&secured.ca_file))).await;
        let mut client = server.client(Some(TOKEN_A)).await;
        let prebuild = create_prebuild(&mut client, PROJECT).await;
        completed(&server, &mut client, &prebuild.id).await;
        let snapshot = format!("prebuildd-snapshot:{}", prebuild.id);
        let tools = docker(&["run", "--rm", "--entrypoint", "/bin/sh", &snapshot, "-c", "private-tool && packed-tool"]);
        assert_eq!(tools, "hello from private\nunpacked", "both features are in the snapshot");
    }
    // Without the CA, TLS fails; without the credentials, the registry
    // refuses.
    for (docker_config, ca_file, expected) in [
        (&secured.docker_config, None, "unable to verify the first certificate"),
        (&empty_docker_config, Some(secured.ca_file.as_path()), "may not be logged in"),
    ] {
        let server = TestServer::start_with(with(docker_config, ca_file)).await;
        let mut client = server.client(Some(TOKEN_A)).await;
        let prebuild = create_prebuild(&mut client, PROJECT).await;
        let message = failed(&server, &mut client, &prebuild.id).await;
        assert!(message.contains("the dev container image could not be built") && message.contains(expected), "{expected}: {message}");
    }
}
