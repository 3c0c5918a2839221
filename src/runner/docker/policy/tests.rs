use super::variables::Variables;
use super::*;
use bollard::models::{ContainerInspectResponse, HostConfig, MountPoint};
use serde_json::json;

fn policy() -> ClassPolicy {
    ClassPolicy { class_name: "small".into(), ..ClassPolicy::default() }
}

fn repository() -> Repository {
    Repository { clone: PathBuf::from("/nonexistent/clone") }
}

fn metadata_asks(entries: serde_json::Value) -> Vec<Ask> {
    asks::of_metadata(entries.as_array().unwrap(), &Variables::default())
}

#[test]
fn features_ask_like_the_file_and_are_named() {
    let asks = metadata_asks(json!([
        {"id": "ghcr.io/devcontainers/features/docker-in-docker:2", "privileged": true, "init": true,
         "mounts": [{"source": "dind-var-lib-docker-${devcontainerId}", "target": "/var/lib/docker", "type": "volume"}],
         "entrypoint": "/usr/local/share/docker-init.sh"},
        {"id": "./debug", "capAdd": ["SYS_PTRACE"], "securityOpt": ["seccomp=unconfined"]},
        {"remoteUser": "vscode"}
    ]));
    let decision = decide(&asks, &policy(), Resources::default(), &repository());
    let message = decision.refused().unwrap();
    assert!(
        message.contains(r#"feature ghcr.io/devcontainers/features/docker-in-docker:2: privileged: true needs allow_privileged = true on environment class "small""#),
        "{message}"
    );
    assert!(message.contains(r#"feature ./debug: capAdd SYS_PTRACE needs allow_capabilities = ["SYS_PTRACE"]"#), "{message}");
    assert!(
        message.contains(r#"feature ./debug: securityOpt seccomp=unconfined needs allow_security_opt = ["seccomp=unconfined"]"#),
        "{message}"
    );

    let allowing = ClassPolicy {
        allow_privileged: true,
        allow_capabilities: vec!["SYS_PTRACE".into()],
        allow_security_opt: vec!["seccomp=unconfined".into()],
        ..policy()
    };
    let decision = decide(&asks, &allowing, Resources::default(), &repository());
    assert_eq!(decision.refused(), None);
    let grant = decision.grant;
    assert!(grant.privileged && grant.init);
    assert_eq!(grant.volumes, vec!["/var/lib/docker"], "the feature's volume is the container's own");
    assert_eq!(grant.cap_add, vec!["SYS_PTRACE"]);
}

#[test]
fn a_feature_that_binds_the_docker_socket_goes_on_without_it() {
    let asks = metadata_asks(json!([
        {"id": "ghcr.io/devcontainers/features/docker-outside-of-docker:1",
         "mounts": [{"source": "/var/run/docker.sock", "target": "/var/run/docker-host.sock", "type": "bind"}]}
    ]));
    let decision = decide(&asks, &policy(), Resources::default(), &repository());
    assert_eq!(decision.refused(), None);
    assert!(
        decision.warnings[0].contains("feature ghcr.io/devcontainers/features/docker-outside-of-docker:1: mounts[0]"),
        "{:?}",
        decision.warnings
    );
    assert!(decision.warnings[0].contains("(/var/run/docker.sock)"));
    let refusing = ClassPolicy { host_bind_mounts: HostBindMounts::Refuse, ..policy() };
    assert!(decide(&asks, &refusing, Resources::default(), &repository()).refused().unwrap().contains("host_bind_mounts = \"refuse\""));
}

#[test]
fn default_capabilities_need_no_allowance_and_all_allows_any() {
    let asks = vec![
        Ask { written: "capAdd NET_RAW".into(), want: Want::Capability("NET_RAW".into()) },
        Ask { written: "capAdd SYS_ADMIN".into(), want: Want::Capability("SYS_ADMIN".into()) },
    ];
    let decision = decide(&asks, &policy(), Resources::default(), &repository());
    assert_eq!(decision.refusals.len(), 1, "{:?}", decision.refusals);
    let all = ClassPolicy { allow_capabilities: vec!["ALL".into()], ..policy() };
    let decision = decide(&asks, &all, Resources::default(), &repository());
    assert_eq!(decision.refused(), None);
    assert_eq!(decision.grant.cap_add, vec!["SYS_ADMIN"]);
}

#[test]
fn devices_gpus_and_new_privileges_follow_the_class() {
    let asks = vec![
        Ask {
            written: "runArgs --device /dev/fuse".into(),
            want: Want::Device { host_path: "/dev/fuse".into(), spec: "/dev/fuse".into() },
        },
        Ask { written: "runArgs --gpus all".into(), want: Want::Gpus("all".into()) },
    ];
    let message = decide(&asks, &policy(), Resources::default(), &repository()).refused().unwrap();
    assert!(message.contains(r#"runArgs --device /dev/fuse needs allow_devices = ["/dev/fuse"]"#), "{message}");
    assert!(message.contains("runArgs --gpus all needs allow_gpus = true"), "{message}");
    let open = ClassPolicy { allow_devices: vec!["/dev/fuse".into()], allow_gpus: true, allow_new_privileges: true, ..policy() };
    let grant = decide(&asks, &open, Resources::default(), &repository()).grant;
    assert_eq!((grant.devices.len(), grant.gpus.as_deref(), grant.new_privileges), (1, Some("all"), true));
    assert!(!grant.run_args(&[]).contains(&"no-new-privileges".to_string()));
}

#[test]
fn a_grant_survives_its_label_and_is_checked_against_the_class_again() {
    let grant = Grant {
        privileged: true,
        cap_add: vec!["SYS_PTRACE".into()],
        volumes: vec!["/var/lib/docker".into()],
        init: true,
        nano_cpus: Some(4_000_000_000),
        env: vec![("A".into(), "b".into())],
        ..Grant::default()
    };
    let labels = std::collections::HashMap::from([(crate::runner::docker::labels::GRANT.to_string(), grant.to_label())]);
    let read = Grant::from_image_labels(&labels, Resources::default()).unwrap();
    assert_eq!(read, Grant { env: Vec::new(), ..grant.clone() }, "the image's config carries the environment, not the label");
    let message = read.clone().under(&policy(), Resources::default()).unwrap_err();
    assert!(
        message.contains(
            r#"environment class "small" no longer allows (it needs allow_privileged = true, allow_capabilities = ["SYS_PTRACE"])"#
        ),
        "{message}"
    );
    let allowing = ClassPolicy { allow_privileged: true, allow_capabilities: vec!["SYS_PTRACE".into()], ..policy() };
    let limited = read.under(&allowing, Resources { nano_cpus: Some(1_000_000_000), memory_bytes: Some(1 << 30) }).unwrap();
    assert_eq!((limited.nano_cpus, limited.memory_bytes), (Some(1_000_000_000), Some(1 << 30)), "the class's limits apply");
    let host = limited.host_config();
    assert_eq!(host.privileged, Some(true));
    assert_eq!(host.init, Some(true));
    assert_eq!(host.security_opt, Some(vec!["no-new-privileges".to_string()]));
    assert_eq!(host.mounts.unwrap()[0].target.as_deref(), Some("/var/lib/docker"));
    let old = Grant::from_image_labels(&std::collections::HashMap::new(), Resources { nano_cpus: Some(1), memory_bytes: None }).unwrap();
    assert_eq!(old, Grant { nano_cpus: Some(1), ..Grant::default() }, "a snapshot without the label was granted nothing");
}

#[test]
fn a_container_with_more_than_its_grant_is_caught() {
    let grant = Grant { cap_add: vec!["SYS_PTRACE".into()], volumes: vec!["/data".into()], ..Grant::default() };
    let container = |host: HostConfig, mounts: Vec<MountPoint>| ContainerInspectResponse {
        host_config: Some(host),
        mounts: Some(mounts),
        ..ContainerInspectResponse::default()
    };
    let safe = HostConfig {
        cap_add: Some(vec!["CAP_SYS_PTRACE".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        ..HostConfig::default()
    };
    let volume = MountPoint { typ: Some("volume".into()), destination: Some("/data".into()), ..MountPoint::default() };
    assert!(grant.excess(&container(safe.clone(), vec![volume.clone()])).is_empty());

    let bind = MountPoint { typ: Some("bind".into()), destination: Some("/host".into()), ..MountPoint::default() };
    let unsafe_host = HostConfig {
        privileged: Some(true),
        cap_add: Some(vec!["SYS_ADMIN".into()]),
        security_opt: Some(vec!["seccomp=unconfined".into()]),
        network_mode: Some("host".into()),
        pid_mode: Some("host".into()),
        ..HostConfig::default()
    };
    let problems = grant.excess(&container(unsafe_host, vec![volume, bind])).join("; ");
    for needle in [
        "it is privileged",
        "it adds capabilities (SYS_ADMIN)",
        "security options",
        "it lacks no-new-privileges",
        "a bind mount at /host",
        "host's network",
        "host's PID",
    ] {
        assert!(problems.contains(needle), "{needle}: {problems}");
    }
}

#[test]
fn a_container_joins_the_runners_network_and_no_other() {
    let grant = Grant { network: Some("prebuildd-r1".into()), ..Grant::default() };
    let args = grant.run_args(&[]);
    assert!(args.windows(2).any(|pair| pair == ["--network", "prebuildd-r1"]), "{args:?}");
    assert_eq!(grant.host_config().network_mode.as_deref(), Some("prebuildd-r1"));
    let on = |networks: &[&str]| ContainerInspectResponse {
        host_config: Some(HostConfig { security_opt: Some(vec!["no-new-privileges".into()]), ..HostConfig::default() }),
        network_settings: Some(bollard::models::NetworkSettings {
            networks: Some(networks.iter().map(|name| (name.to_string(), Default::default())).collect()),
            ..Default::default()
        }),
        ..ContainerInspectResponse::default()
    };
    assert!(grant.excess(&on(&["prebuildd-r1"])).is_empty());
    assert_eq!(
        grant.excess(&on(&["bridge", "prebuildd-r1"])),
        [r#"it is on the networks ["bridge", "prebuildd-r1"], not only on the runner's prebuildd-r1"#]
    );
    let host = Grant { host_network: true, ..grant.clone() };
    assert!(host.run_args(&[]).windows(2).any(|pair| pair == ["--network", "host"]), "a class's allow_host_network wins");
    let off = Grant::default();
    assert!(!off.run_args(&[]).contains(&"--network".to_string()), "without isolation, Docker's default bridge");
    assert_eq!(off.host_config().network_mode, None);
    assert_eq!(
        Grant::from_image_labels(&[(crate::runner::docker::labels::GRANT.to_string(), grant.to_label())].into(), Resources::default())
            .unwrap()
            .network,
        None,
        "not part of a snapshot"
    );
}

#[test]
fn run_args_spellings() {
    let args = |list: &[&str]| -> Vec<Want> {
        let args: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        run_args::asks(&args, &Variables::default(), &repository()).into_iter().map(|ask| ask.want).collect()
    };
    assert_eq!(args(&["--cap-add", "sys_ptrace"]), vec![Want::Capability("SYS_PTRACE".into())]);
    assert_eq!(args(&["--cap-add=CAP_NET_ADMIN"]), vec![Want::Capability("NET_ADMIN".into())]);
    assert_eq!(args(&["--privileged=false", "--init=true"]), vec![Want::Init]);
    assert_eq!(args(&["-eA=1"]), vec![Want::Env("A".into(), "1".into())]);
    assert!(matches!(args(&["--privileged=maybe"])[0], Want::Refused(_)));
    assert!(matches!(args(&["--env"])[0], Want::Refused(ref r) if r == "needs a value"));
    assert!(matches!(args(&["ubuntu"])[0], Want::Refused(_)));
    assert_eq!(args(&["--net=host"]), vec![Want::HostNetwork]);
    assert_eq!(args(&["--ipc=host"]), vec![Want::HostNamespace("IPC")]);
    assert!(matches!(args(&["--network", "bridge"])[0], Want::Ignored { warn: false, .. }));
    assert!(matches!(args(&["--network", "mynet"])[0], Want::Refused(_)));
    assert_eq!(args(&["-v", "/data"]), vec![Want::Mount(mounts::MountSpec::Volume { target: "/data".into() })]);
    assert_eq!(args(&["--shm-size=2g"]), vec![Want::ShmSize(2 << 30)]);
    assert!(matches!(args(&["--read-only"])[0], Want::Refused(_)));
    assert_eq!(run_args::bytes_of("1.5g"), Some(3 << 29));
    assert_eq!(run_args::bytes_of("512MiB"), Some(512 << 20));
    assert_eq!(run_args::bytes_of("12parsecs"), None);
}
