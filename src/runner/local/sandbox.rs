//! The sandbox the local runner runs lifecycle commands in.
//!
//! A project's `onCreateCommand` and `updateContentCommand` come from its
//! repository: code nobody here reviewed, run on this host. Run directly, it
//! has the server's user and can read everything the server can: the token
//! secret and the database in the data dir, the configuration file with the
//! API keys, the workspaces and snapshot archives of other prebuilds. So
//! every command runs under bubblewrap (`bwrap`), in its own mount, PID and
//! IPC namespaces, where
//!
//! - the host's file system is read-only (`--ro-bind / /`), so the host's
//!   tools and toolchains work as they do outside;
//! - the server's files are gone: a tmpfs over the data dir and over the
//!   runner's own root (workspaces, snapshots, pools), `/dev/null` over the
//!   configuration file; and a tmpfs over `/run`, because a socket there (a
//!   container engine's, the system bus) would be a way out of any sandbox;
//! - the job's workspace (read-write, the working directory) and its home
//!   (`<workspace>.home`, read-write, deleted with the workspace) are bound
//!   back in at their own paths;
//! - `/tmp` is private, `/dev` minimal, `/proc` that of the sandbox's own
//!   PID namespace; no capabilities (also when the server runs as root), a
//!   new session (no terminal to push input into);
//! - the network is a namespace of its own, which reaches the internet but
//!   not this host, link-local addresses or the private ranges (see
//!   `network.rs`), unless the runner opts out (`network_isolation =
//!   false`: the host's network);
//! - the environment is PATH, HOME and LANG only: the server's may hold
//!   secrets.
//!
//! bwrap runs in its own process group like any command. `--die-with-parent`
//! and the PID namespace tie the command's whole tree to it: a stop that
//! kills the group kills everything inside, and whatever a command leaves in
//! the background ends with that command.
//!
//! Whether bwrap works is checked once per runner, by running `bwrap ...
//! true`; where it does not, local prebuilds fail with a message that says
//! what to install, unless the runner is configured with `sandbox = false`
//! (trusted repositories only: the commands then run as they always did,
//! directly on the host with the server's environment).
//!
//! This module builds commands; spawning them, their process groups and
//! their logs stay in `runner::process`.

use super::network::{self, SandboxNetwork};
use crate::runner::egress::Exceptions;
use crate::runner::process::{run_logged, JobProcesses};
use crate::runner::LogSink;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

/// How long the check may take: bwrap starts in milliseconds, so one that
/// hangs cannot work here.
const CHECK_LIMIT: Duration = Duration::from_secs(30);

/// The commands' PATH when the server has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The commands' LANG when the server has none.
const DEFAULT_LANG: &str = "C.UTF-8";

/// What the hint at the end of every refusal says.
const OPT_OUT: &str = "or set sandbox = false on this runner for trusted repositories only";

/// What the hint at the end of a refusal of the sandbox's network says.
const NETWORK_OPT_OUT: &str = "or set network_isolation = false on this runner for trusted repositories only";

/// How a local runner runs lifecycle commands: what the configuration and
/// the server say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSettings {
    /// Whether commands run in the sandbox (`[[runners]] sandbox`, default
    /// true). Off, they run directly on the host as the server's user.
    pub enabled: bool,
    /// The server's files the commands must not see: its data dir and its
    /// configuration file. The runner's own root is hidden as well, always.
    pub hidden_paths: Vec<PathBuf>,
    /// The bubblewrap program (looked up in PATH unless it is a path).
    /// Tests name a missing one.
    pub(crate) program: PathBuf,
    /// Whether commands get a network of their own, off this host and the
    /// private ranges (`[[runners]] network_isolation`, default true with
    /// the sandbox). Off, they use the host's network.
    pub network_isolation: bool,
    /// The user-mode networking program (as `program`).
    pub(crate) slirp4netns: PathBuf,
}

impl SandboxSettings {
    /// Settings with network isolation wherever there is a sandbox.
    pub fn new(enabled: bool, hidden_paths: Vec<PathBuf>) -> Self {
        SandboxSettings {
            enabled,
            hidden_paths,
            program: PathBuf::from("bwrap"),
            network_isolation: enabled,
            slirp4netns: PathBuf::from("slirp4netns"),
        }
    }

    /// The same with network isolation on or off.
    pub fn with_network_isolation(self, network_isolation: bool) -> Self {
        SandboxSettings { network_isolation, ..self }
    }
}

/// A runner's sandbox: its settings, resolved, and the result of the one
/// check of whether bwrap works here.
#[derive(Debug)]
pub(crate) struct Sandbox {
    settings: SandboxSettings,
    /// Absolute, none inside another.
    hidden: Vec<PathBuf>,
    /// The runner's root, where the sandbox's resolv.conf is written.
    root: PathBuf,
    checked: tokio::sync::OnceCell<Result<Confinement, String>>,
}

