use super::*;
use crate::catalog::HostBindMounts;
use crate::runner::docker::policy::{decide, Decision, Grant};

fn workspace_with(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".devcontainer")).unwrap();
    std::fs::write(dir.path().join(".devcontainer/devcontainer.json"), config).unwrap();
    std::fs::write(dir.path().join(".devcontainer/Dockerfile"), "FROM scratch\n").unwrap();
    dir
}

fn source(dir: &Path) -> Source<'_> {
    Source {
        workspace: dir,
        repository: "https://example.com/acme/backend.git",
        default_image: None,
        devcontainer_path: None,
        local_env: BTreeMap::from([("NPM_TOKEN".to_string(), "t0ken".to_string())]),
    }
}

fn policy() -> ClassPolicy {
    ClassPolicy { class_name: "docker-small".into(), ..ClassPolicy::default() }
}

/// prepare, then the policy over the file's own asks.
fn decision_for(text: &str, policy: &ClassPolicy) -> Result<(Prepared, Decision), String> {
    let dir = workspace_with(text);
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(dir.path().join("config/app.env"), "FROM_FILE=1\n# a comment\n").unwrap();
    let prepared = prepare(&source(dir.path()))?;
    let repository = Repository { clone: dir.path().canonicalize().unwrap() };
    let resources = Resources { nano_cpus: Some(2_000_000_000), memory_bytes: Some(1 << 30) };
    let decision = decide(&prepared.asks, policy, resources, &repository);
    // The clone must outlive nothing here: paths are checked already.
    drop(dir);
    Ok((prepared, decision))
}

