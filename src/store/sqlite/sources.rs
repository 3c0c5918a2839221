//! [`SourceStore`] on SQLite: the source columns of `prebuilds` and the
//! `webhook_deliveries` table (migration 0003). Writes go through the one
//! writer thread like every other write, each in its own transaction.

use super::{decode_body, insert_prebuild_row, load_prebuild, SqliteStore};
use crate::domain::Micros;
use crate::error::Result;
use crate::proto::gitpod::v1::{Prebuild, PrebuildPhase};
use crate::proto::prebuildd::v1::{PrebuildSource, SourceTrigger};
use crate::store::sources::{
    bump_for_new_commit, trigger_or_official, versions_of, BaseCandidate, BranchPrebuild, Enqueued, PushBatch, PushOutcome, SourceStore,
};
use async_trait::async_trait;
use prost::Message;
use rusqlite::{params, Connection, OptionalExtension};

/// The columns of a source, in the order every query below reads them.
const SOURCE_COLUMNS: &str =
    "id, source_trigger, triggered_by, source_provider, source_branch, source_commit, incremental, base_prebuild_id, base_commit, fingerprint, feeds_warm_pools, snapshot_image";

fn source_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<PrebuildSource> {
    Ok(PrebuildSource {
        prebuild_id: row.get(0)?,
        trigger: trigger_or_official(row.get(1)?, row.get(2)?),
        provider: row.get(3)?,
        branch: row.get(4)?,
        commit_sha: row.get(5)?,
        incremental: row.get(6)?,
        base_prebuild_id: row.get(7)?,
        base_commit_sha: row.get(8)?,
        configuration_fingerprint: row.get(9)?,
        feeds_warm_pools: row.get(10)?,
        snapshot_image: row.get(11)?,
    })
}

/// Writes a source's columns onto an existing row.
fn write_source(conn: &Connection, source: &PrebuildSource) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "UPDATE prebuilds SET source_trigger = ?2, source_provider = ?3, source_branch = ?4, source_commit = ?5, incremental = ?6,
             base_prebuild_id = ?7, base_commit = ?8, fingerprint = ?9, feeds_warm_pools = ?10
         WHERE id = ?1",
    )?
    .execute(params![
        source.prebuild_id,
        source.trigger,
        source.provider,
        source.branch,
        source.commit_sha,
        source.incremental,
        source.base_prebuild_id,
        source.base_commit_sha,
        source.configuration_fingerprint,
        source.feeds_warm_pools
    ])
}

