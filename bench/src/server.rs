//! The server under measurement: `prebuildd serve` as a child process with
//! a configuration of the benchmark's, its RSS and its metrics; and the
//! seeding of data dirs before it starts.

use prebuildd::config::DEMO_API_KEY;
use prebuildd::proto::gitpod::v1::prebuild_metadata::PrebuildTrigger;
use prebuildd::proto::gitpod::v1::{Prebuild, Subject};
use prebuildd::service::{new_prebuild, NewPrebuild};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const ORG: &str = "8d9e8f4a-1b2c-4d3e-9f00-0a1b2c3d4e5f";
pub const USER: &str = "e6a7c1f0-2b3d-4e5f-8a9b-0c1d2e3f4a5b";
pub const RUNNER: &str = "3f1a2b3c-4d5e-4f60-8a7b-1c2d3e4f5a6b";
pub const CLASS: &str = "d2c94c27-3b76-4a42-b88c-95a85e392c68";
/// Reconciler passes so far, and their total time (`/metrics`).
pub const PASSES: &str = "prebuildd_reconciler_pass_duration_seconds_count";
pub const PASS_SECONDS: &str = "prebuildd_reconciler_pass_duration_seconds_sum";

/// The project whose prebuilds the list scenario filters for.
pub const LIST_PROJECT: &str = "b0e12f6c-4c67-429d-a4a6-d9838b5da047";
/// Where CreatePrebuild writes (so the list project keeps its size).
pub const CREATE_PROJECT: &str = "0f4c9a7e-2d1b-4e8a-9c3f-5b6a7d8e9f01";
/// Other projects that fill the large table.
pub const FILLER_PROJECT: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";

/// The server binary the scenarios start (set once, from the options).
static SERVER_BINARY: OnceLock<PathBuf> = OnceLock::new();

/// The `prebuildd` binary: the one given, else the one built beside this
/// binary (`cargo build --release` builds both into `target/release/`).
pub fn locate_binary(given: Option<PathBuf>) -> Result<PathBuf, String> {
    let path = match given {
        Some(path) => path,
        None => {
            let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
            exe.with_file_name(format!("prebuildd{}", std::env::consts::EXE_SUFFIX))
        }
    };
    if !path.is_file() {
        return Err(format!(
            "the server binary {} does not exist: build it first (`cargo build --release`), or pass --server-binary",
            path.display()
        ));
    }
    let _ = SERVER_BINARY.set(path.clone());
    Ok(path)
}

pub fn config(listen: &str, reconcile: bool, max_concurrent: usize) -> String {
    // sim://hang: one step STARTING, then RUNNING until cancelled, so the
    // reconciler's prebuilds stay active (observed every pass).
    let project = |id: &str, name: &str, repository: &str| {
        format!(
            "[[projects]]\nid = \"{id}\"\norganization_id = \"{ORG}\"\nname = \"{name}\"\nrepository = \"{repository}\"\ndefault_environment_class_id = \"{CLASS}\"\n[projects.prebuilds]\nenabled = true\nenvironment_class_ids = [\"{CLASS}\"]\n"
        )
    };
    format!(
        "[server]\nlisten = \"{listen}\"\n[reconciler]\nenabled = {reconcile}\ninterval = \"1s\"\n[bench]\nbaseline = true\n\
         [limits]\nmax_pending_prebuilds_per_project = 0\n\
         [[organizations]]\nid = \"{ORG}\"\nname = \"Bench\"\n\
         [[api_keys]]\ntoken = \"{DEMO_API_KEY}\"\norganization_id = \"{ORG}\"\nsubject_id = \"{USER}\"\n\
         [[runners]]\nid = \"{RUNNER}\"\nkind = \"simulated\"\nmax_concurrent_prebuilds = {max_concurrent}\nstep_duration = \"1s\"\n\
         [[environment_classes]]\nid = \"{CLASS}\"\nrunner_id = \"{RUNNER}\"\nname = \"small\"\n{}{}{}",
        project(LIST_PROJECT, "list", "sim://hang"),
        project(CREATE_PROJECT, "create", "sim://hang"),
        project(FILLER_PROJECT, "filler", "sim://hang"),
    )
}

/// Prebuilds as the API would create them, for seeding.
pub fn seed_rows(project_id: &'static str, count: usize) -> impl Iterator<Item = Prebuild> {
    let subject = Subject { id: USER.into(), principal: 2 };
    (0..count).map(move |_| {
        new_prebuild(NewPrebuild {
            organization_id: ORG.into(),
            project_id: project_id.into(),
            environment_class_id: CLASS.into(),
            creator: subject.clone(),
            executor: subject.clone(),
            triggered_by: PrebuildTrigger::Manual,
            timeout: Duration::from_secs(3600),
            public_url: "http://127.0.0.1".into(),
            now: prebuildd::clock::timestamp(std::time::SystemTime::now()),
        })
    })
}

/// `prebuildd-bench seed`: bulk-loads `count` prebuilds of the demo organization's
/// first project into a data dir (the server must not be running on it).
pub fn seed(data_dir: &Path, count: usize) -> Result<usize, String> {
    prebuildd::store::sqlite::seed_prebuilds(data_dir, seed_rows(LIST_PROJECT, count)).map_err(|e| e.to_string())
}

/// A prebuildd child process.
pub struct ChildServer {
    child: Child,
    pub base: String,
    data_dir: PathBuf,
}

impl ChildServer {
    pub fn start(data_dir: &Path, reconcile: bool, max_concurrent: usize) -> Result<ChildServer, String> {
        Self::start_with(data_dir, |listen| config(listen, reconcile, max_concurrent))
    }

    /// A server on the configuration `config(listen address)` makes.
    pub fn start_with(data_dir: &Path, config: impl FnOnce(&str) -> String) -> Result<ChildServer, String> {
        Self::start_logging(data_dir, "warn", config)
    }

    /// As [`ChildServer::start_with`], logging at `level` into
    /// `<data_dir>/server.log` (what a scenario reads times from).
    pub fn start_logging(data_dir: &Path, level: &str, config: impl FnOnce(&str) -> String) -> Result<ChildServer, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let listen = format!("127.0.0.1:{port}");
        std::fs::create_dir_all(data_dir).map_err(|e| e.to_string())?;
        let config_path = data_dir.join("bench.toml");
        std::fs::write(&config_path, config(&listen)).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(data_dir.join("server.log")).map_err(|e| e.to_string())?;
        let exe = SERVER_BINARY.get().ok_or("the server binary is not known")?;
        let child = Command::new(exe)
            .args(["serve", "--config"])
            .arg(&config_path)
            .arg("--data-dir")
            .arg(data_dir)
            .env("PREBUILDD_LOG", level)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start the server: {e}"))?;
        Ok(ChildServer { child, base: format!("http://{listen}"), data_dir: data_dir.to_path_buf() })
    }

    pub async fn ready(&self) -> Result<(), String> {
        let client = reqwest::Client::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if client.get(format!("{}/healthz", self.base)).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("the server did not come up; see {}", self.data_dir.join("server.log").display()))
    }

    /// (current RSS, peak RSS) in MiB, from /proc.
    pub fn rss_mib(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .map_or(0.0, |kib| kib / 1024.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// The sum of every series of metric `name` at `/metrics` (one
    /// value for a metric without labels).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::get(format!("{}/metrics", self.base)).await.ok()?.text().await.ok()?;
        let values: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{')))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    pub fn stop(mut self) {
        // SIGTERM and wait: a graceful stop leaves the data dir consistent
        // for the next phase.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
