//! A real `prebuildd serve` as a child process, and the few Connect JSON
//! calls the dashboard test makes to set the scene (with reqwest, as any
//! HTTP client would).

use crate::child::Log;
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

pub const ORG: &str = "aaaaaaaa-0000-4000-8000-000000000001";
pub const KEY: &str = "dashboard-test-key";
const SUBJECT: &str = "a11ce000-0000-4000-8000-0000000000a1";
const FAST_RUNNER: &str = "7a000000-0000-4000-8000-000000000001";
const SLOW_RUNNER: &str = "7a000000-0000-4000-8000-000000000002";
/// A remote runner, whose one member the test starts (`prebuildd runner`).
pub const REMOTE_RUNNER: &str = "7a000000-0000-4000-8000-000000000003";
pub const REMOTE_TOKEN: &str = "dashboard-remote-runner-token";
pub const MEMBER: &str = "e2e-member";
const CLASS_REMOTE: &str = "c1a55000-0000-4000-8000-000000000003";
pub const CLASS_FAST: &str = "c1a55000-0000-4000-8000-000000000001";
pub const CLASS_SLOW: &str = "c1a55000-0000-4000-8000-000000000002";
/// `sim://ok` on the fast runner: completes within a second.
pub const PROJECT_OK: &str = "9e000000-0000-4000-8000-000000000001";
/// `sim://fail` on the fast runner: FAILED with a failure message.
pub const PROJECT_FAIL: &str = "9e000000-0000-4000-8000-000000000003";
/// `sim://warn` on the fast runner: COMPLETED with a warning message.
pub const PROJECT_WARN: &str = "9e000000-0000-4000-8000-000000000004";
/// `sim://hang` on the slow runner: its first log lines when it starts, one
/// more when it runs (a step, 6 s, later: ample time for the page to show the
/// first ones), then nothing until it is cancelled.
pub const PROJECT_HANG: &str = "9e000000-0000-4000-8000-000000000002";

const STARTUP_LIMIT: Duration = Duration::from_secs(30);
/// How long the scene's objects may take to reach the state the test needs.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The configuration, listening on `port` (the log URLs point there).
pub fn config(port: u16) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"

[reconciler]
interval = "100ms"

[[organizations]]
id = "{ORG}"
name = "Dashboard"

[[api_keys]]
token = "{KEY}"
organization_id = "{ORG}"
subject_id = "{SUBJECT}"

[[runners]]
id = "{FAST_RUNNER}"
kind = "simulated"
step_duration = "50ms"

[[runners]]
id = "{SLOW_RUNNER}"
kind = "simulated"
step_duration = "6s"

[[runners]]
id = "{REMOTE_RUNNER}"
kind = "remote"
token = "{REMOTE_TOKEN}"

[[environment_classes]]
id = "{CLASS_REMOTE}"
runner_id = "{REMOTE_RUNNER}"
name = "fleet"

[[environment_classes]]
id = "{CLASS_FAST}"
runner_id = "{FAST_RUNNER}"
name = "fast"

[[environment_classes]]
id = "{CLASS_SLOW}"
runner_id = "{SLOW_RUNNER}"
name = "slow"

[[projects]]
id = "{PROJECT_OK}"
organization_id = "{ORG}"
name = "backend"
repository = "sim://ok"
default_environment_class_id = "{CLASS_FAST}"
[projects.prebuilds]
enabled = true
environment_class_ids = ["{CLASS_FAST}", "{CLASS_REMOTE}"]

[[projects]]
id = "{PROJECT_FAIL}"
organization_id = "{ORG}"
name = "flaky"
repository = "sim://fail"
default_environment_class_id = "{CLASS_FAST}"
[projects.prebuilds]
enabled = true
environment_class_ids = ["{CLASS_FAST}"]

[[projects]]
id = "{PROJECT_WARN}"
organization_id = "{ORG}"
name = "shaky"
repository = "sim://warn"
default_environment_class_id = "{CLASS_FAST}"
[projects.prebuilds]
enabled = true
environment_class_ids = ["{CLASS_FAST}"]

[[projects]]
id = "{PROJECT_HANG}"
organization_id = "{ORG}"
name = "stuck"
repository = "sim://hang"
default_environment_class_id = "{CLASS_SLOW}"
[projects.prebuilds]
enabled = true
environment_class_ids = ["{CLASS_SLOW}"]
"#
    )
}

