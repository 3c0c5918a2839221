//! Docker Compose configurations: a dev container built from a Dockerfile
//! beside a second service (a TCP server from the same offline base
//! image, which the repository's file completes), prebuilt with the
//! service up and reached by its name; a pool of two stacks, each on its
//! own network, one's server out of the other's reach; a claim that hands
//! out the whole stack; refusals of what reaches the host; nothing of a
//! stack left after a failure, a cancel or a deletion; and the same on a
//! `prebuildd runner` with the docker engine, whose stopped and running
//! stacks survive a kill -9 of the runner.

use super::harness::*;
use crate::common::runner_process::RunnerProcess;
use crate::common::*;
use prebuildd::proto::gitpod::v1::*;
use prebuildd::proto::prebuildd::v1::warm_pool_instance_service_client::WarmPoolInstanceServiceClient;
use prebuildd::proto::prebuildd::v1::ClaimInstanceRequest;

const STACK: &str = "d0c0e000-0000-4000-8000-000000000091";
const REFUSED: &str = "d0c0e000-0000-4000-8000-000000000092";
const FAILING: &str = "d0c0e000-0000-4000-8000-000000000093";
const SLEEPY: &str = "d0c0e000-0000-4000-8000-000000000094";
const REMOTE: &str = "d0c0e000-0000-4000-8000-000000000095";
const TOKEN: &str = "remote-compose-runner-token";

/// A Compose file whose `db` answers every connection with the
/// repository's greeting file (bind-mounted from the repository, so the
/// runner adds it to the service's image).
fn compose_file(app_extra: &str, app_volume: &str) -> String {
    format!(
        r#"services:
  app:
    build:
      context: .
      dockerfile: Dockerfile
    command: ["sleep", "2147483647"]
    volumes:
      - ..:/workspaces/stack-repo:cached
      - data:/data
{app_volume}{app_extra}    depends_on: [db]
  db:
    image: {BASE_IMAGE}
    command: ["nc", "-ll", "-p", "5432", "-e", "cat", "/etc/db-greeting"]
    volumes:
      - ./greeting:/etc/db-greeting:ro
volumes:
  data:
"#
    )
}

fn compose_repository(dir: &std::path::Path, app_extra: &str, app_volume: &str, on_create: &str) {
    let devcontainer = format!(
        r#"{{ "dockerComposeFile": "compose.yml", "service": "app", "workspaceFolder": "/workspaces/stack-repo", "onCreateCommand": {} }}"#,
        serde_json::Value::String(on_create.to_string())
    );
    repository(
        dir,
        &[
            (".devcontainer/devcontainer.json", &devcontainer),
            (".devcontainer/compose.yml", &compose_file(app_extra, app_volume)),
            (".devcontainer/Dockerfile", &format!("FROM {BASE_IMAGE}\nRUN echo built > /opt/built-by-dockerfile\n")),
            (".devcontainer/greeting", "hello-from-db\n"),
        ],
    );
}

/// A test's world, once Docker Compose is known to be there (the test
/// fails saying what to install otherwise).
fn compose_world() -> World {
    compose_version();
    World::new()
}

/// What the db of the stack answers, from inside `container` (by name or
/// address), retried while it starts.
const ASK_DB: &str =
    "for i in 1 2 3 4 5 6 7 8 9 10; do nc -w 3 \"$0\" 5432 </dev/null > /tmp/got && test -s /tmp/got && break; sleep 1; done; cat /tmp/got";

