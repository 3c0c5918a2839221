//! The prebuild RPCs: Create, List, Get, Cancel, Delete, CreatePrebuildLogsToken.

use super::{query_fingerprint, Service};
use crate::auth::Caller;
use crate::catalog::{Catalog, Project};
use crate::clock::timestamp;
use crate::config::{MAX_PREBUILD_TIMEOUT_SECONDS, MIN_PREBUILD_TIMEOUT_SECONDS};
use crate::domain::phase_of;
use crate::error::{Error, Result};
use crate::proto::gitpod::v1::prebuild_metadata::PrebuildTrigger;
use crate::proto::gitpod::v1::{
    CancelPrebuildRequest, CancelPrebuildResponse, CreatePrebuildLogsTokenRequest, CreatePrebuildLogsTokenResponse, CreatePrebuildRequest,
    CreatePrebuildResponse, DeletePrebuildRequest, DeletePrebuildResponse, GetPrebuildRequest, GetPrebuildResponse, ListPrebuildsRequest,
    ListPrebuildsResponse, PaginationResponse, Prebuild, PrebuildMetadata, PrebuildPhase, PrebuildSpec, PrebuildStatus, Subject,
};
use crate::store::{Change, PrebuildFilter};
use crate::tokens::LogsGrant;
use crate::validate;
use pbjson_types::{Duration, Timestamp};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Everything needed to create a prebuild, already validated.
#[derive(Debug, Clone)]
pub struct NewPrebuild {
    pub organization_id: String,
    pub project_id: String,
    pub environment_class_id: String,
    pub creator: Subject,
    pub executor: Subject,
    pub triggered_by: PrebuildTrigger,
    pub timeout: std::time::Duration,
    /// Base of the log URL (`server.public_url`).
    pub public_url: String,
    pub now: Timestamp,
}

/// A new PENDING prebuild: versions start at 1; the desired phase is
/// COMPLETED (the server manages it; clients' values are ignored).
pub fn new_prebuild(new: NewPrebuild) -> Prebuild {
    let id = uuid::Uuid::now_v7().to_string();
    Prebuild {
        metadata: Some(PrebuildMetadata {
            organization_id: new.organization_id,
            project_id: new.project_id,
            environment_class_id: new.environment_class_id,
            creator: Some(new.creator),
            created_at: Some(new.now),
            updated_at: Some(new.now),
            triggered_by: new.triggered_by as i32,
            executor: Some(new.executor),
        }),
        spec: Some(PrebuildSpec {
            spec_version: 1,
            desired_phase: PrebuildPhase::Completed as i32,
            timeout: Some(Duration { seconds: new.timeout.as_secs() as i64, nanos: new.timeout.subsec_nanos() as i32 }),
        }),
        status: Some(PrebuildStatus {
            phase: PrebuildPhase::Pending as i32,
            log_url: super::log_url(&new.public_url, &id),
            status_version: 1,
            ..Default::default()
        }),
        id,
    }
}

/// The environment class a prebuild of `project` uses: the requested one or
/// the project's default, which must be listed in its prebuild configuration.
pub fn prebuild_class(project: &Project, requested: Option<String>) -> Result<String> {
    if !project.prebuilds.enabled {
        return Err(Error::FailedPrecondition(format!(
            "prebuilds are not enabled on project {} ({}); enable them in its prebuild configuration",
            project.name, project.id
        )));
    }
    let class_id = requested.or_else(|| project.default_environment_class_id.clone()).ok_or_else(|| {
        Error::FailedPrecondition(format!("project {} has no default environment class; pass environment_class_id", project.id))
    })?;
    if !Catalog::prebuild_class_allowed(project, &class_id) {
        return Err(Error::FailedPrecondition(format!(
            "environment class {class_id} is not listed in the prebuild configuration of project {} ({}); listed: [{}]",
            project.name,
            project.id,
            project.prebuilds.environment_class_ids.join(", ")
        )));
    }
    Ok(class_id)
}

fn bump_spec(prebuild: &mut Prebuild) -> &mut PrebuildSpec {
    let spec = prebuild.spec.get_or_insert_with(Default::default);
    spec.spec_version += 1;
    spec
}

fn bump_status(prebuild: &mut Prebuild) -> &mut PrebuildStatus {
    let status = prebuild.status.get_or_insert_with(Default::default);
    status.status_version += 1;
    status
}

fn touch(prebuild: &mut Prebuild, now: Timestamp) {
    if let Some(metadata) = prebuild.metadata.as_mut() {
        metadata.updated_at = Some(now);
    }
}

fn not_found(prebuild_id: &str) -> Error {
    Error::NotFound(format!("prebuild {prebuild_id} not found"))
}