/// One prebuild of a push, inside the push's transaction.
fn enqueue_one(conn: &Connection, prebuild: &Prebuild, source: &PrebuildSource, at: Micros) -> Result<Enqueued> {
    let metadata = prebuild.metadata.clone().unwrap_or_default();
    let (project, class, branch) = (&metadata.project_id, &metadata.environment_class_id, &source.branch);
    let newest: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT id, source_commit FROM prebuilds
             WHERE project_id = ?1 AND environment_class_id = ?2 AND source_branch = ?3 AND source_commit != ''
             ORDER BY seq DESC LIMIT 1",
        )?
        .query_row(params![project, class, branch], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    if let Some((id, commit)) = newest {
        if commit == source.commit_sha {
            return Ok(Enqueued::Unchanged(id));
        }
    }
    let queued: Option<(i64, Vec<u8>)> = conn
        .prepare_cached(&format!(
            "SELECT version, body FROM prebuilds
             WHERE project_id = ?1 AND environment_class_id = ?2 AND source_branch = ?3 AND source_trigger IN ({push}, {poll})
               AND phase IN ({unspecified}, {pending})
             ORDER BY seq DESC LIMIT 1",
            push = SourceTrigger::PushWebhook as i32,
            poll = SourceTrigger::Poll as i32,
            unspecified = PrebuildPhase::Unspecified as i32,
            pending = PrebuildPhase::Pending as i32,
        ))?
        .query_row(params![project, class, branch], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    if let Some((version, body)) = queued {
        let mut queued: Prebuild = decode_body(&body)?;
        bump_for_new_commit(&mut queued, at);
        conn.prepare_cached(
            "UPDATE prebuilds SET version = version + 1, body = ?2, source_trigger = ?3, source_provider = ?4, source_commit = ?5
             WHERE id = ?1 AND version = ?6",
        )?
        .execute(params![queued.id, queued.encode_to_vec(), source.trigger, source.provider, source.commit_sha, version])?;
        return Ok(Enqueued::Collapsed(queued.id));
    }
    insert_prebuild_row(conn, prebuild)?;
    write_source(conn, &PrebuildSource { prebuild_id: prebuild.id.clone(), ..source.clone() })?;
    Ok(Enqueued::Inserted(prebuild.id.clone()))
}

#[async_trait]
impl SourceStore for SqliteStore {
    async fn enqueue_push(&self, push: PushBatch) -> Result<PushOutcome> {
        self.write(move |conn| {
            if let Some(delivery) = &push.delivery {
                let fresh = conn
                    .prepare_cached("INSERT OR IGNORE INTO webhook_deliveries (delivery_key, received_at) VALUES (?1, ?2)")?
                    .execute(params![delivery, push.received_at.as_i64()])?;
                if fresh == 0 {
                    return Ok(PushOutcome::Replayed);
                }
            }
            let mut outcomes = Vec::with_capacity(push.prebuilds.len());
            for (prebuild, source) in &push.prebuilds {
                outcomes.push(enqueue_one(conn, prebuild, source, push.received_at)?);
            }
            Ok(PushOutcome::Enqueued(outcomes))
        })
        .await
    }

    async fn prebuild_sources(&self, organization_id: &str, prebuild_ids: &[String]) -> Result<Vec<PrebuildSource>> {
        let (organization_id, prebuild_ids) = (organization_id.to_string(), prebuild_ids.to_vec());
        self.read(move |conn| {
            let mut statement =
                conn.prepare_cached(&format!("SELECT {SOURCE_COLUMNS} FROM prebuilds WHERE id = ?1 AND organization_id = ?2"))?;
            let mut sources = Vec::new();
            for id in &prebuild_ids {
                if let Some(source) = statement.query_row(params![id, organization_id], source_of).optional()? {
                    sources.push(source);
                }
            }
            Ok(sources)
        })
        .await
    }

    async fn record_source(&self, organization_id: &str, prebuild_id: &str, seen: (u64, u64), source: PrebuildSource) -> Result<bool> {
        let (organization_id, prebuild_id) = (organization_id.to_string(), prebuild_id.to_string());
        self.write(move |conn| {
            let Some((_, prebuild)) = load_prebuild(conn, &organization_id, &prebuild_id)? else { return Ok(false) };
            if versions_of(&prebuild) != seen {
                return Ok(false);
            }
            Ok(write_source(conn, &PrebuildSource { prebuild_id, ..source })? == 1)
        })
        .await
    }

    async fn record_snapshot_image(&self, prebuild_id: &str, image: &str) -> Result<()> {
        let (prebuild_id, image) = (prebuild_id.to_string(), image.to_string());
        self.write(move |conn| {
            conn.prepare_cached("UPDATE prebuilds SET snapshot_image = ?2 WHERE id = ?1")?.execute(params![prebuild_id, image])?;
            Ok(())
        })
        .await
    }

    async fn active_branch_prebuilds(&self) -> Result<Vec<BranchPrebuild>> {
        self.read(move |conn| {
            // The predicate of the partial index `prebuilds_active_pushes`.
            let mut statement = conn.prepare_cached(&format!(
                "SELECT id, project_id, environment_class_id, source_branch, source_commit, phase FROM prebuilds
                 WHERE phase NOT IN ({}) AND source_trigger IN ({}, {}) ORDER BY seq",
                PrebuildPhase::final_phases_sql(),
                SourceTrigger::PushWebhook as i32,
                SourceTrigger::Poll as i32
            ))?;
            let rows = statement.query_map([], |row| {
                Ok(BranchPrebuild {
                    prebuild_id: row.get(0)?,
                    project_id: row.get(1)?,
                    environment_class_id: row.get(2)?,
                    branch: row.get(3)?,
                    commit_sha: row.get(4)?,
                    phase: row.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn base_candidates(
        &self,
        organization_id: &str,
        project_id: &str,
        environment_class_id: &str,
        limit: usize,
    ) -> Result<Vec<BaseCandidate>> {
        let (o, p, c) = (organization_id.to_string(), project_id.to_string(), environment_class_id.to_string());
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT b.id, b.source_commit, b.fingerprint, b.finished_at,
                        (SELECT COUNT(*) FROM prebuilds i WHERE i.base_prebuild_id = b.id AND i.phase = {completed})
                 FROM prebuilds b
                 WHERE b.organization_id = ?1 AND b.project_id = ?2 AND b.environment_class_id = ?3 AND b.phase = {completed}
                   AND b.incremental = 0 AND b.source_commit != ''
                 ORDER BY b.seq DESC LIMIT ?4",
                completed = PrebuildPhase::Completed as i32
            ))?;
            let rows = statement.query_map(params![o, p, c, limit as i64], |row| {
                Ok(BaseCandidate {
                    prebuild_id: row.get(0)?,
                    commit_sha: row.get(1)?,
                    fingerprint: row.get(2)?,
                    finished_at: row.get::<_, Option<i64>>(3)?.map(Micros),
                    incremental_builds: row.get::<_, i64>(4)?.try_into().unwrap_or(u32::MAX),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn last_built(&self, organization_id: &str, project_id: &str) -> Result<Option<PrebuildSource>> {
        let (o, p) = (organization_id.to_string(), project_id.to_string());
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {SOURCE_COLUMNS} FROM prebuilds
                 WHERE organization_id = ?1 AND project_id = ?2 AND phase = {} AND source_commit != ''
                 ORDER BY seq DESC LIMIT 1",
                PrebuildPhase::Completed as i32
            ))?;
            Ok(statement.query_row(params![o, p], source_of).optional()?)
        })
        .await
    }

    async fn prune_deliveries(&self, before: Micros, keep: usize) -> Result<u64> {
        let before = before.as_i64();
        self.write(move |conn| {
            let old = conn.prepare_cached("DELETE FROM webhook_deliveries WHERE received_at < ?1")?.execute([before])?;
            let surplus = conn
                .prepare_cached(
                    "DELETE FROM webhook_deliveries WHERE delivery_key IN
                     (SELECT delivery_key FROM webhook_deliveries ORDER BY received_at DESC LIMIT -1 OFFSET ?1)",
                )?
                .execute([keep as i64])?;
            Ok((old + surplus) as u64)
        })
        .await
    }
}
