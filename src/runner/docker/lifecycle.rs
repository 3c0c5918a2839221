//! One prebuild on the docker runner, from repository to snapshot image:
//!
//! 1. **Starting**: the repository is cloned into `workspaces/<environment
//!    id>` of the runner's root; its devcontainer.json is cut down to what
//!    is safe ([`super::config`]) and written to `configs/<prebuild id>/`;
//!    `devcontainer build` makes the image (`prebuildd-build-<runner id>:<prebuild
//!    id>`), whose metadata is checked; `devcontainer up --skip-post-create`
//!    creates the container with no host mounts; the runner checks the
//!    container's settings and copies the workspace in, owned by the
//!    container's user.
//! 2. **Running**: `devcontainer run-user-commands --prebuild` runs
//!    `onCreateCommand` then `updateContentCommand` in the container and
//!    stops before `postCreateCommand`.
//! 3. **Stopping**: the container is stopped.
//! 4. **Snapshotting**: the container (workspace included) is committed to
//!    `prebuildd-snapshot:<prebuild id>`.
//!
//! Whatever happens, the prebuild's container, its build image, the CLI's
//! `vsc-*` images, the generated config and the clone are removed at the
//! end; a stopped prebuild's snapshot too.

use super::cli::CliFailure;
use super::config::{self, ContainerSettings, Prepared};
use super::{labels, Core};
use crate::runner::job::JobShared;
use crate::runner::process::{blocking, log_tail, remove_path};
use crate::runner::workspace::materialize;
use crate::runner::{JobState, PrebuildJob};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Seconds a stopping container gets before it is killed.
const STOP_SECONDS: i32 = 5;

/// The paths of one prebuild in the runner's root.
pub(super) struct JobPaths {
    pub workspace: PathBuf,
    pub config_dir: PathBuf,
}

impl Core {
    pub(super) fn job_paths(&self, prebuild_id: &str, environment_id: &str) -> JobPaths {
        JobPaths { workspace: self.root.join("workspaces").join(environment_id), config_dir: self.root.join("configs").join(prebuild_id) }
    }

    /// The labels of a prebuild's container.
    fn prebuild_labels(&self, prebuild_id: &str) -> Vec<(String, String)> {
        vec![
            (labels::RUNNER_ID.into(), self.runner_id.clone()),
            (labels::PREBUILD_ID.into(), prebuild_id.into()),
            (labels::ROLE.into(), labels::ROLE_PREBUILD.into()),
        ]
    }

    /// Removes everything of a prebuild but its snapshot: its containers,
    /// build image, the CLI's images, config and clone. Idempotent.
    pub(super) async fn clean_up_job(&self, prebuild_id: &str, environment_id: Option<&str>) {
        let Ok(engine) = self.engine().await else { return };
        let filter =
            [(labels::RUNNER_ID, self.runner_id.as_str()), (labels::PREBUILD_ID, prebuild_id), (labels::ROLE, labels::ROLE_PREBUILD)];
        let mut images = vec![labels::build_image(&self.runner_id, prebuild_id)];
        match engine.containers(&filter).await {
            Ok(containers) => {
                for container in containers {
                    if container.image.starts_with("vsc-") {
                        images.push(container.image.clone());
                    }
                    if let Err(error) = engine.remove_container(&container.id).await {
                        tracing::warn!(prebuild = %prebuild_id, %error, "docker runner: cannot remove a prebuild container");
                    }
                }
            }
            Err(error) => tracing::warn!(prebuild = %prebuild_id, %error, "docker runner: cannot list a prebuild's containers"),
        }
        if let Some(environment_id) = environment_id {
            // The CLI names its images after the workspace folder.
            images.extend(engine.images_named(&format!("vsc-{environment_id}-*")).await.unwrap_or_default());
        }
        for image in images {
            if let Err(error) = engine.remove_image(&image, true).await {
                tracing::warn!(prebuild = %prebuild_id, %image, %error, "docker runner: cannot remove an image");
            }
        }
        let mut paths = vec![self.root.join("configs").join(prebuild_id)];
        if let Some(environment_id) = environment_id {
            let job_paths = self.job_paths(prebuild_id, environment_id);
            paths.push(job_paths.workspace);
        }
        let removed = blocking(move || paths.iter().try_for_each(|path| remove_path(path))).await;
        if let Ok(Err(error)) = removed {
            tracing::warn!(prebuild = %prebuild_id, %error, "docker runner: cannot remove a prebuild's files");
        }
    }
}