impl Service {
    pub async fn create_prebuild(&self, caller: &Caller, request: CreatePrebuildRequest) -> Result<CreatePrebuildResponse> {
        let project_id = validate::uuid("project_id", &request.project_id)?;
        let requested_class = request.environment_class_id.as_deref().map(|id| validate::uuid("environment_class_id", id)).transpose()?;
        let spec = request.spec.as_ref().ok_or_else(|| Error::invalid("spec", "value is required"))?;
        validate::defined_enum::<PrebuildPhase>("spec.desired_phase", spec.desired_phase)?;
        let timeout = spec
            .timeout
            .as_ref()
            .map(|t| validate::duration_range("spec.timeout", t, MIN_PREBUILD_TIMEOUT_SECONDS, MAX_PREBUILD_TIMEOUT_SECONDS))
            .transpose()?;

        let catalog = self.catalog();
        let project = catalog
            .project_in(&caller.organization_id, &project_id)
            .ok_or_else(|| Error::NotFound(format!("project {project_id} not found")))?;
        let environment_class_id = prebuild_class(project, requested_class)?;
        self.check_pending_cap(project).await?;
        let prebuild = new_prebuild(NewPrebuild {
            organization_id: caller.organization_id.clone(),
            project_id,
            environment_class_id,
            creator: caller.subject.clone(),
            executor: project.prebuilds.executor.clone().unwrap_or_else(|| caller.subject.clone()),
            triggered_by: PrebuildTrigger::Manual,
            timeout: timeout.unwrap_or(project.prebuilds.timeout),
            public_url: self.public_url.clone(),
            now: timestamp(self.clock.now()),
        });
        self.store.insert_prebuild(prebuild.clone()).await?;
        self.changed();
        Ok(CreatePrebuildResponse { prebuild: Some(prebuild) })
    }

    /// Refuses a new prebuild of a project whose queue of PENDING ones is
    /// full: a client creating faster than the runners start them gets a
    /// clear answer at once, and the queue (which every reconciler pass
    /// reads) stays bounded. Concurrent creates may pass the check together,
    /// so the cap can be exceeded by as many as are in flight.
    async fn check_pending_cap(&self, project: &Project) -> Result<()> {
        let Some(cap) = self.max_pending_prebuilds_per_project else { return Ok(()) };
        if self.store.pending_prebuilds(&project.id, cap).await? >= cap {
            return Err(Error::ResourceExhausted(format!(
                "project {} ({}) already has {cap} queued (PENDING) prebuilds, the most allowed ([limits] \
                 max_pending_prebuilds_per_project = {cap}); retry once some have started, or cancel some",
                project.name, project.id
            )));
        }
        Ok(())
    }

    pub async fn list_prebuilds(&self, caller: &Caller, request: ListPrebuildsRequest) -> Result<ListPrebuildsResponse> {
        let filter = request.filter.unwrap_or_default();
        validate::max_len("filter.phases", filter.phases.len(), 10)?;
        for (i, phase) in filter.phases.iter().enumerate() {
            validate::defined_enum::<PrebuildPhase>(&format!("filter.phases[{i}]"), *phase)?;
        }
        validate::max_len("filter.triggered_by", filter.triggered_by.len(), 5)?;
        for (i, trigger) in filter.triggered_by.iter().enumerate() {
            validate::defined_enum::<PrebuildTrigger>(&format!("filter.triggered_by[{i}]"), *trigger)?;
        }
        let store_filter = PrebuildFilter {
            organization_id: caller.organization_id.clone(),
            project_ids: validate::uuid_list("filter.project_ids", &filter.project_ids, 25)?,
            phases: filter.phases.clone(),
            triggered_by: filter.triggered_by.clone(),
            creator_ids: validate::uuid_list("filter.creator_ids", &filter.creator_ids, 25)?,
            executor_ids: validate::uuid_list("filter.executor_ids", &filter.executor_ids, 25)?,
        };
        let fingerprint = query_fingerprint(&[
            ("prebuilds", vec![]),
            ("project_ids", store_filter.project_ids.clone()),
            ("phases", store_filter.phases.iter().map(i32::to_string).collect()),
            ("triggered_by", store_filter.triggered_by.iter().map(i32::to_string).collect()),
            ("creator_ids", store_filter.creator_ids.clone()),
            ("executor_ids", store_filter.executor_ids.clone()),
        ]);
        let page = self.page_request(request.pagination.as_ref(), fingerprint)?;
        let result = self.store.list_prebuilds(store_filter, page).await?;
        Ok(ListPrebuildsResponse {
            pagination: Some(PaginationResponse { next_token: self.next_page_token(result.next_after_seq, fingerprint) }),
            prebuilds: result.items,
        })
    }

    pub async fn get_prebuild(&self, caller: &Caller, request: GetPrebuildRequest) -> Result<GetPrebuildResponse> {
        let prebuild_id = validate::uuid("prebuild_id", &request.prebuild_id)?;
        let prebuild = self.store.get_prebuild(&caller.organization_id, &prebuild_id).await?.ok_or_else(|| not_found(&prebuild_id))?;
        Ok(GetPrebuildResponse { prebuild: Some(prebuild) })
    }