#[test]
fn what_the_runner_decides_for_real_world_shapes() {
    struct Case {
        name: &'static str,
        file: &'static str,
        policy: fn(&mut ClassPolicy),
        check: fn(Result<(Prepared, Decision), String>),
    }
    fn allow_nothing(_: &mut ClassPolicy) {}
    fn debugger(policy: &mut ClassPolicy) {
        policy.allow_capabilities = vec!["SYS_PTRACE".into()];
        policy.allow_security_opt = vec!["seccomp=unconfined".into()];
    }
    fn refuse_host_binds(policy: &mut ClassPolicy) {
        policy.host_bind_mounts = HostBindMounts::Refuse;
    }
    fn dind(policy: &mut ClassPolicy) {
        policy.allow_privileged = true;
    }
    let cases = [
        Case {
            name: "comments, trailing commas and CRLF line ends",
            file: "{\r\n  // the image\r\n  \"image\": \"base:1\", /* block */\r\n  \"onCreateCommand\": \"make\",\r\n}\r\n",
            policy: allow_nothing,
            check: |result| {
                let (prepared, decision) = result.unwrap();
                assert_eq!(prepared.config["image"], "base:1");
                assert_eq!(decision.refused(), None);
                assert_eq!(decision.grant.nano_cpus, Some(2_000_000_000));
            },
        },
        Case {
            name: "a Go or C++ template's debugger flags, refused by default",
            file: r#"{"image": "base:1", "runArgs": ["--cap-add=SYS_PTRACE", "--security-opt", "seccomp=unconfined"]}"#,
            policy: allow_nothing,
            check: |result| {
                let message = result.unwrap().1.refused().unwrap();
                assert!(
                    message.contains(
                        r#"runArgs --cap-add=SYS_PTRACE needs allow_capabilities = ["SYS_PTRACE"] on environment class "docker-small""#
                    ),
                    "{message}"
                );
                assert!(
                    message.contains(r#"runArgs --security-opt seccomp=unconfined needs allow_security_opt = ["seccomp=unconfined"]"#),
                    "{message}"
                );
            },
        },
        Case {
            name: "the same flags, as capAdd and securityOpt, granted where the class allows them",
            file: r#"{"image": "base:1", "capAdd": ["sys_ptrace"], "securityOpt": ["seccomp:unconfined"]}"#,
            policy: debugger,
            check: |result| {
                let grant = result.unwrap().1.grant;
                assert_eq!(grant.cap_add, vec!["SYS_PTRACE"]);
                assert_eq!(grant.security_opt, vec!["seccomp=unconfined"]);
            },
        },
        Case {
            name: "docker-in-docker's privileged",
            file: r#"{"image": "base:1", "privileged": true}"#,
            policy: allow_nothing,
            check: |result| {
                let message = result.unwrap().1.refused().unwrap();
                assert!(
                    message.contains(r#"privileged: true needs allow_privileged = true on environment class "docker-small""#),
                    "{message}"
                );
            },
        },
        Case {
            name: "privileged where the class allows it",
            file: r#"{"image": "base:1", "runArgs": ["--privileged"]}"#,
            policy: dind,
            check: |result| assert!(result.unwrap().1.grant.privileged),
        },
        Case {
            name: "container-only flags are honoured",
            file: r#"{"image": "base:1", "runArgs": ["-e", "A=1", "--env=B=2", "-eNPM_TOKEN", "-e", "HOME", "--init", "--add-host", "db:10.0.0.2",
                      "--hostname=dev", "--shm-size", "1g", "--ulimit", "nofile=1024:2048", "--label", "team=x", "--name", "mine",
                      "-u", "1000", "--cpus", "1", "--memory=512m", "--cpus=8", "-it", "--rm", "--env-file", "${localWorkspaceFolder}/config/app.env"]}"#,
            policy: allow_nothing,
            check: |result| {
                let decision = result.unwrap().1;
                assert_eq!(decision.refused(), None, "{decision:?}");
                let grant = decision.grant;
                let env: Vec<(&str, &str)> = grant.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                assert_eq!(env, vec![("A", "1"), ("B", "2"), ("NPM_TOKEN", "t0ken"), ("FROM_FILE", "1")]);
                assert!(grant.init);
                assert_eq!(grant.extra_hosts, vec!["db:10.0.0.2"]);
                assert_eq!(grant.hostname.as_deref(), Some("dev"));
                assert_eq!(grant.shm_size, Some(1 << 30));
                assert_eq!(grant.ulimits[0].soft, 1024);
                assert_eq!(grant.labels, vec![("team".to_string(), "x".to_string())]);
                assert_eq!(grant.user.as_deref(), Some("1000"));
                assert_eq!(grant.memory_bytes, Some(512 << 20));
                assert_eq!(grant.nano_cpus, Some(1_000_000_000), "--cpus=8 is more than the class gives and is capped");
                assert!(decision.warnings.iter().any(|w| w.contains("runArgs --cpus=8 asks for more CPUs")), "{:?}", decision.warnings);
                assert!(decision.warnings.iter().any(|w| w.contains("runArgs -e HOME: HOME is not in the runner's pass_env")));
                assert!(decision.notes.iter().any(|n| n.contains("runArgs --name mine was ignored")));
            },
        },
        Case {
            name: "host-reaching flags are refused, an unknown flag is named",
            file: r#"{"image": "base:1", "runArgs": ["--network=host", "--pid=host", "--userns", "host", "--frobnicate", "-p", "3000:3000"]}"#,
            policy: allow_nothing,
            check: |result| {
                let decision = result.unwrap().1;
                let message = decision.refused().unwrap();
                assert!(message.contains("runArgs --network=host needs allow_host_network = true"), "{message}");
                assert!(message.contains("runArgs --pid=host shares the host's PID namespace, which no setting allows"), "{message}");
                assert!(message.contains("runArgs --userns host shares the host's user namespace"), "{message}");
                assert!(message.contains("runArgs --frobnicate: is not a docker run option the runner knows"), "{message}");
                assert!(decision.warnings.iter().any(|w| w.contains("runArgs -p 3000:3000 was ignored: no port")));
            },
        },
        Case {
            name: "mounts: volumes are the container's own, repository binds are copied, host binds are left out",
            file: r#"{"image": "base:1", "mounts": [
                        "source=node_modules,target=/workspaces/backend/node_modules,type=volume",
                        {"source": "${localWorkspaceFolder}/config", "target": "/etc/app", "type": "bind"},
                        "source=${localEnv:HOME}/.ssh,target=/root/.ssh,type=bind",
                        "source=/var/run/docker.sock,target=/var/run/docker.sock,type=bind"],
                      "runArgs": ["-v", "/etc:/host-etc:ro", "--tmpfs", "/scratch:size=64m"]}"#,
            policy: allow_nothing,
            check: |result| {
                let decision = result.unwrap().1;
                assert_eq!(decision.refused(), None);
                assert_eq!(decision.grant.volumes, vec!["/workspaces/backend/node_modules"]);
                assert_eq!(decision.grant.copies.len(), 1);
                assert_eq!(decision.grant.copies[0].target, "/etc/app");
                assert_eq!(decision.grant.tmpfs.get("/scratch").map(String::as_str), Some("size=64m"));
                let warnings = decision.warnings.join("\n");
                for needle in ["(/.ssh)", "(/var/run/docker.sock)", "runArgs -v /etc:/host-etc:ro was left out"] {
                    assert!(warnings.contains(needle), "{needle}: {warnings}");
                }
            },
        },
        Case {
            name: "host binds fail the prebuild where the class says refuse",
            file: r#"{"image": "base:1", "mounts": ["source=/etc,target=/host-etc,type=bind"]}"#,
            policy: refuse_host_binds,
            check: |result| {
                let message = result.unwrap().1.refused().unwrap();
                assert!(message.contains("mounts[0] source=/etc,target=/host-etc,type=bind is a bind mount of a host path (/etc), which is never granted; environment class \"docker-small\" has host_bind_mounts = \"refuse\""), "{message}");
            },
        },
        Case {
            name: "legacy dockerFile and context, a Dockerfile in another case, build args and target, a context of ..",
            file: r#"{"dockerFile": "dockerfile", "context": "..", "build": {"args": {"V": "1"}, "target": "dev", "cacheFrom": "x"}}"#,
            policy: allow_nothing,
            check: |result| {
                let (prepared, _) = result.unwrap();
                let build = prepared.config["build"].as_object().unwrap();
                assert!(build["dockerfile"].as_str().unwrap().ends_with(".devcontainer/Dockerfile"), "{build:?}");
                assert!(!build["context"].as_str().unwrap().ends_with(".devcontainer"), "the context is the repository root");
                assert_eq!(build["args"]["V"], "1");
                assert_eq!(build["target"], "dev");
                assert!(!prepared.config.contains_key("dockerFile") && !prepared.config.contains_key("context"));
            },
        },
        Case {
            name: "object-form and array-form commands, features passed to the build",
            file: r#"{"image": "base:1", "features": {"ghcr.io/devcontainers/features/node:1": {"version": "20"}, "./local": {}},
                      "onCreateCommand": {"a": ["npm", "ci"], "b": "make"}, "updateContentCommand": ["sh", "-c", "true"]}"#,
            policy: allow_nothing,
            check: |result| {
                let (prepared, decision) = result.unwrap();
                assert!(prepared.has_features);
                assert_eq!(prepared.config["features"]["ghcr.io/devcontainers/features/node:1"]["version"], "20");
                assert_eq!(prepared.lifecycle.commands.len(), 2);
                assert_eq!(decision.refused(), None);
            },
        },
        Case {
            name: "keys ignored on purpose go into the warning; compose is refused",
            file: r#"{"image": "base:1", "initializeCommand": "cat /etc/shadow", "appPort": [3000], "build": {"dockerfile": "Dockerfile", "options": ["--network=host"]}}"#,
            policy: allow_nothing,
            check: |result| {
                let (prepared, _) = result.unwrap();
                let warnings = prepared.warnings.join("\n");
                assert!(
                    warnings.contains("initializeCommand in .devcontainer/devcontainer.json was ignored: the spec runs it on the host"),
                    "{warnings}"
                );
                assert!(warnings.contains("appPort in .devcontainer/devcontainer.json was ignored"), "{warnings}");
                assert!(warnings.contains("build.options in .devcontainer/devcontainer.json was ignored"), "{warnings}");
            },
        },
        Case {
            name: "Docker Compose without its file",
            file: r#"{"dockerComposeFile": "compose.yml", "service": "app"}"#,
            policy: allow_nothing,
            check: |result| assert!(result.unwrap_err().contains(r#"dockerComposeFile "compose.yml" does not exist in the repository"#)),
        },
        Case {
            name: "Docker Compose without a service",
            file: r#"{"dockerComposeFile": "Dockerfile"}"#,
            policy: allow_nothing,
            check: |result| assert!(result.unwrap_err().contains("service must name the Compose service")),
        },
        Case {
            name: "a feature's metadata is not the file's business, but a bad capability is",
            file: r#"{"image": "base:1", "capAdd": ["SYS_PTRAC"], "runArgs": "--privileged"}"#,
            policy: allow_nothing,
            check: |result| {
                let message = result.unwrap().1.refused().unwrap();
                assert!(message.contains("capAdd SYS_PTRAC: is not a Linux capability"), "{message}");
                assert!(message.contains("runArgs: must be an array of strings"), "{message}");
            },
        },
    ];
    for case in cases {
        let mut policy = policy();
        (case.policy)(&mut policy);
        let result = std::panic::catch_unwind(|| (case.check)(decision_for(case.file, &policy)));
        assert!(result.is_ok(), "case {:?} failed", case.name);
    }
}