/// A job's task: the prebuild, its end state, and the clean-up.
pub(super) async fn run_job(runner: Arc<Core>, shared: Arc<JobShared>, job: PrebuildJob) {
    let end = match prebuild(&runner, &shared, &job).await {
        Ok((size, warning)) => JobState::Completed { snapshot_size_bytes: size, warning },
        Err(message) => {
            if !shared.is_stopped() {
                job.log.line(&format!("failed: {message}")).await;
            }
            JobState::Failed { message }
        }
    };
    shared.processes.kill_all();
    runner.clean_up_job(&job.prebuild_id, Some(&job.environment_id)).await;
    shared.advance(end);
    // A stop that came while the snapshot was being committed: the
    // snapshot of a prebuild that did not complete is of no use.
    if shared.is_stopped() {
        let removed = match runner.engine().await {
            Ok(engine) => engine.remove_image(&labels::snapshot_image(&job.prebuild_id), true).await,
            Err(error) => Err(error),
        };
        if let Err(error) = removed {
            tracing::warn!(prebuild = %job.prebuild_id, %error, "docker runner: cannot remove a stopped prebuild's snapshot");
        }
    }
}

fn stopped() -> String {
    "the prebuild was stopped".to_string()
}

/// The prebuild's steps. Returns the snapshot's size and warning, or why
/// it failed.
async fn prebuild(runner: &Core, shared: &Arc<JobShared>, job: &PrebuildJob) -> Result<(i64, Option<String>), String> {
    let log = &job.log;
    let engine = runner.engine().await?;
    let paths = runner.job_paths(&job.prebuild_id, &job.environment_id);
    // A job started again after a restart begins from a clean environment.
    runner.clean_up_job(&job.prebuild_id, Some(&job.environment_id)).await;
    let config_dir = paths.config_dir.clone();
    blocking(move || std::fs::create_dir_all(&config_dir))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot create {}: {e}", paths.config_dir.display()))?;
    materialize(&shared.processes, log, &job.repository, &paths.workspace, &runner.root).await?;

    let (workspace, repository, default_image) = (paths.workspace.clone(), job.repository.clone(), runner.default_image.clone());
    let prepared =
        blocking(move || config::prepare(&workspace, &repository, default_image.as_deref())).await.map_err(|e| e.to_string())??;
    for note in &prepared.notes {
        log.line(note).await;
    }
    let config_file = paths.config_dir.join("devcontainer.json");
    write_json(&config_file, &Value::Object(prepared.config.clone())).await?;
    let workspace_arg = paths.workspace.display().to_string();
    let config_arg = config_file.display().to_string();
    let build_image = labels::build_image(&runner.runner_id, &job.prebuild_id);

    log.line("building the dev container image").await;
    let args = strings(&["build", "--workspace-folder", &workspace_arg, "--config", &config_arg, "--image-name", &build_image]);
    let built = runner
        .cli
        .run(&shared.processes, log, &args)
        .await
        .map_err(|f| cli_failure(shared, "the dev container image could not be built", f));
    if let Err(message) = built {
        return Err(format!("{message}; last log lines:\n{}", log_tail(log).await));
    }
    check_image(engine, &build_image).await?;

    let container_labels = runner.prebuild_labels(&job.prebuild_id);
    let settings = ContainerSettings { labels: &container_labels, resources: job.resources };
    write_json(&config_file, &config::up_config(&prepared, &build_image, &settings)).await?;
    log.line("creating the dev container").await;
    let mut args = strings(&["up", "--skip-post-create", "--workspace-folder", &workspace_arg, "--config", &config_arg]);
    args.push("--mount-workspace-git-root=false".into());
    for (key, value) in &container_labels[..2] {
        args.extend(["--id-label".to_string(), format!("{key}={value}")]);
    }
    let outcome = match runner.cli.run(&shared.processes, log, &args).await {
        Ok(outcome) => outcome,
        Err(failure) => {
            let message = cli_failure(shared, "the dev container could not be created", failure);
            return Err(format!("{message}; last log lines:\n{}", log_tail(log).await));
        }
    };
    let text = |key: &str| outcome.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    let (container_id, remote_user, folder) = (text("containerId"), text("remoteUser"), text("remoteWorkspaceFolder"));
    if container_id.is_empty() {
        return Err("the Dev Containers CLI reported no container".into());
    }
    let problems = engine.unsafe_settings(&container_id).await?;
    if !problems.is_empty() {
        return Err(format!("refused to run the prebuild: its container is not sandboxed ({})", problems.join("; ")));
    }
    let folder = if folder.is_empty() { prepared.workspace_folder.clone() } else { folder };
    super::workspace_copy::copy_workspace_in(engine, shared, &job.log, &paths.workspace, &container_id, &remote_user, &folder).await?;

    shared.advance(JobState::Running);
    // The commands come from the container's metadata; the override only
    // says where the workspace is (the CLI would guess from the clone's name).
    let empty = paths.config_dir.join("run.json");
    write_json(&empty, &serde_json::json!({ "workspaceFolder": folder })).await?;
    let args = strings(&[
        "run-user-commands",
        "--prebuild",
        "--container-id",
        &container_id,
        "--workspace-folder",
        &workspace_arg,
        "--override-config",
        &empty.display().to_string(),
    ]);
    if let Err(failure) = runner.cli.run(&shared.processes, log, &args).await {
        return Err(lifecycle_failure(shared, &prepared, failure, log_tail(log).await));
    }

    shared.advance(JobState::Stopping);
    log.line("stopping the dev container").await;
    engine.stop(&container_id, STOP_SECONDS).await?;
    if shared.is_stopped() {
        return Err(stopped());
    }

    shared.advance(JobState::Snapshotting { percent: 0 });
    log.line("committing the snapshot").await;
    let snapshot_labels = HashMap::from([
        (labels::RUNNER_ID.to_string(), runner.runner_id.clone()),
        (labels::PREBUILD_ID.to_string(), job.prebuild_id.clone()),
        (labels::SNAPSHOT_ID.to_string(), job.prebuild_id.clone()),
        (labels::ROLE.to_string(), labels::ROLE_SNAPSHOT.to_string()),
        (labels::WORKSPACE_FOLDER.to_string(), folder),
    ]);
    let size = engine.commit(&container_id, labels::SNAPSHOT_REPOSITORY, &job.prebuild_id, snapshot_labels).await?;
    log.line(&format!("snapshot {} committed: {size} bytes", labels::snapshot_image(&job.prebuild_id))).await;
    Ok((size, prepared.warning))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn write_json(path: &Path, value: &Value) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    tokio::fs::write(path, text).await.map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A CLI failure before the lifecycle: the CLI's reason (a missing image,
/// a broken Dockerfile) as it gave it.
fn cli_failure(shared: &JobShared, what: &str, failure: CliFailure) -> String {
    if shared.is_stopped() {
        stopped()
    } else {
        format!("{what}: {}", failure.reason)
    }
}

/// A failed lifecycle command: the command as written, its exit code and
/// the last log lines.
fn lifecycle_failure(shared: &JobShared, prepared: &Prepared, failure: CliFailure, tail: String) -> String {
    if shared.is_stopped() {
        return stopped();
    }
    // The CLI names the key it failed on first in its reason ("onCreateCommand
    // from devcontainer.json failed.").
    let command = prepared.lifecycle.commands.iter().find(|(key, _)| failure.reason.contains(key));
    match (command, failure.command_exit_code) {
        (Some((key, command)), Some(code)) => format!("{key} `{}` exited with code {code}; last log lines:\n{tail}", command.describe()),
        (Some((key, command)), None) => format!("{key} `{}` failed: {}; last log lines:\n{tail}", command.describe(), failure.reason),
        _ => format!("the prebuild lifecycle failed: {}; last log lines:\n{tail}", failure.reason),
    }
}

/// Refuses an image whose devcontainer metadata (set by its base image or
/// features) asks for what the runner's config would have dropped.
async fn check_image(engine: &super::engine::Engine, image: &str) -> Result<(), String> {
    let Some((image_labels, _)) = engine.image(image).await? else {
        return Err(format!("the build reported success but image {image} does not exist"));
    };
    let Some(metadata) = image_labels.get("devcontainer.metadata") else { return Ok(()) };
    let entries: Vec<Value> = match serde_json::from_str::<Value>(metadata) {
        Ok(Value::Array(entries)) => entries,
        Ok(entry @ Value::Object(_)) => vec![entry],
        _ => return Err(format!("image {image} has a devcontainer.metadata label that is not JSON")),
    };
    let asked: Vec<&str> = ["privileged", "capAdd", "securityOpt", "mounts"]
        .into_iter()
        .filter(|key| entries.iter().any(|entry| entry.get(key).is_some_and(|v| !matches!(v, Value::Null | Value::Bool(false)))))
        .collect();
    if asked.is_empty() {
        Ok(())
    } else {
        Err(format!("refused to run the prebuild: the image's devcontainer metadata asks for {}", asked.join(", ")))
    }
}
