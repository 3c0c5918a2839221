//! The server (`prebuildd serve`) with a remote runner configured, and
//! `prebuildd runner` processes (tests/common/runner_process.rs) with their
//! own data dirs; helpers that wait for phases through the public API.

pub use crate::common::runner_process::{listening_ports, RunnerProcess};
use crate::common::*;
use prebuildd::proto::gitpod::v1::*;
use std::path::{Path, PathBuf};
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

/// What the log endpoint sends of a running prebuild's log within half a
/// second (it follows the log until the prebuild ends).
pub async fn read_log_so_far(base_url: &str, client: &mut Client, id: &str) -> String {
    let token = client
        .create_prebuild_logs_token(CreatePrebuildLogsTokenRequest { prebuild_id: id.into() })
        .await
        .expect("a logs token")
        .into_inner()
        .access_token;
    let mut response = reqwest::Client::new().get(format!("{base_url}/logs/prebuilds/{id}")).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut text = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(until, response.chunk()).await {
        text.extend_from_slice(&chunk);
    }
    String::from_utf8_lossy(&text).into_owned()
}
