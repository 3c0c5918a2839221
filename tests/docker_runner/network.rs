//! Network isolation on real containers: a prebuild's lifecycle command and
//! a claimed warm instance reach a machine beyond this host (a namespace of
//! the test's own at a documentation address), but not a service listening
//! on every address of this host (not through the gateway, not at any of
//! the host's addresses), not the metadata service's address, not a
//! private address (unless the class's `allow_egress` names it, and then
//! only its port), and not another instance, while DNS still answers; the
//! host still reaches an instance at its address on the runner's network.
//! A runner that cannot install its rules refuses prebuilds saying why and
//! what to do, and one with `network_isolation = false` says on every
//! prebuild that it is open.

use super::harness::*;
use crate::common::network::*;
use crate::common::runner_process::RunnerProcess;
use crate::common::*;
use prebuildd::proto::gitpod::v1::*;
use prebuildd::proto::prebuildd::v1::warm_pool_instance_service_client::WarmPoolInstanceServiceClient;
use prebuildd::proto::prebuildd::v1::ClaimInstanceRequest;

const PROJECT: &str = "d0c0e000-0000-4000-8000-000000000051";
const MIRROR_CLASS: &str = "c1a55000-0000-4000-8000-0000000000d5";

/// Asserts that none of the host's targets answered, in `output`.
fn none_of_the_host(output: &str, targets: &[(String, String, u16)], host: &Listener, metadata: &Metadata) {
    for (label, _, _) in targets {
        let answer = reached(output, label);
        assert!(!answer.contains(&host.token) && !answer.contains(&metadata.listener.token), "{label} answered: {answer}\n{output}");
    }
}

