//! The PostgreSQL store, for running prebuildd on a database server that
//! outlives one machine (`[storage] postgres_url`).
//!
//! Same tables, columns, indexes and answers as the SQLite store: the
//! resource is its encoded proto beside the filter columns, lists are keyset
//! pages on `seq`, updates are read-modify-write under a version check. It
//! keeps no state of its own between calls (no cache, no single writer), so
//! any number of processes may share one database: every invariant lives in
//! the database (unique keys, the version column, the schedule table's
//! primary key).
//!
//! Each write is one transaction on a pooled connection and returns after
//! its COMMIT, which with PostgreSQL's default `synchronous_commit = on` has
//! reached the server's WAL on disk. Concurrent prebuild inserts (the API's
//! CreatePrebuild) share one statement and commit ([`batch`]); other writes
//! are read-modify-write on one row and commit on their own (the server
//! still shares WAL flushes between concurrent commits). The reconciler
//! writes through a [`fence`]d store. Connections are plain TCP or Unix
//! sockets (no TLS yet).

mod batch;
mod fence;
mod migrate;
mod replicas;
mod sources;
mod url;

pub use fence::LeaseFence;
pub use url::PostgresUrl;

use super::columns::{prebuild_columns, PrebuildColumns};
use super::{Change, Page, PageRequest, PrebuildFilter, PrebuildUpdate, Store, WarmPoolFilter, WarmPoolUpdate};
use crate::domain::Micros;
use crate::error::{Error, Result};
use crate::proto::gitpod::v1::{Prebuild, WarmPool};
use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use prost::Message;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;

/// Connections per process. Several replicas share the server's
/// `max_connections` (100 by default).
const POOL_SIZE: usize = 16;
/// How long a call waits for a free connection before `unavailable`.
const POOL_WAIT: Duration = Duration::from_secs(30);
/// How often a read-modify-write retries after losing an optimistic race
/// (the same as the SQLite store).
const MAX_UPDATE_ATTEMPTS: usize = 5;

/// The final phases (COMPLETED, FAILED, CANCELLED, as
/// `PrebuildPhase::FINAL` says), written as literals so the queries match the
/// partial indexes' predicates (a test compares them).
pub(super) const ACTIVE_PREBUILDS: &str = "SELECT body FROM prebuilds WHERE phase NOT IN (60, 70, 80) ORDER BY seq LIMIT $1";
const NEWEST_COMPLETED: &str = "SELECT id FROM prebuilds WHERE organization_id = $1 AND project_id = $2 AND environment_class_id = $3 AND phase = 60 AND feeds_warm_pools ORDER BY seq DESC LIMIT 1";
const EXPIRED_PREBUILDS: &str = "SELECT body FROM prebuilds WHERE (phase = 60 AND finished_at < $1) OR (phase IN (70, 80) AND finished_at < $2) ORDER BY finished_at LIMIT $3";
const INSERT_PREBUILD: &str = "INSERT INTO prebuilds (id, organization_id, project_id, environment_class_id, phase, triggered_by, creator_id, executor_id, version, body, finished_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10)";

#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    url: PostgresUrl,
    /// Set on the reconciler's store: writes only while it holds the lease.
    fence: Option<LeaseFence>,
    /// Where unfenced prebuild inserts are grouped into shared commits.
    groups: Option<batch::InsertGroups>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("url", &self.url).finish()
    }
}

impl PostgresStore {
    /// Connects, applies pending migrations and returns the store. Fails
    /// with the URL (without its password) when the server cannot be
    /// reached or refuses.
    pub async fn open(url: &PostgresUrl) -> Result<PostgresStore> {
        let manager = Manager::from_config(url.config().clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| Error::Internal(format!("cannot create the PostgreSQL pool: {e}")))?;
        let cannot = |detail: String| Error::Unavailable(format!("cannot use PostgreSQL at {}: {detail}", url.redacted()));
        let mut client = pool.get().await.map_err(|e| cannot(describe_pool(&e)))?;
        migrate::migrate(&mut client).await.map_err(|e| cannot(e.to_string()))?;
        let synchronous_commit: String = client.query_one("SHOW synchronous_commit", &[]).await?.get(0);
        if synchronous_commit == "off" {
            tracing::warn!(
                url = %url,
                "the server has synchronous_commit = off: an acknowledged write can be lost if the database server crashes"
            );
        }
        let plain = PostgresStore { pool, url: url.clone(), fence: None, groups: None };
        // The grouping task writes through a store without groups of its
        // own, so it ends when the last of these is dropped.
        let groups = batch::InsertGroups::start(plain.clone());
        Ok(PostgresStore { groups: Some(groups), ..plain })
    }

