//! Runner events: how a runner says "something I run changed, look now".
//!
//! An event carries no state and no decision: the reconciler stays
//! level-triggered, and what it does after an event is what it would do at
//! its next tick, only sooner (it re-reads the store and asks the runner).
//! A lost or coalesced event therefore costs at most one tick, never
//! correctness; the periodic pass is the safety net.
//!
//! Every runner of a process shares one [`RunnerEvents`]: a job changing
//! phase, a snapshot written, a warm instance becoming ready (locally, or
//! reported by a remote runner over its stream) all wake the same
//! reconciler, and the claims waiting for an instance.

use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// The wake-up line from the runners to the reconciler (and to waiting
/// claims). Cheap to clone; all clones are the same line.
#[derive(Clone)]
pub struct RunnerEvents {
    inner: Arc<Inner>,
}

struct Inner {
    /// Wakes the reconciler: one stored permit, so events that come while a
    /// pass runs make exactly one more pass.
    reconcile: Notify,
    /// Counts events, for those that wait for "anything new since I looked"
    /// (claims waiting for an instance): every waiter sees every change.
    generation: watch::Sender<u64>,
}

impl Default for RunnerEvents {
    fn default() -> Self {
        RunnerEvents { inner: Arc::new(Inner { reconcile: Notify::new(), generation: watch::Sender::new(0) }) }
    }
}

impl std::fmt::Debug for RunnerEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerEvents").field("generation", &*self.inner.generation.borrow()).finish()
    }
}

impl RunnerEvents {
    pub fn new() -> Self {
        Self::default()
    }

    /// Something a runner holds changed: a job's phase, a pool's instances.
    pub fn changed(&self) {
        self.inner.reconcile.notify_one();
        self.inner.generation.send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// Resolves at the next event (or at once, if one came since the last
    /// time this resolved). For the one loop that reconciles.
    pub async fn woken(&self) {
        self.inner.reconcile.notified().await
    }

    /// A receiver that sees every event from now on (`changed().await`).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn an_event_wakes_the_reconciler_once_and_every_subscriber() {
        let events = RunnerEvents::new();
        let mut first = events.subscribe();
        let mut second = events.subscribe();
        // Two events before anyone waits: one pending wake-up, not two.
        events.changed();
        events.changed();
        tokio::time::timeout(Duration::from_secs(1), events.woken()).await.expect("woken by the stored event");
        assert!(tokio::time::timeout(Duration::from_millis(20), events.woken()).await.is_err(), "the two events were one wake-up");
        for receiver in [&mut first, &mut second] {
            tokio::time::timeout(Duration::from_secs(1), receiver.changed()).await.expect("seen").unwrap();
            assert_eq!(*receiver.borrow_and_update(), 2);
        }
    }
}
