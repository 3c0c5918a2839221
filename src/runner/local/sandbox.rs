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
//! - the network is the host's (package managers need it);
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
}

impl SandboxSettings {
    pub fn new(enabled: bool, hidden_paths: Vec<PathBuf>) -> Self {
        SandboxSettings { enabled, hidden_paths, program: PathBuf::from("bwrap") }
    }
}

/// A runner's sandbox: its settings, resolved, and the result of the one
/// check of whether bwrap works here.
#[derive(Debug)]
pub(crate) struct Sandbox {
    settings: SandboxSettings,
    /// Absolute, none inside another.
    hidden: Vec<PathBuf>,
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
async fn find_program(program: &Path) -> Option<PathBuf> {
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
        Sandbox { hidden: outermost(paths), settings, checked: tokio::sync::OnceCell::new() }
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
        let kept = kept_files(Path::new("/etc/resolv.conf"), &system_dirs).await;
        let bubblewrap = Bubblewrap {
            program: found,
            hidden: self.hidden.clone(),
            system_dirs,
            kept,
            path: std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
            lang: std::env::var_os("LANG").unwrap_or_else(|| DEFAULT_LANG.into()),
        };
        let mut command = tokio::process::Command::new(&bubblewrap.program);
        command
            .args(base_args(&bubblewrap, &bubblewrap.covers().await))
            .args(["--", "true"])
            .env_clear()
            .env("PATH", &bubblewrap.path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let reason = match tokio::time::timeout(CHECK_LIMIT, command.output()).await {
            Ok(Ok(output)) if output.status.success() => return Ok(Confinement::Bubblewrap(Arc::new(bubblewrap))),
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
                 the server's files hidden, the host's network",
                bubblewrap.program.display()
            ),
        }
    }

