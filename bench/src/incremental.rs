//! `prebuildd-bench --only incremental`: full vs incremental prebuilds of
//! the same repository on the local runner (sandboxed), in one run, through
//! the real binary. Not part of the default run (it needs bubblewrap).
//!
//! The repository is generated, offline: a source tree, a lock file, and a
//! devcontainer.json whose `onCreateCommand` takes seconds (a toolchain
//! being set up) and whose `updateContentCommand` installs dependencies into
//! the workspace (a generated `node_modules`-like tree of small files) the
//! way package managers do: only when the lock file changed since the last
//! install. The run builds one full prebuild, then after each of a few
//! one-file commits (not touching the lock file) the next prebuild, which
//! is incremental; then, after a commit that changes devcontainer.json, a
//! full one again. Each is timed from CreatePrebuild to COMPLETED, and its
//! source (full or incremental) is checked through PrebuildSourceService.

use crate::server::{ChildServer, ORG, USER};
use prebuildd::config::DEMO_API_KEY;
use prebuildd::proto::gitpod::v1::prebuild_service_client::PrebuildServiceClient;
use prebuildd::proto::gitpod::v1::*;
use prebuildd::proto::prebuildd::v1::prebuild_source_service_client::PrebuildSourceServiceClient;
use prebuildd::proto::prebuildd::v1::ListPrebuildSourcesRequest;
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const RUNNER: &str = "1c4e0000-b3c4-4000-8000-0000000000a1";
const CLASS: &str = "1c4e0000-b3c4-4000-8000-0000000000c1";
const PROJECT: &str = "1c4e0000-b3c4-4000-8000-0000000000d1";
/// How long the onCreateCommand takes.
const ON_CREATE_SECONDS: u32 = 10;
/// The installed dependencies: `PACKAGES` directories of `FILES_PER_PACKAGE`
/// files of about `FILE_BYTES` each (about 40 MB of source-like lines
/// with random hex literals, so the snapshot compresses as code does, not
/// as zeros).
const PACKAGES: u32 = 200;
const FILES_PER_PACKAGE: u32 = 50;
const FILE_BYTES: u32 = 4000;
/// Incremental prebuilds, each after a one-file commit.
const INCREMENTAL_ROUNDS: usize = 3;
const PATIENCE: Duration = Duration::from_secs(600);

type Auth = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;

