//! An incremental prebuild on the docker runner: the base prebuild's
//! snapshot image, brought to the new commit, with only
//! `updateContentCommand` run in it, committed as the new snapshot.
//!
//! The container is created from the base's image with what the base was
//! granted (as long as the class still allows it), not by the Dev
//! Containers CLI: the CLI's lifecycle marks a container by its creation
//! time, so in a container made from a committed image it would run
//! `onCreateCommand` again. The update is the difference between the two
//! commits, taken from a clone on the runner's host: the changed files,
//! the removed ones deleted, and the new git objects as one pack with the
//! new index and HEAD, so the image's new layer holds what changed, not a
//! second copy of the repository. `updateContentCommand` runs through the
//! Engine API's exec, as the dev container's user (`remoteUser`, else
//! `containerUser`), in the workspace folder, with `remoteEnv`: those the
//! snapshot's merged `devcontainer.metadata` label holds (the base image's,
//! each feature's and the devcontainer.json's, in the label's order, as the
//! CLI ran them), and the new commit's devcontainer.json's own if the label
//! lacks it (equal by the base's configuration fingerprint, so normally
//! the label has it).
//!
//! A Docker Compose configuration's prebuilds are always full (see
//! [`full_instead`]): its snapshot is the dev container of a stack.

use super::lifecycle::JobPaths;
use super::policy::Grant;
use super::{labels, workspace_copy, Core};
use crate::runner::devcontainer::{self, LifecycleCommand};
use crate::runner::job::JobShared;
use crate::runner::process::{blocking, log_tail};
use crate::runner::workspace::{materialize, run_git};
use crate::runner::{JobBase, JobState, PrebuildJob};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Seconds a stopping container gets before it is killed.
const STOP_SECONDS: i32 = 5;

/// What the update carries: files changed or added, files removed.
struct Delta {
    changed: Vec<String>,
    removed: Vec<String>,
}

/// Why a prebuild the server planned as incremental runs in full here, if
/// it must: the base snapshot is one service of a Docker Compose stack (its
/// image carries the stack's template), and this update makes a single
/// container and commits it without the stack. The server plans Compose
/// configurations' prebuilds as full (`crate::git::uses_compose`); this
/// holds when a base comes from elsewhere (an older server, another
/// configuration path). `None` also when the base cannot be looked at:
/// the incremental prebuild then fails saying why.
pub(super) async fn full_instead(runner: &Core, base: &JobBase) -> Option<String> {
    let engine = runner.engine().await.ok()?;
    let image = labels::snapshot_image(&base.prebuild_id);
    let (image_labels, _) = engine.image(&image).await.ok()??;
    image_labels
        .contains_key(labels::COMPOSE_STACK)
        .then(|| format!("the base snapshot {image} is a Docker Compose stack's, and a Compose configuration's prebuilds are always full"))
}

