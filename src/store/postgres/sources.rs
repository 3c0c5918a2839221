//! [`SourceStore`] on PostgreSQL: the same columns and rules as SQLite's
//! (migration 0004). A push takes a transaction-scoped advisory lock per
//! (project, class, branch) before it looks for the branch's queued
//! prebuild, so two pushes to one branch at once cannot both queue one
//! (READ COMMITTED would let both see none); the lock ends with the
//! transaction, as a transaction-mode pooler requires.

use super::{decode_body, insert_prebuild_row, PostgresStore};
use crate::domain::Micros;
use crate::error::Result;
use crate::proto::gitpod::v1::Prebuild;
use crate::proto::prebuildd::v1::PrebuildSource;
use crate::store::sources::{
    bump_for_new_commit, trigger_or_official, versions_of, BaseCandidate, BranchPrebuild, Enqueued, PushBatch, PushOutcome, SourceStore,
};
use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use prost::Message;

/// The columns of a source, in the order [`source_of`] reads them.
const SOURCE_COLUMNS: &str =
    "id, source_trigger, triggered_by, source_provider, source_branch, source_commit, incremental, base_prebuild_id, base_commit, fingerprint, feeds_warm_pools, snapshot_image";
/// Source triggers 3 and 4 (push webhook, poll) and phases 0 and 10
/// (unspecified, pending) as literals, like the partial indexes' predicates.
const NEWEST_OF_BRANCH: &str = "SELECT id, source_commit FROM prebuilds
     WHERE project_id = $1 AND environment_class_id = $2 AND source_branch = $3 AND source_commit != ''
     ORDER BY seq DESC LIMIT 1";
const QUEUED_OF_BRANCH: &str = "SELECT version, body FROM prebuilds
     WHERE project_id = $1 AND environment_class_id = $2 AND source_branch = $3 AND source_trigger IN (3, 4) AND phase IN (0, 10)
     ORDER BY seq DESC LIMIT 1";
const WRITE_SOURCE: &str = "UPDATE prebuilds SET source_trigger = $2, source_provider = $3, source_branch = $4, source_commit = $5,
         incremental = $6, base_prebuild_id = $7, base_commit = $8, fingerprint = $9, feeds_warm_pools = $10
     WHERE id = $1";

fn source_of(row: &tokio_postgres::Row) -> Result<PrebuildSource> {
    Ok(PrebuildSource {
        prebuild_id: row.try_get(0)?,
        trigger: trigger_or_official(row.try_get(1)?, row.try_get(2)?),
        provider: row.try_get(3)?,
        branch: row.try_get(4)?,
        commit_sha: row.try_get(5)?,
        incremental: row.try_get(6)?,
        base_prebuild_id: row.try_get(7)?,
        base_commit_sha: row.try_get(8)?,
        configuration_fingerprint: row.try_get(9)?,
        feeds_warm_pools: row.try_get(10)?,
        snapshot_image: row.try_get(11)?,
    })
}

async fn write_source(client: &impl GenericClient, source: &PrebuildSource) -> Result<u64> {
    let statement = client.prepare_cached(WRITE_SOURCE).await?;
    Ok(client
        .execute(
            &statement,
            &[
                &source.prebuild_id,
                &source.trigger,
                &source.provider,
                &source.branch,
                &source.commit_sha,
                &source.incremental,
                &source.base_prebuild_id,
                &source.base_commit_sha,
                &source.configuration_fingerprint,
                &source.feeds_warm_pools,
            ],
        )
        .await?)
}

async fn enqueue_one(client: &impl GenericClient, prebuild: &Prebuild, source: &PrebuildSource, at: Micros) -> Result<Enqueued> {
    let metadata = prebuild.metadata.clone().unwrap_or_default();
    let (project, class, branch) = (&metadata.project_id, &metadata.environment_class_id, &source.branch);
    let key = format!("{project}\n{class}\n{branch}");
    client.execute("SELECT pg_advisory_xact_lock(hashtext($1)::bigint)", &[&key]).await?;
    let statement = client.prepare_cached(NEWEST_OF_BRANCH).await?;
    if let Some(row) = client.query_opt(&statement, &[project, class, branch]).await? {
        let (id, commit): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        if commit == source.commit_sha {
            return Ok(Enqueued::Unchanged(id));
        }
    }
    let statement = client.prepare_cached(QUEUED_OF_BRANCH).await?;
    if let Some(row) = client.query_opt(&statement, &[project, class, branch]).await? {
        let version: i64 = row.try_get(0)?;
        let mut queued: Prebuild = decode_body(&row, 1)?;
        bump_for_new_commit(&mut queued, at);
        let statement = client
            .prepare_cached(
                "UPDATE prebuilds SET version = version + 1, body = $2, source_trigger = $3, source_provider = $4, source_commit = $5
                 WHERE id = $1 AND version = $6",
            )
            .await?;
        client
            .execute(&statement, &[&queued.id, &queued.encode_to_vec(), &source.trigger, &source.provider, &source.commit_sha, &version])
            .await?;
        return Ok(Enqueued::Collapsed(queued.id));
    }
    insert_prebuild_row(client, prebuild).await?;
    write_source(client, &PrebuildSource { prebuild_id: prebuild.id.clone(), ..source.clone() }).await?;
    Ok(Enqueued::Inserted(prebuild.id.clone()))
}

