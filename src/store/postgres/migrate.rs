//! Numbered schema migrations for PostgreSQL, applied at start.
//!
//! Safe when several prebuildd processes start against one database at
//! once: everything happens in one transaction that first takes a
//! transaction-scoped advisory lock, so a second process waits, then finds
//! the migrations recorded and applies nothing. DDL is transactional in
//! PostgreSQL, so a failed migration leaves no half-made schema behind.

use crate::error::{Error, Result};

/// The migrations in order; `schema_migrations` records which have run.
/// Never edit one that has shipped: add the next number.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_initial.sql")),
    (2, include_str!("../migrations/postgres/0002_replicas.sql")),
    (3, include_str!("../migrations/postgres/0003_logs.sql")),
    (4, include_str!("../migrations/postgres/0004_pending.sql")),
    (5, include_str!("../migrations/postgres/0005_sources.sql")),
    (6, include_str!("../migrations/postgres/0006_snapshot_images.sql")),
];

/// The advisory lock key serializing migrations ("prebuild" in ASCII).
/// Advisory locks are per database, so unrelated databases on the same
/// server never wait for each other.
pub(super) const MIGRATION_LOCK: i64 = 0x7072_6562_7569_6c64;

/// Applies the migrations this database has not had yet; returns how many.
pub(super) async fn migrate(client: &mut deadpool_postgres::Client) -> Result<usize> {
    let tx = client.transaction().await?;
    tx.batch_execute(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")).await?;
    // Created under the lock: two processes racing on CREATE TABLE IF NOT
    // EXISTS can otherwise both try to create it.
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER     PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied: i32 = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).await?.get(0);
    let known = MIGRATIONS.last().map(|(version, _)| *version).unwrap_or(0);
    if applied > known {
        return Err(Error::Internal(format!(
            "the database has schema version {applied}, newer than this binary knows ({known}); upgrade prebuildd"
        )));
    }
    let mut count = 0;
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > applied) {
        tx.batch_execute(sql).await.map_err(|e| Error::Internal(format!("schema migration {version} failed: {}", super::describe(&e))))?;
        tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[version]).await?;
        tracing::info!(version, "applied schema migration");
        count += 1;
    }
    tx.commit().await?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        for (index, (version, sql)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version as usize, index + 1);
            assert!(!sql.trim().is_empty());
        }
    }
}