fn auth(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    let value = format!("Bearer {DEMO_API_KEY}").parse().map_err(|_| tonic::Status::internal("the API key is not ASCII"))?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

/// The repository's devcontainer.json (`image`: for the docker runner).
fn devcontainer(variant: &str, image: Option<&str>) -> String {
    let image = image.map(|image| format!(r#""image": "{image}", "#)).unwrap_or_default();
    format!(
        r#"{{ {image}"name": "bench {variant}", "onCreateCommand": "sleep {ON_CREATE_SECONDS} && echo toolchain ready > .toolchain", "updateContentCommand": "sh tools/install-deps.sh" }}"#
    )
}

/// The dependency installer `updateContentCommand` runs: the whole tree,
/// but only when deps.lock changed since the last install.
fn install_script() -> String {
    format!(
        r#"set -e
stamp=$(md5sum < deps.lock)
if [ "$(cat .installed 2>/dev/null)" = "$stamp" ]; then echo "dependencies up to date"; exit 0; fi
rm -rf node_modules
awk -v p={PACKAGES} -v f={FILES_PER_PACKAGE} -v b={FILE_BYTES} 'BEGIN {{
  srand(1)
  for (i = 0; i < p; i++) {{
    system("mkdir -p node_modules/pkg" i)
    for (j = 0; j < f; j++) {{
      file = "node_modules/pkg" i "/f" j ".js"
      for (k = 0; k < b / 100; k++) printf "export const v%d = \"%08x%08x%08x%08x%08x%08x%08x%08x\";\n", k, rand() * 4294967295, rand() * 4294967295, rand() * 4294967295, rand() * 4294967295, rand() * 4294967295, rand() * 4294967295, rand() * 4294967295, rand() * 4294967295 > file
      close(file)
    }}
  }}
}}'
echo "$stamp" > .installed
echo "dependencies installed"
"#
    )
}

fn git(dir: &Path, args: &[&str]) -> Result<(), String> {
    let status = std::process::Command::new("git")
        .args(["-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("git {args:?} failed in {}", dir.display()))
    }
}

pub fn commit(repo: &Path, path: &str, content: &str) -> Result<(), String> {
    let file = repo.join(path);
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::write(file, content).map_err(|e| e.to_string())?;
    git(repo, &["add", "-A"])?;
    git(repo, &["commit", "-q", "-m", &format!("change {path}")])
}

fn config(listen: &str, repository: &Path) -> String {
    format!(
        "[server]\nlisten = \"{listen}\"\n[reconciler]\ninterval = \"100ms\"\n\
         [[organizations]]\nid = \"{ORG}\"\nname = \"Bench\"\n\
         [[api_keys]]\ntoken = \"{DEMO_API_KEY}\"\norganization_id = \"{ORG}\"\nsubject_id = \"{USER}\"\n\
         [[runners]]\nid = \"{RUNNER}\"\nkind = \"local\"\n\
         [[environment_classes]]\nid = \"{CLASS}\"\nrunner_id = \"{RUNNER}\"\nname = \"local\"\n\
         [[projects]]\nid = \"{PROJECT}\"\norganization_id = \"{ORG}\"\nname = \"bench\"\nrepository = \"{}\"\ndefault_environment_class_id = \"{CLASS}\"\n\
         [projects.prebuilds]\nenabled = true\nenvironment_class_ids = [\"{CLASS}\"]\ntimeout = \"3600s\"\n\
         [projects.prebuilds.git]\nincremental = true\n",
        repository.display()
    )
}

/// One prebuild, CreatePrebuild to COMPLETED: its time, whether it was
/// incremental, and its snapshot's size.
/// A failure says the end of the prebuild's log (under `logs`).
async fn timed_prebuild(
    prebuilds: &mut PrebuildServiceClient<InterceptedService<Channel, Auth>>,
    sources: &mut PrebuildSourceServiceClient<InterceptedService<Channel, Auth>>,
    project: &str,
    logs: &Path,
) -> Result<(Duration, bool, i64), String> {
    let started = Instant::now();
    let request = CreatePrebuildRequest { project_id: project.into(), environment_class_id: None, spec: Some(PrebuildSpec::default()) };
    let created = prebuilds.create_prebuild(request).await.map_err(|e| e.to_string())?.into_inner().prebuild.ok_or("no prebuild")?;
    loop {
        let got = prebuilds.get_prebuild(GetPrebuildRequest { prebuild_id: created.id.clone() }).await.map_err(|e| e.to_string())?;
        let status = got.into_inner().prebuild.and_then(|p| p.status).unwrap_or_default();
        if status.phase == PrebuildPhase::Completed as i32 {
            let elapsed = started.elapsed();
            let response = sources
                .list_prebuild_sources(ListPrebuildSourcesRequest { prebuild_ids: vec![created.id.clone()] })
                .await
                .map_err(|e| e.to_string())?;
            let incremental = response.into_inner().sources.first().is_some_and(|s| s.incremental);
            return Ok((elapsed, incremental, status.snapshot_size_bytes));
        }
        if status.phase == PrebuildPhase::Failed as i32 || status.phase == PrebuildPhase::Cancelled as i32 {
            let log = std::fs::read_to_string(logs.join(format!("{}.log", created.id))).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            return Err(format!(
                "prebuild {} failed: {}; its log's last lines:\n{}",
                created.id,
                status.failure_message,
                lines[lines.len().saturating_sub(30)..].join("\n")
            ));
        }
        if started.elapsed() > PATIENCE {
            return Err(format!("prebuild {} did not finish in {}s", created.id, PATIENCE.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Generates the repository in `repo` (a git repository with one commit);
/// `image`: the dev container's image (docker runner).
pub fn generate_repository(repo: &Path, image: Option<&str>) -> Result<(), String> {
    std::fs::create_dir_all(repo.join("src")).map_err(|e| e.to_string())?;
    git(repo, &["init", "-q", "-b", "main"])?;
    for n in 0..50 {
        std::fs::write(repo.join("src").join(format!("module{n}.js")), format!("export const value{n} = {n};\n").repeat(40))
            .map_err(|e| e.to_string())?;
    }
    std::fs::write(repo.join("deps.lock"), "left-pad 1.3.0\nleft-pad-utils 2.0.1\n").map_err(|e| e.to_string())?;
    std::fs::create_dir_all(repo.join("tools")).map_err(|e| e.to_string())?;
    std::fs::write(repo.join("tools/install-deps.sh"), install_script()).map_err(|e| e.to_string())?;
    commit(repo, ".devcontainer/devcontainer.json", &devcontainer("v1", image))
}

/// The local runner's measurement.
pub async fn run(work: &Path) -> Result<(), String> {
    let repo = work.join("repository");
    generate_repository(&repo, None)?;
    let server = ChildServer::start_with(&work.join("data"), |listen| config(listen, &repo))?;
    server.ready().await?;
    let result = measure(&server.base, &work.join("data/logs"), &repo, PROJECT, "local runner (sandboxed)", None).await;
    server.stop();
    result
}

/// Times a full prebuild of `project` (whose repository is `repo`), then
/// incremental ones after one-file commits, then a full one after a
/// devcontainer.json change, and prints them. `logs`: the server's
/// prebuild logs, to say why one failed.
pub async fn measure(base: &str, logs: &Path, repo: &Path, project: &str, runner: &str, image: Option<&str>) -> Result<(), String> {
    let channel = Channel::from_shared(base.to_string()).map_err(|e| e.to_string())?.connect().await.map_err(|e| e.to_string())?;
    let mut prebuilds = PrebuildServiceClient::with_interceptor(channel.clone(), auth as Auth);
    let mut sources = PrebuildSourceServiceClient::with_interceptor(channel, auth as Auth);
    println!(
        "prebuildd bench: full vs incremental prebuilds, {runner}, onCreateCommand {ON_CREATE_SECONDS} s, \
         updateContentCommand installs {} files (about {} MB) when deps.lock changed, {} cores",
        PACKAGES * FILES_PER_PACKAGE,
        PACKAGES * FILES_PER_PACKAGE * FILE_BYTES / 1_000_000,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("| prebuild | kind | time s | snapshot MB |");
    println!("|---|---|---:|---:|");
    let row = |name: &str, (elapsed, incremental, size): (Duration, bool, i64)| {
        println!(
            "| {name} | {} | {:.2} | {:.1} |",
            if incremental { "incremental" } else { "full" },
            elapsed.as_secs_f64(),
            size as f64 / 1e6
        );
        (elapsed, incremental)
    };
    let (full, full_was_incremental) = row("first", timed_prebuild(&mut prebuilds, &mut sources, project, logs).await?);
    let mut incremental_times = Vec::new();
    for round in 1..=INCREMENTAL_ROUNDS {
        commit(repo, &format!("src/module{round}.js"), &format!("export const changed = {round};\n"))?;
        let timed = timed_prebuild(&mut prebuilds, &mut sources, project, logs).await?;
        let (elapsed, incremental) = row(&format!("after a one-file commit ({round})"), timed);
        if !incremental {
            return Err(format!("the prebuild after one-file commit {round} was not incremental"));
        }
        incremental_times.push(elapsed);
    }
    commit(repo, ".devcontainer/devcontainer.json", &devcontainer("v2", image))?;
    let timed = timed_prebuild(&mut prebuilds, &mut sources, project, logs).await?;
    let (reconfigured, reconfigured_was_incremental) = row("after a devcontainer.json change", timed);
    if full_was_incremental || reconfigured_was_incremental {
        return Err("a full prebuild was reported incremental".into());
    }
    incremental_times.sort();
    let median = incremental_times[incremental_times.len() / 2];
    let ratio = median.as_secs_f64() / full.as_secs_f64();
    println!(
        "\nincremental (median of {INCREMENTAL_ROUNDS}) / full (first): {:.2} s / {:.2} s = {:.2} (target under 0.25: {}); \
         full again after the configuration changed: {:.2} s\n",
        median.as_secs_f64(),
        full.as_secs_f64(),
        ratio,
        if ratio < 0.25 { "met" } else { "missed" },
        reconfigured.as_secs_f64()
    );
    Ok(())
}
