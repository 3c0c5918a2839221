//! The server (`prebuildd serve`) with a remote runner configured, and
//! `prebuildd runner` processes with their own data dirs; helpers that wait
//! for phases through the public API.

use crate::common::*;
use prebuildd::proto::gitpod::v1::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const RUNNER_TOKEN: &str = "remote-runner-token-1";
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The test configuration with its runner remote (grace `grace`), the
/// reconciler on, PROJECT_BACKEND completing (`sim://ok`) and
/// PROJECT_FRONTEND hanging until cancelled.
pub fn server_config(grace: &str) -> String {
    let config = test_config_toml()
        .replacen("[reconciler]\nenabled = false", "[reconciler]\nenabled = true\ninterval = \"100ms\"", 1)
        .replacen(
            "kind = \"simulated\"\nstep_duration = \"1h\"",
            &format!("kind = \"remote\"\ntoken = \"{RUNNER_TOKEN}\"\ndisconnect_grace = \"{grace}\""),
            1,
        )
        .replacen("sim://hang", "sim://ok", 1);
    assert!(config.contains("kind = \"remote\"") && config.contains("sim://ok"), "the config edits applied");
    config
}

/// A `prebuildd runner` child; killed when dropped.
pub struct RunnerProcess {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl RunnerProcess {
    /// Starts `prebuildd runner` for RUNNER with `token`, a simulated engine
    /// of `step` per phase, and `data_dir` as its own.
    pub fn start(server: &str, token: &str, data_dir: &Path, step: &str) -> RunnerProcess {
        std::fs::create_dir_all(data_dir).unwrap();
        let config = data_dir.with_extension("toml");
        std::fs::write(
            &config,
            format!(
                "server = \"{server}\"\nrunner_id = \"{RUNNER}\"\ntoken = \"{token}\"\ndata_dir = \"{}\"\n[engine]\nkind = \"simulated\"\nstep_duration = \"{step}\"\n",
                data_dir.display()
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_prebuildd"))
            .args(["runner", "--config"])
            .arg(&config)
            .env("PREBUILDD_LOG", "info")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the prebuildd binary starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        RunnerProcess { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until the runner logs that it is connected.
    pub async fn wait_connected(&self) {
        let started = Instant::now();
        while !self.log_text().contains("connected to the server") {
            assert!(started.elapsed() < PATIENCE, "the runner never connected; its log:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits up to `limit` for the runner to exit on its own.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if started.elapsed() >= limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL the runner");
        self.child.wait().expect("reap the runner");
    }
}

impl Drop for RunnerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The TCP ports a process listens on (IPv4 and IPv6), from /proc: its
/// socket inodes matched against the kernel's tables of listening sockets.
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the runner's fds")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is field 1 (ADDR:PORT in hex), st is field 3
            // (0A = LISTEN), inode is field 9.
            if fields.len() > 9 && fields[3] == "0A" && inodes.iter().any(|inode| inode == fields[9]) {
                if let Some(port) = fields[1].rsplit(':').next().and_then(|hex| u16::from_str_radix(hex, 16).ok()) {
                    ports.push(port);
                }
            }
        }
    }
    ports
}

pub async fn get_prebuild(client: &mut Client, id: &str) -> Prebuild {
    client.get_prebuild(GetPrebuildRequest { prebuild_id: id.into() }).await.expect("get").into_inner().prebuild.expect("a prebuild")
}

pub fn phase(prebuild: &Prebuild) -> PrebuildPhase {
    PrebuildPhase::try_from(prebuild.status.as_ref().map_or(0, |s| s.phase)).unwrap_or(PrebuildPhase::Unspecified)
}

/// Waits until the prebuild is in `want`; `context` is printed if it never is.
pub async fn wait_phase(client: &mut Client, id: &str, want: PrebuildPhase, context: impl Fn() -> String) -> Prebuild {
    let started = Instant::now();
    loop {
        let prebuild = get_prebuild(client, id).await;
        if phase(&prebuild) == want {
            return prebuild;
        }
        assert!(started.elapsed() < PATIENCE, "prebuild {id} never reached {want:?}: {prebuild:?}\n{}", context());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the warm pool satisfies `check`.
pub async fn wait_pool(client: &mut Client, id: &str, check: impl Fn(&WarmPool) -> bool, context: impl Fn() -> String) -> WarmPool {
    let started = Instant::now();
    loop {
        let pool =
            client.get_warm_pool(GetWarmPoolRequest { warm_pool_id: id.into() }).await.expect("get pool").into_inner().warm_pool.unwrap();
        if check(&pool) {
            return pool;
        }
        assert!(started.elapsed() < PATIENCE, "warm pool never got there: {pool:?}\n{}", context());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The prebuild's log, read from the server's logs endpoint with a logs token.
pub async fn read_log(base_url: &str, client: &mut Client, id: &str) -> String {
    let token = client
        .create_prebuild_logs_token(CreatePrebuildLogsTokenRequest { prebuild_id: id.into() })
        .await
        .expect("a logs token")
        .into_inner()
        .access_token;
    let response = reqwest::Client::new().get(format!("{base_url}/logs/prebuilds/{id}")).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// A runner's local log file of a prebuild.
pub fn runner_log_file(data_dir: &Path, prebuild_id: &str) -> PathBuf {
    data_dir.join("logs").join(format!("{prebuild_id}.log"))
}
