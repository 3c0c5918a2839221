//! What the docker runner tests need around a real server: a Docker daemon
//! that answers (started by `scripts/ensure-dockerd`; a test fails loudly
//! without one), a base image built offline (`docker import` of a rootfs
//! made from the host's static busybox, with a `dev` user), the Dev
//! Containers CLI from `.tools/`, git repositories with a devcontainer.json,
//! and a config naming them.

use crate::common::*;
use prebuildd::proto::gitpod::v1::*;
use prebuildd::proto::prebuildd::v1::prebuild_source_service_client::PrebuildSourceServiceClient;
use prebuildd::proto::prebuildd::v1::{ListPrebuildSourcesRequest, PrebuildSource};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const BASE_IMAGE: &str = "prebuildd-test-base:2";
pub const CLASS: &str = "c1a55000-0000-4000-8000-0000000000d1";
pub const PATIENCE: Duration = Duration::from_secs(180);

/// Runs the docker CLI; panics with its stderr if it fails.
pub fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().expect("the docker CLI runs (install docker.io)");
    assert!(output.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Lines of `docker <args>` output, empty ones dropped.
pub fn docker_lines(args: &[&str]) -> Vec<String> {
    docker(args).lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
}

/// The Dev Containers CLI that `scripts/install-test-tools` installs.
pub fn devcontainer_cli() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/devcontainer/node_modules/.bin/devcontainer");
    assert!(path.exists(), "{} is missing: run scripts/install-test-tools", path.display());
    path
}

/// The Docker CLI the Dev Containers CLI runs: Debian's (docker.io), which
/// builds with BuildKit without the buildx plugin.
pub fn docker_cli() -> PathBuf {
    let path = PathBuf::from("/usr/bin/docker");
    assert!(path.exists(), "/usr/bin/docker is missing: install docker.io");
    path
}

/// The version of the Docker Compose the runner finds, as it looks for it:
/// the Docker CLI's compose plugin, else `docker-compose` on PATH. The
/// Compose tests fail here, saying what to install, without either.
pub fn compose_version() -> String {
    let run = |program: &Path, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    run(&docker_cli(), &["compose", "version", "--short"])
        .or_else(|| run(Path::new("docker-compose"), &["version", "--short"]))
        .expect("Docker Compose is missing: neither `docker compose` nor docker-compose runs (run scripts/install-test-tools)")
}

/// Builds the base image once per test run, with no registry: a busybox
/// rootfs with root and a `dev` user (UID 1000), imported, with
/// `/usr/local/bin` (where the tests' features install) on its `PATH`.
pub fn base_image() -> &'static str {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let info = Command::new("docker").arg("info").output().expect("the docker CLI runs");
        assert!(info.status.success(), "no Docker daemon answers: run scripts/ensure-dockerd ({})", String::from_utf8_lossy(&info.stderr));
        if Command::new("docker").args(["image", "inspect", BASE_IMAGE]).output().is_ok_and(|o| o.status.success()) {
            return;
        }
        let busybox = Path::new("/bin/busybox");
        assert!(busybox.exists(), "/bin/busybox is missing: install busybox-static");
        let rootfs = tempfile::tempdir().unwrap();
        let root = rootfs.path();
        for dir in ["bin", "etc", "tmp", "root", "home/dev", "opt", "workspaces", "proc", "sys", "dev"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
        let applets = Command::new(busybox).arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&applets.stdout).lines().filter(|a| *a != "busybox") {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\ndev:x:1000:1000:dev:/home/dev:/bin/sh\n").unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\ndev:x:1000:\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        std::os::unix::fs::chown(root.join("home/dev"), Some(1000), Some(1000)).unwrap();
        let tar = Command::new("tar").arg("-C").arg(root).args(["-cf", "-", "."]).output().unwrap();
        assert!(tar.status.success());
        let mut import = Command::new("docker")
            .args(["import", "--change", "ENV PATH=/usr/local/bin:/bin", "-", BASE_IMAGE])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        import.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
        assert!(import.wait().unwrap().success(), "docker import of the base image failed");
    });
    BASE_IMAGE
}

/// A git repository with `files` (path, content) committed.
pub fn repository(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("README.md"), "a test repository\n").unwrap();
    for (path, content) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    git(dir, &["init", "-q"]);
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "initial"]);
}

/// A test's world: a runner with its own ID and root, and one project per
/// repository.
pub struct World {
    pub runner_id: String,
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> World {
        base_image();
        World { runner_id: uuid::Uuid::new_v4().to_string(), dir: tempfile::tempdir().unwrap() }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("runner-root")
    }

