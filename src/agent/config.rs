//! `runner.toml`: where the server is, who this runner is, and the engine
//! that does the work here.

use crate::catalog::RunnerConfig;
use crate::config::{engine_config, ConfigError, RawEngine};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRunnerFile {
    server: String,
    runner_id: String,
    token: String,
    member: Option<String>,
    data_dir: Option<PathBuf>,
    engine: RawEngine,
}

/// The validated runner configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The server's base URL (`http://host:port`).
    pub server: String,
    pub runner_id: String,
    /// The runner's token, as the server's `[[runners]]` entry has it.
    pub token: String,
    /// This process's name in the runner's fleet (several processes may
    /// attach with one runner ID, each under its own name); by default the
    /// host's name.
    pub member: String,
    /// How many prebuilds this member runs at once, when `[engine]` sets
    /// it; otherwise the server's setting for the runner decides.
    pub member_slots: Option<u32>,
    /// The runner's own files: workspaces, snapshots, logs.
    pub data_dir: PathBuf,
    /// The engine's settings, as a runner of `runner_id`.
    pub engine: RunnerConfig,
    /// This file (it holds the token): what the engine runs never sees it.
    pub path: PathBuf,
}

fn err(key: &str, message: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{key}: {message}"))
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        let mut config = AgentConfig::parse(&text)?;
        config.path = path.to_path_buf();
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        let raw: RawRunnerFile = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        let server = raw.server.trim_end_matches('/').to_string();
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(err("server", format!("{server:?} must be an http:// or https:// URL")));
        }
        if server.parse::<http::Uri>().is_err() {
            return Err(err("server", format!("{server:?} is not a URL")));
        }
        if uuid::Uuid::parse_str(&raw.runner_id).is_err() {
            return Err(err("runner_id", "must be a UUID (the id of the runner's [[runners]] entry on the server)"));
        }
        if raw.token.trim().len() < 8 {
            return Err(err("token", "must be at least 8 characters"));
        }
        let member = match raw.member {
            Some(member) => member,
            None => host_name().ok_or_else(|| err("member", "this host has no name to use: set member = \"...\""))?,
        };
        if !crate::runner::remote::valid_member_name(&member) {
            return Err(err("member", format!("{member:?} is not a member name: 1 to 63 letters, digits, '.', '-' or '_'")));
        }
        let member_slots = raw.engine.max_concurrent_prebuilds();
        let engine = engine_config("engine", &raw.runner_id, raw.engine)?;
        Ok(AgentConfig {
            server,
            runner_id: raw.runner_id,
            token: raw.token.trim().to_string(),
            member,
            member_slots,
            data_dir: raw.data_dir.unwrap_or_else(|| PathBuf::from("./runner-data")),
            engine,
            path: PathBuf::new(),
        })
    }
}

/// The host's name (the default member name).
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
server = "http://127.0.0.1:8080/"
runner_id = "22222222-2222-4222-8222-222222222222"
token = "runner-token-1"
data_dir = "./rd"
[engine]
kind = "simulated"
step_duration = "50ms"
"#;

    #[test]
    fn a_runner_file_parses() {
        let config = AgentConfig::parse(GOOD).unwrap();
        assert_eq!(config.server, "http://127.0.0.1:8080");
        assert_eq!(config.engine.kind, crate::catalog::RunnerKind::Simulated);
        assert_eq!(config.engine.step_duration, std::time::Duration::from_millis(50));
        assert_eq!(config.data_dir, PathBuf::from("./rd"));
        assert_eq!(config.member, host_name().unwrap(), "the host's name by default");
        assert_eq!(config.member_slots, None, "the server decides");
        let named = AgentConfig::parse(
            &GOOD
                .replace("data_dir", "member = \"build-2\"\ndata_dir")
                .replace("step_duration", "max_concurrent_prebuilds = 2\nstep_duration"),
        )
        .unwrap();
        assert_eq!((named.member.as_str(), named.member_slots), ("build-2", Some(2)));
        let docker = GOOD.replace("kind = \"simulated\"\nstep_duration = \"50ms\"", "kind = \"docker\"");
        assert!(AgentConfig::parse(&docker).unwrap().engine.network_isolation, "isolated unless the engine opts out");
        let open = AgentConfig::parse(&docker.replace("kind = \"docker\"", "kind = \"docker\"\nnetwork_isolation = false")).unwrap();
        assert!(!open.engine.network_isolation);
    }

    #[test]
    fn mistakes_name_their_key() {
        let cases = [
            (GOOD.replace("http://127.0.0.1:8080/", "127.0.0.1:8080"), "server"),
            (GOOD.replace("22222222-2222-4222-8222-222222222222", "r1"), "runner_id"),
            (GOOD.replace("runner-token-1", "x"), "token"),
            (GOOD.replace("data_dir", "member = \"has space\"\ndata_dir"), "member"),
            (GOOD.replace("kind = \"simulated\"", "kind = \"remote\""), "engine.kind"),
            (GOOD.replace("step_duration = \"50ms\"", "sandbox = false"), "engine.sandbox"),
            (GOOD.replace("step_duration = \"50ms\"", "network_isolation = false"), "engine.network_isolation"),
        ];
        for (text, key) in cases {
            let error = AgentConfig::parse(&text).unwrap_err();
            assert!(error.0.starts_with(key), "expected {key}, got {error}");
        }
        assert!(AgentConfig::parse(&GOOD.replace("data_dir", "dir")).is_err(), "unknown keys are refused");
    }
}