#[async_trait]
impl SourceStore for PostgresStore {
    async fn enqueue_push(&self, push: PushBatch) -> Result<PushOutcome> {
        let mut client = self.client().await?;
        let tx = self.begin_write(&mut client).await?;
        if let Some(delivery) = &push.delivery {
            let statement = tx
                .prepare_cached("INSERT INTO webhook_deliveries (delivery_key, received_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .await?;
            if tx.execute(&statement, &[delivery, &push.received_at.as_i64()]).await? == 0 {
                return Ok(PushOutcome::Replayed);
            }
        }
        let mut outcomes = Vec::with_capacity(push.prebuilds.len());
        for (prebuild, source) in &push.prebuilds {
            outcomes.push(enqueue_one(&tx, prebuild, source, push.received_at).await?);
        }
        tx.commit().await?;
        Ok(PushOutcome::Enqueued(outcomes))
    }

    async fn prebuild_sources(&self, organization_id: &str, prebuild_ids: &[String]) -> Result<Vec<PrebuildSource>> {
        let client = self.client().await?;
        let statement =
            client.prepare_cached(&format!("SELECT {SOURCE_COLUMNS} FROM prebuilds WHERE id = ANY($1) AND organization_id = $2")).await?;
        let rows = client.query(&statement, &[&prebuild_ids, &organization_id]).await?;
        let mut found = rows.iter().map(source_of).collect::<Result<Vec<_>>>()?;
        // In the order asked.
        found.sort_by_key(|source| prebuild_ids.iter().position(|id| *id == source.prebuild_id));
        Ok(found)
    }

    async fn record_source(&self, organization_id: &str, prebuild_id: &str, seen: (u64, u64), source: PrebuildSource) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = self.begin_write(&mut client).await?;
        let statement = tx.prepare_cached("SELECT version, body FROM prebuilds WHERE id = $1 AND organization_id = $2 FOR UPDATE").await?;
        let Some(row) = tx.query_opt(&statement, &[&prebuild_id, &organization_id]).await? else { return Ok(false) };
        let prebuild: Prebuild = decode_body(&row, 1)?;
        if versions_of(&prebuild) != seen {
            return Ok(false);
        }
        let wrote = write_source(&tx, &PrebuildSource { prebuild_id: prebuild_id.to_string(), ..source }).await? == 1;
        tx.commit().await?;
        Ok(wrote)
    }

    async fn record_snapshot_image(&self, prebuild_id: &str, image: &str) -> Result<()> {
        let mut client = self.client().await?;
        let tx = self.begin_write(&mut client).await?;
        let statement = tx.prepare_cached("UPDATE prebuilds SET snapshot_image = $2 WHERE id = $1").await?;
        tx.execute(&statement, &[&prebuild_id, &image]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn active_branch_prebuilds(&self) -> Result<Vec<BranchPrebuild>> {
        let client = self.client().await?;
        // The predicate of the partial index `prebuilds_active_pushes`.
        let statement = client
            .prepare_cached(
                "SELECT id, project_id, environment_class_id, source_branch, source_commit, phase FROM prebuilds
                 WHERE phase NOT IN (60, 70, 80) AND source_trigger IN (3, 4) ORDER BY seq",
            )
            .await?;
        let rows = client.query(&statement, &[]).await?;
        rows.iter()
            .map(|row| {
                Ok(BranchPrebuild {
                    prebuild_id: row.try_get(0)?,
                    project_id: row.try_get(1)?,
                    environment_class_id: row.try_get(2)?,
                    branch: row.try_get(3)?,
                    commit_sha: row.try_get(4)?,
                    phase: row.try_get(5)?,
                })
            })
            .collect()
    }

    async fn base_candidates(
        &self,
        organization_id: &str,
        project_id: &str,
        environment_class_id: &str,
        limit: usize,
    ) -> Result<Vec<BaseCandidate>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT b.id, b.source_commit, b.fingerprint, b.finished_at,
                        (SELECT COUNT(*) FROM prebuilds i WHERE i.base_prebuild_id = b.id AND i.phase = 60)
                 FROM prebuilds b
                 WHERE b.organization_id = $1 AND b.project_id = $2 AND b.environment_class_id = $3 AND b.phase = 60
                   AND NOT b.incremental AND b.source_commit != ''
                 ORDER BY b.seq DESC LIMIT $4",
            )
            .await?;
        let rows = client.query(&statement, &[&organization_id, &project_id, &environment_class_id, &(limit as i64)]).await?;
        rows.iter()
            .map(|row| {
                Ok(BaseCandidate {
                    prebuild_id: row.try_get(0)?,
                    commit_sha: row.try_get(1)?,
                    fingerprint: row.try_get(2)?,
                    finished_at: row.try_get::<_, Option<i64>>(3)?.map(Micros),
                    incremental_builds: row.try_get::<_, i64>(4)?.try_into().unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    async fn last_built(&self, organization_id: &str, project_id: &str) -> Result<Option<PrebuildSource>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {SOURCE_COLUMNS} FROM prebuilds WHERE organization_id = $1 AND project_id = $2 AND phase = 60 AND source_commit != ''
                 ORDER BY seq DESC LIMIT 1"
            ))
            .await?;
        client.query_opt(&statement, &[&organization_id, &project_id]).await?.as_ref().map(source_of).transpose()
    }

    async fn prune_deliveries(&self, before: Micros, keep: usize) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = self.begin_write(&mut client).await?;
        let old = tx.execute("DELETE FROM webhook_deliveries WHERE received_at < $1", &[&before.as_i64()]).await?;
        let surplus = tx
            .execute(
                "DELETE FROM webhook_deliveries WHERE delivery_key IN
                 (SELECT delivery_key FROM webhook_deliveries ORDER BY received_at DESC OFFSET $1)",
                &[&(keep as i64)],
            )
            .await?;
        tx.commit().await?;
        Ok(old + surplus)
    }
}
