//! The sandbox's arguments and its check, with the real bwrap.

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
        network: None,
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
    let runner = LocalRunner::new(&dir.path().join("data/local/r1"), settings, crate::runner::RunnerEvents::new()).unwrap();
    let prebuild_id = uuid::Uuid::now_v7().to_string();
    let log = LogSink::new(dir.path().join("log"));
    let job = PrebuildJob {
        prebuild_id: prebuild_id.clone(),
        environment_id: uuid::Uuid::now_v7().to_string(),
        project_id: uuid::Uuid::new_v4().to_string(),
        environment_class_id: uuid::Uuid::new_v4().to_string(),
        repository: repo.display().to_string(),
        tag_latest: false,
        resources: Default::default(),
        policy: Default::default(),
        devcontainer_path: None,
        source: Default::default(),
        log: log.clone(),
    };
    runner.start(job).await.unwrap();
    let started = std::time::Instant::now();
    let state = loop {
        let state = runner.observe(&prebuild_id).await.unwrap();
        if state.is_final() {
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
async fn without_slirp4netns_prebuilds_are_refused_unless_the_runner_opts_out_of_network_isolation() {
    let settings = SandboxSettings { slirp4netns: PathBuf::from("/nonexistent/slirp4netns"), ..SandboxSettings::new(true, Vec::new()) };
    let (state, log, ran) = prebuild_with(settings.clone()).await;
    let JobState::Failed { message } = state else { panic!("{state:?}\n{log}") };
    assert_eq!(
        message,
        "the local runner gives lifecycle commands a network of their own, and its user-mode networking program \
         (/nonexistent/slirp4netns) is not installed: install the slirp4netns package (and restart prebuildd), \
         or set network_isolation = false on this runner for trusted repositories only"
    );
    assert!(!ran, "nothing of the repository ran");
    let (state, log, _) = prebuild_with(settings.with_network_isolation(false)).await;
    assert!(matches!(state, JobState::Completed { .. }), "{state:?}\n{log}");
    assert!(log.contains("the host's network (network_isolation = false on this runner"), "{log}");
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
