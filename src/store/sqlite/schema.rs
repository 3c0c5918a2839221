//! The SQLite schema: the connection's settings, the numbered migrations,
//! and the bulk loader that benchmarks seed with.

use super::insert_prebuild_row;
use crate::error::{Error, Result};
use crate::proto::gitpod::v1::Prebuild;
use rusqlite::Connection;
use std::path::Path;

/// Numbered schema migrations, applied in order at start; `PRAGMA
/// user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_initial.sql"),
    include_str!("../migrations/0002_reconciler.sql"),
    include_str!("../migrations/0003_pending.sql"),
    include_str!("../migrations/0004_sources.sql"),
    include_str!("../migrations/0005_snapshot_images.sql"),
];

pub(super) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // WAL: readers never block the writer. FULL: an acknowledged commit
    // survives power loss, not only a process crash.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(())
}

pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let applied: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if applied as usize > MIGRATIONS.len() {
        return Err(Error::Internal(format!(
            "the database has schema version {applied}, newer than this binary knows ({}); upgrade prebuildd",
            MIGRATIONS.len()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = index + 1, "applied schema migration");
    }
    Ok(())
}

/// Bulk-loads prebuilds straight into `<data_dir>/prebuildd.db` (creating
/// and migrating it if needed), many rows per transaction. For seeding
/// benchmarks with a million rows in seconds; not for a running server's
/// data dir.
pub fn seed_prebuilds(data_dir: &Path, prebuilds: impl Iterator<Item = Prebuild>) -> Result<usize> {
    std::fs::create_dir_all(data_dir).map_err(|e| Error::Internal(format!("cannot create {}: {e}", data_dir.display())))?;
    let mut conn = Connection::open(data_dir.join("prebuildd.db"))?;
    configure(&conn)?;
    migrate(&mut conn)?;
    let mut count = 0;
    let mut prebuilds = prebuilds.peekable();
    while prebuilds.peek().is_some() {
        let tx = conn.transaction()?;
        for prebuild in prebuilds.by_ref().take(50_000) {
            insert_prebuild_row(&tx, &prebuild)?;
            count += 1;
        }
        tx.commit()?;
    }
    conn.execute_batch("PRAGMA optimize")?;
    Ok(count)
}
