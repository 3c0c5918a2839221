//! The warm pool RPCs: Create, Get, List, Update, Delete.
//!
//! Sizes: `min_size`/`max_size` are the current API; the deprecated
//! `desired_size` sets both to its value. See [`resolve_sizes`] for the rules
//! when only some are given.

// The deprecated `desired_size` fields are part of the API we implement.
#![allow(deprecated)]

use super::prebuilds::prebuild_class;
use super::{query_fingerprint, Service};
use crate::auth::Caller;
use crate::clock::timestamp;
use crate::domain::warm_pool_phase;
use crate::error::{Error, Result};
use crate::proto::gitpod::v1::{
    CreateWarmPoolRequest, CreateWarmPoolResponse, DeleteWarmPoolRequest, DeleteWarmPoolResponse, GetWarmPoolRequest, GetWarmPoolResponse,
    ListWarmPoolsRequest, ListWarmPoolsResponse, PaginationResponse, UpdateWarmPoolRequest, UpdateWarmPoolResponse, WarmPool,
    WarmPoolMetadata, WarmPoolPhase, WarmPoolSpec, WarmPoolStatus,
};
use crate::store::{Change, WarmPoolFilter};
use crate::validate;
use pbjson_types::Timestamp;

pub const MAX_POOL_SIZE: i32 = 20;

/// Sizes as requested: `None` where the client sent nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SizeRequest {
    pub desired: Option<i32>,
    pub min: Option<i32>,
    pub max: Option<i32>,
}

/// The resolved spec sizes: (desired_size, min_size, max_size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sizes {
    pub deprecated_desired: i32,
    pub min: i32,
    pub max: i32,
}

impl SizeRequest {
    fn validate(self) -> Result<Self> {
        if let Some(desired) = self.desired {
            validate::int_range("desired_size", desired, 1, MAX_POOL_SIZE)?;
            if self.min.is_some() || self.max.is_some() {
                return Err(Error::invalid(
                    "desired_size",
                    "is deprecated and cannot be combined with min_size or max_size; send only min_size and max_size",
                ));
            }
        }
        if let Some(min) = self.min {
            validate::int_range("min_size", min, 0, MAX_POOL_SIZE)?;
        }
        if let Some(max) = self.max {
            validate::int_range("max_size", max, 1, MAX_POOL_SIZE)?;
        }
        Ok(self)
    }
}

/// Applies a size request to the current sizes (`None` on create).
///
/// - `desired_size` alone: min = max = desired (the deprecated form).
/// - `min_size` and/or `max_size`: the given ones replace the current ones;
///   on create a missing `max_size` is `max(min_size, 1)` and a missing
///   `min_size` is 1. `desired_size` is then cleared: it no longer
///   describes the pool.
/// - nothing: the current sizes, or min = max = 1 on create.
///
/// `min_size <= max_size` must hold afterwards.
pub(crate) fn resolve_sizes(current: Option<Sizes>, request: SizeRequest) -> Result<Sizes> {
    let request = request.validate()?;
    if let Some(desired) = request.desired {
        return Ok(Sizes { deprecated_desired: desired, min: desired, max: desired });
    }
    let sizes = match (current, request.min, request.max) {
        (Some(current), None, None) => current,
        (None, None, None) => Sizes { deprecated_desired: 0, min: 1, max: 1 },
        (Some(current), min, max) => Sizes { deprecated_desired: 0, min: min.unwrap_or(current.min), max: max.unwrap_or(current.max) },
        (None, min, max) => {
            let min = min.unwrap_or(1.min(max.unwrap_or(1)));
            Sizes { deprecated_desired: 0, min, max: max.unwrap_or(min.max(1)) }
        }
    };
    if sizes.min > sizes.max {
        let field = if request.min.is_some() { "min_size" } else { "max_size" };
        return Err(Error::invalid(field, format!("min_size ({}) must be less than or equal to max_size ({})", sizes.min, sizes.max)));
    }
    Ok(sizes)
}

fn sizes_of(pool: &WarmPool) -> Sizes {
    let spec = pool.spec.clone().unwrap_or_default();
    Sizes {
        deprecated_desired: spec.desired_size,
        min: spec.min_size.unwrap_or(spec.desired_size),
        max: spec.max_size.unwrap_or(spec.desired_size),
    }
}

fn not_found(warm_pool_id: &str) -> Error {
    Error::NotFound(format!("warm pool {warm_pool_id} not found"))
}

fn touch(pool: &mut WarmPool, now: Timestamp) {
    if let Some(metadata) = pool.metadata.as_mut() {
        metadata.updated_at = Some(now);
    }
}

