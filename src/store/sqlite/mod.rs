//! The SQLite store: WAL mode, `synchronous=FULL`, never on the async runtime.
//!
//! One writer thread owns the only write connection and commits in groups:
//! every write waiting when a transaction starts joins it (each in its own
//! savepoint, so one failing write does not undo the others), and each caller
//! is answered only after the commit that holds its write. A pool of reader
//! threads, each with its own connection, serves reads concurrently (WAL lets
//! readers proceed while the writer commits). GetPrebuild of a row read
//! since the last commit is answered from memory (`prebuild_cache`). The
//! queues to both kinds of thread are bounded: past them a call is refused.
//!
//! Files: this one (opening, the threads' queues, the Store trait),
//! `writer.rs` (the group-committing writer thread), `schema.rs` (the
//! connection's settings, the migrations, bulk loading), `prebuild_cache.rs`.

mod prebuild_cache;
mod schema;
mod sources;
mod writer;

pub use schema::seed_prebuilds;

use self::prebuild_cache::PrebuildCache;
use super::columns::prebuild_columns;
use super::{Change, Page, PageRequest, PrebuildFilter, PrebuildUpdate, Store, WarmPoolFilter, WarmPoolUpdate};
use crate::domain::Micros;
use crate::error::{Error, Result};
use crate::proto::gitpod::v1::{Prebuild, PrebuildPhase, WarmPool};
use async_trait::async_trait;
use prost::Message;
use rusqlite::{params, params_from_iter, Connection, OpenFlags, OptionalExtension};
use schema::{configure, migrate};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::oneshot;
use writer::{writer_loop, Finish, WriteJob, MAX_GROUP};

/// Writes that may wait for the writer thread: sixteen full groups. Past
/// it a write is refused at once (`unavailable`) rather than queued: the
/// queue would only grow, and every caller in it wait longer.
const MAX_QUEUED_WRITES: usize = 16 * MAX_GROUP;
/// Reads that may wait for a reader thread (see [`MAX_QUEUED_WRITES`]).
const MAX_QUEUED_READS: usize = 4096;
/// How often a read-modify-write retries after losing an optimistic race.
const MAX_UPDATE_ATTEMPTS: usize = 5;
/// How long the server waits for a previous owner of the data dir to let go.
const OWNER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A read: runs on a reader thread with its connection.
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

#[derive(Clone)]
pub struct SqliteStore {
    writes: crossbeam_channel::Sender<WriteJob>,
    reads: crossbeam_channel::Sender<ReadJob>,
    /// Only when this process owns the database (see [`SqliteStore::open_owned`]).
    cache: Option<Arc<PrebuildCache>>,
    /// Held while any clone lives: the data dir's exclusive lock, if taken.
    _owner: Option<Arc<std::fs::File>>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish()
    }
}

