//! `[[runners]]` entries of the server's configuration, and the `[engine]`
//! of `prebuildd runner`, which takes the same settings.

use super::{err, optional_duration, uuid_key, ConfigError};
use crate::catalog::{DockerSettings, RemoteSettings, RunnerConfig, RunnerKind};
use crate::runner::docker::registry::RegistryName;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRunner {
    id: String,
    kind: String,
    max_concurrent_prebuilds: Option<u32>,
    step_duration: Option<String>,
    sandbox: Option<bool>,
    network_isolation: Option<bool>,
    docker_host: Option<String>,
    devcontainer_cli: Option<PathBuf>,
    docker_cli: Option<PathBuf>,
    default_image: Option<String>,
    root: Option<PathBuf>,
    docker_config: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    pass_env: Option<Vec<String>>,
    registry: Option<String>,
    token: Option<String>,
    token_sha256: Option<String>,
    disconnect_grace: Option<String>,
}

/// The `[engine]` of a runner's own config: what does the work on the
/// runner's machine. The keys of a `[[runners]]` entry of that kind, without
/// its ID (the runner has its own) and without remote settings.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawEngine {
    kind: String,
    max_concurrent_prebuilds: Option<u32>,
    step_duration: Option<String>,
    sandbox: Option<bool>,
    network_isolation: Option<bool>,
    docker_host: Option<String>,
    devcontainer_cli: Option<PathBuf>,
    docker_cli: Option<PathBuf>,
    default_image: Option<String>,
    root: Option<PathBuf>,
    docker_config: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    pass_env: Option<Vec<String>>,
    registry: Option<String>,
}

impl RawEngine {
    /// The engine's `max_concurrent_prebuilds`, when it sets one.
    pub fn max_concurrent_prebuilds(&self) -> Option<u32> {
        self.max_concurrent_prebuilds
    }
}

/// The engine's settings as a runner of the given ID; `key` prefixes
/// errors (`engine`). A remote engine is refused: it would wait for a
/// runner of its own.
pub fn engine_config(key: &str, runner_id: &str, engine: RawEngine) -> Result<RunnerConfig, ConfigError> {
    if engine.kind == "remote" {
        return Err(err(format!("{key}.kind"), "a runner's engine does the work itself: use \"simulated\", \"local\" or \"docker\""));
    }
    let raw = RawRunner {
        id: runner_id.to_string(),
        kind: engine.kind,
        max_concurrent_prebuilds: engine.max_concurrent_prebuilds,
        step_duration: engine.step_duration,
        sandbox: engine.sandbox,
        network_isolation: engine.network_isolation,
        docker_host: engine.docker_host,
        devcontainer_cli: engine.devcontainer_cli,
        docker_cli: engine.docker_cli,
        default_image: engine.default_image,
        root: engine.root,
        docker_config: engine.docker_config,
        ca_file: engine.ca_file,
        pass_env: engine.pass_env,
        registry: engine.registry,
        token: None,
        token_sha256: None,
        disconnect_grace: None,
    };
    runner_config(key, raw)
}

/// One runner's validated settings (what only the whole file can check,
/// such as unique IDs and tokens, is checked by the caller).
pub(super) fn runner_config(key: &str, runner: RawRunner) -> Result<RunnerConfig, ConfigError> {
    let id = uuid_key(&format!("{key}.id"), &runner.id)?;
    let kind = match runner.kind.as_str() {
        "simulated" => RunnerKind::Simulated,
        "local" => RunnerKind::Local,
        "docker" => RunnerKind::Docker,
        "remote" => RunnerKind::Remote,
        other => {
            return Err(err(
                format!("{key}.kind"),
                format!("{other:?} is not a runner kind; use \"simulated\", \"local\", \"docker\" or \"remote\""),
            ))
        }
    };
    let remote = remote_settings(key, kind, runner.token, runner.token_sha256, runner.disconnect_grace.as_deref())?;
    let max_concurrent_prebuilds = runner.max_concurrent_prebuilds.unwrap_or(4);
    if max_concurrent_prebuilds == 0 {
        return Err(err(format!("{key}.max_concurrent_prebuilds"), "must be at least 1"));
    }
    if kind != RunnerKind::Simulated && runner.step_duration.is_some() {
        return Err(err(format!("{key}.step_duration"), "only applies to simulated runners"));
    }
    let step_duration =
        optional_duration(&format!("{key}.step_duration"), runner.step_duration.as_deref())?.unwrap_or(Duration::from_millis(200));
    if kind != RunnerKind::Local && runner.sandbox.is_some() {
        return Err(err(format!("{key}.sandbox"), "only applies to local runners"));
    }
    if !matches!(kind, RunnerKind::Local | RunnerKind::Docker) && runner.network_isolation.is_some() {
        let hint = match kind {
            RunnerKind::Remote => " (a remote runner's is set in the [engine] of its own configuration)",
            _ => "",
        };
        return Err(err(format!("{key}.network_isolation"), format!("only applies to docker and local runners{hint}")));
    }
    let sandbox = runner.sandbox.unwrap_or(true);
    // Unsandboxed commands run in the host's own network namespace: there is
    // nothing to isolate them in.
    if kind == RunnerKind::Local && !sandbox && runner.network_isolation == Some(true) {
        return Err(err(
            format!("{key}.network_isolation"),
            "needs the sandbox: with sandbox = false commands run in the host's network (set network_isolation = false, or sandbox = true)",
        ));
    }
    let network_isolation = runner.network_isolation.unwrap_or(kind != RunnerKind::Local || sandbox);
    let docker_keys = [
        ("docker_host", runner.docker_host.is_some()),
        ("devcontainer_cli", runner.devcontainer_cli.is_some()),
        ("docker_cli", runner.docker_cli.is_some()),
        ("default_image", runner.default_image.is_some()),
        ("root", runner.root.is_some()),
        ("docker_config", runner.docker_config.is_some()),
        ("ca_file", runner.ca_file.is_some()),
        ("pass_env", runner.pass_env.is_some()),
        ("registry", runner.registry.is_some()),
    ];
    if let Some((name, _)) = docker_keys.iter().find(|(_, set)| *set).filter(|_| kind != RunnerKind::Docker) {
        return Err(err(format!("{key}.{name}"), "only applies to docker runners"));
    }
    if let Some(host) = &runner.docker_host {
        if !(host.starts_with("unix://") || host.starts_with("tcp://") || host.starts_with("http://")) {
            return Err(err(format!("{key}.docker_host"), format!("{host:?} must start with unix://, tcp:// or http://")));
        }
    }
    if runner.default_image.as_deref().is_some_and(|image| image.trim().is_empty()) {
        return Err(err(format!("{key}.default_image"), "must not be empty"));
    }
    let pass_env = runner.pass_env.unwrap_or_default();
    for (i, name) in pass_env.iter().enumerate() {
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(err(format!("{key}.pass_env[{i}]"), format!("{name:?} is not an environment variable name")));
        }
    }
    let registry = match &runner.registry {
        Some(text) => Some(RegistryName::parse(text).map_err(|reason| err(format!("{key}.registry"), reason))?),
        None => None,
    };
    let docker = DockerSettings {
        docker_host: runner.docker_host,
        devcontainer_cli: runner.devcontainer_cli,
        docker_cli: runner.docker_cli,
        default_image: runner.default_image,
        root: runner.root,
        docker_config: runner.docker_config,
        ca_file: runner.ca_file,
        pass_env,
        registry,
    };
    Ok(RunnerConfig { id, kind, max_concurrent_prebuilds, step_duration, sandbox, network_isolation, docker, remote })
}

