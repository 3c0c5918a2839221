//! The configured world the API works in: organizations, runners,
//! environment classes and projects. Read-only at run time; a config reload
//! swaps the whole catalog.

use crate::proto::gitpod::v1::Subject;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub organizations: BTreeMap<String, Organization>,
    pub runners: BTreeMap<String, RunnerConfig>,
    pub environment_classes: BTreeMap<String, EnvironmentClass>,
    pub projects: BTreeMap<String, Project>,
    /// True for the embedded demo configuration (used for start-up hints).
    pub is_demo: bool,
}

#[derive(Debug, Clone)]
pub struct Organization {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerKind {
    Simulated,
    Local,
    Docker,
    /// On another machine: `prebuildd runner` connects to the server.
    Remote,
}

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub id: String,
    pub kind: RunnerKind,
    pub max_concurrent_prebuilds: u32,
    /// Time per phase on the simulated runner.
    pub step_duration: Duration,
    /// Local runner: run lifecycle commands in a sandbox (bubblewrap). Off
    /// only for trusted repositories.
    pub sandbox: bool,
    /// Docker runner settings (defaults for other kinds).
    pub docker: DockerSettings,
    /// Remote runner settings (defaults for other kinds).
    pub remote: RemoteSettings,
}

/// How a remote runner authenticates, and how long it may stay away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSettings {
    /// SHA-256 of the runner's token (the runner sends the token itself).
    pub token_sha256: Option<[u8; 32]>,
    /// How long the runner may be disconnected before its running prebuilds
    /// fail and its pools are DEGRADED.
    pub grace: Duration,
}

impl Default for RemoteSettings {
    fn default() -> Self {
        RemoteSettings { token_sha256: None, grace: Duration::from_secs(60) }
    }
}

/// Where and how the docker runner works.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerSettings {
    /// The Docker endpoint (`unix:///path` or `tcp://host:port`); `None`:
    /// `DOCKER_HOST`, else the default socket.
    pub docker_host: Option<String>,
    /// The Dev Containers CLI (`devcontainer`); `None`: found on `PATH`.
    pub devcontainer_cli: Option<std::path::PathBuf>,
    /// The Docker CLI the Dev Containers CLI runs (`--docker-path`); `None`:
    /// `docker` on `PATH`. It builds with BuildKit.
    pub docker_cli: Option<std::path::PathBuf>,
    /// The image of repositories without a devcontainer.json.
    pub default_image: Option<String>,
    /// The runner's own directory (workspaces, generated configs); `None`:
    /// `prebuildd-runners/<runner id>` beside the data dir, never inside it.
    pub root: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone)]
pub struct EnvironmentClass {
    pub id: String,
    pub runner_id: String,
    pub name: String,
    pub resources: Resources,
}

/// What an environment of a class may use; the docker runner applies it to
/// prebuild containers and warm pool instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPUs in billionths (`cpus = 1.5` is 1_500_000_000), Docker's unit.
    pub nano_cpus: Option<i64>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Project {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub repository: String,
    pub default_environment_class_id: Option<String>,
    pub prebuilds: PrebuildSettings,
}

/// A project's prebuild configuration (the hosted API's
/// `ProjectPrebuildConfiguration`).
#[derive(Debug, Clone)]
pub struct PrebuildSettings {
    pub enabled: bool,
    pub environment_class_ids: Vec<String>,
    pub timeout: Duration,
    pub daily_schedule_hour_utc: Option<u8>,
    pub executor: Option<Subject>,
}

impl Catalog {
    /// The project if it exists and belongs to the organization; another
    /// organization's project is indistinguishable from a missing one.
    pub fn project_in(&self, organization_id: &str, project_id: &str) -> Option<&Project> {
        self.projects.get(project_id).filter(|p| p.organization_id == organization_id)
    }

    /// Whether prebuilds of this class are allowed on the project.
    pub fn prebuild_class_allowed(project: &Project, environment_class_id: &str) -> bool {
        project.prebuilds.enabled && project.prebuilds.environment_class_ids.iter().any(|id| id == environment_class_id)
    }
}
