//! One prebuild job on the local runner: the workspace from the
//! repository, the devcontainer prebuild lifecycle on this host (in the
//! runner's sandbox, see `sandbox.rs`), the snapshot, and the job's end
//! state.

use super::sandbox::{home_of, Confinement, Sandbox};
use super::snapshot::{extract, write_snapshot};
use crate::runner::devcontainer::{self, LifecycleCommand};
use crate::runner::egress::Exceptions;
use crate::runner::job::JobShared;
use crate::runner::process::{blocking, describe_exit, log_tail, remove_path};
use crate::runner::workspace::{materialize, run_git};
use crate::runner::{JobState, LogSink, PrebuildJob};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The warning of a prebuild that had nothing to run.
const NO_DEVCONTAINER: &str = "no .devcontainer/devcontainer.json found; the snapshot holds the repository only";

/// What a job's sandbox lets through: its class's allowances, and DNS
/// through the sandbox's forwarder.
fn sandbox_exceptions(allow_egress: &[crate::catalog::EgressAllowance]) -> Exceptions {
    let forwarder = super::network::SANDBOX_DNS.parse().into_iter().collect();
    Exceptions { allowances: allow_egress.to_vec(), resolvers: forwarder }
}

/// Where and how a job's lifecycle commands run.
struct Launch<'a> {
    confinement: &'a Confinement,
    workspace: &'a Path,
    /// The commands' HOME in the sandbox (see [`home_of`]).
    home: &'a Path,
    /// What the sandbox's network lets through besides the internet.
    exceptions: &'a Exceptions,
}

/// Runs the workspace's prebuild lifecycle (with `only_update`, an
/// incremental prebuild's: `updateContentCommand` alone). Returns the
/// warning to report, if any, or why it failed.
async fn run_lifecycle(
    shared: &JobShared,
    log: &LogSink,
    launch: &Launch<'_>,
    devcontainer_path: Option<&str>,
    only_update: bool,
) -> std::result::Result<Option<String>, String> {
    let workspace = launch.workspace;
    let Some(located) = devcontainer::locate(workspace, devcontainer_path)? else {
        log.line(&format!("warning: {NO_DEVCONTAINER}")).await;
        return Ok(Some(NO_DEVCONTAINER.to_string()));
    };
    let path = located.path;
    let mut warnings: Vec<String> = located.warning.into_iter().collect();
    for warning in &warnings {
        log.line(&format!("warning: {warning}")).await;
    }
    let name = path.strip_prefix(workspace).unwrap_or(&path).display().to_string();
    let text = tokio::fs::read_to_string(&path).await.map_err(|e| format!("cannot read {name}: {e}"))?;
    let lifecycle = devcontainer::parse(&text).map_err(|e| format!("{name}: {e}"))?;
    log.line(&format!("read {name}")).await;
    if !lifecycle.container_keys.is_empty() {
        let verb = if lifecycle.container_keys.len() == 1 { "is" } else { "are" };
        let ignored = format!(
            "the local runner runs the lifecycle commands on its host, not in a dev container: {} in {name} {verb} not used",
            lifecycle.container_keys.join(", ")
        );
        log.line(&format!("warning: {ignored}")).await;
        warnings.push(ignored);
    }
    if lifecycle.commands.is_empty() {
        log.line("no onCreateCommand or updateContentCommand; nothing to run").await;
    }
    for (key, command) in &lifecycle.commands {
        if only_update && *key != "updateContentCommand" {
            log.line(&format!("skipping {key}: it ran in the base prebuild's snapshot")).await;
            continue;
        }
        log.line(&format!("running {key}")).await;
        if let Err(failure) = run_command(shared, log, launch, key, command).await {
            return Err(format!("{failure}; last log lines:\n{}", log_tail(log).await));
        }
    }
    Ok((!warnings.is_empty()).then(|| warnings.join("; ")))
}

