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
//!    `prebuildd-snapshot:<prebuild id>`, and pushed to the runner's
//!    registry when it has one (see `registry/`): the prebuild completes
//!    once the registry has it.
//!
//! Whatever happens, the prebuild's container, its build image, the CLI's
//! `vsc-*` images, the generated config and the clone are removed at the
//! end; a stopped prebuild's snapshot too.

use super::builder::FeatureBuildLock;
use super::cli::{CliFailure, RunOptions};
use super::compose::prebuild::PrebuildStack;
use super::config::{self, Prepared, Source};
use super::policy::{self, Repository};
use super::{labels, workspace_copy, Core};
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
    pub(super) fn prebuild_labels(&self, prebuild_id: &str) -> Vec<(String, String)> {
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
        // A Compose configuration's stack: its other containers, volumes
        // and network.
        if let Err(error) = self.remove_stack(engine, &labels::prebuild_project(prebuild_id)).await {
            tracing::warn!(prebuild = %prebuild_id, %error, "docker runner: cannot remove a prebuild's stack");
        }
        let removed = blocking(move || paths.iter().try_for_each(|path| remove_path(path))).await;
        if let Ok(Err(error)) = removed {
            tracing::warn!(prebuild = %prebuild_id, %error, "docker runner: cannot remove a prebuild's files");
        }
    }
}

