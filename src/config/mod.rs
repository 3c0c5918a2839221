//! The configuration file (TOML), parsed once into typed, validated values.
//!
//! Unknown keys, bad UUIDs, dangling references and out-of-range values are
//! rejected at start with a message that names the key
//! (`projects[0].prebuilds.environment_class_ids[1]: ...`), so nothing
//! downstream re-parses or re-checks a string.

mod classes;
mod git;
mod limits;
mod runners;

pub use classes::{capability_name, security_opt, DEFAULT_CAPABILITIES};
pub use limits::Limits;
pub use runners::{engine_config, RawEngine};

use crate::catalog::{Catalog, Organization, PrebuildSettings, Project};
use crate::proto::gitpod::v1::{Principal, Subject};
use crate::store::postgres::PostgresUrl;
use crate::tokens::TokenKey;
use crate::validate::is_uuid;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Base of `logUrl`, without a trailing slash; `None`: `http://` and the
    /// address the server listens on once bound (so port 0 gives the real
    /// port).
    pub public_url: Option<String>,
    /// How long a client may take to send its request headers (HTTP/1.1)
    /// before the connection is closed: a slow client holds nothing forever.
    pub header_read_timeout: Duration,
    /// Runner files, logs and the token secret; also the SQLite database
    /// unless `postgres_url` is set.
    pub data_dir: PathBuf,
    /// `[storage] postgres_url`: keep prebuilds and warm pools in this
    /// PostgreSQL database instead of SQLite in `data_dir`.
    pub postgres_url: Option<PostgresUrl>,
    /// `[storage] token_secret`: the secret that signs page tokens and logs
    /// tokens, given rather than kept in the data dir or the database (so
    /// replicas, or a fresh data dir, accept each other's tokens by
    /// configuration).
    pub token_secret: Option<TokenKey>,
    pub catalog: Catalog,
    pub api_keys: Vec<ApiKey>,
    pub retention: Retention,
    /// How often the reconciler passes when nothing wakes it.
    pub reconcile_interval: Duration,
    /// Whether the reconciler runs. Off, the API serves and stores but
    /// nothing moves (maintenance, or testing the API alone).
    pub reconcile: bool,
    /// Serve the benchmark's baseline routes (`[bench] baseline = true`).
    pub bench_baseline: bool,
    /// `[limits]`: what the server takes on before it refuses more.
    pub limits: Limits,
}

/// An API key, kept only as the SHA-256 of its token.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub token_sha256: [u8; 32],
    pub organization_id: String,
    pub subject: Subject,
}

/// How long finished prebuilds are kept before automatic deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub completed: Duration,
    pub failed: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { completed: Duration::from_secs(7 * 86_400), failed: Duration::from_secs(86_400) }
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