    /// The config: one docker runner (class limits 1 CPU, 256 MiB) and a
    /// project per `(project id, repository)`.
    pub fn config(&self, projects: &[(&str, &Path)]) -> String {
        let mut text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
[reconciler]
interval = "100ms"
[[organizations]]
id = "{ORG_A}"
name = "Org A"
[[api_keys]]
token = "{TOKEN_A}"
organization_id = "{ORG_A}"
subject_id = "{ALICE}"
[[runners]]
id = "{runner}"
kind = "docker"
devcontainer_cli = "{cli}"
docker_cli = "{docker_cli}"
default_image = "{BASE_IMAGE}"
root = "{root}"
[[environment_classes]]
id = "{CLASS}"
runner_id = "{runner}"
name = "docker"
cpus = 1
memory = "256MiB"
"#,
            runner = self.runner_id,
            cli = devcontainer_cli().display(),
            docker_cli = docker_cli().display(),
            root = self.root().display(),
        );
        for (id, path) in projects {
            text += &format!(
                "[[projects]]\nid = \"{id}\"\norganization_id = \"{ORG_A}\"\nname = \"p\"\nrepository = \"{}\"\ndefault_environment_class_id = \"{CLASS}\"\n[projects.prebuilds]\nenabled = true\nenvironment_class_ids = [\"{CLASS}\"]\n",
                path.display()
            );
        }
        text
    }

    /// The config with more environment classes of this runner beside the
    /// default one, `(id, name, extra TOML lines)`, every project allowed
    /// to prebuild on each.
    pub fn config_with_classes(&self, projects: &[(&str, &Path)], classes: &[(&str, &str, &str)]) -> String {
        let mut text = self.config(projects);
        let ids: Vec<String> = std::iter::once(CLASS).chain(classes.iter().map(|(id, _, _)| *id)).map(|id| format!("\"{id}\"")).collect();
        text = text.replace(&format!("environment_class_ids = [\"{CLASS}\"]"), &format!("environment_class_ids = [{}]", ids.join(", ")));
        for (id, name, extra) in classes {
            text += &format!("[[environment_classes]]\nid = \"{id}\"\nrunner_id = \"{}\"\nname = \"{name}\"\n{extra}\n", self.runner_id);
        }
        text
    }

    /// Containers of this runner (all states), as `docker ps` IDs.
    pub fn containers(&self, extra_filters: &[&str]) -> Vec<String> {
        let runner_filter = format!("label=dev.prebuildd.runner-id={}", self.runner_id);
        let mut args = vec!["ps", "-aq", "--no-trunc", "--filter", runner_filter.as_str()];
        for filter in extra_filters {
            args.extend(["--filter", filter]);
        }
        docker_lines(&args)
    }
}

impl Drop for World {
    /// Leaves nothing of the test on Docker, also when it failed.
    fn drop(&mut self) {
        let filter = format!("label=dev.prebuildd.runner-id={}", self.runner_id);
        if let Ok(output) = Command::new("docker").args(["ps", "-aq", "--filter", &filter]).output() {
            for id in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", "-v", id]).output();
            }
        }
        if let Ok(output) = Command::new("docker").args(["images", "-q", "--filter", &filter]).output() {
            for id in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["rmi", "-f", id]).output();
            }
        }
        // The volumes of its Compose stacks.
        if let Ok(output) = Command::new("docker").args(["volume", "ls", "-q", "--filter", &filter]).output() {
            for name in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["volume", "rm", "-f", name]).output();
            }
        }
        // The runner's networks, and the rules of each (a table named after
        // its bridge), which the runner keeps while it could use them.
        if let Ok(output) = Command::new("docker").args(["network", "ls", "-q", "--filter", &filter]).output() {
            for id in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                let bridge = Command::new("docker")
                    .args(["network", "inspect", "--format", "{{index .Options \"com.docker.network.bridge.name\"}}", id])
                    .output();
                let _ = Command::new("docker").args(["network", "rm", id]).output();
                if let Ok(bridge) = bridge {
                    let table = format!("prebuildd_{}", String::from_utf8_lossy(&bridge.stdout).trim());
                    let _ = Command::new("nft").args(["delete", "table", "inet", &table]).output();
                }
            }
        }
    }
}

pub async fn wait_for(client: &mut Client, id: &str, done: &[PrebuildPhase]) -> Prebuild {
    wait_for_phase(client, id, done, PATIENCE).await
}

/// Waits for a prebuild to complete; fails with its failure message if not.
pub async fn completed(server: &TestServer, client: &mut Client, id: &str) -> Prebuild {
    let prebuild = wait_for(client, id, &[PrebuildPhase::Completed, PrebuildPhase::Failed, PrebuildPhase::Cancelled]).await;
    let status = prebuild.status.clone().unwrap();
    if status.phase != PrebuildPhase::Completed as i32 {
        let log = log_of(server, client, id).await;
        panic!("prebuild {id} did not complete: {}\n--- its log:\n{log}", status.failure_message);
    }
    prebuild
}