/// How one command is run, once the check has passed.
#[derive(Debug, Clone)]
pub(crate) enum Confinement {
    /// `sandbox = false`: directly on the host, as the server's user.
    Host,
    Bubblewrap(Arc<Bubblewrap>),
}

/// What every sandboxed command of a runner shares.
#[derive(Debug)]
pub(crate) struct Bubblewrap {
    /// The bwrap program, resolved.
    program: PathBuf,
    hidden: Vec<PathBuf>,
    /// `/run`, and `/var/run` where it is a directory of its own.
    system_dirs: Vec<PathBuf>,
    /// Files kept under those, as (source, where): the resolver's
    /// configuration when `/etc/resolv.conf` points into `/run`.
    kept: Vec<(PathBuf, PathBuf)>,
    path: OsString,
    lang: OsString,
    /// The sandbox's own network, unless the runner opts out.
    network: Option<SandboxNetwork>,
}

/// How a hidden path is covered, by its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cover {
    /// A directory: an empty tmpfs over it.
    Directory(PathBuf),
    /// Anything else: `/dev/null` over it (it reads as empty).
    File(PathBuf),
}

/// Where a job's sandboxed commands have their home: beside the workspace
/// (so not in the snapshot), shared by the job's commands.
pub(crate) fn home_of(workspace: &Path) -> PathBuf {
    workspace.with_extension("home")
}

/// A path made absolute (canonical where it exists, so that symlinks do not
/// hide it from the comparisons below).
fn resolve(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok().or_else(|| std::path::absolute(path).ok())
}

/// The paths without duplicates and without those inside another (a tmpfs
/// over the outer one hides them already); `/` is never hidden.
fn outermost(mut paths: Vec<PathBuf>) -> Vec<PathBuf> {
    // Component order puts a directory right before what is inside it.
    paths.sort();
    let mut kept: Vec<PathBuf> = Vec::new();
    for path in paths {
        if path.parent().is_some() && !kept.iter().any(|outer| path.starts_with(outer)) {
            kept.push(path);
        }
    }
    kept
}

fn os(text: &str) -> OsString {
    OsString::from(text)
}

/// The arguments that build the sandbox, without the job's own mounts.
fn base_args(bubblewrap: &Bubblewrap, covers: &[Cover]) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "--die-with-parent",
        "--new-session",
        "--unshare-pid",
        "--unshare-ipc",
        "--cap-drop",
        "ALL",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",
    ]
    .into_iter()
    .map(os)
    .collect();
    for dir in &bubblewrap.system_dirs {
        args.extend([os("--tmpfs"), dir.into()]);
    }
    for (source, at) in &bubblewrap.kept {
        args.extend([os("--ro-bind"), source.into(), at.into()]);
    }
    for cover in covers {
        match cover {
            Cover::Directory(dir) => args.extend([os("--tmpfs"), dir.into()]),
            Cover::File(file) => args.extend([os("--ro-bind"), os("/dev/null"), file.into()]),
        }
    }
    args
}

/// The job's mounts and the command: its home and workspace bound back in
/// (after the covers, which may lie over them), the workspace the working
/// directory.
fn job_args(workspace: &Path, home: &Path, program: &str, args: &[String]) -> Vec<OsString> {
    let mut out: Vec<OsString> = vec![
        os("--bind"),
        home.into(),
        home.into(),
        os("--bind"),
        workspace.into(),
        workspace.into(),
        os("--chdir"),
        workspace.into(),
        os("--"),
        os(program),
    ];
    out.extend(args.iter().map(OsString::from));
    out
}

/// Whether `path` is a file this process may execute.
async fn is_executable(path: &Path) -> bool {
    tokio::fs::metadata(path).await.is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The program itself if it is a path, else the first match in PATH.
pub(super) async fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return is_executable(program).await.then(|| program.to_path_buf());
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into())) {
        let candidate = dir.join(program);
        if is_executable(&candidate).await {
            return Some(candidate);
        }
    }
    None
}

/// `/run` and, where it is not a link to it, `/var/run`.
async fn system_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/run")];
    if tokio::fs::symlink_metadata("/var/run").await.is_ok_and(|m| m.is_dir()) {
        dirs.push(PathBuf::from("/var/run"));
    }
    dirs
}