#[test]
fn build_paths_are_made_absolute_and_must_stay_in_the_repository() {
    let dir = workspace_with(r#"{"build": {"dockerfile": "Dockerfile", "args": {"X": "1"}}}"#);
    let prepared = prepare(&source(dir.path())).unwrap();
    let build = prepared.config["build"].as_object().unwrap();
    let real = dir.path().canonicalize().unwrap();
    assert_eq!(build["dockerfile"], real.join(".devcontainer/Dockerfile").display().to_string());
    assert_eq!(build["context"], real.join(".devcontainer").display().to_string());
    assert_eq!(prepared.config_dir, real.join(".devcontainer"));
    for config in [
        r#"{"build": {"dockerfile": "Dockerfile", "context": "../.."}}"#,
        r#"{"build": {"dockerfile": "../../../../etc/passwd"}}"#,
        r#"{"dockerFile": "Dockerfile", "context": "/"}"#,
    ] {
        let dir = workspace_with(config);
        let error = prepare(&source(dir.path())).unwrap_err();
        assert!(error.contains("outside the repository"), "{config}: {error}");
    }
    let dir = workspace_with(r#"{"build": {"dockerfile": "Missing"}}"#);
    assert!(prepare(&source(dir.path())).unwrap_err().contains("does not exist"));
}

#[test]
fn a_config_symlinked_out_of_the_repository_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("devcontainer.json"), r#"{"image": "x"}"#).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".devcontainer")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("devcontainer.json"), dir.path().join(".devcontainer/devcontainer.json")).unwrap();
    assert!(prepare(&source(dir.path())).unwrap_err().contains("outside the repository"));
}

#[test]
fn no_devcontainer_uses_the_default_image_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = source(dir.path());
    source.repository = "git@example.com:acme/tools.git";
    source.default_image = Some("debian:12");
    let prepared = prepare(&source).unwrap();
    assert_eq!(prepared.config["image"], "debian:12");
    assert!(prepared.warnings[0].contains("default image debian:12"));
    assert_eq!(prepared.workspace_folder, "/workspaces/tools");
    source.default_image = None;
    assert!(prepare(&source).unwrap_err().contains("no default_image"));
}