/// Runs one lifecycle command; the parts of an object run at once, and the
/// first failure ends the others (their groups are killed when the job ends).
async fn run_command(
    shared: &JobShared,
    log: &LogSink,
    launch: &Launch<'_>,
    key: &str,
    command: &LifecycleCommand,
) -> std::result::Result<(), String> {
    match command {
        LifecycleCommand::Parallel(parts) => {
            let runs = parts.iter().map(|(name, part)| run_single(shared, log, launch, format!("{key}.{name}"), part));
            futures::future::try_join_all(runs).await.map(|_| ())
        }
        single => run_single(shared, log, launch, key.to_string(), single).await,
    }
}

/// Runs a string (by `/bin/sh -c`) or an array (directly, no shell). `Err`
/// names the command as written and how it ended.
async fn run_single(
    shared: &JobShared,
    log: &LogSink,
    launch: &Launch<'_>,
    label: String,
    command: &LifecycleCommand,
) -> std::result::Result<(), String> {
    let written = command.describe();
    let (program, args) = match command {
        LifecycleCommand::Shell(line) => ("/bin/sh".to_string(), vec!["-c".to_string(), line.clone()]),
        LifecycleCommand::Exec(argv) => match argv.split_first() {
            Some((program, args)) => (program.clone(), args.to_vec()),
            None => return Ok(()),
        },
        LifecycleCommand::Parallel(_) => return Err(format!("{label}: parallel commands do not nest")),
    };
    log.line(&format!("[{label}] $ {written}")).await;
    let place = (launch.workspace, launch.home);
    let status = launch
        .confinement
        .run(&shared.processes, log, place, &program, &args, launch.exceptions)
        .await
        .map_err(|e| format!("{label} `{written}` could not start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{label} `{written}` {}", describe_exit(status)))
    }
}

/// The whole prebuild of one job. Returns the snapshot's size and warning,
/// or why it failed.
async fn prebuild(
    shared: &Arc<JobShared>,
    job: &PrebuildJob,
    workspace: &Path,
    snapshot: &Path,
    root: &Path,
    sandbox: &Sandbox,
) -> std::result::Result<(u64, Option<String>), String> {
    let log = &job.log;
    // Without a working sandbox nothing of the repository runs (or is even
    // fetched): the check's message says what the host lacks.
    let confinement = sandbox.check().await?;
    log.line(&confinement.describe()).await;
    // A job started again after a restart begins from a clean environment.
    let home = home_of(workspace);
    let (stale, stale_home) = (workspace.to_path_buf(), home.clone());
    blocking(move || remove_path(&stale).and_then(|()| remove_path(&stale_home)))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot clear the workspace: {e}"))?;
    match (&job.source.base, job.source.commit.as_deref()) {
        (Some(base), Some(commit)) => {
            update_base(shared, log, &snapshot.with_file_name(format!("{}.tar.zst", base.prebuild_id)), workspace, commit).await?
        }
        _ => materialize(&shared.processes, log, &job.repository, job.source.commit.as_deref(), workspace, root).await?,
    }
    if confinement.is_sandboxed() {
        tokio::fs::create_dir(&home).await.map_err(|e| format!("cannot create the commands' home directory: {e}"))?;
    }

    shared.advance(JobState::Running);
    let exceptions = sandbox_exceptions(&job.policy.allow_egress);
    let launch = Launch { confinement: &confinement, workspace, home: &home, exceptions: &exceptions };
    let warning = run_lifecycle(shared, log, &launch, job.devcontainer_path.as_deref(), job.source.base.is_some()).await?;

    shared.advance(JobState::Stopping);
    log.line("stopping the environment").await;
    shared.processes.kill_all();

    shared.advance(JobState::Snapshotting { percent: 0 });
    log.line("writing the snapshot").await;
    let (task_shared, from, to) = (shared.clone(), workspace.to_path_buf(), snapshot.to_path_buf());
    let size = blocking(move || write_snapshot(&from, &to, &task_shared))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot write the snapshot: {e}"))?;
    log.line(&format!("snapshot written: {size} bytes")).await;
    Ok((size, warning))
}