pub(crate) fn err(key: impl std::fmt::Display, message: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{key}: {message}"))
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Prebuild timeout when neither the request nor the project sets one.
pub const DEFAULT_PREBUILD_TIMEOUT: Duration = Duration::from_secs(3600);
pub const MIN_PREBUILD_TIMEOUT_SECONDS: i64 = 300;
pub const MAX_PREBUILD_TIMEOUT_SECONDS: i64 = 7200;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default)]
    reconciler: RawReconciler,
    #[serde(default)]
    bench: RawBench,
    #[serde(default)]
    limits: limits::RawLimits,
    #[serde(default)]
    organizations: Vec<RawOrganization>,
    #[serde(default)]
    api_keys: Vec<RawApiKey>,
    #[serde(default)]
    runners: Vec<runners::RawRunner>,
    #[serde(default)]
    environment_classes: Vec<classes::RawEnvironmentClass>,
    #[serde(default)]
    projects: Vec<RawProject>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    public_url: Option<String>,
    header_read_timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    data_dir: Option<PathBuf>,
    postgres_url: Option<String>,
    token_secret: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    completed: Option<String>,
    failed: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBench {
    #[serde(default)]
    baseline: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReconciler {
    interval: Option<String>,
    enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrganization {
    id: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKey {
    token: Option<String>,
    token_sha256: Option<String>,
    organization_id: String,
    subject_id: String,
    principal: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    id: String,
    organization_id: String,
    name: String,
    repository: String,
    default_environment_class_id: Option<String>,
    devcontainer_path: Option<String>,
    #[serde(default)]
    prebuilds: RawPrebuilds,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPrebuilds {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    environment_class_ids: Vec<String>,
    timeout: Option<String>,
    daily_schedule_hour_utc: Option<u8>,
    executor: Option<RawSubject>,
    git: Option<git::RawGit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubject {
    id: String,
    principal: Option<String>,
}

/// Command-line overrides, applied over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| err(path.display(), format!("cannot read: {e}")))?;
        Config::parse(&text, overrides).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError(e.to_string().trim_end().to_string()))?;
        raw.validate(overrides)
    }

    /// The embedded default: a demo organization, runner, environment classes
    /// and projects, and the development API key [`DEMO_API_KEY`].
    pub fn demo(overrides: &Overrides) -> Config {
        let mut config =
            Config::parse(DEMO_CONFIG, overrides).unwrap_or_else(|e| panic!("the embedded demo configuration is invalid: {e}"));
        config.catalog.is_demo = true;
        config
    }
}

/// The development API key of the embedded default configuration. It only
/// exists when prebuildd runs without a config file.
pub const DEMO_API_KEY: &str = "prebuildd-dev-key";
/// The demo project, with the ID the API reference's examples use, so they
/// work unchanged against the embedded default.
pub const DEMO_PROJECT_ID: &str = "b0e12f6c-4c67-429d-a4a6-d9838b5da047";
pub const DEMO_ENVIRONMENT_CLASS_ID: &str = "d2c94c27-3b76-4a42-b88c-95a85e392c68";
pub const DEMO_ORGANIZATION_ID: &str = "8d9e8f4a-1b2c-4d3e-9f00-0a1b2c3d4e5f";

const DEMO_CONFIG: &str = include_str!("demo.toml");

impl RawConfig {
    fn validate(self, overrides: &Overrides) -> Result<Config, ConfigError> {
        let listen_text = overrides.listen.clone().or(self.server.listen).unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr =
            listen_text.parse().map_err(|_| err("server.listen", format!("{listen_text:?} is not an address like 127.0.0.1:8080")))?;
        let public_url = match self.server.public_url {
            Some(url) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(err("server.public_url", format!("{url:?} must start with http:// or https://")));
                }
                Some(url.trim_end_matches('/').to_string())
            }
            None => None,
        };
        let header_read_timeout =
            optional_duration("server.header_read_timeout", self.server.header_read_timeout.as_deref())?.unwrap_or(Duration::from_secs(30));
        if header_read_timeout.is_zero() {
            return Err(err("server.header_read_timeout", "must be more than zero"));
        }
        let data_dir = overrides.data_dir.clone().or(self.storage.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let postgres_url =
            self.storage.postgres_url.as_deref().map(PostgresUrl::parse).transpose().map_err(|e| err("storage.postgres_url", e))?;
        let token_secret = self.storage.token_secret.as_deref().map(parse_token_secret).transpose()?;

        let defaults = Retention::default();
        let retention = Retention {
            completed: optional_duration("retention.completed", self.retention.completed.as_deref())?.unwrap_or(defaults.completed),
            failed: optional_duration("retention.failed", self.retention.failed.as_deref())?.unwrap_or(defaults.failed),
        };

        let reconcile_interval =
            optional_duration("reconciler.interval", self.reconciler.interval.as_deref())?.unwrap_or(Duration::from_secs(1));
        if reconcile_interval.is_zero() || reconcile_interval > Duration::from_secs(3600) {
            return Err(err("reconciler.interval", "must be between 1ms and 1h"));
        }

        let mut catalog = Catalog::default();
        for (i, org) in self.organizations.into_iter().enumerate() {
            let key = format!("organizations[{i}]");
            let id = uuid_key(&format!("{key}.id"), &org.id)?;
            if org.name.trim().is_empty() {
                return Err(err(format!("{key}.name"), "must not be empty"));
            }
            if catalog.organizations.insert(id.clone(), Organization { id: id.clone(), name: org.name }).is_some() {
                return Err(err(format!("{key}.id"), format!("{id} is listed twice")));
            }
        }

        let mut api_keys = Vec::new();
        for (i, key_cfg) in self.api_keys.into_iter().enumerate() {
            let key = format!("api_keys[{i}]");
            let token_sha256 = runners::token_digest(&key, key_cfg.token, key_cfg.token_sha256)?
                .ok_or_else(|| err(&key, "one of token or token_sha256 is required"))?;
            let organization_id = uuid_key(&format!("{key}.organization_id"), &key_cfg.organization_id)?;
            if !catalog.organizations.contains_key(&organization_id) {
                return Err(err(format!("{key}.organization_id"), format!("no organization {organization_id} is configured")));
            }
            let subject_id = uuid_key(&format!("{key}.subject_id"), &key_cfg.subject_id)?;
            let principal = principal(&format!("{key}.principal"), key_cfg.principal.as_deref(), Principal::User)?;
            if api_keys.iter().any(|k: &ApiKey| k.token_sha256 == token_sha256) {
                return Err(err(&key, "the same token is configured twice"));
            }
            api_keys.push(ApiKey { token_sha256, organization_id, subject: Subject { id: subject_id, principal: principal as i32 } });
        }

        for (i, runner) in self.runners.into_iter().enumerate() {
            let key = format!("runners[{i}]");
            let config = runners::runner_config(&key, runner)?;
            let id = config.id.clone();
            if let Some(digest) = config.remote.token_sha256 {
                if api_keys.iter().any(|k: &ApiKey| k.token_sha256 == digest)
                    || catalog.runners.values().any(|r| r.remote.token_sha256 == Some(digest))
                {
                    return Err(err(format!("{key}.token"), "a runner token must differ from every API key and other runner token"));
                }
            }
            if catalog.runners.insert(id.clone(), config).is_some() {
                return Err(err(format!("{key}.id"), format!("{id} is listed twice")));
            }
        }

        for (i, class) in self.environment_classes.into_iter().enumerate() {
            let key = format!("environment_classes[{i}]");
            let class = classes::class_config(&key, class)?;
            let (id, runner_id) = (class.id.clone(), class.runner_id.clone());
            if !catalog.runners.contains_key(&runner_id) {
                return Err(err(format!("{key}.runner_id"), format!("no runner {runner_id} is configured")));
            }
            if catalog.environment_classes.insert(id.clone(), class).is_some() {
                return Err(err(format!("{key}.id"), format!("{id} is listed twice")));
            }
        }

        for (i, project) in self.projects.into_iter().enumerate() {
            let key = format!("projects[{i}]");
            let id = uuid_key(&format!("{key}.id"), &project.id)?;
            let organization_id = uuid_key(&format!("{key}.organization_id"), &project.organization_id)?;
            if !catalog.organizations.contains_key(&organization_id) {
                return Err(err(format!("{key}.organization_id"), format!("no organization {organization_id} is configured")));
            }
            if project.repository.trim().is_empty() {
                return Err(err(format!("{key}.repository"), "must not be empty"));
            }
            let mut environment_class_ids = Vec::new();
            for (j, class_id) in project.prebuilds.environment_class_ids.iter().enumerate() {
                let class_key = format!("{key}.prebuilds.environment_class_ids[{j}]");
                let class_id = uuid_key(&class_key, class_id)?;
                if !catalog.environment_classes.contains_key(&class_id) {
                    return Err(err(class_key, format!("no environment class {class_id} is configured")));
                }
                if environment_class_ids.contains(&class_id) {
                    return Err(err(class_key, format!("{class_id} is listed twice")));
                }
                environment_class_ids.push(class_id);
            }
            let default_environment_class_id = match project.default_environment_class_id {
                Some(class_id) => {
                    let class_key = format!("{key}.default_environment_class_id");
                    let class_id = uuid_key(&class_key, &class_id)?;
                    if !catalog.environment_classes.contains_key(&class_id) {
                        return Err(err(class_key, format!("no environment class {class_id} is configured")));
                    }
                    Some(class_id)
                }
                None => None,
            };
            let timeout = match optional_duration(&format!("{key}.prebuilds.timeout"), project.prebuilds.timeout.as_deref())? {
                Some(timeout) => {
                    let seconds = timeout.as_secs_f64();
                    if seconds < MIN_PREBUILD_TIMEOUT_SECONDS as f64 || seconds > MAX_PREBUILD_TIMEOUT_SECONDS as f64 {
                        return Err(err(format!("{key}.prebuilds.timeout"), "must be between 300s and 7200s"));
                    }
                    timeout
                }
                None => DEFAULT_PREBUILD_TIMEOUT,
            };
            if let Some(hour) = project.prebuilds.daily_schedule_hour_utc {
                if hour > 23 {
                    return Err(err(format!("{key}.prebuilds.daily_schedule_hour_utc"), format!("must be between 0 and 23, got {hour}")));
                }
                if project.prebuilds.executor.is_none() {
                    return Err(err(
                        format!("{key}.prebuilds.daily_schedule_hour_utc"),
                        "needs prebuilds.executor: scheduled prebuilds are created and run as the configured executor",
                    ));
                }
            }
            let executor = match project.prebuilds.executor {
                Some(executor) => {
                    let executor_key = format!("{key}.prebuilds.executor");
                    let subject_id = uuid_key(&format!("{executor_key}.id"), &executor.id)?;
                    let principal =
                        principal(&format!("{executor_key}.principal"), executor.principal.as_deref(), Principal::ServiceAccount)?;
                    Some(Subject { id: subject_id, principal: principal as i32 })
                }
                None => None,
            };
            let git = project
                .prebuilds
                .git
                .map(|raw| git::git_settings(&format!("{key}.prebuilds.git"), raw, &|name| std::env::var(name).ok()))
                .transpose()?;
            if git.as_ref().is_some_and(|git| git.webhook_secret.is_some() || git.poll_interval.is_some()) && executor.is_none() {
                return Err(err(
                    format!("{key}.prebuilds.git"),
                    "webhooks and polling need prebuilds.executor: prebuilds a push starts are created and run as the configured executor",
                ));
            }
            let devcontainer_path =
                project.devcontainer_path.map(|path| devcontainer_path(&format!("{key}.devcontainer_path"), &path)).transpose()?;
            let project = Project {
                id: id.clone(),
                organization_id,
                name: project.name,
                repository: project.repository,
                default_environment_class_id,
                devcontainer_path,
                prebuilds: PrebuildSettings {
                    enabled: project.prebuilds.enabled,
                    environment_class_ids,
                    timeout,
                    daily_schedule_hour_utc: project.prebuilds.daily_schedule_hour_utc,
                    executor,
                    git,
                },
            };
            if catalog.projects.insert(id.clone(), project).is_some() {
                return Err(err(format!("{key}.id"), format!("{id} is listed twice")));
            }
        }

        Ok(Config {
            listen,
            public_url,
            header_read_timeout,
            data_dir,
            postgres_url,
            token_secret,
            catalog,
            api_keys,
            retention,
            reconcile_interval,
            reconcile: self.reconciler.enabled.unwrap_or(true),
            bench_baseline: self.bench.baseline,
            limits: self.limits.validate()?,
        })
    }
}

/// `[storage] token_secret`: 32 random bytes as 64 hex digits (what
/// `openssl rand -hex 32` prints).
fn parse_token_secret(text: &str) -> Result<TokenKey, ConfigError> {
    let wrong = || err("storage.token_secret", "must be 64 hex digits (32 random bytes, e.g. from `openssl rand -hex 32`)");
    let bytes = hex::decode(text.trim()).map_err(|_| wrong())?;
    let key = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| wrong())?;
    if key.iter().all(|byte| *byte == key[0]) {
        return Err(err("storage.token_secret", "is not random (every byte is the same); use `openssl rand -hex 32`"));
    }
    Ok(TokenKey::from_bytes(key))
}

