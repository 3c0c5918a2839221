//! Fencing: the reconciler's writes are conditional on its lease.
//!
//! A replica that believes it leads may be wrong: paused (a stop signal, a
//! long garbage collection of its host), cut off from the database for longer
//! than the lease, or simply slow between two renewals. Meanwhile another
//! replica may have taken the lease. So the reconciler writes through a
//! [`PostgresStore::fenced`] store, whose every write runs in a transaction
//! that first confirms the lease row still names this replica, with the term
//! it took, and has not run out:
//!
//! ```sql
//! SELECT 1 FROM reconciler_lease
//!  WHERE id = 1 AND holder = $me AND term = $mine AND expires_at > statement_timestamp()
//!    FOR KEY SHARE
//! ```
//!
//! The `FOR KEY SHARE` lock is what makes this a fence and not only a check:
//! a takeover locks the row `FOR UPDATE` (which conflicts with it) before it
//! raises the term, so it waits until every write that passed the check under
//! the old term has committed or rolled back, and every check after it sees
//! the new term. The holder's own renewals only update non-key columns,
//! which `KEY SHARE` does not block, so a busy leader never delays its own
//! renewal. Nothing here is session state (no advisory lock, no temporary
//! table): each write is one transaction, as a transaction-mode pooler such
//! as PgBouncer requires.
//!
//! A write that finds the lease gone fails with `failed_precondition` and
//! ends this replica's leadership at once ([`LeaseFence`] is also what the
//! reconciler reads to know whether it leads).

use super::PostgresStore;
use crate::error::{Error, Result};
use deadpool_postgres::GenericClient;
use std::sync::Arc;
use tokio::sync::watch;

/// The lease check every fenced write starts with.
const CONFIRM_LEASE: &str = "SELECT 1 FROM reconciler_lease
     WHERE id = 1 AND holder = $1 AND term = $2 AND expires_at > statement_timestamp()
     FOR KEY SHARE";

/// A replica's claim to the reconciler lease: its holder name and the term
/// it holds, if any. Clones share the term.
#[derive(Clone)]
pub struct LeaseFence {
    holder: Arc<str>,
    term: Arc<watch::Sender<Option<i64>>>,
}

impl std::fmt::Debug for LeaseFence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseFence").field("holder", &self.holder).field("term", &self.term()).finish()
    }
}

impl LeaseFence {
    /// A claim by `holder` that holds no term yet.
    pub fn new(holder: impl Into<String>) -> LeaseFence {
        LeaseFence { holder: Arc::from(holder.into()), term: Arc::new(watch::channel(None).0) }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The term this replica holds, as far as it knows.
    pub fn term(&self) -> Option<i64> {
        *self.term.borrow()
    }

    /// Records the outcome of a renewal: the term held, or none.
    pub fn hold(&self, term: Option<i64>) {
        self.term.send_if_modified(|current| std::mem::replace(current, term) != term);
    }

    /// Changes of the term held.
    pub fn subscribe(&self) -> watch::Receiver<Option<i64>> {
        self.term.subscribe()
    }

    /// Gives up `term` after a write found it no longer held (unless a
    /// renewal has recorded another term since).
    fn lost(&self, term: i64) {
        let dropped = self.term.send_if_modified(|current| {
            if *current == Some(term) {
                *current = None;
                true
            } else {
                false
            }
        });
        if dropped {
            tracing::warn!(holder = %self.holder, term, "another replica took the reconciler lease: this one steps down");
        }
    }

    /// Runs the lease check as the first statement of `tx`; an error if
    /// the lease is not (or no longer) this replica's, which then steps down.
    pub(super) async fn confirm(&self, tx: &impl GenericClient) -> Result<()> {
        let Some(term) = self.term() else {
            return Err(Error::FailedPrecondition(
                "this replica does not hold the reconciler lease; it writes nothing as the reconciler".into(),
            ));
        };
        let statement = tx.prepare_cached(CONFIRM_LEASE).await?;
        if tx.query_opt(&statement, &[&&*self.holder, &term]).await?.is_some() {
            return Ok(());
        }
        self.lost(term);
        Err(Error::FailedPrecondition(format!(
            "this replica's reconciler lease (term {term}) has run out or been taken over by another replica; the write was not made"
        )))
    }
}

impl PostgresStore {
    /// The same database, but every write is conditional on `fence` holding
    /// the reconciler lease (reads are not): what the leader's reconciler
    /// writes through.
    pub fn fenced(&self, fence: LeaseFence) -> PostgresStore {
        PostgresStore { fence: Some(fence), ..self.clone() }
    }
}
