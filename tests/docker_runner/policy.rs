//! The privilege policy on real containers: what a class does not allow
//! fails the prebuild with the key, the value, the class and the setting;
//! what it allows is granted (and `docker inspect` shows it); flags that
//! change only the container are honoured (visible inside it); a bind mount
//! of a host path is never granted (a warning by default, a failure where
//! the class refuses them); a volume is the container's own and not in the
//! snapshot; a warm instance gets what its prebuild was granted.

use super::harness::*;
use crate::common::*;
use prebuildd::proto::gitpod::v1::*;

const DEBUGGER_PROJECT: &str = "9011c000-0000-4000-8000-000000000001";
const PRIVILEGED_PROJECT: &str = "9011c000-0000-4000-8000-000000000002";
const HOST_BIND_PROJECT: &str = "9011c000-0000-4000-8000-000000000003";
const DEBUG_CLASS: &str = "9011c000-0000-4000-8000-0000000000c1";
const STRICT_CLASS: &str = "9011c000-0000-4000-8000-0000000000c2";

#[tokio::test]
async fn the_class_decides_what_a_dev_container_gets() {
    let world = World::new();
    // A Go/C++-style template: a debugger's capability and seccomp profile,
    // and container-only flags; a volume; a bind mount of the host's /etc.
    let debugger = world.dir.path().join("debugger-repo");
    repository(
        &debugger,
        &[(
            ".devcontainer/devcontainer.json",
            &format!(
                r#"{{
                  "image": "{BASE_IMAGE}",
                  "runArgs": ["--cap-add=SYS_PTRACE", "--security-opt", "seccomp=unconfined",
                              "-e", "FROM_RUN_ARGS=yes", "--init", "--add-host", "db.internal:10.9.8.7",
                              "-v", "/etc:/host-etc"],
                  "mounts": ["source=build-cache,target=/data,type=volume"],
                  "onCreateCommand": "echo \"env=$FROM_RUN_ARGS\"; grep db.internal /etc/hosts; echo \"pid1=$(cat /proc/1/comm)\"; grep CapEff /proc/self/status; test -e /host-etc && echo HOST-ETC-VISIBLE; echo kept > /data/in-volume"
                }}"#
            ),
        )],
    );
    let privileged = world.dir.path().join("privileged-repo");
    repository(&privileged, &[(".devcontainer/devcontainer.json", &format!(r#"{{ "image": "{BASE_IMAGE}", "privileged": true }}"#))]);
    let host_bind = world.dir.path().join("host-bind-repo");
    repository(
        &host_bind,
        &[(
            ".devcontainer/devcontainer.json",
            &format!(r#"{{ "image": "{BASE_IMAGE}", "mounts": ["source=/etc,target=/host-etc,type=bind"] }}"#),
        )],
    );
    let config = world.config_with_classes(
        &[(DEBUGGER_PROJECT, &debugger), (PRIVILEGED_PROJECT, &privileged), (HOST_BIND_PROJECT, &host_bind)],
        &[
            (DEBUG_CLASS, "docker-debug", "allow_capabilities = [\"SYS_PTRACE\"]\nallow_security_opt = [\"seccomp=unconfined\"]"),
            (STRICT_CLASS, "docker-strict", "host_bind_mounts = \"refuse\""),
        ],
    );
    let server = TestServer::start_with(config).await;
    let mut client = server.client(Some(TOKEN_A)).await;

    // Refused on the default class, before anything is built.
    let refused = create_prebuild(&mut client, DEBUGGER_PROJECT).await;
    let privileged_prebuild = create_prebuild(&mut client, PRIVILEGED_PROJECT).await;
    let strict = create_prebuild_on(&mut client, HOST_BIND_PROJECT, STRICT_CLASS).await;
    let message = failed(&server, &mut client, &refused.id).await;
    assert!(
        message.contains(r#"runArgs --cap-add=SYS_PTRACE needs allow_capabilities = ["SYS_PTRACE"] on environment class "docker""#),
        "{message}"
    );
    assert!(
        message.contains(
            r#"runArgs --security-opt seccomp=unconfined needs allow_security_opt = ["seccomp=unconfined"] on environment class "docker""#
        ),
        "{message}"
    );
    let message = failed(&server, &mut client, &privileged_prebuild.id).await;
    assert!(message.contains(r#"privileged: true needs allow_privileged = true on environment class "docker""#), "{message}");
    let message = failed(&server, &mut client, &strict.id).await;
    assert!(
        message.contains(r#"mounts[0] source=/etc,target=/host-etc,type=bind is a bind mount of a host path (/etc), which is never granted; environment class "docker-strict" has host_bind_mounts = "refuse""#),
        "{message}"
    );
    assert!(world.containers(&[]).is_empty(), "a refused prebuild made no container");

    // Granted on the class that allows it: the flags are honoured, the host
    // bind mount is left out with a warning, the volume is the container's.
    let granted = create_prebuild_on(&mut client, DEBUGGER_PROJECT, DEBUG_CLASS).await;
    let done = completed(&server, &mut client, &granted.id).await;
    let warning = done.status.as_ref().unwrap().warning_message.clone();
    assert!(warning.contains("runArgs -v /etc:/host-etc was left out: a bind mount of a host path (/etc) is never granted"), "{warning}");
    let log = log_of(&server, &mut client, &granted.id).await;
    for needle in ["env=yes", "10.9.8.7", "db.internal", "pid1=docker-init", "a volume of this container alone at /data"] {
        assert!(log.contains(needle), "{needle} missing from the log:\n{log}");
    }
    assert!(!log.lines().any(|line| line.trim() == "HOST-ETC-VISIBLE"), "the host's /etc is not in the container: {log}");
    // CAP_SYS_PTRACE is bit 19 of the effective set.
    let effective = log.lines().find(|l| l.starts_with("CapEff:")).and_then(|l| l.split_whitespace().last()).map(str::to_string).unwrap();
    let bits = u64::from_str_radix(&effective, 16).unwrap();
    assert!(bits & (1 << 19) != 0, "SYS_PTRACE is effective in the container: {effective}");

    // The volume's content is not in the snapshot; the grant is.
    let snapshot = format!("prebuildd-snapshot:{}", granted.id);
    let listed = docker(&["run", "--rm", "--entrypoint", "/bin/sh", &snapshot, "-c", "ls -A /data; echo end"]);
    assert_eq!(listed, "end", "the volume's files stay out of the snapshot");
    let grant = docker(&["image", "inspect", "--format", "{{index .Config.Labels \"dev.prebuildd.grant\"}}", &snapshot]);
    assert!(grant.contains("SYS_PTRACE") && grant.contains("seccomp=unconfined"), "{grant}");

    // A warm instance gets the same settings, and a volume of its own.
    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest { project_id: DEBUGGER_PROJECT.into(), environment_class_id: DEBUG_CLASS.into(), ..Default::default() },
    )
    .await;
    pool_until(&mut client, &pool.id, "a ready instance", |p| p.status.as_ref().is_some_and(|s| s.running_instances == 1)).await;
    let pool_filter = format!("label=dev.prebuildd.warm-pool-id={}", pool.id);
    let instance = world.containers(&[&pool_filter, "status=running"]).pop().unwrap();
    let settings = docker(&[
        "inspect",
        "--format",
        "{{json .HostConfig.CapAdd}} {{json .HostConfig.SecurityOpt}} {{.HostConfig.Init}} {{range .Mounts}}{{.Type}}:{{.Destination}}{{end}}",
        &instance,
    ]);
    assert_eq!(settings, r#"["SYS_PTRACE"] ["no-new-privileges","seccomp=unconfined"] true volume:/data"#);
    assert_eq!(docker(&["exec", &instance, "sh", "-c", "echo $FROM_RUN_ARGS; grep -c db.internal /etc/hosts"]), "yes\n1");

    // Taken away from the class (a configuration reload): the pool cannot
    // make instances of that snapshot any more, and says why.
    let mut server = server;
    let narrowed = world.config_with_classes(
        &[(DEBUGGER_PROJECT, &debugger), (PRIVILEGED_PROJECT, &privileged), (HOST_BIND_PROJECT, &host_bind)],
        &[(DEBUG_CLASS, "docker-debug", ""), (STRICT_CLASS, "docker-strict", "host_bind_mounts = \"refuse\"")],
    );
    server.reload(narrowed);
    docker(&["rm", "-f", "-v", &instance]);
    let degraded =
        pool_until(&mut client, &pool.id, "degraded", |p| p.status.as_ref().is_some_and(|s| s.phase == WarmPoolPhase::Degraded as i32))
            .await;
    let failure = degraded.status.unwrap().failure_message;
    assert!(failure.contains(r#"environment class "docker-debug" no longer allows (it needs allow_capabilities = ["SYS_PTRACE"], allow_security_opt = ["seccomp=unconfined"])"#), "{failure}");
}