/// A bearer token's SHA-256, from `token` (hashed here) or `token_sha256`
/// (64 hex digits); `None` when neither is set.
pub(super) fn token_digest(key: &str, token: Option<String>, token_sha256: Option<String>) -> Result<Option<[u8; 32]>, ConfigError> {
    match (token, token_sha256) {
        (Some(token), None) => {
            if token.len() < 8 {
                return Err(err(format!("{key}.token"), "must be at least 8 characters"));
            }
            Ok(Some(Sha256::digest(token.as_bytes()).into()))
        }
        (None, Some(hex_digest)) => {
            let bytes = hex::decode(hex_digest.trim()).map_err(|_| err(format!("{key}.token_sha256"), "must be 64 hex digits"))?;
            Ok(Some(<[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| err(format!("{key}.token_sha256"), "must be 64 hex digits"))?))
        }
        (Some(_), Some(_)) => Err(err(key, "set either token or token_sha256, not both")),
        (None, None) => Ok(None),
    }
}

/// A remote runner's token and grace period; other kinds take neither.
fn remote_settings(
    key: &str,
    kind: RunnerKind,
    token: Option<String>,
    token_sha256: Option<String>,
    grace: Option<&str>,
) -> Result<RemoteSettings, ConfigError> {
    let set = token.is_some() || token_sha256.is_some();
    if kind != RunnerKind::Remote {
        if let Some(name) = [("token", set), ("disconnect_grace", grace.is_some())].iter().find(|(_, s)| *s).map(|(n, _)| n) {
            return Err(err(format!("{key}.{name}"), "only applies to remote runners"));
        }
        return Ok(RemoteSettings::default());
    }
    let token_sha256 = token_digest(key, token, token_sha256)?
        .ok_or_else(|| err(format!("{key}.token"), "a remote runner needs its token (token or token_sha256)"))?;
    let grace = optional_duration(&format!("{key}.disconnect_grace"), grace)?.unwrap_or(RemoteSettings::default().grace);
    Ok(RemoteSettings { token_sha256: Some(token_sha256), grace })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNER: &str = "22222222-2222-4222-8222-222222222222";

    fn engine(text: &str) -> Result<RunnerConfig, ConfigError> {
        let raw: RawEngine = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        engine_config("engine", RUNNER, raw)
    }

    #[test]
    fn a_docker_runner_may_push_to_a_registry() {
        let local = engine("kind = \"docker\"").unwrap();
        assert_eq!(local.docker.registry, None, "snapshots stay local unless a registry is set");
        let pushing = engine("kind = \"docker\"\nregistry = \"registry.example.com:5000/prebuilds\"").unwrap();
        let registry = pushing.docker.registry.unwrap();
        assert_eq!(registry.repository("p"), "registry.example.com:5000/prebuilds/p");
        let cases = [
            ("kind = \"simulated\"\nregistry = \"r.example.com\"", "engine.registry: only applies to docker runners"),
            ("kind = \"docker\"\nregistry = \"https://r.example.com\"", "engine.registry: \"https://r.example.com\""),
            ("kind = \"docker\"\nregistry = \"prebuilds\"", "engine.registry: \"prebuilds\" is not a registry host"),
            ("kind = \"docker\"\nregistry = \"r.example.com/Upper\"", "engine.registry: \"Upper\" cannot be part of a repository name"),
        ];
        for (text, expected) in cases {
            let error = engine(text).unwrap_err();
            assert!(error.0.starts_with(expected), "expected {expected}, got {error}");
        }
    }
}