    /// The command that runs `program args` for the job whose workspace and
    /// home (see [`home_of`]; it exists when sandboxed) are given.
    pub(crate) async fn command(&self, workspace: &Path, home: &Path, program: &str, args: &[String]) -> tokio::process::Command {
        match self {
            Confinement::Host => {
                let mut command = tokio::process::Command::new(program);
                command.args(args).current_dir(workspace);
                command
            }
            Confinement::Bubblewrap(bubblewrap) => {
                let mut command = tokio::process::Command::new(&bubblewrap.program);
                command
                    .args(base_args(bubblewrap, &bubblewrap.covers().await))
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::local::LocalRunner;
    use crate::runner::{JobState, LogSink, PrebuildJob, Runner};

    fn paths(list: &[&str]) -> Vec<PathBuf> {
        list.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn only_the_outermost_paths_are_covered() {
        let hidden = paths(&["/srv/data/local/r1", "/srv/data", "/etc/prebuildd.toml", "/srv/data", "/", "/srv/database"]);
        assert_eq!(outermost(hidden), paths(&["/etc/prebuildd.toml", "/srv/data", "/srv/database"]));
    }

    fn bubblewrap(hidden: &[&str]) -> Bubblewrap {
        Bubblewrap {
            program: PathBuf::from("/usr/bin/bwrap"),
            hidden: paths(hidden),
            system_dirs: paths(&["/run"]),
            kept: vec![(PathBuf::from("/run/resolve/real.conf"), PathBuf::from("/run/resolve/stub.conf"))],
            path: DEFAULT_PATH.into(),
            lang: DEFAULT_LANG.into(),
        }
    }

    #[tokio::test]
    async fn the_workspace_is_bound_back_after_the_covers() {
        // Outside /tmp, which the sandbox replaces (and covers() skips).
        let dir = tempfile::Builder::new().tempdir_in("/var/tmp").unwrap();
        let (data, config) = (dir.path().join("data"), dir.path().join("prebuildd.toml"));
        std::fs::create_dir_all(data.join("local/r1/workspaces/e1")).unwrap();
        std::fs::write(&config, "token = \"x\"\n").unwrap();
        let in_tmp = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let bubblewrap = bubblewrap(&[
            data.to_str().unwrap(),
            config.to_str().unwrap(),
            missing.to_str().unwrap(),
            in_tmp.path().to_str().unwrap(),
            "/run/secrets",
        ]);
        let covers = bubblewrap.covers().await;
        assert_eq!(
            covers,
            vec![Cover::Directory(data.clone()), Cover::File(config.clone())],
            "missing ones and those in /tmp or /run are left out"
        );

        let workspace = data.join("local/r1/workspaces/e1");
        let home = home_of(&workspace);
        let mut args = base_args(&bubblewrap, &covers);
        args.extend(job_args(&workspace, &home, "sh", &["-c".into(), "echo hi".into()]));
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let position = |wanted: &[&str]| {
            args.windows(wanted.len())
                .position(|w| w.iter().zip(wanted).all(|(a, b)| a == b))
                .unwrap_or_else(|| panic!("{wanted:?} in {args:?}"))
        };
        let (data, config, workspace, home) =
            (data.to_str().unwrap(), config.to_str().unwrap(), workspace.to_str().unwrap(), home.to_str().unwrap());
        for flag in [&["--die-with-parent"][..], &["--new-session"], &["--unshare-pid"], &["--cap-drop", "ALL"], &["--dev", "/dev"]] {
            position(flag);
        }
        assert!(position(&["--ro-bind", "/", "/"]) < position(&["--tmpfs", "/run"]));
        assert!(position(&["--tmpfs", "/run"]) < position(&["--ro-bind", "/run/resolve/real.conf", "/run/resolve/stub.conf"]));
        assert!(position(&["--tmpfs", "/tmp"]) < position(&["--tmpfs", data]));
        let covered = position(&["--tmpfs", data]).max(position(&["--ro-bind", "/dev/null", config]));
        assert!(covered < position(&["--bind", home, home]));
        assert!(covered < position(&["--bind", workspace, workspace]));
        assert_eq!(&args[position(&["--chdir"])..], ["--chdir", workspace, "--", "sh", "-c", "echo hi"]);
    }

    #[tokio::test]
    async fn a_resolv_conf_under_run_is_kept_at_every_link_on_the_way() {
        // etc/resolv.conf -> ../run/resolvconf/resolv.conf -> /…/run/systemd/stub.conf
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let (etc, run) = (root.join("etc"), root.join("run"));
        std::fs::create_dir_all(etc.clone()).unwrap();
        std::fs::create_dir_all(run.join("resolvconf")).unwrap();
        std::fs::create_dir_all(run.join("systemd")).unwrap();
        let real = run.join("systemd/stub.conf");
        std::fs::write(&real, "nameserver 127.0.0.53\n").unwrap();
        std::os::unix::fs::symlink(&real, run.join("resolvconf/resolv.conf")).unwrap();
        std::os::unix::fs::symlink("../run/resolvconf/resolv.conf", etc.join("resolv.conf")).unwrap();
        let kept = kept_files(&etc.join("resolv.conf"), std::slice::from_ref(&run)).await;
        assert_eq!(kept, vec![(real.clone(), run.join("resolvconf/resolv.conf")), (real.clone(), real.clone())]);

        // A plain file outside the replaced directories needs nothing.
        std::fs::write(root.join("plain.conf"), "nameserver 10.0.0.1\n").unwrap();
        assert_eq!(kept_files(&root.join("plain.conf"), &[run]).await, Vec::new());
    }

    #[test]
    fn a_homes_path_is_beside_its_workspace() {
        assert_eq!(home_of(Path::new("/d/local/r/workspaces/0190-e")), Path::new("/d/local/r/workspaces/0190-e.home"));
    }

    /// A prebuild on a runner with these settings, to its end: the final
    /// state and the log. Its command would leave a file beside the
    /// repository if it ran.
    async fn prebuild_with(settings: SandboxSettings) -> (JobState, String, bool) {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let ran = dir.path().join("the-command-ran");
        std::fs::create_dir_all(repo.join(".devcontainer")).unwrap();
        let devcontainer = format!(r#"{{"onCreateCommand": ["touch", "{}"]}}"#, ran.display());
        std::fs::write(repo.join(".devcontainer/devcontainer.json"), devcontainer).unwrap();
        let runner = LocalRunner::new(&dir.path().join("data/local/r1"), settings).unwrap();
        let prebuild_id = uuid::Uuid::now_v7().to_string();
        let log = LogSink::new(dir.path().join("log"));
        let job = PrebuildJob {
            prebuild_id: prebuild_id.clone(),
            environment_id: uuid::Uuid::now_v7().to_string(),
            project_id: uuid::Uuid::new_v4().to_string(),
            environment_class_id: uuid::Uuid::new_v4().to_string(),
            repository: repo.display().to_string(),
            resources: Default::default(),
            policy: Default::default(),
            devcontainer_path: None,
            log: log.clone(),
        };
        runner.start(job).await.unwrap();
        let started = std::time::Instant::now();
        let state = loop {
            let state = runner.observe(&prebuild_id).await.unwrap();
            if matches!(state, JobState::Completed { .. } | JobState::Failed { .. } | JobState::Stopped) {
                break state;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the job never ended: {state:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        (state, std::fs::read_to_string(log.path()).unwrap_or_default(), ran.exists())
    }

    #[tokio::test]
    async fn without_bwrap_prebuilds_are_refused_with_what_to_do() {
        let settings = SandboxSettings { program: PathBuf::from("/nonexistent/bwrap"), ..SandboxSettings::new(true, Vec::new()) };
        let (state, log, ran) = prebuild_with(settings).await;
        let JobState::Failed { message } = state else { panic!("{state:?}\n{log}") };
        assert_eq!(
            message,
            "the local runner sandboxes lifecycle commands with bubblewrap (/nonexistent/bwrap), which is not installed: \
             install the bubblewrap package (and restart prebuildd), or set sandbox = false on this runner for trusted repositories only"
        );
        assert!(!ran, "nothing of the repository ran");
        assert!(log.contains(&format!("failed: {message}")) && !log.contains("cloning") && !log.contains("copying"), "{log}");

        // The same runner's program found by name in PATH, as configured.
        let by_name = Sandbox::new(
            SandboxSettings { program: PathBuf::from("no-such-bwrap-here"), ..SandboxSettings::new(true, Vec::new()) },
            Path::new("/"),
        );
        assert!(by_name.check().await.unwrap_err().contains("(no-such-bwrap-here), which is not installed"));
    }

    #[tokio::test]
    async fn a_bwrap_that_cannot_sandbox_refuses_prebuilds_too() {
        // `false` stands for a bwrap that cannot create namespaces here.
        let settings = SandboxSettings { program: PathBuf::from("false"), ..SandboxSettings::new(true, Vec::new()) };
        let (state, log, ran) = prebuild_with(settings).await;
        let JobState::Failed { message } = state else { panic!("{state:?}\n{log}") };
        assert!(message.contains("which cannot create a sandbox on this host (it exited with code 1)"), "{message}");
        assert!(message.ends_with("or set sandbox = false on this runner for trusted repositories only"), "{message}");
        assert!(!ran);
    }

    #[tokio::test]
    async fn with_sandbox_false_commands_run_on_the_host_without_bwrap() {
        let settings = SandboxSettings { program: PathBuf::from("/nonexistent/bwrap"), ..SandboxSettings::new(false, Vec::new()) };
        let (state, log, ran) = prebuild_with(settings).await;
        assert!(matches!(state, JobState::Completed { .. }), "{state:?}\n{log}");
        assert!(ran, "the command ran on the host, where it could write beside the repository");
        assert!(log.contains("warning: lifecycle commands run unsandboxed"), "{log}");
    }

    #[tokio::test]
    async fn the_check_passes_with_the_real_bwrap() {
        let sandbox = Sandbox::new(SandboxSettings::new(true, Vec::new()), Path::new("/nonexistent-root"));
        let confinement = sandbox.check().await.expect("bwrap works on this host (install the bubblewrap package)");
        assert!(confinement.is_sandboxed());
        assert!(confinement.describe().starts_with("lifecycle commands run in a bubblewrap sandbox ("), "{}", confinement.describe());
    }
}