fn answer(container: &str, host: &str) -> String {
    let output = std::process::Command::new("docker").args(["exec", container, "sh", "-c", ASK_DB, host]).output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The runner's Docker objects of one kind that belong to stacks.
fn stack_objects(world: &World, kind: &str, project: Option<&str>) -> Vec<String> {
    let runner = format!("label=dev.prebuildd.runner-id={}", world.runner_id);
    let stack = match project {
        Some(project) => format!("label=dev.prebuildd.compose-project={project}"),
        None => "label=dev.prebuildd.compose-project".to_string(),
    };
    match kind {
        "container" => docker_lines(&["ps", "-aq", "--filter", &runner, "--filter", &stack]),
        other => docker_lines(&[other, "ls", "-q", "--filter", &runner, "--filter", &stack]),
    }
}

#[tokio::test]
async fn a_stack_is_prebuilt_with_its_services_warmed_whole_and_claimed_whole() {
    let world = compose_world();
    let repo = world.dir.path().join("stack-repo");
    compose_repository(
        &repo,
        "    ports: [\"8080:80\"]\n",
        "",
        "for i in 1 2 3 4 5 6 7 8 9 10; do nc -w 3 db 5432 </dev/null > /tmp/got && test -s /tmp/got && break; sleep 1; done; cat /tmp/got; cp /tmp/got from-db.txt",
    );
    let server = TestServer::start_with(world.config(&[(STACK, &repo)])).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let prebuild = create_prebuild(&mut client, STACK).await;
    let done = completed(&server, &mut client, &prebuild.id).await;
    let warning = done.status.unwrap().warning_message;
    assert!(warning.contains("services.app.ports was left out: no port of the runner's host is published"), "{warning}");
    let log = log_of(&server, &mut client, &prebuild.id).await;
    let project = format!("prebuildd-prebuild-{}", prebuild.id);
    let expected = [
        format!("the stack is Compose project {project} (2 services)"),
        "hello-from-db".into(),
        format!("reading the Docker Compose configuration with Docker Compose {}", compose_version()),
    ];
    for expected in expected {
        assert!(log.contains(&expected), "{expected:?} missing from the log:\n{log}");
    }
    let snapshot = format!("prebuildd-snapshot:{}", prebuild.id);
    let snapshotted =
        docker(&["run", "--rm", "--entrypoint", "cat", &snapshot, "/workspaces/stack-repo/from-db.txt", "/opt/built-by-dockerfile"]);
    assert_eq!(snapshotted, "hello-from-db\nbuilt", "the snapshot holds the workspace and the image");
    for kind in ["container", "network", "volume"] {
        assert_eq!(stack_objects(&world, kind, Some(&project)), Vec::<String>::new(), "the prebuild's stack left a {kind}");
    }

    // Two running stacks, each a project on its own network.
    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest {
            project_id: STACK.into(),
            environment_class_id: CLASS.into(),
            min_size: Some(2),
            max_size: Some(2),
            ..Default::default()
        },
    )
    .await;
    pool_until(&mut client, &pool.id, "2 running stacks", |p| {
        let status = p.status.clone().unwrap_or_default();
        (status.phase, status.running_instances) == (WarmPoolPhase::Ready as i32, 2)
    })
    .await;
    let pool_filter = format!("label=dev.prebuildd.warm-pool-id={}", pool.id);
    let devs = world.containers(&[&pool_filter, "label=dev.prebuildd.role=instance", "status=running"]);
    assert_eq!(devs.len(), 2, "two dev containers");
    let networks = stack_objects(&world, "network", None);
    assert_eq!(networks.len(), 2, "a network per stack: {networks:?}");
    let project_of =
        |container: &str| docker(&["inspect", "--format", "{{index .Config.Labels \"dev.prebuildd.compose-project\"}}", container]);
    let db_of = |container: &str| {
        let filter = format!("label=dev.prebuildd.compose-project={}", project_of(container));
        world.containers(&[&filter, "label=dev.prebuildd.role=service"])
    };
    let (first, second) = (&devs[0], &devs[1]);
    assert_eq!(answer(first, "db"), "hello-from-db", "a stack reaches its own db by name");
    let other_db = db_of(second);
    let other_address = docker(&["inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", &other_db[0]]);
    assert_eq!(answer(first, &other_address), "", "nor the other stack's db ({other_address})");
    let limits = docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{json .HostConfig.SecurityOpt}} {{len .HostConfig.PortBindings}}",
        first,
    ]);
    assert_eq!(limits, "1000000000 268435456 [\"no-new-privileges:true\"] 0", "the class's limits, no host port");
    let service_limits = docker(&["inspect", "--format", "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}", &other_db[0]]);
    assert_eq!(service_limits, "1000000000 268435456", "the one other service shares as much again as the class gives");

    // A claim hands out the whole stack.
    let mut claims = WarmPoolInstanceServiceClient::with_interceptor(server.channel().await, bearer(TOKEN_A));
    let instance = claims
        .claim_instance(ClaimInstanceRequest { warm_pool_id: pool.id.clone(), wait: None })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert!(instance.compose_project.starts_with("prebuildd-stack-"), "{instance:?}");
    let services: Vec<&str> = instance.services.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(services, vec!["app", "db"], "{instance:?}");
    assert_eq!(instance.workspace_path, "/workspaces/stack-repo");
    assert_eq!(answer(&instance.container_id, "db"), "hello-from-db", "the claimed dev container reaches its own db");
    let claimed_db = &instance.services[1].container_id;
    assert!(docker(&["inspect", "--format", "{{.Name}}", claimed_db]).starts_with("/prebuildd-claimed-"), "the stack is the claimant's");
    pool_until(&mut client, &pool.id, "backfilled", |p| p.status.as_ref().is_some_and(|s| s.running_instances == 2)).await;

    // Deleting the pool removes its stacks whole, never the claimed one.
    client.delete_warm_pool(DeleteWarmPoolRequest { warm_pool_id: pool.id.clone() }).await.unwrap();
    let claimed_project = instance.compose_project.clone();
    eventually("the pool's stacks are removed", || {
        stack_objects(&world, "container", None).len() == 2
            && stack_objects(&world, "network", None).len() == 1
            && stack_objects(&world, "volume", None).iter().all(|v| v.starts_with(&claimed_project))
    })
    .await;
    assert_eq!(docker(&["inspect", "--format", "{{.State.Running}}", claimed_db]), "true", "the claimant's db runs on");

    // The claimant is done with its stack; deleting the prebuild then
    // removes its snapshot and its services' images.
    // (`services` lists the dev container too.)
    let claimed: Vec<&str> = instance.services.iter().map(|s| s.container_id.as_str()).collect();
    docker_lines(&[&["rm", "-f", "-v"][..], &claimed].concat());
    for kind in ["network", "volume"] {
        for object in stack_objects(&world, kind, Some(&claimed_project)) {
            docker(&[kind, "rm", &object]);
        }
    }
    client.delete_prebuild(DeletePrebuildRequest { prebuild_id: prebuild.id.clone() }).await.unwrap();
    eventually("the prebuild's images are removed", || !docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]).contains(&prebuild.id))
        .await;
    for kind in ["container", "network", "volume"] {
        assert_eq!(stack_objects(&world, kind, None), Vec::<String>::new(), "a stack {kind} is left");
    }
}

