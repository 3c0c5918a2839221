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
}

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub id: String,
    pub kind: RunnerKind,
    pub max_concurrent_prebuilds: u32,
    /// Time per phase on the simulated runner.
    pub step_duration: Duration,
}

#[derive(Debug, Clone)]
pub struct EnvironmentClass {
    pub id: String,
    pub runner_id: String,
    pub name: String,
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