/// The incremental prebuild's steps (see the module documentation).
pub(super) async fn prebuild(
    runner: &Core,
    shared: &Arc<JobShared>,
    job: &PrebuildJob,
    base: &JobBase,
    commit: &str,
    paths: &JobPaths,
    network: Option<String>,
) -> Result<(i64, Option<String>), String> {
    let log = &job.log;
    let engine = runner.engine().await?;
    let base_image = labels::snapshot_image(&base.prebuild_id);
    if let (None, Some(pushed)) = (engine.image(&base_image).await?, &base.image) {
        log.line(&format!("pulling the base snapshot {pushed}")).await;
        runner.pull_base(pushed, &base.prebuild_id).await?;
    }
    let Some((image_labels, _)) = engine.image(&base_image).await? else {
        return Err(format!("the base prebuild's snapshot {base_image} is missing on this runner; the next full prebuild replaces it"));
    };
    let folder = image_labels
        .get(labels::WORKSPACE_FOLDER)
        .cloned()
        .ok_or_else(|| format!("the base snapshot {base_image} does not say where its workspace is"))?;
    let mut grant = Grant::from_image_labels(&image_labels, job.resources)
        .and_then(|grant| grant.under(&job.policy, job.resources))
        .map_err(|e| format!("cannot start from the base snapshot {base_image}: {e}"))?;
    // On the runner's network, as every container of a prebuild.
    grant.network = network;
    let metadata = metadata_entries(&image_labels);
    let user = last_string(&metadata, "remoteUser").or_else(|| last_string(&metadata, "containerUser")).unwrap_or_default();

    // The new commit on the host, with the base's commit beside it.
    materialize(&shared.processes, log, &job.repository, Some(commit), &paths.workspace, &runner.root).await?;
    if run_git(&shared.processes, &paths.workspace, &["cat-file", "-e", &format!("{}^{{commit}}", base.commit)]).await.is_err() {
        run_git(&shared.processes, &paths.workspace, &["fetch", "--quiet", "--unshallow", "origin"]).await?;
    }
    let delta = diff(shared, &paths.workspace, &base.commit, commit).await?;
    log.line(&format!(
        "incremental: from {base_image} (commit {}), {} file(s) changed and {} removed",
        base.commit,
        delta.changed.len(),
        delta.removed.len()
    ))
    .await;
    let staging = paths.config_dir.join("update");
    stage_update(shared, &paths.workspace, &staging, &delta, &base.commit, commit).await?;
    let mut lifecycle = metadata_updates(&metadata)?;
    for (key, command) in read_lifecycle(&paths.workspace, job.devcontainer_path.as_deref()).await? {
        let in_label = lifecycle.iter().any(|(_, listed)| listed.command == command.command);
        if !(key == "updateContentCommand" && in_label) {
            lifecycle.push((key, command));
        }
    }

    log.line("creating the dev container from the base snapshot").await;
    let container_labels: HashMap<String, String> = runner.prebuild_labels(&job.prebuild_id).into_iter().collect();
    let name = format!("prebuildd-incremental-{}", job.prebuild_id);
    let container_id = engine.create(&name, &base_image, container_labels, &grant).await?;
    let problems = engine.excess(&container_id, &grant).await?;
    if !problems.is_empty() {
        return Err(format!(
            "refused to run the prebuild: its container has more than its class's policy granted ({})",
            problems.join("; ")
        ));
    }
    engine.start(&container_id).await?;
    if !delta.removed.is_empty() {
        let mut argv = vec!["rm".to_string(), "-rf".to_string(), "--".to_string()];
        argv.extend(delta.removed.iter().map(|path| format!("{}/{path}", folder.trim_end_matches('/'))));
        let code = engine.exec(&container_id, "0", "/", &[], &argv, log).await?;
        if code != 0 {
            return Err(format!("removing the files the new commit deleted failed (exit code {code})"));
        }
    }
    workspace_copy::copy_workspace_in(engine, shared, log, &staging, &container_id, &user, &folder).await?;
    log.line(&format!("updated the workspace to commit {commit}")).await;

    shared.advance(JobState::Running);
    let env = remote_env(&metadata);
    for (key, command) in &lifecycle {
        if *key != "updateContentCommand" {
            log.line(&format!("skipping {key}: it ran in the base prebuild's snapshot")).await;
            continue;
        }
        log.line(&format!("running {key}{}", command.source.as_deref().map(|id| format!(" of {id}")).unwrap_or_default())).await;
        let command = &command.command;
        let runs = parts(command).into_iter().map(|(label, argv)| {
            let (engine, container_id, user, folder, env) = (engine, &container_id, &user, &folder, &env);
            async move {
                log.line(&format!("[{label}] $ {}", argv.join(" "))).await;
                let code = engine.exec(container_id, user, folder, env, &argv, log).await?;
                if code == 0 {
                    Ok(())
                } else {
                    Err(format!("{label} `{}` exited with code {code}", command.describe()))
                }
            }
        });
        if let Err(failure) = futures::future::try_join_all(runs).await {
            if shared.is_stopped() {
                return Err("the prebuild was stopped".into());
            }
            return Err(format!("{failure}; last log lines:\n{}", log_tail(log).await));
        }
    }

    shared.advance(JobState::Stopping);
    log.line("stopping the dev container").await;
    engine.stop(&container_id, STOP_SECONDS).await?;
    if shared.is_stopped() {
        return Err("the prebuild was stopped".into());
    }
    shared.advance(JobState::Snapshotting { percent: 0 });
    log.line("committing the snapshot").await;
    let snapshot_labels = HashMap::from([
        (labels::RUNNER_ID.to_string(), runner.runner_id.clone()),
        (labels::PREBUILD_ID.to_string(), job.prebuild_id.clone()),
        (labels::SNAPSHOT_ID.to_string(), job.prebuild_id.clone()),
        (labels::ROLE.to_string(), labels::ROLE_SNAPSHOT.to_string()),
        (labels::WORKSPACE_FOLDER.to_string(), folder),
        (labels::GRANT.to_string(), grant.to_label()),
    ]);
    let size = engine.commit(&container_id, labels::SNAPSHOT_REPOSITORY, &job.prebuild_id, snapshot_labels).await?;
    log.line(&format!("snapshot {} committed: {size} bytes", labels::snapshot_image(&job.prebuild_id))).await;
    Ok((size, None))
}