impl Service {
    pub async fn create_warm_pool(&self, caller: &Caller, request: CreateWarmPoolRequest) -> Result<CreateWarmPoolResponse> {
        let project_id = validate::uuid("project_id", &request.project_id)?;
        let environment_class_id = validate::uuid("environment_class_id", &request.environment_class_id)?;
        // desired_size 0 means "not set" (IGNORE_IF_UNPOPULATED).
        let desired = (request.desired_size != 0).then_some(request.desired_size);
        let sizes = resolve_sizes(None, SizeRequest { desired, min: request.min_size, max: request.max_size })?;

        let catalog = self.catalog();
        let project = catalog
            .project_in(&caller.organization_id, &project_id)
            .ok_or_else(|| Error::NotFound(format!("project {project_id} not found")))?;
        let environment_class_id = prebuild_class(project, Some(environment_class_id))?;
        let runner_id = catalog.environment_classes.get(&environment_class_id).map(|c| c.runner_id.clone()).unwrap_or_default();
        let snapshot_id = self.store.newest_completed_prebuild_id(&caller.organization_id, &project_id, &environment_class_id).await?;
        let now = timestamp(self.clock.now());
        let pool = WarmPool {
            id: uuid::Uuid::now_v7().to_string(),
            metadata: Some(WarmPoolMetadata {
                organization_id: caller.organization_id.clone(),
                project_id,
                environment_class_id,
                runner_id,
                created_at: Some(now),
                updated_at: Some(now),
            }),
            spec: Some(WarmPoolSpec {
                spec_version: 1,
                desired_size: sizes.deprecated_desired,
                snapshot_id,
                desired_phase: WarmPoolPhase::Ready as i32,
                min_size: Some(sizes.min),
                max_size: Some(sizes.max),
            }),
            status: Some(WarmPoolStatus { phase: WarmPoolPhase::Pending as i32, status_version: 1, ..Default::default() }),
        };
        self.store.insert_warm_pool(pool.clone()).await?;
        self.changed();
        Ok(CreateWarmPoolResponse { warm_pool: Some(pool) })
    }

    pub async fn get_warm_pool(&self, caller: &Caller, request: GetWarmPoolRequest) -> Result<GetWarmPoolResponse> {
        let warm_pool_id = validate::uuid("warm_pool_id", &request.warm_pool_id)?;
        let pool = self.store.get_warm_pool(&caller.organization_id, &warm_pool_id).await?.ok_or_else(|| not_found(&warm_pool_id))?;
        Ok(GetWarmPoolResponse { warm_pool: Some(pool) })
    }

    pub async fn list_warm_pools(&self, caller: &Caller, request: ListWarmPoolsRequest) -> Result<ListWarmPoolsResponse> {
        let filter = request.filter.unwrap_or_default();
        let store_filter = WarmPoolFilter {
            organization_id: caller.organization_id.clone(),
            project_ids: validate::uuid_list("filter.project_ids", &filter.project_ids, 25)?,
            environment_class_ids: validate::uuid_list("filter.environment_class_ids", &filter.environment_class_ids, 25)?,
        };
        let fingerprint = query_fingerprint(&[
            ("warm_pools", vec![]),
            ("project_ids", store_filter.project_ids.clone()),
            ("environment_class_ids", store_filter.environment_class_ids.clone()),
        ]);
        let page = self.page_request(request.pagination.as_ref(), fingerprint)?;
        let result = self.store.list_warm_pools(store_filter, page).await?;
        Ok(ListWarmPoolsResponse {
            pagination: Some(PaginationResponse { next_token: self.next_page_token(result.next_after_seq, fingerprint) }),
            warm_pools: result.items,
        })
    }

    /// Changes the pool's sizes. The spec version grows only when a size
    /// actually changes; a pool being deleted cannot be updated.
    pub async fn update_warm_pool(&self, caller: &Caller, request: UpdateWarmPoolRequest) -> Result<UpdateWarmPoolResponse> {
        let warm_pool_id = validate::uuid("warm_pool_id", &request.warm_pool_id)?;
        let size_request = SizeRequest { desired: request.desired_size, min: request.min_size, max: request.max_size }.validate()?;
        let now = timestamp(self.clock.now());
        let catalog = self.catalog();
        let organization_id = caller.organization_id.clone();
        let pool = self
            .store
            .update_warm_pool(
                &caller.organization_id,
                &warm_pool_id,
                Box::new(move |pool| {
                    if warm_pool_phase(pool).is_deleting() {
                        return Err(Error::FailedPrecondition(format!("warm pool {} is being deleted", pool.id)));
                    }
                    let metadata = pool.metadata.clone().unwrap_or_default();
                    let project = catalog.project_in(&organization_id, &metadata.project_id).ok_or_else(|| {
                        Error::FailedPrecondition(format!("the project {} of this warm pool no longer exists", metadata.project_id))
                    })?;
                    prebuild_class(project, Some(metadata.environment_class_id.clone()))?;
                    let current = sizes_of(pool);
                    let sizes = resolve_sizes(Some(current), size_request)?;
                    if sizes == current && pool.spec.as_ref().is_some_and(|s| s.min_size.is_some() && s.max_size.is_some()) {
                        return Ok(Change::Unchanged);
                    }
                    let spec = pool.spec.get_or_insert_with(Default::default);
                    spec.desired_size = sizes.deprecated_desired;
                    spec.min_size = Some(sizes.min);
                    spec.max_size = Some(sizes.max);
                    spec.spec_version += 1;
                    touch(pool, now);
                    Ok(Change::Changed)
                }),
            )
            .await?
            .ok_or_else(|| not_found(&warm_pool_id))?;
        self.changed();
        Ok(UpdateWarmPoolResponse { warm_pool: Some(pool) })
    }

