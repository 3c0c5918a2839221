//! A docker runner on the server with `registry` set, against real
//! registries the tests start: one over TLS with a private CA behind a
//! password (the credentials come from the runner's Docker config, the CA
//! from its `ca_file`), one that refuses deletes. The snapshot is pushed
//! and recorded by digest, a pool's instances are made by that digest, and
//! deleting the prebuild deletes the manifest, or, where the registry
//! refuses, leaves it there without holding the deletion up.

use super::harness::*;
use super::registry::Registry;
use crate::common::*;
use prebuildd::proto::gitpod::v1::*;
use prebuildd::proto::prebuildd::v1::prebuild_source_service_client::PrebuildSourceServiceClient;
use prebuildd::proto::prebuildd::v1::ListPrebuildSourcesRequest;
use std::path::Path;
use std::time::{Duration, Instant};

const PROJECT: &str = "d0c0e000-0000-4000-8000-000000000061";
const USER: &str = "pusher";
const PASSWORD: &str = "registry-password-1";

/// The world's config with the runner pushing to `registry` (`extra`:
/// more keys of the runner).
fn config(world: &World, repo: &Path, registry: &str, extra: &str) -> String {
    world.config(&[(PROJECT, repo)]).replacen(
        "[[environment_classes]]",
        &format!("registry = \"{registry}\"\n{extra}[[environment_classes]]"),
        1,
    )
}

fn project(world: &World) -> std::path::PathBuf {
    let repo = world.dir.path().join("pushed-repo");
    repository(
        &repo,
        &[(".devcontainer/devcontainer.json", &format!(r#"{{ "image": "{BASE_IMAGE}", "onCreateCommand": "echo pushed > pushed.txt" }}"#))],
    );
    repo
}

async fn snapshot_image(server: &TestServer, prebuild_id: &str) -> String {
    let mut sources = PrebuildSourceServiceClient::with_interceptor(server.channel().await, bearer(TOKEN_A));
    let answer = sources
        .list_prebuild_sources(ListPrebuildSourcesRequest { prebuild_ids: vec![prebuild_id.to_string()] })
        .await
        .expect("ListPrebuildSources")
        .into_inner();
    answer.sources.first().map(|s| s.snapshot_image.clone()).unwrap_or_default()
}

/// The registry's status for a manifest, through `client` at `base`.
async fn manifest_status(client: &reqwest::Client, base: &str, path: &str, reference: &str, auth: bool) -> u16 {
    let mut request = client
        .get(format!("{base}/v2/{path}/manifests/{reference}"))
        .header("accept", "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json");
    if auth {
        request = request.basic_auth(USER, Some(PASSWORD));
    }
    request.send().await.expect("the registry answers").status().as_u16()
}

async fn gone(client: &mut Client, prebuild_id: &str) {
    let started = Instant::now();
    loop {
        match client.get_prebuild(GetPrebuildRequest { prebuild_id: prebuild_id.into() }).await {
            Err(status) if status.code() == tonic::Code::NotFound => return,
            other => assert!(started.elapsed() < PATIENCE, "the deleted prebuild stays: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_runner_pushes_with_its_docker_configs_credentials_and_deletes_over_tls_with_its_ca() {
    let world = World::new();
    let registry = Registry::start_secured(USER, PASSWORD);
    let secured = registry.secured();
    let repo = project(&world);
    let extra = format!("docker_config = \"{}\"\nca_file = \"{}\"\n", secured.docker_config.display(), secured.ca_file.display());
    let server = TestServer::start_with(config(&world, &repo, &format!("{}/prebuilds", registry.host()), &extra)).await;
    let mut client = server.client(Some(TOKEN_A)).await;

    let prebuild = create_prebuild(&mut client, PROJECT).await;
    completed(&server, &mut client, &prebuild.id).await;
    let image = snapshot_image(&server, &prebuild.id).await;
    let path = format!("prebuilds/{PROJECT}");
    assert!(image.starts_with(&format!("{}/{path}@sha256:", registry.host())), "{image:?}");
    let digest = image.split_once('@').unwrap().1.to_string();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&secured.ca_file).unwrap()).unwrap();
    let https = reqwest::Client::builder().add_root_certificate(ca).build().unwrap();
    let base = format!("https://{}", registry.host());
    assert_eq!(manifest_status(&https, &base, &path, &digest, true).await, 200, "pushed with the Docker config's password");
    assert_eq!(manifest_status(&https, &base, &path, &digest, false).await, 401, "and the registry does want one");
    assert_eq!(manifest_status(&https, &base, &path, &format!("{CLASS}-latest"), true).await, 200, "tagged as the class's latest");

    // Instances by digest, on the daemon that built it.
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
    let ready = |p: &WarmPool| p.status.as_ref().is_some_and(|s| s.phase == WarmPoolPhase::Ready as i32 && s.running_instances == 1);
    pool_until(&mut client, &pool.id, "1 running", ready).await;
    let pool_filter = format!("label=dev.prebuildd.warm-pool-id={}", pool.id);
    let containers = world.containers(&[&pool_filter]);
    assert_eq!(containers.len(), 1);
    assert_eq!(docker(&["inspect", "--format", "{{.Config.Image}}", &containers[0]]), image, "made by digest");

    client.delete_warm_pool(DeleteWarmPoolRequest { warm_pool_id: pool.id.clone() }).await.expect("delete the pool");
    client.delete_prebuild(DeletePrebuildRequest { prebuild_id: prebuild.id.clone() }).await.expect("delete the prebuild");
    gone(&mut client, &prebuild.id).await;
    assert_eq!(manifest_status(&https, &base, &path, &digest, true).await, 404, "deleted with the Docker config's password over TLS");
    let snapshot_filter = format!("label=dev.prebuildd.prebuild-id={}", prebuild.id);
    eventually("the snapshot leaves the daemon", || docker_lines(&["images", "-q", "--filter", &snapshot_filter]).is_empty()).await;
}

#[tokio::test]
async fn a_registry_that_refuses_deletes_keeps_the_manifest_and_the_deletion_goes_on() {
    let world = World::new();
    let registry = Registry::start_without_deletes();
    let repo = project(&world);
    let server = TestServer::start_with(config(&world, &repo, &format!("{}/prebuilds", registry.host()), "")).await;
    let mut client = server.client(Some(TOKEN_A)).await;

    let prebuild = create_prebuild(&mut client, PROJECT).await;
    completed(&server, &mut client, &prebuild.id).await;
    let image = snapshot_image(&server, &prebuild.id).await;
    let digest = image.split_once('@').map(|(_, d)| d.to_string()).unwrap_or_else(|| panic!("by digest: {image:?}"));
    let plain = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", registry.port);
    let path = format!("prebuilds/{PROJECT}");
    assert_eq!(manifest_status(&plain, &base, &path, &digest, false).await, 200);

    // The registry answers 405 to the deletion: logged, not asked again,
    // and the prebuild and its local images go all the same.
    client.delete_prebuild(DeletePrebuildRequest { prebuild_id: prebuild.id.clone() }).await.expect("delete the prebuild");
    gone(&mut client, &prebuild.id).await;
    assert_eq!(manifest_status(&plain, &base, &path, &digest, false).await, 200, "the registry kept it");
    let snapshot_filter = format!("label=dev.prebuildd.prebuild-id={}", prebuild.id);
    eventually("the snapshot leaves the daemon", || docker_lines(&["images", "-q", "--filter", &snapshot_filter]).is_empty()).await;
}
