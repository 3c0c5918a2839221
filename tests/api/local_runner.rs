//! The local runner, through the public API: a real prebuild of a git
//! repository made here, with a devcontainer.json whose commands write files
//! and log lines; its snapshot, its log, a warm instance made from it, a
//! failing command, a repository without devcontainer.json, and a cancel
//! that kills a running command. And the sandbox, on a server started from a
//! configuration file: commands that look for the server's files find none.

use crate::common::*;
use prebuildd::clock::SystemClock;
use prebuildd::config::{Config, Overrides};
use prebuildd::proto::gitpod::v1::prebuild_service_client::PrebuildServiceClient;
use prebuildd::proto::gitpod::v1::*;
use prebuildd::proto::prebuildd::v1::warm_pool_instance_service_client::WarmPoolInstanceServiceClient;
use prebuildd::proto::prebuildd::v1::ClaimInstanceRequest;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const OK: &str = "10ca1000-0000-4000-8000-000000000001";
const FAILING: &str = "10ca1000-0000-4000-8000-000000000002";
const PLAIN: &str = "10ca1000-0000-4000-8000-000000000003";
const SLEEPY: &str = "10ca1000-0000-4000-8000-000000000004";
const SNOOP: &str = "10ca1000-0000-4000-8000-000000000005";
const PATIENCE: Duration = Duration::from_secs(60);

fn repository(dir: &Path, devcontainer: Option<&str>, as_git: bool) {
    std::fs::create_dir_all(dir.join(".devcontainer")).unwrap();
    std::fs::write(dir.join("README.md"), "a test repository\n").unwrap();
    if let Some(text) = devcontainer {
        std::fs::write(dir.join(".devcontainer/devcontainer.json"), text).unwrap();
    } else {
        std::fs::remove_dir(dir.join(".devcontainer")).unwrap();
    }
    if as_git {
        git(dir, &["init", "-q"]);
        git(dir, &["add", "."]);
        git(dir, &["commit", "-q", "-m", "initial"]);
    }
}

fn config(repos: &[(&str, &Path)]) -> String {
    let mut text = format!(
        r#"{header}[[runners]]
id = "{RUNNER}"
kind = "local"
max_concurrent_prebuilds = 4
[[environment_classes]]
id = "{CLASS_SMALL}"
runner_id = "{RUNNER}"
name = "local"
"#,
        header = org_a_header()
    );
    for (id, path) in repos {
        text += &format!(
            "[[projects]]\nid = \"{id}\"\norganization_id = \"{ORG_A}\"\nname = \"p\"\nrepository = \"{}\"\ndefault_environment_class_id = \"{CLASS_SMALL}\"\n[projects.prebuilds]\nenabled = true\nenvironment_class_ids = [\"{CLASS_SMALL}\"]\n",
            path.display()
        );
    }
    text
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
                .unwrap_or(false)
        })
        .count()
}

