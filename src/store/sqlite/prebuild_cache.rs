//! Recently read prebuilds, kept in memory so that a GetPrebuild of a row
//! nobody has written since is answered on the caller's own task, without the
//! hand-off to a reader thread and back (which costs more than the read).
//!
//! Coherence rests on two facts of the embedded store: one process owns the
//! database, and every write goes through its one writer thread. The writer
//! empties the cache after each commit and before it answers the writers'
//! callers, and raises a generation number; a reader that loaded a row puts it
//! in only if no commit happened since it started (same generation). So a
//! cached row is never older than the last commit a caller has been told of.
//! (The PostgreSQL store has no such cache: other replicas write too.)

use crate::proto::gitpod::v1::Prebuild;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Past this many rows the cache starts over (a bound on memory, about 1 KiB
/// a row, not an eviction policy: hot rows come back on their next read).
const CAPACITY: usize = 8192;

#[derive(Default)]
pub struct PrebuildCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    /// By prebuild ID: the organization it was read for, and the row.
    rows: HashMap<String, (String, Arc<Prebuild>)>,
}

impl PrebuildCache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a map that is still valid.
        crate::sync::lock(&self.inner)
    }

    /// The cached row, if it was read for this organization since the last commit.
    pub fn get(&self, organization_id: &str, prebuild_id: &str) -> Option<Prebuild> {
        let row = {
            let inner = self.lock();
            let (organization, row) = inner.rows.get(prebuild_id)?;
            if organization != organization_id {
                return None;
            }
            Arc::clone(row)
        };
        Some(Prebuild::clone(&row))
    }

    /// The generation to pass to [`PrebuildCache::insert`] for a read starting now.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Keeps `prebuild` unless a commit happened after `generation` was taken.
    pub fn insert(&self, generation: u64, organization_id: &str, prebuild: &Prebuild) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.rows.len() >= CAPACITY {
            inner.rows.clear();
        }
        inner.rows.insert(prebuild.id.clone(), (organization_id.to_string(), Arc::new(prebuild.clone())));
    }

    /// Called by the writer after each commit, before its callers are answered.
    pub fn invalidate(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        if !inner.rows.is_empty() {
            inner.rows.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prebuild(id: &str) -> Prebuild {
        Prebuild { id: id.into(), ..Default::default() }
    }

    #[test]
    fn a_row_is_served_to_its_own_organization_only() {
        let cache = PrebuildCache::default();
        cache.insert(cache.generation(), "org-a", &prebuild("p1"));
        assert_eq!(cache.get("org-a", "p1").map(|p| p.id), Some("p1".into()));
        assert!(cache.get("org-b", "p1").is_none());
        assert!(cache.get("org-a", "p2").is_none());
    }

    #[test]
    fn a_commit_empties_the_cache_and_refuses_reads_that_started_before_it() {
        let cache = PrebuildCache::default();
        cache.insert(cache.generation(), "org-a", &prebuild("p1"));
        let before_commit = cache.generation();
        cache.invalidate();
        assert!(cache.get("org-a", "p1").is_none());
        // A read that loaded the row before the commit may hold the old row.
        cache.insert(before_commit, "org-a", &prebuild("p1"));
        assert!(cache.get("org-a", "p1").is_none());
        cache.insert(cache.generation(), "org-a", &prebuild("p1"));
        assert!(cache.get("org-a", "p1").is_some());
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = PrebuildCache::default();
        for i in 0..CAPACITY * 2 + 1 {
            cache.insert(cache.generation(), "org-a", &prebuild(&format!("p{i}")));
        }
        assert!(cache.lock().rows.len() <= CAPACITY);
    }
}
