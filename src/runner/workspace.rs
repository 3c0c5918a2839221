//! A prebuild's workspace from its project's repository: a `git clone` (any
//! URL or path git accepts), or a copy of a plain directory that is not a
//! git repository. Shared by the runners that build real workspaces.

use super::process::{blocking, describe_exit, spawn_in_group, stopped_error, wait_in_group, JobProcesses, FAILURE_LOG_LINES};
use super::LogSink;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// Whether a directory is a git repository: a work tree (`.git`, a
/// directory or a worktree's file) or a bare repository.
pub(crate) fn is_git_repository(dir: &Path) -> bool {
    dir.join(".git").exists() || (dir.join("HEAD").is_file() && dir.join("objects").is_dir() && dir.join("refs").is_dir())
}

/// Puts the repository into the (new) workspace: a clone checked out at
/// `commit` (when the server settled one), or a copy of a plain directory.
pub(crate) async fn materialize(
    processes: &Arc<JobProcesses>,
    log: &LogSink,
    repository: &str,
    commit: Option<&str>,
    workspace: &Path,
    root: &Path,
) -> std::result::Result<(), String> {
    if repository.trim().is_empty() {
        return Err("the project has no repository to prebuild".into());
    }
    // A local path is made absolute: git runs elsewhere, and the copy needs
    // a canonical path to recognise the runner's own directory.
    match tokio::fs::canonicalize(repository).await {
        Ok(source) if source.is_dir() && !is_git_repository(&source) => copy_repository(processes, log, &source, workspace, root).await,
        Ok(source) => {
            clone_repository(processes, log, &source.display().to_string(), false, workspace).await?;
            check_out(processes, log, commit, workspace).await
        }
        Err(_) => {
            clone_repository(processes, log, repository, true, workspace).await?;
            check_out(processes, log, commit, workspace).await
        }
    }
}

/// Checks the clone out at the settled commit (detached). A shallow clone
/// that lacks it (the branch moved on since) fetches that one commit.
async fn check_out(processes: &JobProcesses, log: &LogSink, commit: Option<&str>, workspace: &Path) -> std::result::Result<(), String> {
    let Some(commit) = commit else { return Ok(()) };
    if !crate::git::is_sha(commit) {
        return Err(format!("{commit:?} is not a commit ID"));
    }
    if run_git(processes, workspace, &["checkout", "--quiet", "--detach", commit]).await.is_err() {
        run_git(processes, workspace, &["fetch", "--quiet", "--depth", "1", "origin", commit]).await?;
        run_git(processes, workspace, &["checkout", "--quiet", "--detach", commit]).await?;
    }
    log.line(&format!("checked out commit {commit}")).await;
    Ok(())
}

/// Runs `git <args>` in the workspace as one of the job's processes; the
/// error quotes git's last words.
pub(crate) async fn run_git(processes: &JobProcesses, workspace: &Path, args: &[&str]) -> std::result::Result<(), String> {
    let mut command = tokio::process::Command::new("git");
    command
        .args(args)
        .current_dir(workspace)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GCM_INTERACTIVE", "never")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = spawn_in_group(processes, command).map_err(|e| format!("cannot run git (is it installed?): {e}"))?;
    let mut errors = Vec::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_end(&mut errors).await;
    }
    let status = wait_in_group(processes, &mut child).await.map_err(|e| format!("waiting for git: {e}"))?;
    if status.success() {
        return Ok(());
    }
    let errors = String::from_utf8_lossy(&errors);
    let last = errors.lines().rfind(|l| !l.trim().is_empty()).unwrap_or_default();
    Err(format!("git {} {}: {last}", args.first().copied().unwrap_or_default(), describe_exit(status)))
}

async fn copy_repository(
    processes: &Arc<JobProcesses>,
    log: &LogSink,
    source: &Path,
    workspace: &Path,
    root: &Path,
) -> std::result::Result<(), String> {
    log.line(&format!("{} is a directory, not a git repository: copying it into the workspace", source.display())).await;
    let (from, to, skip, task_shared) = (source.to_path_buf(), workspace.to_path_buf(), root.to_path_buf(), processes.clone());
    blocking(move || copy_tree(&from, &to, &skip, &task_shared))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot copy {} into the workspace: {e}", source.display()))?;
    log.line("copied").await;
    Ok(())
}