/// A port that was free a moment ago. The server must know its port before
/// it starts, since it writes it into every prebuild's log URL.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().expect("its address").port()
}

/// A `prebuildd runner` member; killed and reaped when dropped.
pub struct Member {
    child: Child,
    log: Log,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `prebuildd serve`; killed and reaped when dropped.
pub struct Server {
    child: Child,
    pub base_url: String,
    log: Log,
    http: reqwest::Client,
}

impl Server {
    pub async fn start(dir: &Path) -> Server {
        let port = free_port();
        std::fs::write(dir.join("config.toml"), config(port)).expect("write the config");
        let config = dir.join("config.toml");
        let data_dir = dir.join("data");
        let (child, log) = crate::child::spawn_prebuildd([
            OsStr::new("serve"),
            OsStr::new("--config"),
            config.as_os_str(),
            OsStr::new("--data-dir"),
            data_dir.as_os_str(),
        ]);
        let server = Server {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            log,
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
        };
        let started = Instant::now();
        loop {
            if let Ok(response) = server.http.get(format!("{}/healthz", server.base_url)).send().await {
                if response.status() == 200 {
                    return server;
                }
            }
            assert!(
                started.elapsed() < STARTUP_LIMIT,
                "prebuildd did not answer /healthz within {STARTUP_LIMIT:?}; its log:\n{}",
                server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// GET a path of the server, without an API key.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.base_url)).send().await.expect("GET answers")
    }

    /// A unary Connect JSON call; panics unless it succeeds.
    pub async fn call(&self, method: &str, body: Value) -> Value {
        let (status, answer) = self.try_call(method, body).await;
        assert_eq!(status, 200, "{method} failed: {answer}");
        answer
    }

    /// A unary Connect JSON call: the HTTP status and the JSON answer.
    pub async fn try_call(&self, method: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/gitpod.v1.PrebuildService/{method}", self.base_url))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_else(|e| panic!("{method}: not JSON: {e}")))
    }

    /// Starts the remote runner's member (a simulated engine) and waits
    /// until the server lists it connected.
    pub async fn start_member(&self, dir: &Path) -> Member {
        let config = dir.join("runner.toml");
        let text = format!(
            "server = \"{}\"\nrunner_id = \"{REMOTE_RUNNER}\"\ntoken = \"{REMOTE_TOKEN}\"\nmember = \"{MEMBER}\"\ndata_dir = \"{}\"\n[engine]\nkind = \"simulated\"\n",
            self.base_url,
            dir.join("runner-data").display()
        );
        std::fs::write(&config, text).expect("write the runner's config");
        let (child, log) = crate::child::spawn_prebuildd([OsStr::new("runner"), OsStr::new("--config"), config.as_os_str()]);
        let member = Member { child, log };
        let started = Instant::now();
        loop {
            let response = self
                .http
                .post(format!("{}/prebuildd.v1.CatalogService/ListRunners", self.base_url))
                .bearer_auth(KEY)
                .json(&json!({}))
                .send()
                .await
                .expect("ListRunners answers");
            let answer: Value = response.json().await.expect("JSON");
            let connected = answer["runners"].as_array().into_iter().flatten().any(|runner| {
                runner["id"] == REMOTE_RUNNER
                    && runner["members"].as_array().into_iter().flatten().any(|m| m["name"] == MEMBER && m["connected"] == true)
            });
            if connected {
                return member;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "the member never showed as connected: {answer}\n{}",
                member.log.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn create_prebuild(&self, project_id: &str) -> String {
        let answer = self.call("CreatePrebuild", json!({ "projectId": project_id, "spec": { "timeout": "3600s" } })).await;
        answer["prebuild"]["id"].as_str().expect("a prebuild id").to_string()
    }

    /// Polls GetPrebuild until its phase is `phase` (e.g. `PREBUILD_PHASE_COMPLETED`).
    pub async fn wait_for_phase(&self, id: &str, phase: &str) -> Value {
        let started = Instant::now();
        loop {
            let prebuild = self.call("GetPrebuild", json!({ "prebuildId": id })).await["prebuild"].clone();
            if prebuild["status"]["phase"] == phase {
                return prebuild;
            }
            assert!(started.elapsed() < PATIENCE, "prebuild {id} is not {phase} after {PATIENCE:?}: {prebuild}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
