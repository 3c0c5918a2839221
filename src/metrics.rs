//! A few counters in the Prometheus text format at `GET /metrics`: how long
//! reconciler passes take, how much they see, and whether this replica
//! leads the reconciler. (A full metrics endpoint
//! is on the roadmap; these are what the benchmark reads today.)

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Metrics {
    passes: AtomicU64,
    last_pass_micros: AtomicU64,
    max_pass_micros: AtomicU64,
    active_prebuilds: AtomicU64,
    warm_pools: AtomicU64,
    leader: AtomicBool,
}

impl Metrics {
    pub fn record_pass(&self, took: Duration, active_prebuilds: usize, warm_pools: usize) {
        let micros = took.as_micros().min(u64::MAX as u128) as u64;
        self.passes.fetch_add(1, Ordering::Relaxed);
        self.last_pass_micros.store(micros, Ordering::Relaxed);
        self.max_pass_micros.fetch_max(micros, Ordering::Relaxed);
        self.active_prebuilds.store(active_prebuilds as u64, Ordering::Relaxed);
        self.warm_pools.store(warm_pools as u64, Ordering::Relaxed);
    }

    /// Whether this process leads the reconciler (always, on SQLite with
    /// the reconciler on; on PostgreSQL, while it holds the lease).
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let seconds = |micros: u64| micros as f64 / 1_000_000.0;
        let _ = writeln!(out, "# TYPE prebuildd_reconcile_passes_total counter");
        let _ = writeln!(out, "prebuildd_reconcile_passes_total {}", self.passes.load(Ordering::Relaxed));
        let _ = writeln!(out, "# TYPE prebuildd_reconcile_pass_seconds_last gauge");
        let _ = writeln!(out, "prebuildd_reconcile_pass_seconds_last {}", seconds(self.last_pass_micros.load(Ordering::Relaxed)));
        let _ = writeln!(out, "# TYPE prebuildd_reconcile_pass_seconds_max gauge");
        let _ = writeln!(out, "prebuildd_reconcile_pass_seconds_max {}", seconds(self.max_pass_micros.load(Ordering::Relaxed)));
        let _ = writeln!(out, "# TYPE prebuildd_active_prebuilds gauge");
        let _ = writeln!(out, "prebuildd_active_prebuilds {}", self.active_prebuilds.load(Ordering::Relaxed));
        let _ = writeln!(out, "# TYPE prebuildd_warm_pools gauge");
        let _ = writeln!(out, "prebuildd_warm_pools {}", self.warm_pools.load(Ordering::Relaxed));
        let _ = writeln!(out, "# TYPE prebuildd_reconciler_leader gauge");
        let _ = writeln!(out, "prebuildd_reconciler_leader {}", u8::from(self.leader.load(Ordering::Relaxed)));
        out
    }
}
