//! git, as the server uses it: what a remote's branches point at (`git
//! ls-remote`), and a bare mirror of each project's repository under the
//! data dir (`git/<project id>.git`) for what needs history: which paths a
//! push changed, whether a commit descends from another, and the files
//! that make up a commit's dev container configuration.
//!
//! Every command is an async child process in its own process group, with
//! a timeout after which the whole group is killed, and without a terminal
//! (a repository that wants a password fails at once instead of waiting).
//! Runners clone on their own machines; this module never touches their
//! workspaces.

mod fingerprint;

pub use fingerprint::{configuration_fingerprint, uses_compose};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// A question to a remote git server (ls-remote).
const REMOTE_TIMEOUT: Duration = Duration::from_secs(60);
/// A fetch into a mirror: a first one copies the whole repository.
const FETCH_TIMEOUT: Duration = Duration::from_secs(600);
/// A question to the local mirror.
const LOCAL_TIMEOUT: Duration = Duration::from_secs(60);
/// The most of a command's output kept (a file at a commit, a diff's names).
const MAX_OUTPUT_BYTES: usize = 16 * 1024 * 1024;

/// A git command that failed, with git's own words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GitError(pub String);

type GitResult<T> = Result<T, GitError>;

/// What a command printed, and whether it succeeded.
struct Output {
    success: bool,
    stdout: Vec<u8>,
    stderr: String,
}

/// Runs `git <args>` in `dir` (if any) for at most `timeout`.
async fn git(dir: Option<&Path>, args: &[&str], timeout: Duration) -> GitResult<Output> {
    let mut command = tokio::process::Command::new("git");
    command
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GCM_INTERACTIVE", "never")
        // No user's or system's configuration decides what a server-side
        // git does (hooks, credential prompts, pagers).
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PAGER", "cat")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let described = || format!("git {}", args.join(" "));
    let mut child = command.spawn().map_err(|e| GitError(format!("cannot run git (is it installed?): {e}")))?;
    let pid = child.id();
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let run = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let read_out = async {
            if let Some(stdout) = stdout.as_mut() {
                let _ = stdout.take(MAX_OUTPUT_BYTES as u64).read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(stderr) = stderr.as_mut() {
                let _ = stderr.take(64 * 1024).read_to_end(&mut err).await;
            }
        };
        tokio::join!(read_out, read_err);
        let status = child.wait().await;
        (status, out, err)
    };
    match tokio::time::timeout(timeout, run).await {
        Ok((status, stdout, stderr)) => {
            let status = status.map_err(|e| GitError(format!("{}: {e}", described())))?;
            Ok(Output { success: status.success(), stdout, stderr: String::from_utf8_lossy(&stderr).trim().to_string() })
        }
        Err(_) => {
            if let Some(pid) = pid {
                // SAFETY: kill(2) on the process group we made for it.
                unsafe {
                    libc::kill(-(pid as i32), libc::SIGKILL);
                }
            }
            Err(GitError(format!("{} took longer than {}s and was stopped", described(), timeout.as_secs())))
        }
    }
}

/// Runs a command that must succeed; returns its stdout.
async fn git_ok(dir: Option<&Path>, args: &[&str], timeout: Duration) -> GitResult<Vec<u8>> {
    let output = git(dir, args, timeout).await?;
    if output.success {
        Ok(output.stdout)
    } else {
        let last = output.stderr.lines().last().unwrap_or("failed").to_string();
        Err(GitError(format!("git {} failed: {last}", args.first().copied().unwrap_or_default())))
    }
}

/// Whether a project's repository is something git can read: `sim://`
/// repositories and plain directories are not.
pub fn is_git_repository(repository: &str) -> bool {
    if repository.starts_with("sim://") || repository.trim().is_empty() {
        return false;
    }
    let path = Path::new(repository);
    if path.is_dir() {
        return crate::runner::is_git_repository(path);
    }
    true
}

/// A remote's branches: the default branch (where its HEAD points) and
/// each branch's commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteHeads {
    pub default_branch: Option<String>,
    pub branches: BTreeMap<String, String>,
}