    /// A pending prebuild is cancelled at once (nothing was started); one
    /// that is starting or running moves to CANCELLING and the reconciler
    /// stops its work. Cancelling again changes nothing.
    pub async fn cancel_prebuild(&self, caller: &Caller, request: CancelPrebuildRequest) -> Result<CancelPrebuildResponse> {
        let prebuild_id = validate::uuid("prebuild_id", &request.prebuild_id)?;
        let now = timestamp(self.clock.now());
        // Set when this call cancels a pending prebuild outright: then it is
        // this call, not the reconciler, that ends the prebuild (metrics).
        let ended_pending = Arc::new(AtomicBool::new(false));
        let ended = ended_pending.clone();
        let prebuild = self
            .store
            .update_prebuild(
                &caller.organization_id,
                &prebuild_id,
                Box::new(move |prebuild| {
                    ended.store(false, Ordering::Relaxed);
                    let phase = phase_of(prebuild);
                    let next = match phase {
                        PrebuildPhase::Cancelling | PrebuildPhase::Cancelled => return Ok(Change::Unchanged),
                        _ if phase.is_pending() => PrebuildPhase::Cancelled,
                        _ if phase.is_running() => PrebuildPhase::Cancelling,
                        _ if phase.is_deleting() => {
                            return Err(Error::FailedPrecondition(format!("prebuild {} is being deleted", prebuild.id)))
                        }
                        PrebuildPhase::Completed => {
                            return Err(Error::FailedPrecondition(format!(
                                "prebuild {} has already completed; only a pending or running prebuild can be cancelled",
                                prebuild.id
                            )))
                        }
                        _ => {
                            return Err(Error::FailedPrecondition(format!(
                                "prebuild {} has already failed; only a pending or running prebuild can be cancelled",
                                prebuild.id
                            )))
                        }
                    };
                    bump_spec(prebuild).desired_phase = PrebuildPhase::Cancelled as i32;
                    let status = bump_status(prebuild);
                    status.phase = next as i32;
                    if next == PrebuildPhase::Cancelled {
                        status.completion_time = Some(now);
                        ended.store(true, Ordering::Relaxed);
                    }
                    touch(prebuild, now);
                    Ok(Change::Changed)
                }),
            )
            .await?
            .ok_or_else(|| not_found(&prebuild_id))?;
        if ended_pending.load(Ordering::Relaxed) {
            let waited = prebuild.metadata.as_ref().and_then(|m| m.created_at).map(|created| crate::clock::between(&created, &now));
            if let Some(waited) = waited {
                self.metrics.record_phase(PrebuildPhase::Pending, waited);
                self.metrics.record_finished(PrebuildPhase::Cancelled, waited, None);
            }
        }
        self.changed();
        Ok(CancelPrebuildResponse { prebuild: Some(prebuild) })
    }

    /// Marks the prebuild DELETING (desired DELETED); the reconciler stops
    /// its work, removes its snapshot and environment, then the row.
    pub async fn delete_prebuild(&self, caller: &Caller, request: DeletePrebuildRequest) -> Result<DeletePrebuildResponse> {
        let prebuild_id = validate::uuid("prebuild_id", &request.prebuild_id)?;
        let now = timestamp(self.clock.now());
        self.store
            .update_prebuild(&caller.organization_id, &prebuild_id, Box::new(move |prebuild| Ok(mark_deleting(prebuild, now))))
            .await?
            .ok_or_else(|| not_found(&prebuild_id))?;
        self.changed();
        Ok(DeletePrebuildResponse {})
    }

    pub async fn create_prebuild_logs_token(
        &self,
        caller: &Caller,
        request: CreatePrebuildLogsTokenRequest,
    ) -> Result<CreatePrebuildLogsTokenResponse> {
        let prebuild_id = validate::uuid("prebuild_id", &request.prebuild_id)?;
        self.store.get_prebuild(&caller.organization_id, &prebuild_id).await?.ok_or_else(|| not_found(&prebuild_id))?;
        let grant = LogsGrant { organization_id: caller.organization_id.clone(), prebuild_id };
        Ok(CreatePrebuildLogsTokenResponse { access_token: self.tokens.logs_token(&grant, self.clock.now()) })
    }
}

/// The first step of deletion, shared by the API and automatic retention.
pub fn mark_deleting(prebuild: &mut Prebuild, now: Timestamp) -> Change {
    if phase_of(prebuild).is_deleting() {
        return Change::Unchanged;
    }
    bump_spec(prebuild).desired_phase = PrebuildPhase::Deleted as i32;
    bump_status(prebuild).phase = PrebuildPhase::Deleting as i32;
    touch(prebuild, now);
    Change::Changed
}