/// Copies a directory tree: files with their permissions, symlinks as
/// symlinks; other kinds (sockets, FIFOs) are skipped, and so is `skip` (the
/// runner's own directory, should the source contain the data dir).
pub(crate) fn copy_tree(from: &Path, to: &Path, skip: &Path, processes: &JobProcesses) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        if processes.is_stopped() {
            return Err(stopped_error());
        }
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if source == skip {
            continue;
        }
        if kind.is_dir() {
            copy_tree(&source, &target, skip, processes)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
        } else if kind.is_file() {
            std::fs::copy(&source, &target)?;
        }
    }
    Ok(())
}

/// `git clone` into the workspace. A URL is cloned shallow (only the newest
/// commit is needed); a local repository is cloned whole, since git ignores
/// `--depth` for local paths (it hardlinks their objects, which is cheaper).
/// git's stderr is read here, so that a failure quotes git's own reason.
async fn clone_repository(
    processes: &JobProcesses,
    log: &LogSink,
    source: &str,
    shallow: bool,
    workspace: &Path,
) -> std::result::Result<(), String> {
    log.line(&format!("cloning {source}")).await;
    let stdout = log.open_append().map_err(|e| format!("cannot open the log: {e}"))?;
    let mut command = tokio::process::Command::new("git");
    command.arg("clone").arg("--quiet");
    if shallow {
        command.args(["--depth", "1"]);
    }
    command
        .arg("--")
        .arg(source)
        .arg(workspace)
        // Never wait for a password on a terminal: a private URL fails at once.
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GCM_INTERACTIVE", "never")
        .stdout(stdout)
        .stderr(Stdio::piped());
    if let Some(parent) = workspace.parent() {
        command.current_dir(parent);
    }
    let mut child = spawn_in_group(processes, command).map_err(|e| format!("cannot run git (is it installed?): {e}"))?;
    let mut errors = Vec::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_end(&mut errors).await;
    }
    let status = wait_in_group(processes, &mut child).await.map_err(|e| format!("waiting for git: {e}"))?;
    let errors = String::from_utf8_lossy(&errors);
    for line in errors.lines() {
        log.line(line).await;
    }
    if status.success() {
        log.line("cloned").await;
        return Ok(());
    }
    let lines: Vec<&str> = errors.lines().filter(|l| !l.trim().is_empty()).collect();
    let reason = lines[lines.len().saturating_sub(FAILURE_LOG_LINES)..].join("\n");
    Err(format!("git clone of {source} failed ({}): {reason}", describe_exit(status)))
}

#[cfg(test)]
pub(crate) mod tests_support {
    use std::path::Path;

    pub(crate) fn sample_tree(dir: &Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir.join("src/empty")).unwrap();
        std::fs::write(dir.join("src/main.rs"), "fn main() {}\n").unwrap();
        std::fs::write(dir.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("big"), vec![7u8; 300_000]).unwrap();
        std::os::unix::fs::symlink("src/main.rs", dir.join("link")).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use tests_support::sample_tree;

    #[test]
    fn git_repositories_are_told_from_plain_directories() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_git_repository(dir.path()));
        std::fs::create_dir_all(dir.path().join("bare/objects")).unwrap();
        std::fs::create_dir_all(dir.path().join("bare/refs")).unwrap();
        std::fs::write(dir.path().join("bare/HEAD"), "ref: refs/heads/main\n").unwrap();
        assert!(is_git_repository(&dir.path().join("bare")), "a bare repository");
        std::fs::create_dir_all(dir.path().join("work/.git")).unwrap();
        assert!(is_git_repository(&dir.path().join("work")), "a work tree");
    }

    #[test]
    fn a_copy_skips_the_runners_own_directory() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("project");
        sample_tree(&source);
        std::fs::create_dir_all(source.join("data/local/workspaces")).unwrap();
        let target = dir.path().join("copy");
        copy_tree(&source, &target, &source.join("data/local"), &JobProcesses::default()).unwrap();
        assert!(target.join("src/main.rs").is_file() && target.join("data").is_dir());
        assert!(!target.join("data/local").exists());
        assert_eq!(std::fs::read_link(target.join("link")).unwrap(), Path::new("src/main.rs"));
    }
}