/// `git ls-remote --symref <repository> HEAD refs/heads/*`.
pub async fn ls_remote(repository: &str) -> GitResult<RemoteHeads> {
    let stdout = git_ok(None, &["ls-remote", "--symref", "--", repository, "HEAD", "refs/heads/*"], REMOTE_TIMEOUT).await?;
    Ok(parse_ls_remote(&String::from_utf8_lossy(&stdout)))
}

fn parse_ls_remote(text: &str) -> RemoteHeads {
    let mut heads = RemoteHeads::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("ref: ") {
            if let Some((target, name)) = rest.split_once('\t') {
                if name == "HEAD" {
                    heads.default_branch = target.strip_prefix("refs/heads/").map(str::to_string);
                }
            }
        } else if let Some((sha, name)) = line.split_once('\t') {
            if let Some(branch) = name.strip_prefix("refs/heads/") {
                if is_sha(sha) {
                    heads.branches.insert(branch.to_string(), sha.to_ascii_lowercase());
                }
            }
        }
    }
    heads
}

/// A full commit ID: 40 (SHA-1) or 64 (SHA-256) hex digits.
pub fn is_sha(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The all-zero ID a push reports for a branch that did not exist before
/// (or was deleted).
pub fn is_zero_sha(text: &str) -> bool {
    is_sha(text) && text.bytes().all(|b| b == b'0')
}

/// The server's bare mirrors of project repositories, one per project,
/// fetched on demand. One fetch at a time per project.
#[derive(Debug)]
pub struct Mirrors {
    root: PathBuf,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Mirrors {
    pub fn new(data_dir: &Path) -> Mirrors {
        Mirrors { root: data_dir.join("git"), locks: Mutex::default() }
    }

    fn lock_of(&self, project_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        crate::sync::lock(&self.locks).entry(project_id.to_string()).or_default().clone()
    }

    /// Brings the project's mirror up to date with its repository's
    /// branches and returns it.
    pub async fn fetch(&self, project_id: &str, repository: &str) -> GitResult<Mirror> {
        crate::runner::checked_id("project ID", project_id).map_err(|e| GitError(e.to_string()))?;
        let dir = self.root.join(format!("{project_id}.git"));
        let lock = self.lock_of(project_id);
        let _one_at_a_time = lock.lock().await;
        if !dir.join("HEAD").is_file() {
            tokio::fs::create_dir_all(&dir).await.map_err(|e| GitError(format!("cannot create {}: {e}", dir.display())))?;
            git_ok(Some(&dir), &["init", "--quiet", "--bare"], LOCAL_TIMEOUT).await?;
        }
        git_ok(
            Some(&dir),
            &["fetch", "--quiet", "--prune", "--no-tags", "--force", "--", repository, "+refs/heads/*:refs/heads/*"],
            FETCH_TIMEOUT,
        )
        .await
        .map_err(|e| GitError(format!("cannot fetch {}: {e}", redact(repository))))?;
        Ok(Mirror { dir })
    }
}

/// A fetched mirror, for questions about its history.
#[derive(Debug, Clone)]
pub struct Mirror {
    dir: PathBuf,
}

impl Mirror {
    /// The commit a branch points at in the mirror.
    pub async fn branch_commit(&self, branch: &str) -> GitResult<Option<String>> {
        let output =
            git(Some(&self.dir), &["rev-parse", "--verify", "--quiet", &format!("refs/heads/{branch}^{{commit}}")], LOCAL_TIMEOUT).await?;
        let sha = String::from_utf8_lossy(&output.stdout).trim().to_string();
        Ok((output.success && is_sha(&sha)).then_some(sha))
    }

    /// Whether the mirror has the commit.
    pub async fn has_commit(&self, sha: &str) -> GitResult<bool> {
        Ok(git(Some(&self.dir), &["cat-file", "-e", &format!("{sha}^{{commit}}")], LOCAL_TIMEOUT).await?.success)
    }

    /// The paths that differ between two commits.
    pub async fn changed_paths(&self, from: &str, to: &str) -> GitResult<Vec<String>> {
        let stdout = git_ok(Some(&self.dir), &["diff", "--name-only", "-z", "--no-renames", from, to, "--"], LOCAL_TIMEOUT).await?;
        Ok(stdout.split(|b| *b == 0).filter(|p| !p.is_empty()).map(|p| String::from_utf8_lossy(p).into_owned()).collect())
    }

    /// How many commits `descendant` is ahead of `ancestor`, if `ancestor`
    /// is an ancestor of it (`git merge-base --is-ancestor`).
    pub async fn distance(&self, ancestor: &str, descendant: &str) -> GitResult<Option<u64>> {
        let is_ancestor = git(Some(&self.dir), &["merge-base", "--is-ancestor", ancestor, descendant], LOCAL_TIMEOUT).await?;
        if !is_ancestor.success {
            return Ok(None);
        }
        let count = git_ok(Some(&self.dir), &["rev-list", "--count", &format!("{ancestor}..{descendant}")], LOCAL_TIMEOUT).await?;
        Ok(String::from_utf8_lossy(&count).trim().parse().ok())
    }

    /// A file's content at a commit; `None` if it does not exist there.
    pub async fn file_at(&self, sha: &str, path: &str) -> GitResult<Option<Vec<u8>>> {
        let output = git(Some(&self.dir), &["cat-file", "blob", &format!("{sha}:{path}")], LOCAL_TIMEOUT).await?;
        Ok(output.success.then_some(output.stdout))
    }

    /// The object ID of a path at a commit (a blob's or a tree's: equal IDs,
    /// equal content); `None` if it does not exist there.
    pub async fn object_at(&self, sha: &str, path: &str) -> GitResult<Option<String>> {
        let spec = if path.is_empty() || path == "." { format!("{sha}^{{tree}}") } else { format!("{sha}:{path}") };
        let output = git(Some(&self.dir), &["rev-parse", "--verify", "--quiet", &spec], LOCAL_TIMEOUT).await?;
        let id = String::from_utf8_lossy(&output.stdout).trim().to_string();
        Ok((output.success && is_sha(&id)).then_some(id))
    }

    /// The names in a directory at a commit (one level).
    pub async fn list_dir(&self, sha: &str, dir: &str) -> GitResult<Vec<String>> {
        let output = git(Some(&self.dir), &["ls-tree", "--name-only", "-z", &format!("{sha}:{dir}")], LOCAL_TIMEOUT).await?;
        if !output.success {
            return Ok(Vec::new());
        }
        Ok(output.stdout.split(|b| *b == 0).filter(|p| !p.is_empty()).map(|p| String::from_utf8_lossy(p).into_owned()).collect())
    }
}

/// A repository URL without its credentials (`https://user:token@host/x`
/// becomes `https://host/x`), for messages and the catalog.
pub fn redact(repository: &str) -> String {
    if let Some((scheme, rest)) = repository.split_once("://") {
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        if let Some((_, host)) = authority.rsplit_once('@') {
            return if path.is_empty() { format!("{scheme}://{host}") } else { format!("{scheme}://{host}/{path}") };
        }
    }
    repository.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ls_remote_output_is_read() {
        let sha1 = "a".repeat(40);
        let sha2 = "B".repeat(40);
        let text =
            format!("ref: refs/heads/main\tHEAD\n{sha1}\tHEAD\n{sha1}\trefs/heads/main\n{sha2}\trefs/heads/release/1\nbad\trefs/heads/x\n");
        let heads = parse_ls_remote(&text);
        assert_eq!(heads.default_branch.as_deref(), Some("main"));
        assert_eq!(heads.branches.get("main"), Some(&sha1));
        assert_eq!(heads.branches.get("release/1"), Some(&"b".repeat(40)), "lower case");
        assert!(!heads.branches.contains_key("x"));
    }

    #[test]
    fn credentials_are_left_out() {
        assert_eq!(redact("https://user:token@git.example.com/team/app.git"), "https://git.example.com/team/app.git");
        assert_eq!(redact("ssh://git@host:22/app"), "ssh://host:22/app");
        assert_eq!(redact("git@host:team/app.git"), "git@host:team/app.git");
        assert_eq!(redact("/srv/git/app"), "/srv/git/app");
    }

    #[test]
    fn shas() {
        assert!(is_sha(&"0".repeat(40)) && is_zero_sha(&"0".repeat(40)) && is_sha(&"f".repeat(64)));
        assert!(!is_sha("abc") && !is_sha(&"g".repeat(40)) && !is_zero_sha(&"1".repeat(40)));
    }
}