/// The files that differ between the two commits.
async fn diff(shared: &JobShared, workspace: &Path, from: &str, to: &str) -> Result<Delta, String> {
    let output = tokio::process::Command::new("git")
        .args(["diff", "--name-status", "--no-renames", "-z", from, to, "--"])
        .current_dir(workspace)
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run git diff: {e}"))?;
    if shared.is_stopped() {
        return Err("the prebuild was stopped".into());
    }
    if !output.status.success() {
        return Err(format!("git diff {from} {to} failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    let fields: Vec<String> =
        output.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()).map(|f| String::from_utf8_lossy(f).into_owned()).collect();
    let mut delta = Delta { changed: Vec::new(), removed: Vec::new() };
    for pair in fields.chunks(2) {
        if let [status, path] = pair {
            if status.starts_with('D') {
                delta.removed.push(path.clone());
            } else {
                delta.changed.push(path.clone());
            }
        }
    }
    Ok(delta)
}

/// Writes the update into `staging`: the changed files at their paths, and
/// under `.git/` the new objects as one pack, the new index and HEAD.
async fn stage_update(shared: &JobShared, workspace: &Path, staging: &Path, delta: &Delta, from: &str, to: &str) -> Result<(), String> {
    let pack_dir = staging.join(".git/objects/pack");
    let created = pack_dir.clone();
    blocking(move || std::fs::create_dir_all(&created))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot create {}: {e}", pack_dir.display()))?;
    // `rev-list --objects` of what the new commit has and the base lacks,
    // written by pack-objects as one pack (a shell pipes the two).
    let script = format!("git rev-list --objects {to} --not {from} | git pack-objects --quiet \"$0/pack\"");
    let output = tokio::process::Command::new("/bin/sh")
        .args(["-c", &script, &pack_dir.display().to_string()])
        .current_dir(workspace)
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot pack the new objects: {e}"))?;
    if !output.status.success() || shared.is_stopped() {
        return Err(format!("packing the new objects failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    let (workspace, staging, changed) = (workspace.to_path_buf(), staging.to_path_buf(), delta.changed.clone());
    blocking(move || -> std::io::Result<()> {
        for name in ["index", "HEAD"] {
            std::fs::copy(workspace.join(".git").join(name), staging.join(".git").join(name))?;
        }
        for path in &changed {
            let (from, to) = (workspace.join(path), staging.join(path));
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let metadata = std::fs::symlink_metadata(&from)?;
            if metadata.file_type().is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
            } else if metadata.is_file() {
                std::fs::copy(&from, &to)?;
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot stage the update: {e}"))
}

/// A lifecycle command and where it comes from: a feature's ID, the base
/// image's metadata, or (`None`) the devcontainer.json.
struct Sourced {
    source: Option<String>,
    command: LifecycleCommand,
}

/// The `updateContentCommand`s of the metadata entries, in order, each
/// with its feature's ID when a feature contributed it.
fn metadata_updates(metadata: &[Value]) -> Result<Vec<(&'static str, Sourced)>, String> {
    let mut commands = Vec::new();
    for entry in metadata {
        let Some(value) = entry.get("updateContentCommand") else { continue };
        let source = entry.get("id").and_then(Value::as_str).map(str::to_string);
        let key = format!("updateContentCommand of {}", source.as_deref().unwrap_or("the image's devcontainer.metadata"));
        if let Some(command) = devcontainer::command_of(&key, value)? {
            commands.push(("updateContentCommand", Sourced { source, command }));
        }
    }
    Ok(commands)
}

/// The lifecycle commands of the new commit's devcontainer.json.
async fn read_lifecycle(workspace: &Path, chosen: Option<&str>) -> Result<Vec<(&'static str, Sourced)>, String> {
    let Some(located) = devcontainer::locate(workspace, chosen)? else { return Ok(Vec::new()) };
    let text = tokio::fs::read_to_string(&located.path).await.map_err(|e| format!("cannot read {}: {e}", located.path.display()))?;
    Ok(devcontainer::parse(&text)?.commands.into_iter().map(|(key, command)| (key, Sourced { source: None, command })).collect())
}

/// A command as the argument vectors to exec: a string by `/bin/sh -c`,
/// an array as it is, an object's parts each (they run at once).
fn parts(command: &LifecycleCommand) -> Vec<(String, Vec<String>)> {
    match command {
        LifecycleCommand::Shell(line) => vec![("updateContentCommand".into(), vec!["/bin/sh".into(), "-c".into(), line.clone()])],
        LifecycleCommand::Exec(argv) => vec![("updateContentCommand".into(), argv.clone())],
        LifecycleCommand::Parallel(named) => named
            .iter()
            .flat_map(|(name, part)| parts(part).into_iter().map(move |(_, argv)| (format!("updateContentCommand.{name}"), argv)))
            .collect(),
    }
}

/// The entries of an image's `devcontainer.metadata` label.
fn metadata_entries(image_labels: &HashMap<String, String>) -> Vec<Value> {
    match image_labels.get("devcontainer.metadata").and_then(|text| serde_json::from_str::<Value>(text).ok()) {
        Some(Value::Array(entries)) => entries,
        Some(entry @ Value::Object(_)) => vec![entry],
        _ => Vec::new(),
    }
}

/// The last entry's value of a string key (later entries win, as the
/// spec merges them).
fn last_string(entries: &[Value], key: &str) -> Option<String> {
    entries.iter().rev().find_map(|entry| entry.get(key).and_then(Value::as_str).map(str::to_string))
}

/// `remoteEnv` of every entry, later ones winning, as `NAME=value`;
/// values that refer to variables are left out (only the CLI resolves them).
fn remote_env(entries: &[Value]) -> Vec<String> {
    let mut env: HashMap<String, String> = HashMap::new();
    for entry in entries {
        if let Some(Value::Object(vars)) = entry.get("remoteEnv") {
            for (name, value) in vars {
                if let Some(value) = value.as_str().filter(|v| !v.contains("${")) {
                    env.insert(name.clone(), value.to_string());
                }
            }
        }
    }
    let mut env: Vec<String> = env.into_iter().map(|(name, value)| format!("{name}={value}")).collect();
    env.sort();
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_become_exec_vectors_and_metadata_is_read() {
        assert_eq!(
            parts(&LifecycleCommand::Shell("make".into())),
            vec![("updateContentCommand".into(), vec!["/bin/sh".into(), "-c".into(), "make".into()])]
        );
        let parallel = LifecycleCommand::Parallel(vec![("a".into(), LifecycleCommand::Exec(vec!["npm".into(), "ci".into()]))]);
        assert_eq!(parts(&parallel), vec![("updateContentCommand.a".into(), vec!["npm".into(), "ci".into()])]);
        let labels = HashMap::from([(
            "devcontainer.metadata".to_string(),
            r#"[{"remoteUser":"root","remoteEnv":{"A":"1","P":"${containerEnv:PATH}"}},{"remoteUser":"dev","remoteEnv":{"A":"2"}}]"#
                .to_string(),
        )]);
        let entries = metadata_entries(&labels);
        assert_eq!(last_string(&entries, "remoteUser").as_deref(), Some("dev"));
        assert_eq!(remote_env(&entries), vec!["A=2".to_string()]);
    }

    #[test]
    fn the_labels_updates_are_read_in_order_with_their_features() {
        let entries: Vec<Value> = serde_json::from_str(
            r#"[{"updateContentCommand":"from the image"},
                {"id":"./counter","updateContentCommand":["count","up"]},
                {"id":"./quiet"},
                {"updateContentCommand":{"a":"the file's"}},
                {"updateRemoteUserUID":false}]"#,
        )
        .unwrap();
        let updates = metadata_updates(&entries).unwrap();
        let described: Vec<(Option<&str>, String)> =
            updates.iter().map(|(_, sourced)| (sourced.source.as_deref(), sourced.command.describe())).collect();
        assert_eq!(
            described,
            [
                (None, "from the image".to_string()),
                (Some("./counter"), r#"["count","up"]"#.to_string()),
                (None, r#"{"a":"the file's"}"#.to_string())
            ]
        );
        assert!(metadata_updates(&[]).unwrap().is_empty());
        let nested: Vec<Value> = serde_json::from_str(r#"[{"id":"bad","updateContentCommand":{"a":{"b":"c"}}}]"#).unwrap();
        assert!(metadata_updates(&nested).err().unwrap().contains("updateContentCommand of bad"));
    }
}