    async fn client(&self) -> Result<deadpool_postgres::Client> {
        self.pool.get().await.map_err(|e| {
            tracing::warn!(url = %self.url, error = %describe_pool(&e), "no PostgreSQL connection");
            Error::Unavailable("the database is unavailable; retry the request".into())
        })
    }

    /// Begins a write's transaction; on a fenced store its first statement
    /// confirms the lease (see [`fence`]).
    async fn begin_write<'a>(&self, client: &'a mut deadpool_postgres::Client) -> Result<deadpool_postgres::Transaction<'a>> {
        let tx = client.transaction().await?;
        if let Some(fence) = &self.fence {
            fence.confirm(&tx).await?;
        }
        Ok(tx)
    }

    /// Runs a one-statement write and returns the rows it touched: as it is
    /// (one round trip) on an unfenced store, else in a transaction behind
    /// the lease check. The inner error is the statement's, for callers that
    /// tell constraint violations apart.
    async fn execute_write(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Result<u64, tokio_postgres::Error>> {
        let mut client = self.client().await?;
        if self.fence.is_none() {
            let statement = client.prepare_cached(sql).await?;
            return Ok(client.execute(&statement, params).await);
        }
        let tx = self.begin_write(&mut client).await?;
        let statement = tx.prepare_cached(sql).await?;
        let touched = match tx.execute(&statement, params).await {
            Ok(touched) => touched,
            Err(error) => return Ok(Err(error)),
        };
        Ok(tx.commit().await.map(|()| touched))
    }
}

// ---- errors --------------------------------------------------------------------

/// A PostgreSQL error with what the server said (code, message, detail).
fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let detail = db.detail().map(|d| format!(" ({d})")).unwrap_or_default();
        return format!("{} {}{detail}", db.code().code(), db.message());
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn describe_pool(error: &PoolError) -> String {
    match error {
        PoolError::Backend(e) => describe(e),
        other => other.to_string(),
    }
}

/// Whether retrying later may succeed: the connection broke, the server is
/// shutting down or full, or a transaction lost a deadlock.
fn is_transient(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        Some(code) => {
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::T_R_DEADLOCK_DETECTED,
                ]
                .contains(code)
        }
        // No server error: the socket failed.
        None => std::error::Error::source(error).is_some_and(|cause| cause.is::<std::io::Error>()),
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(error: tokio_postgres::Error) -> Self {
        if is_transient(&error) {
            tracing::warn!(error = %describe(&error), "PostgreSQL call failed");
            Error::Unavailable("the database is unavailable; retry the request".into())
        } else {
            Error::Internal(format!("postgres: {}", describe(&error)))
        }
    }
}

fn is_unique_violation(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

// ---- row mapping ---------------------------------------------------------------

fn decode_body<T: Message + Default>(row: &tokio_postgres::Row, index: usize) -> Result<T> {
    Ok(T::decode(row.try_get::<_, &[u8]>(index)?)?)
}

/// Runs `INSERT_PREBUILD` for `prebuild` on `client` (a transaction when
/// it is part of a larger write).
async fn insert_prebuild_row(client: &impl GenericClient, prebuild: &Prebuild) -> Result<(), tokio_postgres::Error> {
    let statement = client.prepare_cached(INSERT_PREBUILD).await?;
    let body = prebuild.encode_to_vec();
    client.execute(&statement, &prebuild_params(prebuild, &prebuild_columns(prebuild), &body)).await?;
    Ok(())
}

/// `INSERT_PREBUILD`'s parameters.
fn prebuild_params<'a>(prebuild: &'a Prebuild, c: &'a PrebuildColumns<'a>, body: &'a Vec<u8>) -> [&'a (dyn ToSql + Sync); 10] {
    [
        &prebuild.id,
        &c.organization_id,
        &c.project_id,
        &c.environment_class_id,
        &c.phase,
        &c.triggered_by,
        &c.creator_id,
        &c.executor_id,
        body,
        &c.finished_at,
    ]
}

