//! Fixed-concurrency, fixed-duration load: N tasks call as fast as they can
//! for the duration; every call's latency is kept, so percentiles are exact.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a load run measured.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Sorted latencies in microseconds.
    latencies: Vec<u32>,
}

impl Stats {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let index = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[index] as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.latencies.last().copied().unwrap_or(0) as f64 / 1000.0
    }

    /// Runs made side by side, as one: requests add up, latencies merge.
    pub fn combine(all: Vec<Stats>) -> Stats {
        let mut combined = Stats::default();
        for stats in all {
            combined.requests += stats.requests;
            combined.errors += stats.errors;
            combined.elapsed = combined.elapsed.max(stats.elapsed);
            combined.latencies.extend(stats.latencies);
        }
        combined.latencies.sort_unstable();
        combined
    }
}

/// Runs `call(n)` from `concurrency` tasks for `duration`. `call` returns
/// whether the request succeeded.
pub async fn run<F, Fut>(concurrency: usize, duration: Duration, call: F) -> Stats
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|worker| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(4096);
                let mut errors = 0u64;
                let mut n = worker as u64;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    if !call(n).await {
                        errors += 1;
                    }
                    latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    n += concurrency as u64;
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut stats = Stats::default();
    for task in tasks {
        if let Ok((latencies, errors)) = task.await {
            stats.latencies.extend(latencies);
            stats.errors += errors;
        }
    }
    stats.elapsed = started.elapsed();
    stats.requests = stats.latencies.len() as u64;
    stats.latencies.sort_unstable();
    stats
}