#[test]
fn a_chosen_configuration_and_the_basename_variable() {
    let dir = workspace_with(r#"{"image": "default:1"}"#);
    std::fs::create_dir_all(dir.path().join(".devcontainer/python")).unwrap();
    std::fs::write(
        dir.path().join(".devcontainer/python/devcontainer.json"),
        r#"{"image": "python:1", "containerEnv": {"PROJECT": "${localWorkspaceFolderBasename}"}, "workspaceFolder": "/src/${localWorkspaceFolderBasename}"}"#,
    )
    .unwrap();
    let mut source = source(dir.path());
    source.devcontainer_path = Some(".devcontainer/python/devcontainer.json");
    let prepared = prepare(&source).unwrap();
    assert_eq!(prepared.config["image"], "python:1");
    assert_eq!(prepared.config["containerEnv"]["PROJECT"], "backend");
    assert_eq!(prepared.workspace_folder, "/src/backend");
    assert!(prepared.config_dir.ends_with(".devcontainer/python"));
}

#[test]
fn workspace_mount_decides_where_the_workspace_lands() {
    let dir =
        workspace_with(r#"{"image": "b:1", "workspaceMount": "source=${localWorkspaceFolder},target=/src,type=bind,consistency=cached"}"#);
    let prepared = prepare(&source(dir.path())).unwrap();
    assert_eq!((prepared.workspace_target.as_str(), prepared.workspace_folder.as_str()), ("/src", "/src"));
    assert_eq!(prepared.workspace_source, dir.path().canonicalize().unwrap());

    let dir = workspace_with(
        r#"{"image": "b:1", "workspaceMount": "source=${localWorkspaceFolder}/..,target=/workspaces,type=bind", "workspaceFolder": "/workspaces/app"}"#,
    );
    let prepared = prepare(&source(dir.path())).unwrap();
    assert_eq!(prepared.workspace_target, "/workspaces/app");
    assert!(prepared.warnings[0].contains("is not the repository or a folder in it"), "{:?}", prepared.warnings);
}

#[test]
fn host_requirements_beyond_the_class_are_warnings() {
    let requirements = serde_json::json!({"cpus": 4, "memory": "8gb", "storage": "32gb", "gpu": true});
    let resources = Resources { nano_cpus: Some(2_000_000_000), memory_bytes: Some(4 << 30) };
    let warnings = host_requirement_warnings(Some(&requirements), resources, &policy());
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(warnings[0].contains("hostRequirements.cpus asks for 4 CPUs; environment class \"docker-small\" gives 2"));
    assert!(warnings[1].contains("hostRequirements.memory asks for 8gb"));
    assert!(warnings[2].contains("gpu"));
    assert!(host_requirement_warnings(Some(&requirements), Resources::default(), &ClassPolicy { allow_gpus: true, ..policy() }).is_empty());
}

#[test]
fn the_up_config_has_no_mounts_and_the_granted_settings() {
    let dir = workspace_with(r#"{"image": "base:1", "remoteUser": "dev"}"#);
    let prepared = prepare(&source(dir.path())).unwrap();
    let labels = vec![("dev.prebuildd.prebuild-id".to_string(), "p1".to_string())];
    let grant = Grant {
        nano_cpus: Some(1_500_000_000),
        memory_bytes: Some(256 << 20),
        cap_add: vec!["SYS_PTRACE".into()],
        volumes: vec!["/var/lib/docker".into()],
        init: true,
        ..Grant::default()
    };
    let config = up_config(&prepared, "prebuildd-build:p1", &grant, &labels);
    assert_eq!(config["image"], "prebuildd-build:p1");
    assert_eq!(config["workspaceMount"], "");
    assert_eq!(config["workspaceFolder"], "/workspaces/backend");
    assert!(config.get("remoteUser").is_none(), "the image's metadata has it");
    let args: Vec<&str> = config["runArgs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(
        args,
        vec![
            "--security-opt",
            "no-new-privileges",
            "--cpus",
            "1.5",
            "--memory",
            "268435456b",
            "--label",
            "dev.prebuildd.prebuild-id=p1",
            "--cap-add",
            "SYS_PTRACE",
            "--mount",
            "type=volume,target=/var/lib/docker",
            "--init"
        ]
    );
}

#[test]
fn repository_names_are_folder_names() {
    assert_eq!(repository_name("https://example.com/acme/backend.git"), "backend");
    assert_eq!(repository_name("git@example.com:acme/tools.git/"), "tools");
    assert_eq!(repository_name("/srv/repos/my app"), "my-app");
    assert_eq!(repository_name("/"), "workspace");
}

#[test]
fn the_readme_lists_every_key() {
    let readme = include_str!("../../../../README.md");
    for (key, _) in KEYS {
        assert!(readme.contains(&format!("| `{key}` |")), "README's table of devcontainer.json keys lacks {key}");
    }
}

#[test]
fn a_compose_configuration_names_its_files_service_and_run_services() {
    let dir = workspace_with(
        r#"{
            "dockerComposeFile": ["compose.yml", "../compose.extra.yml"],
            "service": "app",
            "runServices": ["db"],
            "image": "ignored:1",
            "runArgs": ["--cap-add=SYS_PTRACE"],
            "capAdd": ["SYS_PTRACE"],
            "workspaceFolder": "/workspaces/backend"
        }"#,
    );
    std::fs::write(dir.path().join(".devcontainer/compose.yml"), "services: {}\n").unwrap();
    std::fs::write(dir.path().join("compose.extra.yml"), "services: {}\n").unwrap();
    let prepared = prepare(&source(dir.path())).unwrap();
    let root = dir.path().canonicalize().unwrap();
    let request = prepared.compose.clone().expect("a Compose request");
    assert_eq!(request.files, vec![root.join(".devcontainer/compose.yml"), root.join("compose.extra.yml")]);
    assert_eq!((request.service.as_str(), request.run_services), ("app", Some(vec!["db".to_string()])));
    assert!(!prepared.config.contains_key("image"), "the service says how the container is built");
    let warnings = prepared.warnings.join("\n");
    assert!(warnings.contains("image in .devcontainer/devcontainer.json was ignored: with dockerComposeFile"), "{warnings}");
    assert!(warnings.contains("runArgs in .devcontainer/devcontainer.json was ignored"), "{warnings}");
    let written: Vec<&str> = prepared.asks.iter().map(|ask| ask.written.as_str()).collect();
    assert_eq!(written, vec!["capAdd SYS_PTRACE"], "runArgs asks nothing; capAdd stays under the policy");
    assert_eq!(prepared.workspace_folder, "/workspaces/backend");

    let outside = workspace_with(r#"{"dockerComposeFile": "../../../etc/compose.yml", "service": "app"}"#);
    assert!(prepare(&source(outside.path())).unwrap_err().contains("dockerComposeFile"));
}