impl SqliteStore {
    /// Opens the database for the server: takes the data dir's exclusive lock
    /// (`<data_dir>/prebuildd.lock`; a second server on the same data dir
    /// would run a second reconciler) and, since no other process can then
    /// write, answers GetPrebuild from memory for rows read since the last
    /// commit. Waits a few seconds for a previous owner to let go.
    pub fn open_owned(data_dir: &Path) -> Result<SqliteStore> {
        std::fs::create_dir_all(data_dir).map_err(|e| Error::Internal(format!("cannot create data dir {}: {e}", data_dir.display())))?;
        let lock_path = data_dir.join("prebuildd.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::Internal(format!("cannot open {}: {e}", lock_path.display())))?;
        let deadline = std::time::Instant::now() + OWNER_WAIT;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::FailedPrecondition(format!(
                        "the data dir {} is in use by another prebuildd process (it holds {})",
                        data_dir.display(),
                        lock_path.display()
                    )));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(Error::Internal(format!("cannot lock {}: {e}", lock_path.display())));
                }
            }
        }
        let mut store = Self::open_with(data_dir, Some(Arc::new(PrebuildCache::default())))?;
        store._owner = Some(Arc::new(lock));
        Ok(store)
    }

    /// Opens (creating if needed) `<data_dir>/prebuildd.db`, applies
    /// migrations and starts the writer and reader threads, without taking
    /// ownership: other processes may use the same file, so every read goes
    /// to the database (tools and tests of several processes on one file).
    pub fn open(data_dir: &Path) -> Result<SqliteStore> {
        Self::open_with(data_dir, None)
    }

    fn open_with(data_dir: &Path, cache: Option<Arc<PrebuildCache>>) -> Result<SqliteStore> {
        std::fs::create_dir_all(data_dir).map_err(|e| Error::Internal(format!("cannot create data dir {}: {e}", data_dir.display())))?;
        let path = data_dir.join("prebuildd.db");
        let mut writer = Connection::open(&path)?;
        configure(&writer)?;
        migrate(&mut writer)?;
        // Each write of a group runs in its own savepoint, whose sub-journal
        // holds the pages it changes: in memory, not in a temporary file that
        // every page is copied into with a system call (over a third of the
        // writer's time). Its size is bounded by one write's pages. Set after
        // the migrations, so that one building an index over a large table
        // still sorts through temporary files.
        writer.pragma_update(None, "temp_store", "MEMORY")?;

        let (write_tx, write_rx) = crossbeam_channel::bounded::<WriteJob>(MAX_QUEUED_WRITES);
        let writer_cache = cache.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(writer, write_rx, writer_cache.as_deref()))
            .map_err(|e| Error::Internal(format!("cannot start the writer thread: {e}")))?;

        let (read_tx, read_rx) = crossbeam_channel::bounded::<ReadJob>(MAX_QUEUED_READS);
        // Two readers per core (at least four): a reader waiting on the disk
        // or the OS leaves a core to another (measured with `prebuildd-bench`;
        // PREBUILDD_SQLITE_READERS overrides).
        let readers = match std::env::var("PREBUILDD_SQLITE_READERS").ok().and_then(|v| v.parse::<usize>().ok()) {
            Some(count) => count.clamp(1, 32),
            None => (std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) * 2).clamp(4, 32),
        };
        for i in 0..readers {
            let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            conn.set_prepared_statement_cache_capacity(128);
            let rx = read_rx.clone();
            std::thread::Builder::new()
                .name(format!("sqlite-reader-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        // A panicking job drops its reply sender; the caller
                        // gets an internal error and the thread lives on.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&conn)));
                    }
                })
                .map_err(|e| Error::Internal(format!("cannot start a reader thread: {e}")))?;
        }
        Ok(SqliteStore { writes: write_tx, reads: read_tx, cache, _owner: None, path })
    }

    /// Runs `f` on a reader thread.
    async fn read<R: Send + 'static>(&self, f: impl FnOnce(&Connection) -> Result<R> + Send + 'static) -> Result<R> {
        let (tx, rx) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        self.reads.try_send(job).map_err(|error| match error {
            crossbeam_channel::TrySendError::Full(_) => {
                Error::Unavailable(format!("the store is overloaded: {MAX_QUEUED_READS} reads are already waiting; retry with backoff"))
            }
            crossbeam_channel::TrySendError::Disconnected(_) => Error::Unavailable("the store is shutting down".into()),
        })?;
        rx.await.map_err(|_| Error::Internal("a store read failed unexpectedly".into()))?
    }

    /// Runs `f` in the writer's next group transaction; returns after commit.
    async fn write<R: Send + 'static>(&self, f: impl FnOnce(&Connection) -> Result<R> + Send + 'static) -> Result<R> {
        let (tx, rx) = oneshot::channel();
        let job: WriteJob = Box::new(move |conn| {
            let result = f(conn);
            let ok = result.is_ok();
            let finish: Finish = Box::new(move |commit: Result<()>| {
                let _ = tx.send(commit.and(result));
            });
            (ok, finish)
        });
        self.writes.try_send(job).map_err(|error| match error {
            crossbeam_channel::TrySendError::Full(_) => {
                Error::Unavailable(format!("the store is overloaded: {MAX_QUEUED_WRITES} writes are already waiting; retry with backoff"))
            }
            crossbeam_channel::TrySendError::Disconnected(_) => Error::Unavailable("the store is shutting down".into()),
        })?;
        rx.await.map_err(|_| Error::Internal("a store write failed unexpectedly".into()))?
    }

    /// `PRAGMA integrity_check`, for operators and crash tests.
    pub async fn integrity_check(&self) -> Result<String> {
        self.read(|conn| Ok(conn.query_row("PRAGMA integrity_check", [], |row| row.get::<_, String>(0))?)).await
    }
}