#[tokio::test]
async fn stacks_that_reach_the_host_are_refused_and_failed_or_cancelled_ones_leave_nothing() {
    let world = compose_world();
    let dir = world.dir.path();
    compose_repository(&dir.join("refused"), "    network_mode: host\n", "      - /var/run/docker.sock:/var/run/docker.sock\n", "true");
    compose_repository(&dir.join("failing"), "", "", "echo stack-failing-now; exit 3");
    compose_repository(&dir.join("sleepy"), "", "", "echo stack-sleeping-now; sleep 987654");
    let projects = [(REFUSED, dir.join("refused")), (FAILING, dir.join("failing")), (SLEEPY, dir.join("sleepy"))];
    let server = TestServer::start_with(world.config(&projects.iter().map(|(id, path)| (*id, path.as_path())).collect::<Vec<_>>())).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let refused = create_prebuild(&mut client, REFUSED).await;
    let failing = create_prebuild(&mut client, FAILING).await;
    let sleepy = create_prebuild(&mut client, SLEEPY).await;

    let message = failed(&server, &mut client, &refused.id).await;
    for expected in [
        "services.app.network_mode: host needs allow_host_network = true on environment class \"docker\"",
        "services.app.volumes[2] /var/run/docker.sock:/var/run/docker.sock:rw: a bind mount of a host path (/var/run/docker.sock) is never granted",
    ] {
        assert!(message.contains(expected), "{expected:?} missing from: {message}");
    }
    let message = failed(&server, &mut client, &failing.id).await;
    assert!(message.contains("onCreateCommand") && message.contains("exited with code 3"), "{message}");

    wait_for(&mut client, &sleepy.id, &[PrebuildPhase::Running]).await;
    log_shows(&server, &mut client, &sleepy.id, "stack-sleeping-now").await;
    assert_eq!(stack_objects(&world, "container", None).len(), 2, "the sleepy stack runs, dev container and db");
    client.cancel_prebuild(CancelPrebuildRequest { prebuild_id: sleepy.id.clone() }).await.unwrap();
    wait_for(&mut client, &sleepy.id, &[PrebuildPhase::Cancelled]).await;

    eventually("no stack is left", || ["container", "network", "volume"].iter().all(|kind| stack_objects(&world, kind, None).is_empty()))
        .await;
    let images = docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    for prebuild in [&refused, &failing, &sleepy] {
        assert!(!images.contains(&prebuild.id), "an image of {} is left: {images}", prebuild.id);
    }
}

