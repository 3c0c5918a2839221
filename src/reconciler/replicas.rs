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
//! Wake-ups: an API write wakes the local reconciler (the service's
//! notify). A follower passes that on with `NOTIFY`; every replica LISTENs
//! on a connection of its own and wakes its reconciler, which acts on it
//! only while it leads.

use crate::metrics::Metrics;
use crate::store::postgres::PostgresStore;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// How long a lease lasts past its last renewal (database time).
pub const LEASE: Duration = Duration::from_secs(3);
/// How often the lease is renewed, or tried for.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);

/// The replica's view of leadership and of other replicas' writes.
#[derive(Clone)]
pub struct Replicas {
    leader: watch::Receiver<bool>,
    /// Keeps the channel open where no task owns the sender.
    _sender: Option<Arc<watch::Sender<bool>>>,
    /// Woken by other replicas' announced writes.
    remote_changes: Arc<Notify>,
    /// Where local writes are announced (PostgreSQL only).
    announce: Option<PostgresStore>,
}

impl Replicas {
    /// The only process: always the leader.
    pub fn single() -> Replicas {
        let (sender, leader) = watch::channel(true);
        Replicas { leader, _sender: Some(Arc::new(sender)), remote_changes: Arc::new(Notify::new()), announce: None }
    }

    /// One of possibly several replicas on `store`'s database: competes for
    /// the lease and listens for other replicas' writes until `shutdown`,
    /// then releases the lease. The task ends after that.
    pub fn on_postgres(
        store: PostgresStore,
        metrics: Arc<Metrics>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> (Replicas, JoinHandle<()>) {
        let (sender, leader) = watch::channel(false);
        let remote_changes = Arc::new(Notify::new());
        let listener = store.listen(remote_changes.clone());
        let replicas = Replicas { leader, _sender: None, remote_changes, announce: Some(store.clone()) };
        let holder = uuid::Uuid::new_v4().to_string();
        let task = tokio::spawn(async move {
            tokio::pin!(shutdown);
            let mut ticks = tokio::time::interval(RENEW_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut held_term = None;
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
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
                let leads = term.is_some() && sent.elapsed() < LEASE;
                if term != held_term {
                    match term {
                        Some(term) => tracing::info!(term, holder = %holder, "this replica leads the reconciler"),
                        None if held_term.is_some() => tracing::warn!(holder = %holder, "this replica no longer leads the reconciler"),
                        None => {}
                    }
                    held_term = term;
                }
                metrics.set_leader(leads);
                sender.send_if_modified(|current| std::mem::replace(current, leads) != leads);
            }
            listener.abort();
            sender.send_replace(false);
            metrics.set_leader(false);
            if held_term.is_some() {
                if let Err(error) = store.release_lease(&holder).await {
                    tracing::warn!(%error, "cannot release the reconciler lease");
                }
            }
        });
        (replicas, task)
    }

    /// Whether this replica may reconcile now.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// A receiver of leadership changes.
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.leader.clone()
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