    /// Marks the pool DELETING (desired DELETED); the reconciler drains its
    /// instances and removes it. Deleting again changes nothing.
    pub async fn delete_warm_pool(&self, caller: &Caller, request: DeleteWarmPoolRequest) -> Result<DeleteWarmPoolResponse> {
        let warm_pool_id = validate::uuid("warm_pool_id", &request.warm_pool_id)?;
        let now = timestamp(self.clock.now());
        self.store
            .update_warm_pool(&caller.organization_id, &warm_pool_id, Box::new(move |pool| Ok(mark_pool_deleting(pool, now))))
            .await?
            .ok_or_else(|| not_found(&warm_pool_id))?;
        self.changed();
        Ok(DeleteWarmPoolResponse {})
    }
}

/// The first step of deleting a pool, shared by the API and the automatic
/// deletion when a project stops allowing it.
pub fn mark_pool_deleting(pool: &mut WarmPool, now: Timestamp) -> Change {
    if warm_pool_phase(pool).is_deleting() {
        return Change::Unchanged;
    }
    let spec = pool.spec.get_or_insert_with(Default::default);
    spec.desired_phase = WarmPoolPhase::Deleted as i32;
    spec.spec_version += 1;
    let status = pool.status.get_or_insert_with(Default::default);
    status.phase = WarmPoolPhase::Deleting as i32;
    status.status_version += 1;
    touch(pool, now);
    Change::Changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(deprecated_desired: i32, min: i32, max: i32) -> Sizes {
        Sizes { deprecated_desired, min, max }
    }

    fn request(desired: Option<i32>, min: Option<i32>, max: Option<i32>) -> SizeRequest {
        SizeRequest { desired, min, max }
    }

    #[test]
    fn create_defaults() {
        assert_eq!(resolve_sizes(None, request(None, None, None)).unwrap(), sizes(0, 1, 1));
        assert_eq!(resolve_sizes(None, request(Some(2), None, None)).unwrap(), sizes(2, 2, 2));
        assert_eq!(resolve_sizes(None, request(None, Some(0), None)).unwrap(), sizes(0, 0, 1));
        assert_eq!(resolve_sizes(None, request(None, Some(5), None)).unwrap(), sizes(0, 5, 5));
        assert_eq!(resolve_sizes(None, request(None, None, Some(7))).unwrap(), sizes(0, 1, 7));
        assert_eq!(resolve_sizes(None, request(None, Some(0), Some(20))).unwrap(), sizes(0, 0, 20));
    }

    #[test]
    fn update_keeps_what_is_not_sent() {
        let current = sizes(0, 2, 5);
        assert_eq!(resolve_sizes(Some(current), request(None, None, None)).unwrap(), current);
        assert_eq!(resolve_sizes(Some(current), request(None, Some(4), None)).unwrap(), sizes(0, 4, 5));
        assert_eq!(resolve_sizes(Some(current), request(Some(3), None, None)).unwrap(), sizes(3, 3, 3));
        assert!(resolve_sizes(Some(current), request(None, Some(6), None)).unwrap_err().to_string().starts_with("min_size: "));
        assert!(resolve_sizes(Some(current), request(None, None, Some(1))).unwrap_err().to_string().starts_with("max_size: "));
    }

    #[test]
    fn ranges_name_the_field() {
        for (req, field) in [
            (request(Some(21), None, None), "desired_size"),
            (request(Some(-1), None, None), "desired_size"),
            (request(None, Some(21), None), "min_size"),
            (request(None, Some(-1), None), "min_size"),
            (request(None, None, Some(0)), "max_size"),
            (request(None, None, Some(21)), "max_size"),
            (request(Some(2), Some(1), None), "desired_size"),
            (request(None, Some(5), Some(3)), "min_size"),
        ] {
            let err = resolve_sizes(None, req).unwrap_err();
            assert!(err.to_string().starts_with(&format!("{field}: ")), "{req:?}: {err}");
        }
    }
}