/// Inserts a prebuild with its filter columns (the one INSERT of the table).
fn insert_prebuild_row(conn: &Connection, prebuild: &Prebuild) -> rusqlite::Result<usize> {
    let c = prebuild_columns(prebuild);
    conn.prepare_cached(
        "INSERT INTO prebuilds (id, organization_id, project_id, environment_class_id, phase, triggered_by, creator_id, executor_id, version, body, finished_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9, ?10)",
    )?
    .execute(params![
        prebuild.id,
        c.organization_id,
        c.project_id,
        c.environment_class_id,
        c.phase,
        c.triggered_by,
        c.creator_id,
        c.executor_id,
        prebuild.encode_to_vec(),
        c.finished_at
    ])
}

fn decode_body<T: Message + Default>(bytes: &[u8]) -> Result<T> {
    Ok(T::decode(bytes)?)
}

/// Appends `AND column IN (?, ?, ...)` for a non-empty list.
fn push_in<T: rusqlite::ToSql + Clone + 'static>(sql: &mut String, args: &mut Vec<Box<dyn rusqlite::ToSql>>, column: &str, values: &[T]) {
    if values.is_empty() {
        return;
    }
    sql.push_str(" AND ");
    sql.push_str(column);
    sql.push_str(" IN (");
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('?');
        args.push(Box::new(value.clone()));
    }
    sql.push(')');
}

fn run_page<T: Message + Default>(
    conn: &Connection,
    mut sql: String,
    mut args: Vec<Box<dyn rusqlite::ToSql>>,
    page: PageRequest,
) -> Result<Page<T>> {
    if let Some(after) = page.after_seq {
        sql.push_str(" AND seq < ?");
        args.push(Box::new(after));
    }
    sql.push_str(" ORDER BY seq DESC LIMIT ?");
    args.push(Box::new((page.limit + 1) as i64));
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params_from_iter(args.iter().map(|a| a.as_ref())))?;
    let mut items = Vec::with_capacity(page.limit.min(128));
    let mut last_seq = None;
    let mut more = false;
    while let Some(row) = rows.next()? {
        if items.len() == page.limit {
            more = true;
            break;
        }
        let seq: i64 = row.get(0)?;
        let body = row.get_ref(1)?.as_blob().map_err(|e| Error::Internal(format!("bad body column: {e}")))?;
        items.push(decode_body(body)?);
        last_seq = Some(seq);
    }
    Ok(Page { items, next_after_seq: if more { last_seq } else { None } })
}

fn load_prebuild(conn: &Connection, organization_id: &str, prebuild_id: &str) -> Result<Option<(i64, Prebuild)>> {
    let mut stmt = conn.prepare_cached("SELECT version, body FROM prebuilds WHERE id = ?1 AND organization_id = ?2")?;
    let row =
        stmt.query_row(params![prebuild_id, organization_id], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))).optional()?;
    row.map(|(version, body)| Ok((version, decode_body(&body)?))).transpose()
}

fn load_warm_pool(conn: &Connection, organization_id: &str, warm_pool_id: &str) -> Result<Option<(i64, WarmPool)>> {
    let mut stmt = conn.prepare_cached("SELECT version, body FROM warm_pools WHERE id = ?1 AND organization_id = ?2")?;
    let row =
        stmt.query_row(params![warm_pool_id, organization_id], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))).optional()?;
    row.map(|(version, body)| Ok((version, decode_body(&body)?))).transpose()
}

fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(error, rusqlite::Error::SqliteFailure(e, _) if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_prebuild(&self, prebuild: Prebuild) -> Result<()> {
        self.write(move |conn| {
            insert_prebuild_row(conn, &prebuild).map_err(|e| {
                if is_unique_violation(&e) {
                    Error::AlreadyExists(format!("prebuild {} already exists", prebuild.id))
                } else {
                    e.into()
                }
            })?;
            Ok(())
        })
        .await
    }

    async fn get_prebuild(&self, organization_id: &str, prebuild_id: &str) -> Result<Option<Prebuild>> {
        let (organization, id) = (organization_id.to_string(), prebuild_id.to_string());
        let Some(cache) = &self.cache else {
            return self.read(move |conn| Ok(load_prebuild(conn, &organization, &id)?.map(|(_, p)| p))).await;
        };
        if let Some(prebuild) = cache.get(organization_id, prebuild_id) {
            return Ok(Some(prebuild));
        }
        let generation = cache.generation();
        let prebuild = self.read(move |conn| Ok(load_prebuild(conn, &organization, &id)?.map(|(_, p)| p))).await?;
        if let Some(prebuild) = &prebuild {
            cache.insert(generation, organization_id, prebuild);
        }
        Ok(prebuild)
    }

    async fn list_prebuilds(&self, filter: PrebuildFilter, page: PageRequest) -> Result<Page<Prebuild>> {
        self.read(move |conn| {
            let mut sql = String::from("SELECT seq, body FROM prebuilds WHERE organization_id = ?");
            let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![Box::new(filter.organization_id.clone())];
            push_in(&mut sql, &mut args, "project_id", &filter.project_ids);
            push_in(&mut sql, &mut args, "phase", &filter.phases);
            push_in(&mut sql, &mut args, "triggered_by", &filter.triggered_by);
            push_in(&mut sql, &mut args, "creator_id", &filter.creator_ids);
            push_in(&mut sql, &mut args, "executor_id", &filter.executor_ids);
            run_page(conn, sql, args, page)
        })
        .await
    }

    async fn update_prebuild(&self, organization_id: &str, prebuild_id: &str, update: PrebuildUpdate) -> Result<Option<Prebuild>> {
        let (organization_id, prebuild_id) = (organization_id.to_string(), prebuild_id.to_string());
        self.write(move |conn| {
            for _ in 0..MAX_UPDATE_ATTEMPTS {
                let Some((version, mut prebuild)) = load_prebuild(conn, &organization_id, &prebuild_id)? else {
                    return Ok(None);
                };
                if update(&mut prebuild)? == Change::Unchanged {
                    return Ok(Some(prebuild));
                }
                let c = prebuild_columns(&prebuild);
                let mut stmt = conn.prepare_cached(
                    "UPDATE prebuilds SET phase = ?1, finished_at = ?2, version = version + 1, body = ?3 WHERE id = ?4 AND version = ?5",
                )?;
                if stmt.execute(params![c.phase, c.finished_at, prebuild.encode_to_vec(), prebuild_id, version])? == 1 {
                    return Ok(Some(prebuild));
                }
                // Lost an optimistic race: read the newer row and apply again.
            }
            Err(Error::Unavailable("the prebuild is changing too often; retry the request".into()))
        })
        .await
    }

    async fn remove_prebuild(&self, prebuild_id: &str) -> Result<bool> {
        let prebuild_id = prebuild_id.to_string();
        self.write(move |conn| Ok(conn.prepare_cached("DELETE FROM prebuilds WHERE id = ?1")?.execute([prebuild_id])? > 0)).await
    }

    async fn active_prebuilds(&self, limit: usize) -> Result<Vec<Prebuild>> {
        self.read(move |conn| {
            // The same predicate as the partial index `prebuilds_active`.
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT body FROM prebuilds WHERE phase NOT IN ({}) ORDER BY seq LIMIT ?1",
                PrebuildPhase::final_phases_sql()
            ))?;
            let rows = stmt.query_map([limit as i64], |row| row.get::<_, Vec<u8>>(0))?;
            rows.map(|body| decode_body(&body?)).collect()
        })
        .await
    }

    async fn pending_prebuilds(&self, project_id: &str, up_to: u32) -> Result<u32> {
        let project_id = project_id.to_string();
        self.read(move |conn| {
            // The same predicate as the partial index `prebuilds_pending`.
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT COUNT(*) FROM (SELECT 1 FROM prebuilds WHERE project_id = ?1 AND phase = {} LIMIT ?2)",
                PrebuildPhase::Pending as i32
            ))?;
            Ok(stmt.query_row(params![project_id, up_to], |row| row.get::<_, u32>(0))?)
        })
        .await
    }

    async fn existing_prebuild_ids(&self, ids: &[String]) -> Result<std::collections::HashSet<String>> {
        let ids = ids.to_vec();
        self.read(move |conn| {
            let mut existing = std::collections::HashSet::new();
            // Well below SQLite's limit on bound parameters per statement.
            for chunk in ids.chunks(500) {
                let placeholders = vec!["?"; chunk.len()].join(", ");
                let mut stmt = conn.prepare_cached(&format!("SELECT id FROM prebuilds WHERE id IN ({placeholders})"))?;
                for id in stmt.query_map(params_from_iter(chunk), |row| row.get::<_, String>(0))? {
                    existing.insert(id?);
                }
            }
            Ok(existing)
        })
        .await
    }

    async fn newest_completed_prebuild_id(
        &self,
        organization_id: &str,
        project_id: &str,
        environment_class_id: &str,
    ) -> Result<Option<String>> {
        let (o, p, c) = (organization_id.to_string(), project_id.to_string(), environment_class_id.to_string());
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT id FROM prebuilds WHERE organization_id = ?1 AND project_id = ?2 AND environment_class_id = ?3 AND phase = {} AND feeds_warm_pools = 1 ORDER BY seq DESC LIMIT 1",
                PrebuildPhase::Completed as i32
            ))?;
            Ok(stmt.query_row(params![o, p, c], |row| row.get(0)).optional()?)
        })
        .await
    }

    async fn insert_warm_pool(&self, warm_pool: WarmPool) -> Result<()> {
        self.write(move |conn| {
            let metadata = warm_pool.metadata.clone().unwrap_or_default();
            let mut stmt = conn.prepare_cached(
                "INSERT INTO warm_pools (id, organization_id, project_id, environment_class_id, version, body) VALUES (?1, ?2, ?3, ?4, 1, ?5)",
            )?;
            stmt.execute(params![warm_pool.id, metadata.organization_id, metadata.project_id, metadata.environment_class_id, warm_pool.encode_to_vec()])
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        crate::store::duplicate_warm_pool(&metadata.project_id, &metadata.environment_class_id)
                    } else {
                        e.into()
                    }
                })?;
            Ok(())
        })
        .await
    }

    async fn get_warm_pool(&self, organization_id: &str, warm_pool_id: &str) -> Result<Option<WarmPool>> {
        let (organization_id, warm_pool_id) = (organization_id.to_string(), warm_pool_id.to_string());
        self.read(move |conn| Ok(load_warm_pool(conn, &organization_id, &warm_pool_id)?.map(|(_, p)| p))).await
    }

    async fn list_warm_pools(&self, filter: WarmPoolFilter, page: PageRequest) -> Result<Page<WarmPool>> {
        self.read(move |conn| {
            let mut sql = String::from("SELECT seq, body FROM warm_pools WHERE organization_id = ?");
            let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![Box::new(filter.organization_id.clone())];
            push_in(&mut sql, &mut args, "project_id", &filter.project_ids);
            push_in(&mut sql, &mut args, "environment_class_id", &filter.environment_class_ids);
            run_page(conn, sql, args, page)
        })
        .await
    }

    async fn update_warm_pool(&self, organization_id: &str, warm_pool_id: &str, update: WarmPoolUpdate) -> Result<Option<WarmPool>> {
        let (organization_id, warm_pool_id) = (organization_id.to_string(), warm_pool_id.to_string());
        self.write(move |conn| {
            for _ in 0..MAX_UPDATE_ATTEMPTS {
                let Some((version, mut warm_pool)) = load_warm_pool(conn, &organization_id, &warm_pool_id)? else {
                    return Ok(None);
                };
                if update(&mut warm_pool)? == Change::Unchanged {
                    return Ok(Some(warm_pool));
                }
                let mut stmt =
                    conn.prepare_cached("UPDATE warm_pools SET version = version + 1, body = ?1 WHERE id = ?2 AND version = ?3")?;
                if stmt.execute(params![warm_pool.encode_to_vec(), warm_pool_id, version])? == 1 {
                    return Ok(Some(warm_pool));
                }
            }
            Err(Error::Unavailable("the warm pool is changing too often; retry the request".into()))
        })
        .await
    }

    async fn remove_warm_pool(&self, warm_pool_id: &str) -> Result<bool> {
        let warm_pool_id = warm_pool_id.to_string();
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM warm_pool_claims WHERE warm_pool_id = ?1")?.execute([&warm_pool_id])?;
            Ok(conn.prepare_cached("DELETE FROM warm_pools WHERE id = ?1")?.execute([&warm_pool_id])? > 0)
        })
        .await
    }

    async fn all_warm_pools(&self) -> Result<Vec<WarmPool>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT body FROM warm_pools ORDER BY seq")?;
            let rows = stmt.query_map([], |row| row.get::<_, Vec<u8>>(0))?;
            rows.map(|body| decode_body(&body?)).collect()
        })
        .await
    }

    async fn insert_scheduled_prebuild(&self, prebuild: Prebuild, day: &str) -> Result<bool> {
        let day = day.to_string();
        self.write(move |conn| {
            let c = prebuild_columns(&prebuild);
            let claimed = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO schedule_runs (project_id, environment_class_id, day, prebuild_id) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![c.project_id, c.environment_class_id, day, prebuild.id])?;
            if claimed == 0 {
                return Ok(false);
            }
            insert_prebuild_row(conn, &prebuild)?;
            Ok(true)
        })
        .await
    }

    async fn expired_prebuilds(&self, completed_before: Micros, failed_before: Micros, limit: usize) -> Result<Vec<Prebuild>> {
        let (completed_before, failed_before) = (completed_before.as_i64(), failed_before.as_i64());
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT body FROM prebuilds WHERE (phase = {completed} AND finished_at < ?1) OR (phase IN ({failed}, {cancelled}) AND finished_at < ?2)
                 ORDER BY finished_at LIMIT ?3",
                completed = PrebuildPhase::Completed as i32,
                failed = PrebuildPhase::Failed as i32,
                cancelled = PrebuildPhase::Cancelled as i32,
            ))?;
            let rows = stmt.query_map(params![completed_before, failed_before, limit as i64], |row| row.get::<_, Vec<u8>>(0))?;
            rows.map(|body| decode_body(&body?)).collect()
        })
        .await
    }

    async fn record_claim(&self, warm_pool_id: &str, claimed_at: Micros) -> Result<()> {
        let claimed_at = claimed_at.as_i64();
        let warm_pool_id = warm_pool_id.to_string();
        self.write(move |conn| {
            conn.prepare_cached("INSERT INTO warm_pool_claims (warm_pool_id, claimed_at) VALUES (?1, ?2)")?
                .execute(params![warm_pool_id, claimed_at])?;
            Ok(())
        })
        .await
    }

    async fn claims_since(&self, warm_pool_id: &str, since: Micros) -> Result<u32> {
        let since = since.as_i64();
        let warm_pool_id = warm_pool_id.to_string();
        let count: i64 = self
            .read(move |conn| {
                Ok(conn
                    .prepare_cached("SELECT COUNT(*) FROM warm_pool_claims WHERE warm_pool_id = ?1 AND claimed_at >= ?2")?
                    .query_row(params![warm_pool_id, since], |row| row.get(0))?)
            })
            .await?;
        Ok(count as u32)
    }

    async fn prune_claims(&self, before: Micros) -> Result<()> {
        let before = before.as_i64();
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM warm_pool_claims WHERE claimed_at < ?1")?.execute([before])?;
            Ok(())
        })
        .await
    }
}
