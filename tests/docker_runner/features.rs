//! Dev Container Features, installed by the Dev Containers CLI at build
//! time: a local feature beside the devcontainer.json with an option and a
//! `containerEnv`, and an OCI feature pulled from a registry the test
//! starts. What they install is in the snapshot and in a warm instance made
//! from it; what a feature asks of the container is under the class's
//! policy like the same key in devcontainer.json; and two feature builds
//! started at the same moment on one daemon both complete (a Docker CLI
//! without buildx stages them through one shared image tag).

use super::harness::*;
use super::registry::{write_feature, Registry};
use crate::common::*;
use prebuildd::proto::gitpod::v1::*;
use prebuildd::proto::prebuildd::v1::warm_pool_instance_service_client::WarmPoolInstanceServiceClient;
use prebuildd::proto::prebuildd::v1::ClaimInstanceRequest;

const FEATURES_PROJECT: &str = "fea70000-0000-4000-8000-000000000001";
const TWIN_PROJECT: &str = "fea70000-0000-4000-8000-000000000002";
const DEBUGGER_PROJECT: &str = "fea70000-0000-4000-8000-000000000003";
const DEBUG_CLASS: &str = "fea70000-0000-4000-8000-0000000000c1";

#[tokio::test]
async fn features_are_installed_kept_in_the_snapshot_and_policed() {
    let world = World::new();
    let registry = Registry::start();
    let published = world.dir.path().join("published");
    write_feature(&published.join("stamp"), "stamp", "stamp", "");
    registry.publish_features(&published, "prebuildd-test/features");
    let oci_feature = format!("{}/prebuildd-test/features/stamp:1", registry.host());

    // A local feature with an option and a containerEnv, and the OCI one.
    let repo = world.dir.path().join("features-repo");
    let local = repo.join(".devcontainer/hello");
    write_feature(&local, "hello", "hello", r#", "containerEnv": { "HELLO_FEATURE": "on" }"#);
    repository(
        &repo,
        &[(
            ".devcontainer/devcontainer.json",
            &format!(
                r#"{{
                  "image": "{BASE_IMAGE}",
                  "features": {{ "./hello": {{ "greeting": "howdy" }}, "{oci_feature}": {{}} }},
                  // the features' tools, right away
                  "onCreateCommand": "hello > hello.out && stamp > stamp.out && echo \"HELLO_FEATURE=$HELLO_FEATURE\"",
                }}"#
            ),
        )],
    );
    // Another project with a feature of its own, prebuilt at the same moment.
    let twin = world.dir.path().join("twin-repo");
    write_feature(&twin.join(".devcontainer/twin"), "twin", "twin", "");
    repository(
        &twin,
        &[(
            ".devcontainer/devcontainer.json",
            &format!(r#"{{ "image": "{BASE_IMAGE}", "features": {{ "./twin": {{}} }}, "onCreateCommand": "twin" }}"#),
        )],
    );
    // A feature that asks for a capability (as debugger features do).
    let debugger = world.dir.path().join("debugger-repo");
    write_feature(&debugger.join(".devcontainer/debugger"), "debugger", "debugger", r#", "capAdd": ["SYS_PTRACE"], "init": true"#);
    repository(
        &debugger,
        &[(".devcontainer/devcontainer.json", &format!(r#"{{ "image": "{BASE_IMAGE}", "features": {{ "./debugger": {{}} }} }}"#))],
    );
    let config = world.config_with_classes(
        &[(FEATURES_PROJECT, &repo), (TWIN_PROJECT, &twin), (DEBUGGER_PROJECT, &debugger)],
        &[(DEBUG_CLASS, "docker-debug", "allow_capabilities = [\"SYS_PTRACE\"]")],
    );
    let server = TestServer::start_with(config).await;
    let mut client = server.client(Some(TOKEN_A)).await;

    // Both at the same moment (the runner takes up to four at once).
    let (mut first_client, mut second_client) = (client.clone(), client.clone());
    let (with_features, twin_prebuild) =
        tokio::join!(create_prebuild(&mut first_client, FEATURES_PROJECT), create_prebuild(&mut second_client, TWIN_PROJECT));
    let done = completed(&server, &mut client, &with_features.id).await;
    assert_eq!(done.status.as_ref().unwrap().warning_message, "", "nothing was dropped: {done:?}");
    let log = log_of(&server, &mut client, &with_features.id).await;
    assert!(log.contains("building the dev container image with its features"), "{log}");
    assert!(log.contains("HELLO_FEATURE=on"), "the local feature's containerEnv: {log}");
    completed(&server, &mut client, &twin_prebuild.id).await;
    let twin_log = log_of(&server, &mut client, &twin_prebuild.id).await;
    assert!(twin_log.contains("hello from twin"), "{twin_log}");

    // The snapshot holds what the features installed and what the
    // lifecycle made with them.
    let snapshot = format!("prebuildd-snapshot:{}", with_features.id);
    let inside = docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        &snapshot,
        "-c",
        "cat /workspaces/features-repo/hello.out /workspaces/features-repo/stamp.out; hello; echo $HELLO_FEATURE",
    ]);
    assert_eq!(inside.lines().collect::<Vec<_>>(), vec!["howdy", "hello from stamp", "howdy", "on"]);

    // A warm instance of it has the tools.
    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest { project_id: FEATURES_PROJECT.into(), environment_class_id: CLASS.into(), ..Default::default() },
    )
    .await;
    pool_until(&mut client, &pool.id, "a ready instance", |p| p.status.as_ref().is_some_and(|s| s.running_instances == 1)).await;
    let mut claims = WarmPoolInstanceServiceClient::with_interceptor(server.channel().await, bearer(TOKEN_A));
    let instance = claims
        .claim_instance(ClaimInstanceRequest { warm_pool_id: pool.id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert_eq!(
        docker(&["exec", &instance.container_id, "sh", "-c", "hello && stamp && echo $HELLO_FEATURE"]),
        "howdy\nhello from stamp\non"
    );
    docker(&["rm", "-f", "-v", &instance.container_id]);

    // A feature's capAdd: refused on the default class, with the message.
    let refused = create_prebuild(&mut client, DEBUGGER_PROJECT).await;
    let message = failed(&server, &mut client, &refused.id).await;
    assert!(
        message
            .contains(r#"feature ./debugger: capAdd SYS_PTRACE needs allow_capabilities = ["SYS_PTRACE"] on environment class "docker""#),
        "{message}"
    );
    // Granted where the class allows it: the prebuild's snapshot records the
    // grant, and an instance gets the capability (and the feature's init).
    let granted = create_prebuild_on(&mut client, DEBUGGER_PROJECT, DEBUG_CLASS).await;
    completed(&server, &mut client, &granted.id).await;
    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest { project_id: DEBUGGER_PROJECT.into(), environment_class_id: DEBUG_CLASS.into(), ..Default::default() },
    )
    .await;
    pool_until(&mut client, &pool.id, "a ready instance", |p| p.status.as_ref().is_some_and(|s| s.running_instances == 1)).await;
    let pool_filter = format!("label=dev.prebuildd.warm-pool-id={}", pool.id);
    let instance = world.containers(&[&pool_filter, "status=running"]).pop().unwrap();
    let settings =
        docker(&["inspect", "--format", "{{json .HostConfig.CapAdd}} {{.HostConfig.Init}} {{.HostConfig.Privileged}}", &instance]);
    assert_eq!(settings, r#"["SYS_PTRACE"] true false"#);
}
