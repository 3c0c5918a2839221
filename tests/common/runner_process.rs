//! `prebuildd runner` as a child process, for the tests of remote runners.

use super::child::Log;
use super::RUNNER;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How long a runner may take to connect.
const CONNECT_LIMIT: Duration = Duration::from_secs(30);

/// A `prebuildd runner` child; killed when dropped.
pub struct RunnerProcess {
    child: Child,
    log: Log,
}

impl RunnerProcess {
    /// Starts `prebuildd runner` for RUNNER with `token`, a simulated engine
    /// of `step` per phase, and `data_dir` as its own.
    pub fn start(server: &str, token: &str, data_dir: &Path, step: &str) -> RunnerProcess {
        let engine = format!("kind = \"simulated\"\nstep_duration = \"{step}\"\n");
        RunnerProcess::start_with_engine(server, RUNNER, token, data_dir, &engine)
    }

    /// Starts `prebuildd runner` as `runner_id` with the `[engine]` table
    /// `engine` (TOML lines).
    pub fn start_with_engine(server: &str, runner_id: &str, token: &str, data_dir: &Path, engine: &str) -> RunnerProcess {
        RunnerProcess::start_with_engine_under(&[], server, runner_id, token, data_dir, engine)
    }

    /// As [`RunnerProcess::start_with_engine`], run by `wrapper` (see
    /// `spawn_prebuildd_under`).
    pub fn start_with_engine_under(
        wrapper: &[&str],
        server: &str,
        runner_id: &str,
        token: &str,
        data_dir: &Path,
        engine: &str,
    ) -> RunnerProcess {
        RunnerProcess::start_member_under(wrapper, server, runner_id, token, data_dir, engine, None)
    }

    /// Starts `prebuildd runner` as member `member` of `runner_id`'s fleet
    /// (runner.toml's `member`), with the `[engine]` table `engine`.
    pub fn start_member(server: &str, runner_id: &str, token: &str, data_dir: &Path, engine: &str, member: &str) -> RunnerProcess {
        RunnerProcess::start_member_under(&[], server, runner_id, token, data_dir, engine, Some(member))
    }

    fn start_member_under(
        wrapper: &[&str],
        server: &str,
        runner_id: &str,
        token: &str,
        data_dir: &Path,
        engine: &str,
        member: Option<&str>,
    ) -> RunnerProcess {
        std::fs::create_dir_all(data_dir).unwrap();
        let config = data_dir.with_extension("toml");
        let member = member.map(|name| format!("member = \"{name}\"\n")).unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "server = \"{server}\"\nrunner_id = \"{runner_id}\"\ntoken = \"{token}\"\n{member}data_dir = \"{}\"\n[engine]\n{engine}",
                data_dir.display()
            ),
        )
        .unwrap();
        let (child, log) = super::child::spawn_prebuildd_under(wrapper, [OsStr::new("runner"), OsStr::new("--config"), config.as_os_str()]);
        RunnerProcess { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The log, readable while the process is killed or dropped.
    pub fn log_reader(&self) -> impl Fn() -> String + use<> {
        let log = self.log.clone();
        move || log.lock().unwrap().join("\n")
    }

    /// Waits until the runner logs that it is connected.
    pub async fn wait_connected(&self) {
        let started = Instant::now();
        while !self.log_text().contains("connected to the server") {
            assert!(started.elapsed() < CONNECT_LIMIT, "the runner never connected; its log:\n{}", self.log_text());
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