/// A project's `devcontainer_path`: a relative path inside the repository
/// to a `.json` file (the runner checks again, through symlinks, that it
/// stays inside the clone).
fn devcontainer_path(key: &str, path: &str) -> Result<String, ConfigError> {
    let trimmed = path.trim().trim_start_matches("./");
    let relative = Path::new(trimmed);
    let plain = relative.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    if trimmed.is_empty() || !plain {
        return Err(err(
            key,
            format!(
                "{path:?} must be a path inside the repository, relative to its root (like \".devcontainer/python/devcontainer.json\")"
            ),
        ));
    }
    if !trimmed.ends_with(".json") {
        return Err(err(key, format!("{path:?} must name a .json file")));
    }
    Ok(trimmed.to_string())
}

fn uuid_key(key: &str, value: &str) -> Result<String, ConfigError> {
    if is_uuid(value) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(err(key, format!("{value:?} is not a UUID")))
    }
}

fn principal(key: &str, value: Option<&str>, default: Principal) -> Result<Principal, ConfigError> {
    match value {
        None => Ok(default),
        Some(name) => match Principal::from_str_name(name) {
            Some(Principal::Unspecified) | None => {
                Err(err(key, format!("{name:?} is not a principal; use e.g. \"PRINCIPAL_USER\" or \"PRINCIPAL_SERVICE_ACCOUNT\"")))
            }
            Some(principal) => Ok(principal),
        },
    }
}