/// A list query being built: the SQL and its parameters, numbered as added.
struct ListQuery {
    sql: String,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl ListQuery {
    fn new(select: &str, organization_id: String) -> ListQuery {
        ListQuery { sql: format!("{select} WHERE organization_id = $1"), params: vec![Box::new(organization_id)] }
    }

    fn param(&mut self, value: Box<dyn ToSql + Sync + Send>) -> usize {
        self.params.push(value);
        self.params.len()
    }

    /// `AND column = $n` for one value (so the planner sees an equality on
    /// the filter's index), `AND column = ANY($n)` for several; nothing for
    /// none. Either way the statement's text depends only on the shape of
    /// the filter, which bounds the prepared statements a connection caches.
    fn filter<T>(&mut self, column: &str, values: &[T])
    where
        T: ToSql + Sync + Send + Clone + 'static,
        Vec<T>: ToSql + Sync + Send,
    {
        match values {
            [] => {}
            [one] => {
                let n = self.param(Box::new(one.clone()));
                self.sql.push_str(&format!(" AND {column} = ${n}"));
            }
            many => {
                let n = self.param(Box::new(many.to_vec()));
                self.sql.push_str(&format!(" AND {column} = ANY(${n})"));
            }
        }
    }

    /// Newest first, strictly after the previous page's last `seq`; one row
    /// more than the page to learn whether another page follows.
    async fn page<T: Message + Default>(mut self, client: &deadpool_postgres::Client, page: PageRequest) -> Result<Page<T>> {
        if let Some(after) = page.after_seq {
            let n = self.param(Box::new(after));
            self.sql.push_str(&format!(" AND seq < ${n}"));
        }
        let n = self.param(Box::new((page.limit + 1) as i64));
        self.sql.push_str(&format!(" ORDER BY seq DESC LIMIT ${n}"));
        let statement = client.prepare_cached(&self.sql).await?;
        let params: Vec<&(dyn ToSql + Sync)> = self.params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
        let rows = client.query(&statement, &params).await?;
        let more = rows.len() > page.limit;
        let mut items = Vec::with_capacity(rows.len().min(page.limit));
        let mut last_seq = None;
        for row in rows.iter().take(page.limit) {
            last_seq = Some(row.try_get::<_, i64>(0)?);
            items.push(decode_body(row, 1)?);
        }
        Ok(Page { items, next_after_seq: if more { last_seq } else { None } })
    }
}

/// The row's version and message, if it exists in the organization.
async fn load<T: Message + Default>(
    client: &impl GenericClient,
    table: &'static str,
    organization_id: &str,
    id: &str,
) -> Result<Option<(i64, T)>> {
    let statement = client.prepare_cached(&format!("SELECT version, body FROM {table} WHERE id = $1 AND organization_id = $2")).await?;
    match client.query_opt(&statement, &[&id, &organization_id]).await? {
        Some(row) => Ok(Some((row.try_get(0)?, decode_body(&row, 1)?))),
        None => Ok(None),
    }
}

async fn bodies<T: Message + Default>(client: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<T>> {
    let statement = client.prepare_cached(sql).await?;
    client.query(&statement, params).await?.iter().map(|row| decode_body(row, 0)).collect()
}

#[async_trait]
impl Store for PostgresStore {
    async fn insert_prebuild(&self, prebuild: Prebuild) -> Result<()> {
        if let (None, Some(groups)) = (&self.fence, &self.groups) {
            return groups.insert(prebuild).await;
        }
        let (c, body) = (prebuild_columns(&prebuild), prebuild.encode_to_vec());
        self.execute_write(INSERT_PREBUILD, &prebuild_params(&prebuild, &c, &body)).await?.map_err(|e| {
            if is_unique_violation(&e) {
                Error::AlreadyExists(format!("prebuild {} already exists", prebuild.id))
            } else {
                e.into()
            }
        })?;
        Ok(())
    }

    async fn get_prebuild(&self, organization_id: &str, prebuild_id: &str) -> Result<Option<Prebuild>> {
        let client = self.client().await?;
        Ok(load(&client, "prebuilds", organization_id, prebuild_id).await?.map(|(_, p)| p))
    }

    async fn list_prebuilds(&self, filter: PrebuildFilter, page: PageRequest) -> Result<Page<Prebuild>> {
        let mut query = ListQuery::new("SELECT seq, body FROM prebuilds", filter.organization_id);
        query.filter("project_id", &filter.project_ids);
        query.filter("phase", &filter.phases);
        query.filter("triggered_by", &filter.triggered_by);
        query.filter("creator_id", &filter.creator_ids);
        query.filter("executor_id", &filter.executor_ids);
        query.page(&self.client().await?, page).await
    }

    async fn update_prebuild(&self, organization_id: &str, prebuild_id: &str, update: PrebuildUpdate) -> Result<Option<Prebuild>> {
        let mut client = self.client().await?;
        let tx = self.begin_write(&mut client).await?;
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            // READ COMMITTED: each attempt reads the newest committed row.
            let Some((version, mut prebuild)) = load::<Prebuild>(&tx, "prebuilds", organization_id, prebuild_id).await? else {
                return Ok(None);
            };
            if update(&mut prebuild)? == Change::Unchanged {
                return Ok(Some(prebuild));
            }
            let c = prebuild_columns(&prebuild);
            let statement = tx
                .prepare_cached(
                    "UPDATE prebuilds SET phase = $1, finished_at = $2, version = version + 1, body = $3 WHERE id = $4 AND version = $5",
                )
                .await?;
            // A concurrent writer's uncommitted update of the row makes this
            // wait for its outcome, then see its version: no lost updates.
            if tx.execute(&statement, &[&c.phase, &c.finished_at, &prebuild.encode_to_vec(), &prebuild_id, &version]).await? == 1 {
                tx.commit().await?;
                return Ok(Some(prebuild));
            }
            // Lost an optimistic race: read the newer row and apply again.
        }
        Err(Error::Unavailable("the prebuild is changing too often; retry the request".into()))
    }

    async fn remove_prebuild(&self, prebuild_id: &str) -> Result<bool> {
        Ok(self.execute_write("DELETE FROM prebuilds WHERE id = $1", &[&prebuild_id]).await?? > 0)
    }

    async fn active_prebuilds(&self, limit: usize) -> Result<Vec<Prebuild>> {
        bodies(&self.client().await?, ACTIVE_PREBUILDS, &[&(limit as i64)]).await
    }

    async fn pending_prebuilds(&self, project_id: &str, up_to: u32) -> Result<u32> {
        let client = self.client().await?;
        // The same predicate as the partial index `prebuilds_pending`.
        let statement = client
            .prepare_cached("SELECT COUNT(*) FROM (SELECT 1 FROM prebuilds WHERE project_id = $1 AND phase = 10 LIMIT $2) pending")
            .await?;
        let count: i64 = client.query_one(&statement, &[&project_id, &i64::from(up_to)]).await?.try_get(0)?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    async fn existing_prebuild_ids(&self, ids: &[String]) -> Result<std::collections::HashSet<String>> {
        let client = self.client().await?;
        let statement = client.prepare_cached("SELECT id FROM prebuilds WHERE id = ANY($1)").await?;
        let rows = client.query(&statement, &[&ids]).await?;
        rows.iter().map(|row| Ok(row.try_get::<_, String>(0)?)).collect()
    }

    async fn newest_completed_prebuild_id(
        &self,
        organization_id: &str,
        project_id: &str,
        environment_class_id: &str,
    ) -> Result<Option<String>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(NEWEST_COMPLETED).await?;
        let row = client.query_opt(&statement, &[&organization_id, &project_id, &environment_class_id]).await?;
        Ok(row.map(|row| row.try_get(0)).transpose()?)
    }

    async fn insert_warm_pool(&self, warm_pool: WarmPool) -> Result<()> {
        let metadata = warm_pool.metadata.clone().unwrap_or_default();
        let body = warm_pool.encode_to_vec();
        let params: [&(dyn ToSql + Sync); 5] =
            [&warm_pool.id, &metadata.organization_id, &metadata.project_id, &metadata.environment_class_id, &body];
        self.execute_write(
            "INSERT INTO warm_pools (id, organization_id, project_id, environment_class_id, version, body) VALUES ($1, $2, $3, $4, 1, $5)",
            &params,
        )
        .await?
        .map_err(|e| {
            if is_unique_violation(&e) {
                crate::store::duplicate_warm_pool(&metadata.project_id, &metadata.environment_class_id)
            } else {
                e.into()
            }
        })?;
        Ok(())
    }

    async fn get_warm_pool(&self, organization_id: &str, warm_pool_id: &str) -> Result<Option<WarmPool>> {
        let client = self.client().await?;
        Ok(load(&client, "warm_pools", organization_id, warm_pool_id).await?.map(|(_, p)| p))
    }

    async fn list_warm_pools(&self, filter: WarmPoolFilter, page: PageRequest) -> Result<Page<WarmPool>> {
        let mut query = ListQuery::new("SELECT seq, body FROM warm_pools", filter.organization_id);
        query.filter("project_id", &filter.project_ids);
        query.filter("environment_class_id", &filter.environment_class_ids);
        query.page(&self.client().await?, page).await
    }

    async fn update_warm_pool(&self, organization_id: &str, warm_pool_id: &str, update: WarmPoolUpdate) -> Result<Option<WarmPool>> {
        let mut client = self.client().await?;
        let tx = self.begin_write(&mut client).await?;
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let Some((version, mut warm_pool)) = load::<WarmPool>(&tx, "warm_pools", organization_id, warm_pool_id).await? else {
                return Ok(None);
            };
            if update(&mut warm_pool)? == Change::Unchanged {
                return Ok(Some(warm_pool));
            }
            let statement =
                tx.prepare_cached("UPDATE warm_pools SET version = version + 1, body = $1 WHERE id = $2 AND version = $3").await?;
            if tx.execute(&statement, &[&warm_pool.encode_to_vec(), &warm_pool_id, &version]).await? == 1 {
                tx.commit().await?;
                return Ok(Some(warm_pool));
            }
        }
        Err(Error::Unavailable("the warm pool is changing too often; retry the request".into()))
    }