/// `a/b/../c` as `a/c` (link targets are often relative).
fn lexically_normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Where `/etc/resolv.conf` leads inside `dirs` (systemd-resolved and
/// resolvconf keep it under `/run`): every link on the way there gets the
/// real file, so that name resolution still works in the sandbox.
async fn kept_files(resolv_conf: &Path, dirs: &[PathBuf]) -> Vec<(PathBuf, PathBuf)> {
    let Ok(real) = tokio::fs::canonicalize(resolv_conf).await else { return Vec::new() };
    let mut kept = Vec::new();
    let mut at = resolv_conf.to_path_buf();
    // A few hops at most; a loop fails canonicalize above.
    for _ in 0..8 {
        let Ok(target) = tokio::fs::read_link(&at).await else { break };
        at = lexically_normal(&at.parent().unwrap_or(Path::new("/")).join(target));
        if dirs.iter().any(|dir| at.starts_with(dir)) {
            kept.push((real.clone(), at.clone()));
        }
    }
    if dirs.iter().any(|dir| real.starts_with(dir)) && !kept.iter().any(|(_, at)| *at == real) {
        kept.push((real.clone(), real));
    }
    kept
}

impl Sandbox {
    /// The sandbox of the runner rooted at `root` (canonical).
    pub(crate) fn new(settings: SandboxSettings, root: &Path) -> Sandbox {
        let paths = std::iter::once(root).chain(settings.hidden_paths.iter().map(PathBuf::as_path)).filter_map(resolve).collect();
        Sandbox { hidden: outermost(paths), settings, root: root.to_path_buf(), checked: tokio::sync::OnceCell::new() }
    }

    /// How commands run, or why this runner refuses prebuilds. Checked once;
    /// later calls return the first answer.
    pub(crate) async fn check(&self) -> Result<Confinement, String> {
        self.checked.get_or_init(|| self.first_check()).await.clone()
    }

    async fn first_check(&self) -> Result<Confinement, String> {
        if !self.settings.enabled {
            tracing::warn!("local runner: sandbox = false, lifecycle commands run unsandboxed on this host (trusted repositories only)");
            return Ok(Confinement::Host);
        }
        let result = self.probe().await;
        match &result {
            Ok(Confinement::Bubblewrap(bubblewrap)) => {
                tracing::info!(program = %bubblewrap.program.display(), "local runner: lifecycle commands run in a bubblewrap sandbox")
            }
            Ok(Confinement::Host) => {}
            Err(message) => tracing::error!("{message}"),
        }
        result
    }

    /// Runs `bwrap <the sandbox> -- true`: namespaces, mounts and all.
    async fn probe(&self) -> Result<Confinement, String> {
        let program = &self.settings.program;
        let Some(found) = find_program(program).await else {
            return Err(format!(
                "the local runner sandboxes lifecycle commands with bubblewrap ({}), which is not installed: \
                 install the bubblewrap package (and restart prebuildd), {OPT_OUT}",
                program.display()
            ));
        };
        let system_dirs = system_dirs().await;
        let mut kept = kept_files(Path::new("/etc/resolv.conf"), &system_dirs).await;
        let network = match self.settings.network_isolation {
            true => Some(network::prepare(&self.settings.slirp4netns, &self.root, &system_dirs, &mut kept).await.map_err(|reason| {
                format!("the local runner gives lifecycle commands a network of their own, and {reason}, {NETWORK_OPT_OUT}")
            })?),
            false => None,
        };
        let bubblewrap = Bubblewrap {
            program: found,
            hidden: self.hidden.clone(),
            system_dirs,
            kept,
            path: std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
            lang: std::env::var_os("LANG").unwrap_or_else(|| DEFAULT_LANG.into()),
            network,
        };
        let covers = bubblewrap.covers().await;
        let check_command = |network: bool| {
            let mut command = tokio::process::Command::new(&bubblewrap.program);
            command.args(base_args(&bubblewrap, &covers));
            if let Some(network) = bubblewrap.network.as_ref().filter(|_| network) {
                command.args(network.bwrap_args());
            }
            command.args(["--", "true"]).env_clear().env("PATH", &bubblewrap.path);
            command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
            command
        };
        let reason = match tokio::time::timeout(CHECK_LIMIT, check_command(false).output()).await {
            Ok(Ok(output)) if output.status.success() => match &bubblewrap.network {
                // Then the same sandbox with its network, held while a
                // probe inside it tries this host.
                Some(network) => {
                    return match network::check(network, check_command(true)).await {
                        Ok(()) => Ok(Confinement::Bubblewrap(Arc::new(bubblewrap))),
                        Err(reason) => Err(format!(
                            "the local runner gives lifecycle commands a network of their own, and {reason}, {NETWORK_OPT_OUT}"
                        )),
                    }
                }
                None => return Ok(Confinement::Bubblewrap(Arc::new(bubblewrap))),
            },
            Ok(Ok(output)) => {
                let stderr = String::from_utf8_lossy(&output.stderr);
                match stderr.lines().rev().find(|line| !line.trim().is_empty()) {
                    Some(line) => line.trim().to_string(),
                    None => format!("it {}", crate::runner::process::describe_exit(output.status)),
                }
            }
            Ok(Err(error)) => format!("it could not start: {error}"),
            Err(_) => format!("it did not finish within {CHECK_LIMIT:?}"),
        };
        Err(format!(
            "the local runner sandboxes lifecycle commands with bubblewrap ({}), which cannot create a sandbox on this host ({reason}): \
             it needs Linux namespaces (unprivileged user namespaces unless prebuildd runs as root), {OPT_OUT}",
            bubblewrap.program.display()
        ))
    }
}

impl Bubblewrap {
    /// The hidden paths that exist now, by kind. Those under a directory
    /// the sandbox replaces anyway (`/tmp`, `/run`, `/dev`, `/proc`) are
    /// left out: covering them would only make their names show there.
    async fn covers(&self) -> Vec<Cover> {
        let replaced = ["/tmp", "/dev", "/proc"].into_iter().map(Path::new).chain(self.system_dirs.iter().map(PathBuf::as_path));
        let replaced: Vec<&Path> = replaced.collect();
        let mut covers = Vec::new();
        for path in &self.hidden {
            if replaced.iter().any(|dir| path.starts_with(dir)) {
                continue;
            }
            match tokio::fs::metadata(path).await {
                Ok(metadata) if metadata.is_dir() => covers.push(Cover::Directory(path.clone())),
                Ok(_) => covers.push(Cover::File(path.clone())),
                Err(_) => {}
            }
        }
        covers
    }
}

impl Confinement {
    pub(crate) fn is_sandboxed(&self) -> bool {
        matches!(self, Confinement::Bubblewrap(_))
    }

    /// The log line that says how the job's commands run.
    pub(crate) fn describe(&self) -> String {
        match self {
            Confinement::Host => {
                "warning: lifecycle commands run unsandboxed, directly on this host as the server's user with its environment \
                 (sandbox = false on this runner)"
                    .to_string()
            }
            Confinement::Bubblewrap(bubblewrap) => format!(
                "lifecycle commands run in a bubblewrap sandbox ({}): the host read-only, the workspace writable, a private /tmp, \
                 the server's files hidden, {}",
                bubblewrap.program.display(),
                match bubblewrap.network {
                    Some(_) => "a network of their own that reaches the internet, not this host, link-local addresses or private networks",
                    None =>
                        "the host's network (network_isolation = false on this runner: they can reach this host's services, \
                             the cloud metadata service and private networks)",
                }
            ),
        }
    }

    /// The command that runs `program args` for the job whose workspace and
    /// home (see [`home_of`]; it exists when sandboxed) are given.
    async fn command(&self, workspace: &Path, home: &Path, program: &str, args: &[String]) -> tokio::process::Command {
        match self {
            Confinement::Host => {
                let mut command = tokio::process::Command::new(program);
                command.args(args).current_dir(workspace);
                command
            }
            Confinement::Bubblewrap(bubblewrap) => {
                let mut command = tokio::process::Command::new(&bubblewrap.program);
                command.args(base_args(bubblewrap, &bubblewrap.covers().await));
                if let Some(network) = &bubblewrap.network {
                    command.args(network.bwrap_args());
                }
                command
                    .args(job_args(workspace, home, program, args))
                    .current_dir(workspace)
                    .env_clear()
                    .env("PATH", &bubblewrap.path)
                    .env("HOME", home)
                    .env("LANG", &bubblewrap.lang);
                command
            }
        }
    }

    /// Runs `program args` for the job (as [`Confinement::command`] makes
    /// it, in the sandbox's own network where it has one, which lets
    /// through what `exceptions` names), its output appended to the log.
    pub(crate) async fn run(
        &self,
        processes: &JobProcesses,
        log: &LogSink,
        place: (&Path, &Path),
        program: &str,
        args: &[String],
        exceptions: &Exceptions,
    ) -> std::io::Result<std::process::ExitStatus> {
        let (workspace, home) = place;
        let command = self.command(workspace, home, program, args).await;
        match self {
            Confinement::Bubblewrap(bubblewrap) => match &bubblewrap.network {
                Some(network) => network::run_held(network, processes, log, command, exceptions).await,
                None => run_logged(processes, log, command).await,
            },
            Confinement::Host => run_logged(processes, log, command).await,
        }
    }
}

#[cfg(test)]
#[path = "sandbox_tests.rs"]
mod tests;