/// Creates a prebuild of a project on a given class.
pub async fn create_prebuild_on(client: &mut Client, project_id: &str, class_id: &str) -> Prebuild {
    create_prebuild_in_class(client, project_id, Some(class_id)).await
}

/// Waits for a prebuild to fail; returns its failure message (and panics,
/// showing the log, if it completed instead).
pub async fn failed(server: &TestServer, client: &mut Client, id: &str) -> String {
    let prebuild = wait_for(client, id, &[PrebuildPhase::Completed, PrebuildPhase::Failed, PrebuildPhase::Cancelled]).await;
    let status = prebuild.status.clone().unwrap();
    if status.phase != PrebuildPhase::Failed as i32 {
        let log = log_of(server, client, id).await;
        panic!("prebuild {id} did not fail: {status:?}\n--- its log:\n{log}");
    }
    status.failure_message
}

/// Waits until `check` holds for the pool.
pub async fn pool_until(client: &mut Client, pool_id: &str, what: &str, check: impl Fn(&WarmPool) -> bool) -> WarmPool {
    let started = Instant::now();
    loop {
        let pool = client.get_warm_pool(GetWarmPoolRequest { warm_pool_id: pool_id.into() }).await.unwrap().into_inner().warm_pool.unwrap();
        if check(&pool) {
            return pool;
        }
        assert!(started.elapsed() < PATIENCE, "the pool never got {what}: {pool:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `check` holds (Docker state the runner converges to).
pub async fn eventually(what: &str, check: impl Fn() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < PATIENCE, "never: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn logs_token(client: &mut Client, prebuild_id: &str) -> String {
    client
        .create_prebuild_logs_token(CreatePrebuildLogsTokenRequest { prebuild_id: prebuild_id.into() })
        .await
        .unwrap()
        .into_inner()
        .access_token
}

/// Follows a running prebuild's log (the endpoint streams it live) until
/// `needle` shows up.
pub async fn log_shows(server: &TestServer, client: &mut Client, prebuild_id: &str, needle: &str) {
    let token = logs_token(client, prebuild_id).await;
    let mut response =
        reqwest::Client::new().get(format!("{}/logs/prebuilds/{prebuild_id}", server.base_url())).bearer_auth(token).send().await.unwrap();
    let mut seen = String::new();
    let deadline = Instant::now() + PATIENCE;
    while !seen.contains(needle) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, response.chunk()).await {
            Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("the log never showed {needle:?} ({other:?}):\n{seen}"),
        }
    }
}

/// The prebuild's log, read through a logs token as a user would (it
/// returns when the log ends: the prebuild must have finished).
pub async fn log_of(server: &TestServer, client: &mut Client, prebuild_id: &str) -> String {
    let token = logs_token(client, prebuild_id).await;
    reqwest::Client::new()
        .get(format!("{}/logs/prebuilds/{prebuild_id}", server.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A config whose docker runner becomes a remote one with `token`, and
/// the `[engine]` keys of a `prebuildd runner` that serves it.
pub fn remote_config(docker_config: &str, token: &str) -> (String, String) {
    let docker_keys_start = docker_config.find("kind = \"docker\"").expect("the docker runner entry");
    let docker_keys_end = docker_config[docker_keys_start..].find("[[environment_classes]]").expect("a class after it") + docker_keys_start;
    let engine = docker_config[docker_keys_start..docker_keys_end].to_string();
    let config =
        format!("{}kind = \"remote\"\ntoken = \"{token}\"\n{}", &docker_config[..docker_keys_start], &docker_config[docker_keys_end..]);
    (config, engine)
}

/// What the server recorded a prebuild builds (its commit, and whether it
/// is incremental).
pub async fn source(server: &TestServer, id: &str) -> PrebuildSource {
    let mut client = PrebuildSourceServiceClient::with_interceptor(server.channel().await, bearer(TOKEN_A));
    let response = client.list_prebuild_sources(ListPrebuildSourcesRequest { prebuild_ids: vec![id.into()] }).await.expect("sources");
    response.into_inner().sources.pop().expect("a source")
}

/// Writes `content` to `path` in the repository and commits it; the new
/// commit's SHA.
pub fn commit(repo: &Path, path: &str, content: &str) -> String {
    let file = repo.join(path);
    std::fs::create_dir_all(file.parent().expect("a parent")).expect("mkdir");
    std::fs::write(file, content).expect("write");
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", "change"]);
    let head = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(repo).output().expect("git");
    String::from_utf8_lossy(&head.stdout).trim().to_string()
}