#[tokio::test]
async fn prebuilds_and_instances_reach_the_internet_but_not_this_host_private_networks_or_each_other() {
    let world = World::new();
    let (host, metadata, remote) = (host_listener(), Metadata::new(), Remote::new());
    let mut targets = host_targets(&host, &metadata);
    let beyond = [
        ("public".to_string(), remote.public.to_string(), remote.main.address.port()),
        ("private".to_string(), remote.private.to_string(), remote.main.address.port()),
        ("private-other-port".to_string(), remote.private.to_string(), remote.other.address.port()),
    ];
    targets.extend(beyond.iter().cloned());
    let script = resolve_script("nslookup") + &reach_script("nc", &targets);
    let repo = world.dir.path().join("isolated");
    repository(
        &repo,
        &[(".devcontainer/devcontainer.json", &serde_json::json!({ "image": BASE_IMAGE, "onCreateCommand": script }).to_string())],
    );
    let mirror = format!("allow_egress = [\"{}:{}\"]", remote.private, remote.main.address.port());
    let config = world.config_with_classes(&[(PROJECT, &repo)], &[(MIRROR_CLASS, "mirror", &mirror)]);
    let server = TestServer::start_with(config).await;
    let mut client = server.client(Some(TOKEN_A)).await;

    // The default class: the internet only.
    let prebuild = create_prebuild(&mut client, PROJECT).await;
    completed(&server, &mut client, &prebuild.id).await;
    let log = log_of(&server, &mut client, &prebuild.id).await;
    assert!(log.contains(&format!("the container joins the runner's network prebuildd-{}", world.runner_id)), "{log}");
    none_of_the_host(&log, &targets[..targets.len() - beyond.len()], &host, &metadata);
    assert!(reached(&log, "public").contains(&remote.main.token), "a machine beyond the host answers:\n{log}");
    assert!(!reached(&log, "private").contains(&remote.main.token), "a private address is out of reach:\n{log}");
    assert_resolver_answered(&log);
    assert!(!reached(&log, "private-other-port").contains(&remote.other.token), "{log}");

    // A class that allows one private address and port: that one answers.
    let mirrored = create_prebuild_on(&mut client, PROJECT, MIRROR_CLASS).await;
    completed(&server, &mut client, &mirrored.id).await;
    let mirrored_log = log_of(&server, &mut client, &mirrored.id).await;
    assert!(reached(&mirrored_log, "private").contains(&remote.main.token), "allow_egress lets it through:\n{mirrored_log}");
    assert!(!reached(&mirrored_log, "private-other-port").contains(&remote.other.token), "only its port:\n{mirrored_log}");
    none_of_the_host(&mirrored_log, &targets[..targets.len() - beyond.len()], &host, &metadata);
    assert!(mirrored_log.contains("(its class allows"), "{mirrored_log}");

    // Two warm instances of the default class's snapshot: the claimed one
    // reaches neither the host nor the other, whose port the host reaches.
    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest {
            project_id: PROJECT.into(),
            environment_class_id: CLASS.into(),
            min_size: Some(2),
            max_size: Some(2),
            ..Default::default()
        },
    )
    .await;
    pool_until(&mut client, &pool.id, "two running instances", |p| p.status.as_ref().is_some_and(|s| s.running_instances == 2)).await;
    let mut claims = WarmPoolInstanceServiceClient::with_interceptor(server.channel().await, bearer(TOKEN_A));
    let claimed =
        claims.claim_instance(ClaimInstanceRequest { warm_pool_id: pool.id.clone(), ..Default::default() }).await.unwrap().into_inner();
    let claimed = claimed.instance.unwrap().container_id;
    let pool_filter = format!("label=dev.prebuildd.warm-pool-id={}", pool.id);
    let other = world
        .containers(&[&pool_filter, "status=running"])
        .into_iter()
        .find(|id| !id.starts_with(&claimed) && !claimed.starts_with(id.as_str()))
        .expect("the pool's other instance");
    let network = format!("prebuildd-{}", world.runner_id);
    let other_address =
        docker(&["inspect", "--format", &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"), &other]);
    assert!(!other_address.is_empty(), "the instance is on the runner's network");
    docker(&["exec", "-d", &other, "sh", "-c", "while true; do echo peer-port-answered | nc -l -p 9000; done"]);
    // The host reaches an instance at its address (how a claimant does,
    // besides docker exec).
    let from_host = async {
        for _ in 0..50 {
            if let Ok(mut stream) = tokio::net::TcpStream::connect((other_address.as_str(), 9000)).await {
                let mut answer = String::new();
                use tokio::io::AsyncReadExt;
                let _ = stream.read_to_string(&mut answer).await;
                if answer.contains("peer-port-answered") {
                    return true;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        false
    };
    assert!(from_host.await, "the host reaches the instance at {other_address}:9000");
    let mut instance_targets = targets[..targets.len() - beyond.len()].to_vec();
    instance_targets.push(("peer".into(), other_address.clone(), 9000));
    instance_targets.push(beyond[0].clone());
    let output = docker(&["exec", &claimed, "sh", "-c", &reach_script("nc", &instance_targets)]);
    none_of_the_host(&output, &instance_targets[..instance_targets.len() - 2], &host, &metadata);
    assert!(!reached(&output, "peer").contains("peer-port-answered"), "another instance is out of reach:\n{output}");
    assert!(reached(&output, "public").contains(&remote.main.token), "{output}");
    assert_eq!(host.accepted() + metadata.listener.accepted(), 0, "no connection reached the host's listeners");
    let settings = docker(&["inspect", "--format", "{{json .NetworkSettings.Networks}}", &claimed]);
    assert!(settings.contains(&network) && !settings.contains("\"bridge\""), "{settings}");
}

#[tokio::test]
async fn a_runner_without_isolation_says_so_and_one_that_cannot_install_its_rules_refuses() {
    let world = World::new();
    let host = host_listener();
    let targets = [("gateway".to_string(), "$GATEWAY".to_string(), host.address.port())];
    let repo = world.dir.path().join("open");
    let command = reach_script("nc", &targets);
    repository(
        &repo,
        &[(".devcontainer/devcontainer.json", &serde_json::json!({ "image": BASE_IMAGE, "onCreateCommand": command }).to_string())],
    );

    // Opted out: Docker's default bridge, from which the host answers, and
    // the log of the prebuild says so.
    let open = world.config(&[(PROJECT, &repo)]).replace("kind = \"docker\"\n", "kind = \"docker\"\nnetwork_isolation = false\n");
    let server = TestServer::start_with(open).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let prebuild = create_prebuild(&mut client, PROJECT).await;
    completed(&server, &mut client, &prebuild.id).await;
    let log = log_of(&server, &mut client, &prebuild.id).await;
    assert!(log.contains("warning: network isolation is off on this runner (network_isolation = false)"), "{log}");
    assert!(reached(&log, "gateway").contains(&host.token), "without isolation the host answers:\n{log}");
    drop(server);

    // A remote runner whose process may not change the host's rules (no
    // CAP_NET_ADMIN): its prebuilds fail before anything of the
    // repository is fetched, saying why and what to do.
    let docker_config = world.config(&[(PROJECT, &repo)]);
    let start = docker_config.find("kind = \"docker\"").unwrap();
    let end = docker_config[start..].find("[[environment_classes]]").unwrap() + start;
    let token = "network-refusal-runner-token";
    let config = format!("{}kind = \"remote\"\ntoken = \"{token}\"\n{}", &docker_config[..start], &docker_config[end..]);
    let server = TestServer::start_with(config).await;
    let data = world.dir.path().join("runner-data");
    let runner = RunnerProcess::start_with_engine_under(
        &["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin"],
        &server.base_url(),
        &world.runner_id,
        token,
        &data,
        &docker_config[start..end],
    );
    runner.wait_connected().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let refused = create_prebuild(&mut client, PROJECT).await;
    let message = failed(&server, &mut client, &refused.id).await;
    assert!(
        message.starts_with("network isolation: the runner keeps its containers off this host and private networks with nftables rules, and cannot install them ("),
        "{message}\nrunner log:\n{}",
        runner.log_text()
    );
    assert!(
        message.ends_with(
            "the runner must run as root (or with CAP_NET_ADMIN) on the Docker daemon's machine; restart prebuildd when it does, \
             or set network_isolation = false on this runner for trusted repositories only"
        ),
        "{message}"
    );
    let log = log_of(&server, &mut client, &refused.id).await;
    assert!(!log.contains("cloning") && !log.contains("reach gateway"), "nothing of the repository ran:\n{log}");
    assert!(runner.log_text().contains("cannot install them"), "the runner logs it at start:\n{}", runner.log_text());
}