/// A job's task: the prebuild, the push of its snapshot (when the runner
/// has a registry), its end state, and the clean-up.
pub(super) async fn run_job(runner: Arc<Core>, shared: Arc<JobShared>, job: PrebuildJob) {
    let outcome = match prebuild(&runner, &shared, &job).await {
        Ok((size, warning)) => match runner.publish(&shared, &job).await {
            Ok(image) => Ok((size, warning, image)),
            Err(_) if shared.is_stopped() => Err(stopped()),
            Err(message) => Err(message),
        },
        Err(message) => Err(message),
    };
    let pushed = outcome.as_ref().ok().and_then(|(_, _, image)| image.clone());
    let end = match outcome {
        Ok((size, warning, image)) => JobState::Completed { snapshot_size_bytes: size, warning, snapshot_image: image },
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
    // A stop that came while the snapshot was being committed, or a
    // failure after the stack's services were built: the snapshot of a
    // prebuild that did not complete is of no use.
    if shared.is_stopped() || !matches!(shared.observed(), JobState::Completed { .. }) {
        if let Err(error) = runner.remove_snapshot_images(&job.prebuild_id).await {
            tracing::warn!(prebuild = %job.prebuild_id, %error, "docker runner: cannot remove a stopped prebuild's snapshot");
        }
        // Pushed before the stop was seen: nothing will record it, so it
        // leaves the registry now.
        if let Some(image) = pushed {
            for _ in 0..3 {
                if let Ok(true) = runner.delete_pushed(&job.prebuild_id, &image).await {
                    break;
                }
            }
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
    let tmpdir = paths.config_dir.join("tmp");
    let created = tmpdir.clone();
    blocking(move || std::fs::create_dir_all(&created))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot create {}: {e}", paths.config_dir.display()))?;
    let builder = runner.builder().await?;
    log.line(&builder.description).await;
    // Without isolation in effect nothing of the repository runs (or is
    // even fetched): the check's message says what the host lacks.
    let network = runner.network_for(engine, &job.policy.allow_egress).await?;
    match &network {
        Some(name) => log.line(&super::network::joins(name, &job.policy.allow_egress)).await,
        None => log.line(super::network::NOT_ISOLATED).await,
    }
    let cli_options = RunOptions { buildkit: builder.buildkit, tmpdir: &tmpdir, env: &[] };
    if let (Some(base), Some(commit)) = (&job.source.base, job.source.commit.as_deref()) {
        match super::incremental::full_instead(runner, base).await {
            None => return super::incremental::prebuild(runner, shared, job, base, commit, &paths, network).await,
            Some(reason) => log.line(&format!("full prebuild instead of an incremental one: {reason}")).await,
        }
    }
    materialize(&shared.processes, log, &job.repository, job.source.commit.as_deref(), &paths.workspace, &runner.root).await?;

    let source_workspace = paths.workspace.clone();
    let (repository, default_image, chosen) = (job.repository.clone(), runner.default_image.clone(), job.devcontainer_path.clone());
    let local_env = runner.cli.passed_env();
    let mut prepared = blocking(move || {
        config::prepare(&Source {
            workspace: &source_workspace,
            repository: &repository,
            default_image: default_image.as_deref(),
            devcontainer_path: chosen.as_deref(),
            local_env,
        })
    })
    .await
    .map_err(|e| e.to_string())??;
    for note in &prepared.notes {
        log.line(note).await;
    }
    let repository = Repository { clone: paths.workspace.canonicalize().map_err(|e| format!("cannot resolve the clone: {e}"))? };
    // What the file itself asks is decided before anything is built.
    let early = policy::decide(&prepared.asks, &job.policy, job.resources, &repository);
    if let Some(refused) = early.refused() {
        return Err(refused);
    }
    // A Compose configuration: every service under the policy, before
    // anything is built.
    let (mut stack, stack_warnings) = match prepared.compose.clone() {
        Some(request) => {
            let (stack, warnings) = PrebuildStack::read(runner, shared, job, request, &mut prepared, &repository).await?;
            (Some(stack), warnings)
        }
        None => (None, Vec::new()),
    };

    // The build's configuration goes beside the project's file (local
    // features are found relative to it) and leaves the clone before the
    // clone is copied into the container.
    let build_config = prepared.config_dir.join(format!(".prebuildd-{}.devcontainer.json", job.prebuild_id));
    write_json(&build_config, &Value::Object(prepared.config.clone())).await?;
    let workspace_arg = paths.workspace.display().to_string();
    let build_image = labels::build_image(&runner.runner_id, &job.prebuild_id);
    let lock = match prepared.has_features && !builder.buildx {
        true => {
            let path = FeatureBuildLock::path_for(runner.docker_host.as_deref());
            log.line("waiting for this daemon's other feature builds (a Docker CLI without buildx builds them one at a time)").await;
            match FeatureBuildLock::acquire(&path, || shared.is_stopped()).await? {
                Some(lock) => Some(lock),
                None => return Err(stopped()),
            }
        }
        false => None,
    };
    log.line(if prepared.has_features { "building the dev container image with its features" } else { "building the dev container image" })
        .await;
    let config_arg = build_config.display().to_string();
    let args = strings(&["build", "--workspace-folder", &workspace_arg, "--config", &config_arg, "--image-name", &build_image]);
    let built = runner.cli.run(&shared.processes, log, &args, &cli_options).await;
    drop(lock);
    let _ = tokio::fs::remove_file(&build_config).await;
    if let Err(failure) = built {
        let message = cli_failure(shared, "the dev container image could not be built", failure);
        return Err(format!("{message}; last log lines:\n{}", log_tail(log).await));
    }

    // What the image's base and features ask, under the same policy.
    let entries = image_metadata(engine, &build_image).await?;
    let mut asks = prepared.asks.clone();
    asks.extend(policy::asks::of_metadata(&entries, &prepared.variables));
    asks.extend(stack.as_ref().map(PrebuildStack::dev_asks).unwrap_or_default());
    let decision = policy::decide(&asks, &job.policy, job.resources, &repository);
    if let Some(refused) = decision.refused() {
        return Err(refused);
    }
    for note in &decision.notes {
        log.line(note).await;
    }
    let mut warnings = prepared.warnings.clone();
    warnings.extend(stack_warnings);
    warnings.extend(decision.warnings.iter().cloned());
    warnings.extend(config::host_requirement_warnings(prepared.host_requirements.as_ref(), job.resources, &job.policy));
    for warning in &warnings {
        log.line(&format!("warning: {warning}")).await;
    }
    if entries.iter().any(policy::asks::has_privilege_keys) {
        // The grant alone says what the container gets: the CLI would
        // apply these keys of the metadata as they are.
        let stripped: Vec<Value> = entries.into_iter().map(strip_privilege_keys).collect();
        let label = serde_json::to_string(&stripped).map_err(|e| e.to_string())?;
        engine.relabel(&build_image, "devcontainer.metadata", &label).await?;
    }

    let container_labels = runner.prebuild_labels(&job.prebuild_id);
    let mut grant = decision.grant;
    grant.network = network;
    let up_file = paths.config_dir.join("devcontainer.json");
    let (up_config, up_args, up_env) = match &mut stack {
        Some(stack) => {
            let plan = stack.prepare_up(runner, shared, job, engine, &prepared, &build_image, &grant, &paths.config_dir).await?;
            (plan.config, plan.args, plan.env)
        }
        None => {
            let id_labels = container_labels[..2].iter().flat_map(|(key, value)| ["--id-label".to_string(), format!("{key}={value}")]);
            (config::up_config(&prepared, &build_image, &grant, &container_labels), id_labels.collect(), Vec::new())
        }
    };
    write_json(&up_file, &up_config).await?;
    log.line(if stack.is_some() { "creating the stack" } else { "creating the dev container" }).await;
    let up_arg = up_file.display().to_string();
    let mut args = strings(&["up", "--skip-post-create", "--workspace-folder", &workspace_arg, "--config", &up_arg]);
    args.push("--mount-workspace-git-root=false".into());
    args.extend(up_args);
    let up_options = RunOptions { env: &up_env, ..cli_options.clone() };
    let outcome = match runner.cli.run(&shared.processes, log, &args, &up_options).await {
        Ok(outcome) => outcome,
        Err(failure) => {
            let message = cli_failure(shared, "the dev container could not be created", failure);
            return Err(format!("{message}; last log lines:\n{}", log_tail(log).await));
        }
    };
    let text = |key: &str| outcome.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    let (container_id, remote_user) = (text("containerId"), text("remoteUser"));
    if container_id.is_empty() {
        return Err("the Dev Containers CLI reported no container".into());
    }
    let problems = match &stack {
        Some(stack) => stack.excess(engine).await?,
        None => engine.excess(&container_id, &grant).await?,
    };
    if !problems.is_empty() {
        return Err(format!(
            "refused to run the prebuild: its container has more than its class's policy granted ({})",
            problems.join("; ")
        ));
    }
    let folder = prepared.workspace_folder.clone();
    let extra = grant.copies.iter().map(|copy| (copy.source.as_path(), copy.target.as_str()));
    for (source, target) in std::iter::once((prepared.workspace_source.as_path(), prepared.workspace_target.as_str())).chain(extra) {
        workspace_copy::copy_workspace_in(engine, shared, &job.log, source, &container_id, &remote_user, target).await?;
    }

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
    if let Err(failure) = runner.cli.run(&shared.processes, log, &args, &cli_options).await {
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
    let mut snapshot_labels = HashMap::from([
        (labels::RUNNER_ID.to_string(), runner.runner_id.clone()),
        (labels::PREBUILD_ID.to_string(), job.prebuild_id.clone()),
        (labels::SNAPSHOT_ID.to_string(), job.prebuild_id.clone()),
        (labels::ROLE.to_string(), labels::ROLE_SNAPSHOT.to_string()),
        (labels::WORKSPACE_FOLDER.to_string(), folder),
        (labels::GRANT.to_string(), grant.to_label()),
    ]);
    if let Some(stack) = &stack {
        snapshot_labels.insert(labels::COMPOSE_STACK.to_string(), stack.template_label());
    }
    let size = engine.commit(&container_id, labels::SNAPSHOT_REPOSITORY, &job.prebuild_id, snapshot_labels).await?;
    log.line(&format!("snapshot {} committed: {size} bytes", labels::snapshot_image(&job.prebuild_id))).await;
    Ok((size, (!warnings.is_empty()).then(|| warnings.join("; "))))
}

/// A metadata entry without the keys the policy decides.
fn strip_privilege_keys(entry: Value) -> Value {
    match entry {
        Value::Object(mut object) => {
            for key in policy::asks::PRIVILEGE_KEYS {
                object.remove(key);
            }
            Value::Object(object)
        }
        other => other,
    }
}

/// The entries of a built image's `devcontainer.metadata` label (its base
/// image's, its features' and the configuration's).
async fn image_metadata(engine: &super::engine::Engine, image: &str) -> Result<Vec<Value>, String> {
    let Some((image_labels, _)) = engine.image(image).await? else {
        return Err(format!("the build reported success but image {image} does not exist"));
    };
    let Some(metadata) = image_labels.get("devcontainer.metadata") else { return Ok(Vec::new()) };
    match serde_json::from_str::<Value>(metadata) {
        Ok(Value::Array(entries)) => Ok(entries),
        Ok(entry @ Value::Object(_)) => Ok(vec![entry]),
        _ => Err(format!("image {image} has a devcontainer.metadata label that is not JSON")),
    }
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