    async fn remove_warm_pool(&self, warm_pool_id: &str) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = self.begin_write(&mut client).await?;
        let statement = tx.prepare_cached("DELETE FROM warm_pool_claims WHERE warm_pool_id = $1").await?;
        tx.execute(&statement, &[&warm_pool_id]).await?;
        let statement = tx.prepare_cached("DELETE FROM warm_pools WHERE id = $1").await?;
        let removed = tx.execute(&statement, &[&warm_pool_id]).await? > 0;
        tx.commit().await?;
        Ok(removed)
    }

    async fn all_warm_pools(&self) -> Result<Vec<WarmPool>> {
        bodies(&self.client().await?, "SELECT body FROM warm_pools ORDER BY seq", &[]).await
    }

    async fn insert_scheduled_prebuild(&self, prebuild: Prebuild, day: &str) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = self.begin_write(&mut client).await?;
        let c = prebuild_columns(&prebuild);
        // A second process inserting the same key waits here for the first
        // one's outcome: only one of them gets the row.
        let statement = tx
            .prepare_cached(
                "INSERT INTO schedule_runs (project_id, environment_class_id, day, prebuild_id) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .await?;
        if tx.execute(&statement, &[&c.project_id, &c.environment_class_id, &day, &prebuild.id]).await? == 0 {
            return Ok(false);
        }
        insert_prebuild_row(&tx, &prebuild).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn expired_prebuilds(&self, completed_before: Micros, failed_before: Micros, limit: usize) -> Result<Vec<Prebuild>> {
        let (completed_before, failed_before) = (completed_before.as_i64(), failed_before.as_i64());
        bodies(&self.client().await?, EXPIRED_PREBUILDS, &[&completed_before, &failed_before, &(limit as i64)]).await
    }

    async fn record_claim(&self, warm_pool_id: &str, claimed_at: Micros) -> Result<()> {
        let claimed_at = claimed_at.as_i64();
        self.execute_write("INSERT INTO warm_pool_claims (warm_pool_id, claimed_at) VALUES ($1, $2)", &[&warm_pool_id, &claimed_at])
            .await??;
        Ok(())
    }

    async fn claims_since(&self, warm_pool_id: &str, since: Micros) -> Result<u32> {
        let since = since.as_i64();
        let client = self.client().await?;
        let statement = client.prepare_cached("SELECT COUNT(*) FROM warm_pool_claims WHERE warm_pool_id = $1 AND claimed_at >= $2").await?;
        let count: i64 = client.query_one(&statement, &[&warm_pool_id, &since]).await?.try_get(0)?;
        Ok(count as u32)
    }

    async fn prune_claims(&self, before: Micros) -> Result<()> {
        let before = before.as_i64();
        self.execute_write("DELETE FROM warm_pool_claims WHERE claimed_at < $1", &[&before]).await??;
        Ok(())
    }
}