/// An incremental prebuild's workspace: its base's snapshot, extracted,
/// then moved to the new commit with what the repository has that the
/// snapshot's clone lacks (`git fetch`: the new objects, not a second
/// copy), keeping what the base's commands left beside the checkout.
async fn update_base(shared: &JobShared, log: &LogSink, archive: &Path, workspace: &Path, commit: &str) -> std::result::Result<(), String> {
    log.line(&format!("starting from the snapshot {}", archive.file_name().unwrap_or_default().to_string_lossy())).await;
    let (from, to) = (archive.to_path_buf(), workspace.to_path_buf());
    blocking(move || extract(&from, &to))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot extract the base prebuild's snapshot {}: {e}", archive.display()))?;
    if !workspace.join(".git").exists() {
        return Err("the base prebuild's snapshot holds no git checkout to update".into());
    }
    run_git(&shared.processes, workspace, &["fetch", "--quiet", "origin"]).await?;
    run_git(&shared.processes, workspace, &["checkout", "--quiet", "--detach", commit]).await?;
    log.line(&format!("updated the workspace to commit {commit}")).await;
    Ok(())
}

/// A job's task: the prebuild, then its end state, with the environment's
/// processes, workspace and home gone (the snapshot is all that stays).
pub(super) async fn run_job(
    shared: Arc<JobShared>,
    job: PrebuildJob,
    workspace: PathBuf,
    snapshot: PathBuf,
    root: PathBuf,
    sandbox: Arc<Sandbox>,
) {
    let end = match prebuild(&shared, &job, &workspace, &snapshot, &root, &sandbox).await {
        Ok((size, warning)) => {
            JobState::Completed { snapshot_size_bytes: i64::try_from(size).unwrap_or(i64::MAX), warning, snapshot_image: None }
        }
        Err(message) => {
            if !shared.is_stopped() {
                job.log.line(&format!("failed: {message}")).await;
            }
            JobState::Failed { message }
        }
    };
    shared.processes.kill_all();
    let home = home_of(&workspace);
    if let Ok(Err(error)) = blocking(move || remove_path(&workspace).and_then(|()| remove_path(&home))).await {
        tracing::warn!(prebuild = %job.prebuild_id, %error, "local runner: cannot remove a finished workspace");
    }
    shared.advance(end);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::local::sandbox::SandboxSettings;
    use std::time::Duration;

    /// Runs `command` in a workspace of its own, sandboxed unless `sandboxed`
    /// is false; returns the result, the log and the directory holding the
    /// workspace (`workspace/`).
    async fn run_as(sandboxed: bool, command: LifecycleCommand) -> (std::result::Result<(), String>, String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let workspace = dir.path().join("workspace");
        let home = home_of(&workspace);
        std::fs::create_dir_all(&workspace).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        let sandbox = Sandbox::new(SandboxSettings::new(sandboxed, Vec::new()), dir.path());
        let confinement = sandbox.check().await.expect("bwrap works on this host (install the bubblewrap package)");
        assert_eq!(confinement.is_sandboxed(), sandboxed);
        let log = LogSink::new(dir.path().join("log"));
        let shared = JobShared::new();
        let exceptions = sandbox_exceptions(&[]);
        let launch = Launch { confinement: &confinement, workspace: &workspace, home: &home, exceptions: &exceptions };
        let result = tokio::time::timeout(Duration::from_secs(30), run_command(&shared, &log, &launch, "updateContentCommand", &command))
            .await
            .expect("the command ends");
        let text = std::fs::read_to_string(log.path()).unwrap_or_default();
        (result, text, dir)
    }

    async fn run(command: LifecycleCommand) -> (std::result::Result<(), String>, String, tempfile::TempDir) {
        run_as(true, command).await
    }

    #[tokio::test]
    async fn a_string_runs_in_a_shell_in_the_workspace() {
        for sandboxed in [true, false] {
            let (result, log, dir) =
                run_as(sandboxed, LifecycleCommand::Shell("echo $((1 + 2)) > sum && cat sum && echo to-stderr >&2".into())).await;
            result.unwrap();
            assert_eq!(std::fs::read_to_string(dir.path().join("workspace/sum")).unwrap(), "3\n");
            assert!(log.contains("[updateContentCommand] $ echo $((1 + 2))"), "{log}");
            assert!(log.contains("3\n") && log.contains("to-stderr"), "stdout and stderr go to the log: {log}");
        }
    }

    #[tokio::test]
    async fn an_array_runs_without_a_shell() {
        let (result, log, _dir) = run(LifecycleCommand::Exec(vec!["echo".into(), "$HOME".into(), "a;b".into()])).await;
        result.unwrap();
        assert!(log.contains("$HOME a;b\n"), "no expansion, no splitting: {log}");
    }

    #[tokio::test]
    async fn an_objects_commands_run_at_the_same_time() {
        // Each waits for the other's file: this ends only if both run at once.
        let wait =
            |mine: &str, theirs: &str| format!("touch {mine}; for i in $(seq 200); do [ -f {theirs} ] && exit 0; sleep 0.05; done; exit 1");
        let (result, _log, _dir) = run(LifecycleCommand::Parallel(vec![
            ("a".into(), LifecycleCommand::Shell(wait("a", "b"))),
            ("b".into(), LifecycleCommand::Exec(vec!["sh".into(), "-c".into(), wait("b", "a")])),
        ]))
        .await;
        result.unwrap();
    }

    #[tokio::test]
    async fn a_failing_part_is_named_with_its_exit_code() {
        let (result, log, _dir) = run(LifecycleCommand::Parallel(vec![
            ("fine".into(), LifecycleCommand::Shell("true".into())),
            ("broken".into(), LifecycleCommand::Exec(vec!["sh".into(), "-c".into(), "echo oops; exit 7".into()])),
        ]))
        .await;
        assert_eq!(result.unwrap_err(), r#"updateContentCommand.broken `["sh","-c","echo oops; exit 7"]` exited with code 7"#);
        assert!(log.contains("oops"), "{log}");
    }

    #[tokio::test]
    async fn a_missing_program_says_it_could_not_start() {
        let (result, _log, _dir) = run_as(false, LifecycleCommand::Exec(vec!["/nonexistent/program".into()])).await;
        let message = result.unwrap_err();
        assert!(message.starts_with("updateContentCommand `[\"/nonexistent/program\"]` could not start"), "{message}");

        // In the sandbox, bwrap starts and says why the program does not.
        let (result, log, _dir) = run(LifecycleCommand::Exec(vec!["/nonexistent/program".into()])).await;
        let message = result.unwrap_err();
        assert!(message.starts_with("updateContentCommand `[\"/nonexistent/program\"]` exited with code"), "{message}");
        assert!(log.contains("/nonexistent/program: No such file or directory"), "{log}");
    }

    #[tokio::test]
    async fn sandboxed_commands_get_a_clean_environment_with_a_home_of_their_own() {
        let server_only: Vec<String> =
            std::env::vars().map(|(name, _)| name).filter(|name| !["PATH", "HOME", "LANG", "PWD"].contains(&name.as_str())).collect();
        assert!(!server_only.is_empty(), "the test process has an environment to leak");
        let (result, log, dir) = run(LifecycleCommand::Shell("env; echo home=$HOME; pwd; touch ~/in-home".into())).await;
        result.unwrap();
        let names: Vec<&str> = log.lines().filter_map(|line| line.split_once('=').map(|(name, _)| name)).collect();
        for name in &server_only {
            assert!(!names.contains(&name.as_str()), "{name} leaked into the sandbox: {log}");
        }
        for name in names.iter().filter(|name| !name.contains(' ') && **name != "home") {
            assert!(["PATH", "HOME", "LANG", "PWD", "OLDPWD", "SHLVL", "_"].contains(name), "{name} in the sandbox: {log}");
        }
        let workspace = dir.path().join("workspace").canonicalize().unwrap();
        assert!(log.contains(&format!("home={}\n", home_of(&workspace).display())), "{log}");
        assert!(log.lines().any(|line| line == workspace.display().to_string()), "the workspace is the working directory: {log}");
        assert!(home_of(&workspace).join("in-home").is_file(), "the home is writable, beside the workspace: {log}");
    }
}
