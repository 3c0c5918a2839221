//! Which replica reconciles, and how writes on one wake the reconciler of
//! another.
//!
//! On SQLite there is one process: it always leads. On PostgreSQL every
//! replica with the reconciler enabled competes for one lease row
//! (`reconciler_lease`): each tries to take or renew it every
//! [`RENEW_EVERY`] for [`LEASE`], timed by the database's clock. A replica
//! leads only while its last renewal succeeded less than a lease ago by its
//! own monotonic clock, counted from before the renewal was sent, so it
//! stops before the database would let anyone else take over; a failed or
//! slow renewal ends its leadership at once. A leader that stops gracefully
//! releases the lease; one killed leaves it to run out (at most [`LEASE`]).
//!
//! That view can be stale (a paused process, a partition), so it only
//! decides whether to start work: every write the reconciler makes on
//! PostgreSQL is fenced by the lease term in the database
//! ([`crate::store::postgres::LeaseFence`]). A write that finds the lease
//! lost fails, and the replica stops leading at once.
//!
//! Wake-ups: an API write wakes the local reconciler (the service's
//! notify). A follower passes that on with `NOTIFY`; every replica LISTENs
//! on a connection of its own and wakes its reconciler, which acts on it
//! only while it leads.

use crate::metrics::Metrics;
use crate::store::postgres::{LeaseFence, PostgresStore};
use crate::store::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// How long a lease lasts past its last renewal (database time).
pub const LEASE: Duration = Duration::from_secs(3);
/// How often the lease is renewed, or tried for.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);

/// The replica's view of leadership and of other replicas' writes.
#[derive(Clone)]
pub struct Replicas {
    /// The lease term held, if this replica leads.
    leader: watch::Receiver<Option<i64>>,
    /// Keeps the channel open where no fence owns the sender.
    _sender: Option<Arc<watch::Sender<Option<i64>>>>,
    /// What the reconciler writes through when it is not the service's
    /// store: the fenced one on PostgreSQL.
    store: Option<Arc<dyn Store>>,
    /// Woken by other replicas' announced writes.
    remote_changes: Arc<Notify>,
    /// Where local writes are announced (PostgreSQL only).
    announce: Option<PostgresStore>,
}

impl Replicas {
    /// The only process: always the leader.
    pub fn single() -> Replicas {
        // Term 0 forever: nobody else can take over.
        let (sender, leader) = watch::channel(Some(0));
        Replicas { leader, _sender: Some(Arc::new(sender)), store: None, remote_changes: Arc::new(Notify::new()), announce: None }
    }

    /// One of possibly several replicas on `store`'s database: competes for
    /// the lease and listens for other replicas' writes until `shutdown`,
    /// then releases the lease. The task (for the caller to spawn) ends
    /// after that.
    pub fn on_postgres(
        store: PostgresStore,
        metrics: Arc<Metrics>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> (Replicas, impl std::future::Future<Output = ()> + Send + 'static) {
        let fence = LeaseFence::new(uuid::Uuid::new_v4().to_string());
        let remote_changes = Arc::new(Notify::new());
        let listener = store.listen(remote_changes.clone());
        let replicas = Replicas {
            leader: fence.subscribe(),
            _sender: None,
            store: Some(Arc::new(store.fenced(fence.clone()))),
            remote_changes,
            announce: Some(store.clone()),
        };
        let task = async move {
            tokio::pin!(shutdown);
            let holder = fence.holder().to_string();
            let mut ticks = tokio::time::interval(RENEW_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut term_changes = fence.subscribe();
            let mut held_term = None;
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    // A fenced write found the lease lost: the metric follows at once.
                    Ok(()) = term_changes.changed() => {
                        metrics.set_leader(term_changes.borrow_and_update().is_some());
                        continue;
                    }
                    _ = &mut shutdown => break,
                }
                let sent = Instant::now();
                // A renewal slower than the renewal period counts as failed.
                let term = match tokio::time::timeout(RENEW_EVERY, store.acquire_lease(&holder, LEASE)).await {
                    Ok(Ok(term)) => term,
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "cannot renew the reconciler lease");
                        None
                    }
                    Err(_) => {
                        tracing::warn!("renewing the reconciler lease took longer than {RENEW_EVERY:?}");
                        None
                    }
                };
                // Still within the lease, counted from before it was sent.
                let term = term.filter(|_| sent.elapsed() < LEASE);
                if term != held_term {
                    match term {
                        Some(term) => tracing::info!(term, holder = %holder, "this replica leads the reconciler"),
                        None if held_term.is_some() => tracing::warn!(holder = %holder, "this replica no longer leads the reconciler"),
                        None => {}
                    }
                    held_term = term;
                }
                fence.hold(term);
                term_changes.borrow_and_update();
                metrics.set_leader(term.is_some());
            }
            listener.abort();
            fence.hold(None);
            metrics.set_leader(false);
            if held_term.is_some() {
                if let Err(error) = store.release_lease(&holder).await {
                    tracing::warn!(%error, "cannot release the reconciler lease");
                }
            }
        };
        (replicas, task)
    }

    /// Whether this replica may reconcile now.
    pub fn is_leader(&self) -> bool {
        self.leader.borrow().is_some()
    }

    /// A receiver of leadership changes: the term held, if any.
    pub fn leadership(&self) -> watch::Receiver<Option<i64>> {
        self.leader.clone()
    }

    /// The store the reconciler writes through, when it is not the
    /// service's (the fenced one on PostgreSQL).
    pub(super) fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }

    /// Other replicas' writes.
    pub(super) fn remote_changes(&self) -> &Arc<Notify> {
        &self.remote_changes
    }

    /// Tells the leader, wherever it runs, that something was written here.
    pub(super) async fn announce(&self) {
        if let Some(store) = &self.announce {
            if let Err(error) = store.announce_change().await {
                tracing::warn!(%error, "cannot announce a change to the other replicas");
            }
        }
    }
}
