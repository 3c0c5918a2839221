//! The columns every backend keeps beside a stored prebuild, derived from
//! the message in one place so that filters mean the same on each backend.

use crate::domain::Micros;
use crate::proto::gitpod::v1::Prebuild;

/// What filters, ordering and retention read without decoding the body.
pub(super) struct PrebuildColumns<'a> {
    pub organization_id: &'a str,
    pub project_id: &'a str,
    pub environment_class_id: &'a str,
    pub phase: i32,
    pub triggered_by: i32,
    pub creator_id: &'a str,
    pub executor_id: &'a str,
    /// Set once the prebuild is in a final phase (for retention),
    /// microseconds since the epoch.
    pub finished_at: Option<i64>,
}

pub(super) fn prebuild_columns(prebuild: &Prebuild) -> PrebuildColumns<'_> {
    let metadata = prebuild.metadata.as_ref();
    PrebuildColumns {
        organization_id: metadata.map(|m| m.organization_id.as_str()).unwrap_or_default(),
        project_id: metadata.map(|m| m.project_id.as_str()).unwrap_or_default(),
        environment_class_id: metadata.map(|m| m.environment_class_id.as_str()).unwrap_or_default(),
        phase: prebuild.status.as_ref().map(|s| s.phase).unwrap_or_default(),
        triggered_by: metadata.map(|m| m.triggered_by).unwrap_or_default(),
        creator_id: metadata.and_then(|m| m.creator.as_ref()).map(|s| s.id.as_str()).unwrap_or_default(),
        executor_id: metadata.and_then(|m| m.executor.as_ref()).map(|s| s.id.as_str()).unwrap_or_default(),
        finished_at: prebuild.status.as_ref().and_then(|s| s.completion_time.as_ref()).map(|t| Micros::from_timestamp(t).as_i64()),
    }
}