#[tokio::test]
async fn a_remote_runner_prebuilds_a_stack_and_adopts_its_warm_stacks_after_a_kill_9() {
    let world = compose_world();
    let repo = world.dir.path().join("stack-repo");
    compose_repository(&repo, "", "", "nc -w 3 db 5432 </dev/null > from-db.txt || true");
    let (config, engine) = remote_config(&world.config(&[(REMOTE, &repo)]), TOKEN);
    let server = TestServer::start_with(config).await;
    let data = world.dir.path().join("runner-data");
    let mut runner = RunnerProcess::start_with_engine(&server.base_url(), &world.runner_id, TOKEN, &data, &engine);
    runner.wait_connected().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let prebuild = create_prebuild(&mut client, REMOTE).await;
    completed(&server, &mut client, &prebuild.id).await;

    // One running stack and one created, not started.
    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest {
            project_id: REMOTE.into(),
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
    pool_until(&mut client, &pool.id, "1 running and 1 stopped stack", ready).await;
    let pool_filter = format!("label=dev.prebuildd.warm-pool-id={}", pool.id);
    let mut before = world.containers(&[&pool_filter]);
    before.sort();
    assert_eq!(before.len(), 4, "two stacks of two containers");
    assert_eq!(world.containers(&[&pool_filter, "status=created"]).len(), 2, "the stopped stack is created, not started");

    runner.kill9();
    let runner = RunnerProcess::start_with_engine(&server.base_url(), &world.runner_id, TOKEN, &data, &engine);
    runner.wait_connected().await;
    pool_until(&mut client, &pool.id, "ready after the runner's restart", ready).await;
    let mut after = world.containers(&[&pool_filter]);
    after.sort();
    assert_eq!(after, before, "the restarted runner adopted the stacks; runner log:\n{}", runner.log_text());

    let mut claims = WarmPoolInstanceServiceClient::with_interceptor(server.channel().await, bearer(TOKEN_A));
    let instance = claims
        .claim_instance(ClaimInstanceRequest { warm_pool_id: pool.id.clone(), wait: None })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert!(instance.compose_project.starts_with("prebuildd-stack-"), "the project crossed the wire: {instance:?}");
    assert_eq!(instance.services.len(), 2, "{instance:?}");
    assert_eq!(answer(&instance.container_id, "db"), "hello-from-db");
    // The stopped stack is started for the backfill.
    pool_until(&mut client, &pool.id, "backfilled", ready).await;
    client.delete_warm_pool(DeleteWarmPoolRequest { warm_pool_id: pool.id.clone() }).await.unwrap();
    eventually("only the claimed stack is left", || stack_objects(&world, "container", None).len() == 2).await;
}

#[tokio::test]
async fn a_stack_is_always_prebuilt_in_full_even_where_prebuilds_may_be_incremental() {
    let world = compose_world();
    let repo = world.dir.path().join("stack-repo");
    compose_repository(&repo, "", "", "echo created >> on-create-count");
    let config = world.config(&[(STACK, &repo)]) + "[projects.prebuilds.git]\nincremental = true\n";
    let server = TestServer::start_with(config).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let first = create_prebuild(&mut client, STACK).await;
    completed(&server, &mut client, &first.id).await;

    let added = commit(&repo, "src/new-file.txt", "one new file\n");
    let second = create_prebuild(&mut client, STACK).await;
    completed(&server, &mut client, &second.id).await;
    let recorded = source(&server, &second.id).await;
    assert!(!recorded.incremental && recorded.base_prebuild_id.is_empty(), "{recorded:?}");
    assert_eq!(recorded.commit_sha, added);
    let log = log_of(&server, &mut client, &second.id).await;
    assert!(log.contains("full prebuild: a Docker Compose configuration (dockerComposeFile) is always prebuilt in full"), "{log}");
    assert!(log.contains("the stack is Compose project"), "a stack, not a single container:\n{log}");
    let snapshot = format!("prebuildd-snapshot:{}", second.id);
    let shown = docker(&["run", "--rm", "--entrypoint", "cat", &snapshot, "/workspaces/stack-repo/src/new-file.txt"]);
    assert_eq!(shown, "one new file");
    let template = docker(&["image", "inspect", "--format", "{{index .Config.Labels \"dev.prebuildd.compose-stack\"}}", &snapshot]);
    assert!(template.contains("\"service\":\"app\""), "the snapshot keeps its stack: {template}");
}

#[tokio::test]
async fn override_command_keeps_the_dev_service_up_in_place_of_its_command_and_run_services_starts_only_those_named() {
    let world = compose_world();
    let repo = world.dir.path().join("stack-repo");
    // The dev service's own command exits at once: with overrideCommand it
    // never runs, in the prebuild or in the warm stack made from the
    // snapshot, and the dev container stays up.
    let compose = format!(
        "services:\n  app:\n    build: {{ context: ., dockerfile: Dockerfile }}\n    command: [\"sh\", \"-c\", \"exit 3\"]\n    depends_on: [db]\n  db:\n    image: {BASE_IMAGE}\n    command: [\"nc\", \"-ll\", \"-p\", \"5432\", \"-e\", \"echo\", \"hello-from-db\"]\n  extra:\n    image: {BASE_IMAGE}\n    command: [\"sleep\", \"2147483647\"]\n"
    );
    let devcontainer = r#"{ "dockerComposeFile": ["compose.yml"], "service": "app", "runServices": ["db"], "overrideCommand": true,
        "workspaceFolder": "/workspaces/stack-repo", "onCreateCommand": "echo created > made-by-prebuild" }"#;
    repository(
        &repo,
        &[
            (".devcontainer/devcontainer.json", devcontainer),
            (".devcontainer/compose.yml", &compose),
            (".devcontainer/Dockerfile", &format!("FROM {BASE_IMAGE}\n")),
        ],
    );
    let server = TestServer::start_with(world.config(&[(STACK, &repo)])).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let prebuild = create_prebuild(&mut client, STACK).await;
    completed(&server, &mut client, &prebuild.id).await;
    let log = log_of(&server, &mut client, &prebuild.id).await;
    assert!(log.contains("service \"extra\" is not started") && log.contains("(2 services)"), "{log}");

    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest {
            project_id: STACK.into(),
            environment_class_id: CLASS.into(),
            min_size: Some(1),
            max_size: Some(1),
            ..Default::default()
        },
    )
    .await;
    pool_until(&mut client, &pool.id, "1 running stack", |p| p.status.as_ref().is_some_and(|s| s.running_instances == 1)).await;
    let pool_filter = format!("label=dev.prebuildd.warm-pool-id={}", pool.id);
    let dev = world.containers(&[&pool_filter, "label=dev.prebuildd.role=instance", "status=running"]);
    assert_eq!(dev.len(), 1, "the dev container runs, its own command not run");
    assert_eq!(docker(&["exec", &dev[0], "cat", "/workspaces/stack-repo/made-by-prebuild"]), "created");
    assert_eq!(answer(&dev[0], "db"), "hello-from-db");
    let services: Vec<String> = world
        .containers(&[&pool_filter])
        .iter()
        .map(|id| docker(&["inspect", "--format", "{{index .Config.Labels \"com.docker.compose.service\"}}", id]))
        .collect();
    assert_eq!(services.len(), 2, "app and db, not extra: {services:?}");
    assert!(!services.contains(&"extra".to_string()), "{services:?}");
}