#[tokio::test]
async fn a_real_prebuild_of_a_git_repository() {
    let repos = tempfile::tempdir().unwrap();
    let ok = repos.path().join("ok");
    let failing = repos.path().join("failing");
    let plain = repos.path().join("plain");
    let sleepy = repos.path().join("sleepy");
    repository(
        &ok,
        Some(
            r#"{
          // comments and trailing commas are fine
          "name": "test",
          "onCreateCommand": "echo creating-the-environment && mkdir -p out && echo built > out/result.txt",
          "updateContentCommand": {
            "a": "echo parallel-a > out/a.txt",
            "b": ["sh", "-c", "echo parallel-b > out/b.txt && echo log-from-b"],
          },
        }"#,
        ),
        true,
    );
    repository(&failing, Some(r#"{ "onCreateCommand": "echo about-to-fail; exit 3" }"#), true);
    repository(&plain, None, false);
    // A duration of its own, so that only this test's sleep is counted.
    let sleep = format!("sleep {}", 10_000_000 + (uuid::Uuid::new_v4().as_u128() % 80_000_000) as u64);
    repository(&sleepy, Some(&format!(r#"{{ "onCreateCommand": "echo sleeping; {sleep}" }}"#)), true);
    let server = TestServer::start_with(config(&[(OK, &ok), (FAILING, &failing), (PLAIN, &plain), (SLEEPY, &sleepy)])).await;
    let mut client = server.client(Some(TOKEN_A)).await;

    let created = create_prebuild(&mut client, OK).await;
    let failed = create_prebuild(&mut client, FAILING).await;
    let no_devcontainer = create_prebuild(&mut client, PLAIN).await;
    let sleeping = create_prebuild(&mut client, SLEEPY).await;

    // The real one: completed, with a real snapshot holding the commands' output.
    let done = wait_for(&mut client, &created.id, &[PrebuildPhase::Completed, PrebuildPhase::Failed]).await;
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, PrebuildPhase::Completed as i32, "{}", status.failure_message);
    let archive = server.data_dir().join("local").join(RUNNER).join("snapshots").join(format!("{}.tar.zst", created.id));
    assert_eq!(status.snapshot_size_bytes as u64, std::fs::metadata(&archive).unwrap().len(), "the real size");
    let unpacked = tempfile::tempdir().unwrap();
    tar::Archive::new(zstd::Decoder::new(std::fs::File::open(&archive).unwrap()).unwrap()).unpack(unpacked.path()).unwrap();
    assert_eq!(std::fs::read_to_string(unpacked.path().join("out/result.txt")).unwrap(), "built\n");
    assert_eq!(std::fs::read_to_string(unpacked.path().join("out/a.txt")).unwrap(), "parallel-a\n");
    assert_eq!(std::fs::read_to_string(unpacked.path().join("out/b.txt")).unwrap(), "parallel-b\n");
    assert!(unpacked.path().join("README.md").exists() && unpacked.path().join(".git").exists(), "the snapshot is the workspace");

    // Its log, through a logs token.
    let token = client
        .create_prebuild_logs_token(CreatePrebuildLogsTokenRequest { prebuild_id: created.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let log = reqwest::Client::new()
        .get(format!("{}/logs/prebuilds/{}", server.base_url(), created.id))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in ["creating-the-environment", "log-from-b", "snapshot written"] {
        assert!(log.contains(line), "{line:?} missing from the log:\n{log}");
    }

    // A warm instance made from it.
    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest { project_id: OK.into(), environment_class_id: CLASS_SMALL.into(), ..Default::default() },
    )
    .await;
    let started = Instant::now();
    loop {
        let current =
            client.get_warm_pool(GetWarmPoolRequest { warm_pool_id: pool.id.clone() }).await.unwrap().into_inner().warm_pool.unwrap();
        if current.status.as_ref().unwrap().phase == WarmPoolPhase::Ready as i32 {
            assert_eq!(current.spec.unwrap().snapshot_id, Some(created.id.clone()));
            break;
        }
        assert!(started.elapsed() < PATIENCE, "the pool never became ready: {current:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut claims = WarmPoolInstanceServiceClient::with_interceptor(server.channel().await, bearer(TOKEN_A));
    let instance = claims
        .claim_instance(ClaimInstanceRequest { warm_pool_id: pool.id.clone(), wait: None })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert_eq!(instance.snapshot_id, created.id);
    assert_eq!(
        std::fs::read_to_string(Path::new(&instance.workspace_path).join("out/result.txt")).unwrap(),
        "built\n",
        "the claimed workspace holds the prebuild's output"
    );

    // A command that fails names itself, its exit code and the last lines.
    let failure = wait_for(&mut client, &failed.id, &[PrebuildPhase::Failed, PrebuildPhase::Completed]).await.status.unwrap();
    assert_eq!(failure.phase, PrebuildPhase::Failed as i32);
    for part in ["onCreateCommand", "echo about-to-fail; exit 3", "exited with code 3", "about-to-fail"] {
        assert!(failure.failure_message.contains(part), "{part:?} missing from {:?}", failure.failure_message);
    }

    // No devcontainer.json (and a plain directory, copied): completed with a warning.
    let warned = wait_for(&mut client, &no_devcontainer.id, &[PrebuildPhase::Completed, PrebuildPhase::Failed]).await.status.unwrap();
    assert_eq!(warned.phase, PrebuildPhase::Completed as i32, "{}", warned.failure_message);
    assert!(warned.warning_message.contains("devcontainer.json"), "{}", warned.warning_message);

    // Cancel kills the running command's whole process group.
    wait_for(&mut client, &sleeping.id, &[PrebuildPhase::Running]).await;
    let started = Instant::now();
    while processes_with(&sleep) == 0 {
        assert!(started.elapsed() < PATIENCE, "the command never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.cancel_prebuild(CancelPrebuildRequest { prebuild_id: sleeping.id.clone() }).await.unwrap();
    wait_for(&mut client, &sleeping.id, &[PrebuildPhase::Cancelled]).await;
    let started = Instant::now();
    while processes_with(&sleep) > 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "the cancelled command is still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn lifecycle_commands_cannot_see_the_servers_files() {
    // Outside /tmp: the sandbox's /tmp is its own, which would hide a data
    // dir there whatever else it did.
    let dir = tempfile::Builder::new().prefix("api-sandbox-").tempdir_in(outside_tmp()).unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    let (data_dir, config_path) = (dir_path.join("data"), dir_path.join("prebuildd.toml"));
    let (first, snoop) = (dir_path.join("first"), dir_path.join("snoop"));
    repository(&first, Some(r#"{ "onCreateCommand": "echo first > first.txt" }"#), true);
    let marker = format!("prebuildd-api-sandbox-{}", uuid::Uuid::new_v4());
    let outside = dir_path.join("outside.txt");
    let script = format!(
        r#"echo searching
find / \( -path /proc -o -path /sys \) -prune -o \( -name token-secret -o -name 'prebuildd.db*' -o -name '*.tar.zst' \
  -o -name prebuildd.toml \) -print 2>/dev/null | sed 's/^/found: /'
for path in '{data}/token-secret' '{data}/prebuildd.db' '{config}' '{data}'/local/*/snapshots/*; do
  if [ -e "$path" ]; then echo "exists: $path: $(head -c 200 "$path" | tr -cd '[:print:]')"; fi
done
echo written > /tmp/{marker} && echo "wrote /tmp/{marker}"
echo written > '{outside}' 2>/dev/null || echo "refused outside"
echo mine > mine.txt
echo done-searching
"#,
        data = data_dir.display(),
        config = config_path.display(),
        outside = outside.display(),
    );
    std::fs::create_dir_all(&snoop).unwrap();
    std::fs::write(snoop.join("snoop.sh"), script).unwrap();
    repository(&snoop, Some(r#"{ "onCreateCommand": ["sh", "snoop.sh"] }"#), true);

    // Started as `prebuildd serve --config <file>` starts it.
    std::fs::write(&config_path, config(&[(OK, &first), (SNOOP, &snoop)])).unwrap();
    let overrides = Overrides { listen: None, data_dir: Some(data_dir.clone()) };
    let loaded = Config::load(&config_path, &overrides).unwrap();
    let server = prebuildd::start_with_private_files(loaded, Arc::new(SystemClock), vec![config_path.clone()]).await.unwrap();
    let channel = Channel::from_shared(format!("http://{}", server.addr)).unwrap().connect().await.unwrap();
    let mut client = PrebuildServiceClient::with_interceptor(channel, bearer(TOKEN_A));

    // A first prebuild leaves a snapshot archive in the data dir.
    let earlier = create_prebuild(&mut client, OK).await;
    let done = wait_for(&mut client, &earlier.id, &[PrebuildPhase::Completed, PrebuildPhase::Failed]).await.status.unwrap();
    assert_eq!(done.phase, PrebuildPhase::Completed as i32, "{}", done.failure_message);
    let archive = data_dir.join("local").join(RUNNER).join("snapshots").join(format!("{}.tar.zst", earlier.id));
    assert!(archive.is_file() && data_dir.join("token-secret").is_file() && data_dir.join("prebuildd.db").is_file());

    let snooping = create_prebuild(&mut client, SNOOP).await;
    let done = wait_for(&mut client, &snooping.id, &[PrebuildPhase::Completed, PrebuildPhase::Failed]).await.status.unwrap();
    let log = std::fs::read_to_string(data_dir.join("logs").join(format!("{}.log", snooping.id))).unwrap();
    assert_eq!(done.phase, PrebuildPhase::Completed as i32, "{}\n{log}", done.failure_message);
    assert!(log.contains("in a bubblewrap sandbox") && log.contains("done-searching"), "{log}");

    // Nothing of this server's: the configuration file is there by name
    // only (it reads as nothing); the rest is not there at all.
    for line in log.lines().filter(|line| line.starts_with("found: ")) {
        let path = Path::new(&line["found: ".len()..]);
        assert!(!path.starts_with(&dir_path) || path == config_path, "the sandbox showed {line}\n{log}");
    }
    // (Where the checkout lies under /tmp, the sandbox's own /tmp hides even
    // the configuration file's name.)
    let exists: Vec<&str> = log.lines().filter(|line| line.starts_with("exists: ")).collect();
    let config_by_name = format!("exists: {}: ", config_path.display());
    assert!(exists.iter().all(|line| *line == config_by_name), "{exists:?}\n{log}");
    assert!(!log.contains(TOKEN_A), "the API key leaked:\n{log}");

    // Nothing changed outside its workspace; its own writes are in its snapshot.
    assert!(log.contains(&format!("wrote /tmp/{marker}")) && !Path::new("/tmp").join(&marker).exists(), "{log}");
    assert!(log.contains("refused outside") && !outside.exists(), "{log}");
    let archive = data_dir.join("local").join(RUNNER).join("snapshots").join(format!("{}.tar.zst", snooping.id));
    let unpacked = tempfile::tempdir().unwrap();
    tar::Archive::new(zstd::Decoder::new(std::fs::File::open(&archive).unwrap()).unwrap()).unpack(unpacked.path()).unwrap();
    assert_eq!(std::fs::read_to_string(unpacked.path().join("mine.txt")).unwrap(), "mine\n");
    server.shutdown().await.expect("the server stops cleanly");
}

async fn wait_for(client: &mut Client, id: &str, done: &[PrebuildPhase]) -> Prebuild {
    wait_for_phase(client, id, done, PATIENCE).await
}

/// What the local runner holds is collected when nothing owns it: an
/// archive whose prebuild the server does not have, a workspace of no job,
/// also ones left from before the start; a live prebuild's archive stays.
/// The metric reports what is held.
#[tokio::test]
async fn archives_and_workspaces_nothing_owns_are_collected() {
    let repos = tempfile::tempdir().unwrap();
    let ok = repos.path().join("ok");
    repository(&ok, Some(r#"{ "onCreateCommand": "echo made > made.txt" }"#), true);
    let server = TestServer::start_with(config(&[(OK, &ok)])).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let kept = create_prebuild(&mut client, OK).await;
    wait_for(&mut client, &kept.id, &[PrebuildPhase::Completed]).await;
    let root = server.data_dir().join("local").join(RUNNER);
    let archive = root.join("snapshots").join(format!("{}.tar.zst", kept.id));
    let archive_bytes = std::fs::metadata(&archive).expect("the prebuild's archive").len();

    // What a prebuild deleted while the server was down, or a crash, leaves.
    let stray_archive = root.join("snapshots").join(format!("{}.tar.zst", uuid::Uuid::now_v7()));
    std::fs::write(&stray_archive, vec![0u8; 100_000]).unwrap();
    let stray_workspace = root.join("workspaces").join(uuid::Uuid::now_v7().to_string());
    std::fs::create_dir_all(stray_workspace.join("src")).unwrap();
    std::fs::write(stray_workspace.join("src/file"), "left behind").unwrap();
    let series = format!("prebuildd_runner_snapshots{{runner_id=\"{RUNNER}\"}}");

    let started = Instant::now();
    while stray_archive.exists() || stray_workspace.exists() {
        assert!(started.elapsed() < Duration::from_secs(20), "nothing collected what no one owns");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(archive.exists(), "the archive of a prebuild that exists stays");
    // The next collection reports what is left.
    let started = Instant::now();
    while server.metric(&series).await != archive_bytes as f64 {
        assert!(started.elapsed() < Duration::from_secs(20), "{series} is {}, not {archive_bytes}", server.metric(&series).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Deleted through the API, it goes with its prebuild, and the metric follows.
    client.delete_prebuild(DeletePrebuildRequest { prebuild_id: kept.id.clone() }).await.unwrap();
    let started = Instant::now();
    while archive.exists() || server.metric(&series).await != 0.0 {
        assert!(started.elapsed() < Duration::from_secs(20), "the deleted prebuild's archive stays");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