/// The least memory a container can be limited to (Docker refuses less).
const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;

/// A size like `"256MiB"`, `"2GiB"`, `"512MB"` or `"1048576"` (bytes).
pub(crate) fn parse_memory(key: &str, text: &str) -> Result<u64, ConfigError> {
    let bad = || err(key, format!("{text:?} is not a size like \"256MiB\", \"2GiB\" or \"512MB\""));
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "k" | "K" => 1 << 10,
        "MiB" | "m" | "M" => 1 << 20,
        "GiB" | "g" | "G" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes < MIN_MEMORY_BYTES as f64 || bytes > u64::MAX as f64 / 2.0 {
        return Err(err(key, format!("{text:?} must be at least 6MiB")));
    }
    Ok(bytes as u64)
}

pub(crate) fn optional_duration(key: &str, value: Option<&str>) -> Result<Option<Duration>, ConfigError> {
    value
        .map(|text| {
            humantime::parse_duration(text)
                .map_err(|e| err(key, format!("{text:?} is not a duration like \"200ms\", \"3600s\" or \"7d\" ({e})")))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{HostBindMounts, Resources, RunnerKind};
    use sha2::{Digest, Sha256};

    const ORG: &str = "11111111-1111-4111-8111-111111111111";
    const RUNNER: &str = "22222222-2222-4222-8222-222222222222";
    const CLASS: &str = "33333333-3333-4333-8333-333333333333";
    const PROJECT: &str = "44444444-4444-4444-8444-444444444444";

    fn base(extra: &str) -> String {
        format!(
            r#"
[[organizations]]
id = "{ORG}"
name = "Acme"

[[api_keys]]
token = "secret-token-1"
organization_id = "{ORG}"
subject_id = "55555555-5555-4555-8555-555555555555"
principal = "PRINCIPAL_USER"

[[runners]]
id = "{RUNNER}"
kind = "simulated"
step_duration = "50ms"

[[environment_classes]]
id = "{CLASS}"
runner_id = "{RUNNER}"
name = "small"

[[projects]]
id = "{PROJECT}"
organization_id = "{ORG}"
name = "backend"
repository = "sim://ok"
default_environment_class_id = "{CLASS}"
{extra}
"#
        )
    }

    #[test]
    fn a_full_config_parses() {
        let config = Config::parse(&base("[projects.prebuilds]\nenabled = true\nenvironment_class_ids = [\"33333333-3333-4333-8333-333333333333\"]\ntimeout = \"1800s\"\ndaily_schedule_hour_utc = 3\nexecutor = { id = \"66666666-6666-4666-8666-666666666666\", principal = \"PRINCIPAL_SERVICE_ACCOUNT\" }\n"), &Overrides::default()).unwrap();
        let project = &config.catalog.projects[PROJECT];
        assert!(project.prebuilds.enabled);
        assert_eq!(project.prebuilds.timeout, Duration::from_secs(1800));
        assert_eq!(project.prebuilds.daily_schedule_hour_utc, Some(3));
        assert_eq!(config.catalog.runners[RUNNER].step_duration, Duration::from_millis(50));
        assert_eq!(config.public_url, None, "without one, the address it listens on (known once bound)");
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                base("[projects.prebuilds]\nenabled = true\nenvironment_class_ids = [\"nope\"]\n"),
                "projects[0].prebuilds.environment_class_ids[0]",
            ),
            (
                base("[projects.prebuilds]\nenabled = true\nenvironment_class_ids = [\"99999999-3333-4333-8333-333333333333\"]\n"),
                "projects[0].prebuilds.environment_class_ids[0]",
            ),
            (base("[projects.prebuilds]\ntimeout = \"10s\"\n"), "projects[0].prebuilds.timeout"),
            (base("[projects.prebuilds]\ndaily_schedule_hour_utc = 24\n"), "projects[0].prebuilds.daily_schedule_hour_utc"),
            (base("[projects.prebuilds]\ndaily_schedule_hour_utc = 3\n"), "projects[0].prebuilds.daily_schedule_hour_utc"),
            (base("").replace("runner_id = \"22222222", "runner_id = \"77777777"), "environment_classes[0].runner_id"),
            (base("").replace("kind = \"simulated\"", "kind = \"vm\""), "runners[0].kind"),
            (base("").replace("principal = \"PRINCIPAL_USER\"", "principal = \"USER\""), "api_keys[0].principal"),
            (base("").replace("[[organizations]]\nid = \"11111111", "[[organizations]]\nid = \"x1111111"), "organizations[0].id"),
        ];
        for (text, key) in cases {
            let error = Config::parse(&text, &Overrides::default()).unwrap_err();
            assert!(error.0.starts_with(key), "expected {key}, got {error}");
        }
    }

    #[test]
    fn class_policies_runner_credentials_and_devcontainer_paths() {
        let docker = base("")
            .replace(
                "kind = \"simulated\"\nstep_duration = \"50ms\"",
                "kind = \"docker\"\ndocker_config = \"/etc/prebuildd/docker\"\nca_file = \"/etc/ssl/registry-ca.pem\"\npass_env = [\"NPM_TOKEN\", \"HTTPS_PROXY\"]",
            )
            .replace(
                "name = \"small\"",
                "name = \"small\"\nallow_capabilities = [\"sys_ptrace\", \"CAP_NET_ADMIN\"]\nallow_security_opt = [\"seccomp:unconfined\"]\nallow_privileged = true\nallow_devices = [\"/dev/fuse\"]\nhost_bind_mounts = \"refuse\"",
            )
            .replace("repository = ", "devcontainer_path = \"./.devcontainer/python/devcontainer.json\"\nrepository = ");
        let config = Config::parse(&docker, &Overrides::default()).unwrap();
        let policy = &config.catalog.environment_classes[CLASS].policy;
        assert_eq!(policy.class_name, "small");
        assert_eq!(policy.allow_capabilities, vec!["SYS_PTRACE", "NET_ADMIN"]);
        assert_eq!(policy.allow_security_opt, vec!["seccomp=unconfined"]);
        assert!(policy.allow_privileged && !policy.allow_host_network && !policy.allow_gpus);
        assert_eq!(policy.host_bind_mounts, HostBindMounts::Refuse);
        let runner = &config.catalog.runners[RUNNER].docker;
        assert_eq!(runner.pass_env, vec!["NPM_TOKEN", "HTTPS_PROXY"]);
        assert_eq!(runner.ca_file.as_deref(), Some(Path::new("/etc/ssl/registry-ca.pem")));
        let project = config.catalog.projects.values().next().unwrap();
        assert_eq!(project.devcontainer_path.as_deref(), Some(".devcontainer/python/devcontainer.json"));

        let cases = [
            (
                docker.replace("\"sys_ptrace\"", "\"SYS_PTRAC\""),
                "environment_classes[0].allow_capabilities[0]: \"SYS_PTRAC\" is not a Linux capability",
            ),
            (docker.replace("\"seccomp:unconfined\"", "\"unconfined\""), "environment_classes[0].allow_security_opt[0]"),
            (docker.replace("\"/dev/fuse\"", "\"fuse\""), "environment_classes[0].allow_devices[0]"),
            (docker.replace("\"refuse\"", "\"deny\""), "environment_classes[0].host_bind_mounts"),
            (docker.replace("\"NPM_TOKEN\"", "\"NPM-TOKEN\""), "runners[0].pass_env[0]"),
            (docker.replace("./.devcontainer/python/devcontainer.json", "../elsewhere.json"), "projects[0].devcontainer_path"),
            (docker.replace("./.devcontainer/python/devcontainer.json", "/etc/passwd.json"), "projects[0].devcontainer_path"),
            (docker.replace("./.devcontainer/python/devcontainer.json", ".devcontainer/x.yaml"), "projects[0].devcontainer_path"),
            (base("").replace("step_duration = \"50ms\"", "pass_env = []"), "runners[0].pass_env: only applies to docker runners"),
        ];
        for (text, expected) in cases {
            let error = Config::parse(&text, &Overrides::default()).unwrap_err();
            assert!(error.0.starts_with(expected), "expected {expected}, got {error}");
        }
    }

    #[test]
    fn runner_and_class_settings_parse_and_are_checked() {
        let docker = base("")
            .replace(
                "kind = \"simulated\"\nstep_duration = \"50ms\"",
                "kind = \"docker\"\ndocker_host = \"unix:///run/docker.sock\"\ndefault_image = \"debian:12\"",
            )
            .replace("name = \"small\"", "name = \"small\"\ncpus = 1.5\nmemory = \"256MiB\"");
        let config = Config::parse(&docker, &Overrides::default()).unwrap();
        let runner = &config.catalog.runners[RUNNER];
        assert_eq!(runner.kind, RunnerKind::Docker);
        assert_eq!(runner.docker.docker_host.as_deref(), Some("unix:///run/docker.sock"));
        assert_eq!(runner.docker.default_image.as_deref(), Some("debian:12"));
        let resources = config.catalog.environment_classes[CLASS].resources;
        assert_eq!(resources, Resources { nano_cpus: Some(1_500_000_000), memory_bytes: Some(256 << 20) });
        assert!(runner.network_isolation, "on unless the runner opts out");
        let opted_out = Config::parse(&docker.replace("default_image", "network_isolation = false\ndefault_image"), &Overrides::default());
        assert!(!opted_out.unwrap().catalog.runners[RUNNER].network_isolation);
        let unsandboxed = base("").replace("kind = \"simulated\"\nstep_duration = \"50ms\"", "kind = \"local\"\nsandbox = false");
        let unsandboxed = Config::parse(&unsandboxed, &Overrides::default()).unwrap();
        assert!(!unsandboxed.catalog.runners[RUNNER].network_isolation, "commands on the host's network have nothing to isolate them");
        let egress = docker.replace("cpus = 1.5", "cpus = 1.5\nallow_egress = [\"10.1.2.7/24\", \"192.168.7.9:5000\", \"10.1.2.0/24\"]");
        let allowed = &Config::parse(&egress, &Overrides::default()).unwrap().catalog.environment_classes[CLASS].policy.allow_egress;
        let allowed: Vec<String> = allowed.iter().map(ToString::to_string).collect();
        assert_eq!(allowed, ["10.1.2.0/24", "192.168.7.9:5000"], "read once each, in their canonical spelling");

        let cases = [
            (egress.replace("192.168.7.9:5000", "registry.internal:5000"), "environment_classes[0].allow_egress[1]"),
            (base("").replace("step_duration = \"50ms\"", "network_isolation = false"), "runners[0].network_isolation"),
            (
                base("").replace(
                    "kind = \"simulated\"\nstep_duration = \"50ms\"",
                    "kind = \"local\"\nsandbox = false\nnetwork_isolation = true",
                ),
                "runners[0].network_isolation",
            ),
            (docker.replace("memory = \"256MiB\"", "memory = \"lots\""), "environment_classes[0].memory"),
            (docker.replace("memory = \"256MiB\"", "memory = \"1KiB\""), "environment_classes[0].memory"),
            (docker.replace("cpus = 1.5", "cpus = 0.0"), "environment_classes[0].cpus"),
            (docker.replace("unix:///run/docker.sock", "/run/docker.sock"), "runners[0].docker_host"),
            (base("").replace("step_duration = \"50ms\"", "default_image = \"x\""), "runners[0].default_image"),
            (base("").replace("step_duration = \"50ms\"", "sandbox = false"), "runners[0].sandbox"),
        ];
        for (text, key) in cases {
            let error = Config::parse(&text, &Overrides::default()).unwrap_err();
            assert!(error.0.starts_with(key), "expected {key}, got {error}");
        }
        assert_eq!(parse_memory("k", "2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_memory("k", "512MB").unwrap(), 512_000_000);
        assert_eq!(parse_memory("k", "8388608").unwrap(), 8 << 20);
    }

    #[test]
    fn remote_runners_take_a_token_and_a_grace_period() {
        let remote = base("").replace(
            "kind = \"simulated\"\nstep_duration = \"50ms\"",
            "kind = \"remote\"\ntoken = \"runner-token-1\"\ndisconnect_grace = \"90s\"",
        );
        let config = Config::parse(&remote, &Overrides::default()).unwrap();
        let runner = &config.catalog.runners[RUNNER];
        assert_eq!(runner.kind, RunnerKind::Remote);
        assert_eq!(runner.remote.token_sha256, Some(Sha256::digest(b"runner-token-1").into()));
        assert_eq!(runner.remote.grace, Duration::from_secs(90));

        let cases = [
            (remote.replace("token = \"runner-token-1\"\n", ""), "runners[0].token"),
            (remote.replace("runner-token-1", "secret-token-1"), "runners[0].token"),
            (remote.replace("runner-token-1", "short"), "runners[0].token"),
            (remote.replace("90s", "soon"), "runners[0].disconnect_grace"),
            (remote.replace("disconnect_grace = \"90s\"", "step_duration = \"1s\""), "runners[0].step_duration"),
            (base("").replace("step_duration = \"50ms\"", "token = \"runner-token-1\""), "runners[0].token"),
            (base("").replace("step_duration = \"50ms\"", "disconnect_grace = \"1m\""), "runners[0].disconnect_grace"),
        ];
        for (text, key) in cases {
            let error = Config::parse(&text, &Overrides::default()).unwrap_err();
            assert!(error.0.starts_with(key), "expected {key}, got {error}");
        }
    }

    #[test]
    fn an_engine_takes_the_settings_of_its_kind_but_never_remote() {
        let engine: RawEngine = toml::from_str("kind = \"simulated\"\nstep_duration = \"20ms\"").unwrap();
        let config = engine_config("engine", RUNNER, engine).unwrap();
        assert_eq!((config.kind, config.step_duration, config.id.as_str()), (RunnerKind::Simulated, Duration::from_millis(20), RUNNER));
        let remote: RawEngine = toml::from_str("kind = \"remote\"").unwrap();
        assert!(engine_config("engine", RUNNER, remote).unwrap_err().0.starts_with("engine.kind"));
        let docker_on_local: RawEngine = toml::from_str("kind = \"local\"\ndocker_host = \"unix:///x\"").unwrap();
        assert!(engine_config("engine", RUNNER, docker_on_local).unwrap_err().0.starts_with("engine.docker_host"));
        assert!(toml::from_str::<RawEngine>("kind = \"local\"\ntoken = \"x\"").is_err(), "an engine has no token");
    }

    #[test]
    fn postgres_url_is_checked_naming_the_key() {
        assert!(Config::parse(&base(""), &Overrides::default()).unwrap().postgres_url.is_none(), "SQLite is the default");
        let with = |url: &str| base("").replace("[[organizations]]", &format!("[storage]\npostgres_url = \"{url}\"\n\n[[organizations]]"));
        let config = Config::parse(&with("postgresql://prebuildd:pw@db.internal:5433/prebuildd"), &Overrides::default()).unwrap();
        let url = config.postgres_url.as_ref().expect("set");
        assert_eq!(url.redacted(), "postgresql://prebuildd@db.internal:5433/prebuildd");
        assert!(!format!("{config:?}").contains(":pw@"), "Debug hides the password");
        for bad in ["db.internal:5432", "postgresql://u:pw@db:port/x", "mysql://db/x"] {
            let error = Config::parse(&with(bad), &Overrides::default()).unwrap_err();
            assert!(error.0.starts_with("storage.postgres_url: "), "{error}");
            assert!(!error.0.contains("pw"), "{error}");
        }
    }

    #[test]
    fn token_secret_is_64_hex_digits_and_never_printed() {
        assert!(Config::parse(&base(""), &Overrides::default()).unwrap().token_secret.is_none(), "kept in storage by default");
        let with =
            |secret: &str| base("").replace("[[organizations]]", &format!("[storage]\ntoken_secret = \"{secret}\"\n\n[[organizations]]"));
        let hex_secret = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let config = Config::parse(&with(hex_secret), &Overrides::default()).unwrap();
        let key = config.token_secret.as_ref().expect("set");
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&hex::decode(hex_secret).unwrap());
        let cursor = crate::tokens::PageCursor { after_seq: 7 };
        let now = std::time::SystemTime::now();
        assert_eq!(key.page_token(cursor, 1, now), TokenKey::from_bytes(bytes).page_token(cursor, 1, now), "signs with the given bytes");
        assert!(!format!("{config:?}").to_lowercase().contains("00112233"), "Debug hides the secret");
        for bad in ["", "xyz", "0011", &format!("{hex_secret}00"), &"ab".repeat(32)] {
            let error = Config::parse(&with(bad), &Overrides::default()).unwrap_err();
            assert!(error.0.starts_with("storage.token_secret: "), "{bad:?}: {error}");
            assert!(!error.0.contains("0011223344"), "{error}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let error = Config::parse(&base("colour = \"blue\"\n"), &Overrides::default()).unwrap_err();
        assert!(error.0.contains("colour"), "{error}");
    }

    #[test]
    fn token_sha256_is_accepted_and_tokens_are_hashed() {
        let digest = hex::encode(Sha256::digest(b"secret-token-1"));
        let text = base("").replace("token = \"secret-token-1\"", &format!("token_sha256 = \"{digest}\""));
        let config = Config::parse(&text, &Overrides::default()).unwrap();
        let plain = Config::parse(&base(""), &Overrides::default()).unwrap();
        assert_eq!(config.api_keys[0].token_sha256, plain.api_keys[0].token_sha256);
    }

    #[test]
    fn overrides_win_and_demo_is_valid() {
        let overrides = Overrides { listen: Some("127.0.0.1:9999".into()), data_dir: Some("/tmp/x".into()) };
        let config = Config::demo(&overrides);
        assert_eq!(config.listen.port(), 9999);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert!(config.catalog.projects.contains_key(DEMO_PROJECT_ID));
        assert!(config.catalog.projects[DEMO_PROJECT_ID].prebuilds.environment_class_ids.contains(&DEMO_ENVIRONMENT_CLASS_ID.to_string()));
    }
}
