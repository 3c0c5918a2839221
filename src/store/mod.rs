//! Persistence of prebuilds and warm pools, behind a trait shaped by what the
//! service and reconciler need (not by SQLite): the embedded SQLite store
//! and the PostgreSQL store answer every call the same way, and the same
//! tests run against both.
//!
//! Resources are stored as their proto messages; implementations keep beside
//! them only the columns that filters and ordering need. Every write is one
//! transaction; updates are read-modify-write under optimistic concurrency.

mod columns;
pub mod postgres;
pub mod sources;
pub mod sqlite;

use crate::domain::Micros;
use crate::error::Result;
use crate::proto::gitpod::v1::{Prebuild, WarmPool};
use async_trait::async_trait;

/// What an update closure did, so unchanged rows are not rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    Changed,
}

/// A read-modify-write step on a prebuild; an `Err` aborts the write. It is
/// `Fn` because a store may run it again on fresh data after losing an
/// optimistic-concurrency race.
pub type PrebuildUpdate = Box<dyn Fn(&mut Prebuild) -> Result<Change> + Send + Sync>;
/// A read-modify-write step on a warm pool (see [`PrebuildUpdate`]).
pub type WarmPoolUpdate = Box<dyn Fn(&mut WarmPool) -> Result<Change> + Send + Sync>;

/// Filters of ListPrebuilds: AND across fields, OR within one. Empty lists
/// do not filter. IDs are canonical (lowercase).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PrebuildFilter {
    pub organization_id: String,
    pub project_ids: Vec<String>,
    pub phases: Vec<i32>,
    pub triggered_by: Vec<i32>,
    pub creator_ids: Vec<String>,
    pub executor_ids: Vec<String>,
}

/// Filters of ListWarmPools.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct WarmPoolFilter {
    pub organization_id: String,
    pub project_ids: Vec<String>,
    pub environment_class_ids: Vec<String>,
}

/// Keyset pagination: newest first, resuming strictly after `after_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub after_seq: Option<i64>,
    pub limit: usize,
}

/// One page; `next_after_seq` is set when more items follow.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_after_seq: Option<i64>,
}

#[async_trait]
pub trait Store: sources::SourceStore + Send + Sync + 'static {
    /// Inserts a new prebuild; durable when this returns.
    async fn insert_prebuild(&self, prebuild: Prebuild) -> Result<()>;
    /// The prebuild if it exists in the organization.
    async fn get_prebuild(&self, organization_id: &str, prebuild_id: &str) -> Result<Option<Prebuild>>;
    async fn list_prebuilds(&self, filter: PrebuildFilter, page: PageRequest) -> Result<Page<Prebuild>>;
    /// Applies `update` to the stored prebuild in one transaction and returns
    /// the result; `None` if there is no such prebuild in the organization.
    async fn update_prebuild(&self, organization_id: &str, prebuild_id: &str, update: PrebuildUpdate) -> Result<Option<Prebuild>>;
    /// Removes the row for good (the end of deletion). Returns whether it existed.
    async fn remove_prebuild(&self, prebuild_id: &str) -> Result<bool>;
    /// Prebuilds not in a final phase (COMPLETED, FAILED, CANCELLED), oldest
    /// first: the reconciler's work list.
    async fn active_prebuilds(&self, limit: usize) -> Result<Vec<Prebuild>>;
    /// The project's PENDING prebuilds, counted up to `up_to` (a count past
    /// it is not needed, and would cost more): what the cap on queued
    /// prebuilds compares with.
    async fn pending_prebuilds(&self, project_id: &str, up_to: u32) -> Result<u32>;
    /// Which of `ids` are prebuilds the store still has, in any
    /// organization: what a runner may keep the snapshots of.
    async fn existing_prebuild_ids(&self, ids: &[String]) -> Result<std::collections::HashSet<String>>;
    /// The ID of the newest COMPLETED prebuild of (project, environment class).
    async fn newest_completed_prebuild_id(
        &self,
        organization_id: &str,
        project_id: &str,
        environment_class_id: &str,
    ) -> Result<Option<String>>;

    /// Inserts a warm pool; `AlreadyExists` if the organization has one for
    /// the same (project, environment class).
    async fn insert_warm_pool(&self, warm_pool: WarmPool) -> Result<()>;
    async fn get_warm_pool(&self, organization_id: &str, warm_pool_id: &str) -> Result<Option<WarmPool>>;
    async fn list_warm_pools(&self, filter: WarmPoolFilter, page: PageRequest) -> Result<Page<WarmPool>>;
    async fn update_warm_pool(&self, organization_id: &str, warm_pool_id: &str, update: WarmPoolUpdate) -> Result<Option<WarmPool>>;
    async fn remove_warm_pool(&self, warm_pool_id: &str) -> Result<bool>;
    /// Every warm pool of every organization: the reconciler's work list
    /// (pools are few: at most one per project and class).
    async fn all_warm_pools(&self) -> Result<Vec<WarmPool>>;

    /// Inserts a scheduled prebuild unless (project, class, `day`) already
    /// has one, in one transaction; returns whether it was inserted. This is
    /// what makes schedules fire exactly once per day across restarts.
    async fn insert_scheduled_prebuild(&self, prebuild: Prebuild, day: &str) -> Result<bool>;
    /// Finished prebuilds due for automatic deletion: COMPLETED ones that
    /// finished before `completed_before`, FAILED and CANCELLED ones before
    /// `failed_before`, oldest first.
    async fn expired_prebuilds(&self, completed_before: Micros, failed_before: Micros, limit: usize) -> Result<Vec<Prebuild>>;
    /// Records a claim from a warm pool (the autoscaler's demand signal).
    async fn record_claim(&self, warm_pool_id: &str, claimed_at: Micros) -> Result<()>;
    /// Claims from the pool since `since`.
    async fn claims_since(&self, warm_pool_id: &str, since: Micros) -> Result<u32>;
    /// Forgets claims older than `before`: they no longer count as demand.
    async fn prune_claims(&self, before: Micros) -> Result<()>;
}

/// The error of a second warm pool for the same (project, class), as both
/// stores report it when their unique index refuses the insert.
pub(crate) fn duplicate_warm_pool(project_id: &str, environment_class_id: &str) -> crate::error::Error {
    crate::error::Error::AlreadyExists(format!(
        "a warm pool for project {project_id} and environment class {environment_class_id} already exists; update or delete it instead"
    ))
}

#[cfg(test)]
mod tests {
    use crate::proto::gitpod::v1::PrebuildPhase;

    /// The partial index of the reconciler's work list, in both schemas, and
    /// the queries that must match it to use it, say "not final" exactly as
    /// the domain does.
    #[test]
    fn the_active_prebuilds_index_says_not_final_as_the_domain_does() {
        let predicate = format!("WHERE phase NOT IN ({})", PrebuildPhase::final_phases_sql());
        for migration in [include_str!("migrations/0001_initial.sql"), include_str!("migrations/postgres/0001_initial.sql")] {
            let index = migration.lines().find(|line| line.contains("INDEX prebuilds_active")).expect("the index exists");
            assert!(index.contains(&predicate), "{index}");
        }
        assert!(super::postgres::ACTIVE_PREBUILDS.contains(&predicate));
    }
}
