//! `[projects.prebuilds.git]`: how a project's prebuilds follow its
//! repository (branches, webhook secret, polling, path filter, bursts,
//! incremental prebuilds), checked once at load with errors that name the
//! key.

use super::{err, optional_duration, ConfigError};
use crate::catalog::GitSettings;
use crate::triggers::glob::Glob;
use serde::Deserialize;
use std::time::Duration;

/// The shortest poll interval: polling is `git ls-remote` against someone's
/// git server, and sub-second polling would hammer it.
const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// A webhook secret shorter than this is guessable.
const MIN_SECRET_BYTES: usize = 16;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGit {
    branches: Option<Vec<String>>,
    webhook_secret: Option<String>,
    webhook_secret_env: Option<String>,
    poll_interval: Option<String>,
    paths: Option<Vec<String>>,
    #[serde(default)]
    cancel_superseded: bool,
    incremental: Option<bool>,
    full_every: Option<u32>,
    max_base_distance: Option<u32>,
    warm_pool_branch: Option<String>,
}

/// Validates the section; `key` is `projects[i].prebuilds.git`. `env` reads
/// an environment variable (the process's, or a test's).
pub(super) fn git_settings(key: &str, raw: RawGit, env: &dyn Fn(&str) -> Option<String>) -> Result<GitSettings, ConfigError> {
    let mut branches = Vec::new();
    for (i, branch) in raw.branches.unwrap_or_default().iter().enumerate() {
        let glob = Glob::parse(branch).map_err(|e| err(format!("{key}.branches[{i}]"), e))?;
        if glob.as_str().starts_with("refs/") {
            return Err(err(format!("{key}.branches[{i}]"), format!("{branch:?}: name the branch (\"main\"), not its ref")));
        }
        branches.push(glob);
    }
    let webhook_secret = match (raw.webhook_secret, raw.webhook_secret_env) {
        (Some(_), Some(_)) => return Err(err(format!("{key}.webhook_secret"), "give webhook_secret or webhook_secret_env, not both")),
        (Some(secret), None) => Some(secret_bytes(&format!("{key}.webhook_secret"), secret)?),
        (None, Some(name)) => {
            let value = env(&name).ok_or_else(|| {
                err(format!("{key}.webhook_secret_env"), format!("the environment variable {name} is not set (or not valid UTF-8)"))
            })?;
            Some(secret_bytes(&format!("{key}.webhook_secret_env"), value)?)
        }
        (None, None) => None,
    };
    let poll_interval = optional_duration(&format!("{key}.poll_interval"), raw.poll_interval.as_deref())?;
    if poll_interval.is_some_and(|interval| interval < MIN_POLL_INTERVAL) {
        return Err(err(format!("{key}.poll_interval"), "must be at least 1s"));
    }
    let paths = match raw.paths {
        Some(paths) => {
            if paths.is_empty() {
                return Err(err(format!("{key}.paths"), "must list at least one pattern; leave it out to prebuild every push"));
            }
            let globs = paths
                .iter()
                .enumerate()
                .map(|(i, path)| Glob::parse(path.trim_start_matches("./")).map_err(|e| err(format!("{key}.paths[{i}]"), e)))
                .collect::<Result<Vec<_>, _>>()?;
            Some(globs)
        }
        None => None,
    };
    let full_every = raw.full_every.unwrap_or(10);
    if full_every == 0 {
        return Err(err(format!("{key}.full_every"), "must be at least 1 (1: every prebuild is full)"));
    }
    let max_base_distance = raw.max_base_distance.unwrap_or(100);
    if !(1..=10_000).contains(&max_base_distance) {
        return Err(err(format!("{key}.max_base_distance"), format!("must be between 1 and 10000, got {max_base_distance}")));
    }
    let warm_pool_branch = match raw.warm_pool_branch {
        Some(branch) => {
            let glob = Glob::parse(&branch).map_err(|e| err(format!("{key}.warm_pool_branch"), e))?;
            if !glob.is_literal() {
                return Err(err(format!("{key}.warm_pool_branch"), format!("{branch:?} must be one branch, not a pattern")));
            }
            Some(glob.as_str().to_string())
        }
        None => None,
    };
    Ok(GitSettings {
        branches,
        webhook_secret,
        poll_interval,
        paths,
        cancel_superseded: raw.cancel_superseded,
        incremental: raw.incremental.unwrap_or(true),
        full_every,
        max_base_distance,
        warm_pool_branch,
    })
}

fn secret_bytes(key: &str, secret: String) -> Result<Vec<u8>, ConfigError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(err(key, format!("the webhook secret must be at least {MIN_SECRET_BYTES} bytes long (e.g. `openssl rand -hex 32`)")));
    }
    Ok(secret.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<GitSettings, ConfigError> {
        let raw: RawGit = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        git_settings("git", raw, &|name| (name == "HOOK_SECRET").then(|| "from-the-environment-0123".to_string()))
    }

    #[test]
    fn defaults_and_values() {
        let git = parse("").unwrap();
        assert!(git.branches.is_empty() && git.webhook_secret.is_none() && git.poll_interval.is_none() && git.paths.is_none());
        assert!(git.incremental && !git.cancel_superseded);
        assert_eq!((git.full_every, git.max_base_distance), (10, 100));
        assert!(git.tracks("main", Some("main")) && !git.tracks("dev", Some("main")), "the default branch by default");

        let git = parse(
            "branches = [\"main\", \"release/*\"]\nwebhook_secret_env = \"HOOK_SECRET\"\npoll_interval = \"2m\"\npaths = [\"./.devcontainer/**\", \"package-lock.json\"]\ncancel_superseded = true\nincremental = false\nfull_every = 3\nmax_base_distance = 20\nwarm_pool_branch = \"main\"",
        )
        .unwrap();
        assert!(git.tracks("release/1", None) && git.tracks("main", None) && !git.tracks("dev", Some("dev")));
        assert_eq!(git.webhook_secret.as_deref(), Some(&b"from-the-environment-0123"[..]));
        assert_eq!(git.poll_interval, Some(Duration::from_secs(120)));
        assert_eq!(git.paths.as_ref().map(|p| p[0].as_str()), Some(".devcontainer/**"));
        assert!(git.cancel_superseded && !git.incremental);
        assert_eq!((git.full_every, git.max_base_distance, git.warm_pool_branch.as_deref()), (3, 20, Some("main")));
        assert!(!format!("{git:?}").contains("from-the-environment"), "Debug hides the secret");
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("branches = [\"\"]", "git.branches[0]"),
            ("branches = [\"refs/heads/main\"]", "git.branches[0]"),
            ("webhook_secret = \"short\"", "git.webhook_secret"),
            ("webhook_secret = \"0123456789abcdef0\"\nwebhook_secret_env = \"HOOK_SECRET\"", "git.webhook_secret"),
            ("webhook_secret_env = \"MISSING\"", "git.webhook_secret_env: the environment variable MISSING"),
            ("poll_interval = \"100ms\"", "git.poll_interval"),
            ("poll_interval = \"often\"", "git.poll_interval"),
            ("paths = []", "git.paths"),
            ("paths = [\"a**\"]", "git.paths[0]"),
            ("full_every = 0", "git.full_every"),
            ("max_base_distance = 0", "git.max_base_distance"),
            ("warm_pool_branch = \"release/*\"", "git.warm_pool_branch"),
        ];
        for (text, key) in cases {
            let error = parse(text).unwrap_err();
            assert!(error.0.starts_with(key), "expected {key}, got {error}");
        }
        assert!(parse("colour = 1").unwrap_err().0.contains("colour"));
    }
}
