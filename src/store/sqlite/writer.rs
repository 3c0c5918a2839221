//! The writer thread: it owns the only write connection and commits in
//! groups. Every write waiting when a transaction starts joins it, each in
//! its own savepoint (so one failing write does not undo the others), and
//! each caller is answered only after the commit that holds its write.

use super::prebuild_cache::PrebuildCache;
use crate::error::{Error, Result};
use rusqlite::Connection;
use std::panic::AssertUnwindSafe;

/// How many queued writes one transaction takes at most.
pub(super) const MAX_GROUP: usize = 512;

pub(super) type Finish = Box<dyn FnOnce(Result<()>) + Send>;
/// A write: runs inside the group transaction, says whether it succeeded (so
/// its savepoint is kept or rolled back), and returns how to answer its
/// caller once the commit outcome is known.
pub(super) type WriteJob = Box<dyn FnOnce(&Connection) -> (bool, Finish) + Send>;

pub(super) fn writer_loop(conn: Connection, jobs: crossbeam_channel::Receiver<WriteJob>, cache: Option<&PrebuildCache>) {
    while let Ok(first) = jobs.recv() {
        let mut group = Vec::with_capacity(16);
        group.push(first);
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        commit_group(&conn, group, cache);
    }
}

fn commit_group(conn: &Connection, group: Vec<WriteJob>, cache: Option<&PrebuildCache>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let error = Error::from(e);
        for job in group {
            // Run nothing; answer each caller with the failure.
            drop(job);
            tracing::error!(%error, "cannot begin a write transaction");
        }
        return;
    }
    let mut finishers = Vec::with_capacity(group.len());
    for job in group {
        if let Err(e) = run_cached(conn, "SAVEPOINT job") {
            tracing::error!(error = %e, "cannot open a savepoint");
            continue;
        }
        match std::panic::catch_unwind(AssertUnwindSafe(|| job(conn))) {
            Ok((true, finish)) => {
                let _ = run_cached(conn, "RELEASE job");
                finishers.push(finish);
            }
            Ok((false, finish)) => {
                let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
                finishers.push(finish);
            }
            Err(_) => {
                tracing::error!("a store write panicked; it was rolled back");
                let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            }
        }
    }
    let commit = conn.execute_batch("COMMIT").map_err(Error::from);
    if commit.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    // Before any caller hears of the commit, no cached row predates it.
    if let Some(cache) = cache {
        cache.invalidate();
    }
    for finish in finishers {
        finish(commit.clone());
    }
}

/// Runs a statement without parameters from the prepared statement cache:
/// the per-write savepoint statements are not parsed again for every write.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

// ---- row mapping -------------------------------------------------------------
