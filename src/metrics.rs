//! The server's metrics, served at `GET /metrics` in the OpenMetrics text
//! format (which Prometheus scrapes), encoded by the `prometheus-client`
//! crate.
//!
//! What records where: the transports count and time every API call once
//! ([`Metrics::record_rpc`]); the reconciler times its passes, the phases it
//! drives prebuilds through and their outcomes, and sets the gauges of what
//! it observed in its last pass (prebuilds by phase, warm pool instances);
//! the claim service counts hits and misses. Recording is a few atomic
//! operations and short locks, nothing that waits on I/O.
//!
//! Gauges that come from a reconciler pass describe what the leading
//! reconciler saw: a process that does not lead (the reconciler disabled,
//! or a PostgreSQL replica without the lease) reports none.

use crate::proto::gitpod::v1::PrebuildPhase;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The phases a prebuild is driven through (not final): the label values of
/// `prebuildd_prebuilds`.
pub const ACTIVE_PHASES: [PrebuildPhase; 7] = [
    PrebuildPhase::Pending,
    PrebuildPhase::Starting,
    PrebuildPhase::Running,
    PrebuildPhase::Stopping,
    PrebuildPhase::Snapshotting,
    PrebuildPhase::Cancelling,
    PrebuildPhase::Deleting,
];

/// The label value of a phase: its proto name without the prefix, in lower
/// case (`PREBUILD_PHASE_RUNNING` is `running`).
pub fn phase_label(phase: PrebuildPhase) -> &'static str {
    match phase {
        PrebuildPhase::Unspecified | PrebuildPhase::Pending => "pending",
        PrebuildPhase::Starting => "starting",
        PrebuildPhase::Running => "running",
        PrebuildPhase::Stopping => "stopping",
        PrebuildPhase::Snapshotting => "snapshotting",
        PrebuildPhase::Completed => "completed",
        PrebuildPhase::Failed => "failed",
        PrebuildPhase::Cancelling => "cancelling",
        PrebuildPhase::Cancelled => "cancelled",
        PrebuildPhase::Deleting => "deleting",
        PrebuildPhase::Deleted => "deleted",
    }
}

/// The protocol a call came in on (the `protocol` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    GrpcWeb,
    /// Connect unary (JSON or binary) on the service paths, and Connect
    /// streaming.
    Connect,
    /// The documented JSON paths under `/api/` (what REST clients call).
    HttpJson,
}

impl Protocol {
    const ALL: usize = 4;

    pub fn label(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb => "grpc-web",
            Protocol::Connect => "connect",
            Protocol::HttpJson => "http-json",
        }
    }
}

/// An API method: its `service/Method` name and its index in the
/// transports' list of methods (which keys the resolved series).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcMethod {
    pub index: usize,
    pub name: &'static str,
}

/// Methods whose series are resolved once (more would fall back to lookups).
const RESOLVED_METHODS: usize = 32;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: &'static str,
    protocol: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    warm_pool_id: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunnerLabels {
    runner_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClaimLabels {
    result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// API calls: 100 µs to about 13 s.
fn rpc_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.5, 14))
}

/// Prebuilds and their phases: 50 ms to about 4 h.
fn prebuild_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.5, 14))
}

/// Every metric, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    rpc_requests: Family<RpcLabels, Counter>,
    rpc_duration: HistogramFamily<MethodLabels>,
    /// The hot series, resolved on first use so a call costs no label
    /// hashing or family lock: the `ok` counter of each (method, protocol),
    /// and each method's histogram.
    ok_calls: Vec<OnceLock<Counter>>,
    durations: Vec<OnceLock<Histogram>>,
    prebuilds: Family<PhaseLabels, Gauge>,
    prebuild_duration: HistogramFamily<OutcomeLabels>,
    phase_duration: HistogramFamily<PhaseLabels>,
    snapshot_size: Histogram,
    warm_pool_instances: Family<PoolLabels, Gauge>,
    /// The pools `warm_pool_instances` has series for, to drop those of
    /// pools that are gone.
    observed_pools: Mutex<HashSet<String>>,
    claims: Family<ClaimLabels, Counter>,
    reconciler_pass: Histogram,
    leader: Gauge,
    runner_snapshots: Family<RunnerLabels, Gauge>,
    runner_members: Family<RunnerLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let rpc_requests = Family::<RpcLabels, Counter>::default();
        registry.register(
            "prebuildd_rpc_requests",
            "API calls answered, by method (service/Method), protocol (grpc, grpc-web, connect, http-json) and result code (ok or the Connect code name)",
            rpc_requests.clone(),
        );
        let rpc_duration: HistogramFamily<MethodLabels> = Family::new_with_constructor(rpc_histogram);
        registry.register(
            "prebuildd_rpc_duration_seconds",
            "Time from a call's arrival to its last response byte, by method",
            rpc_duration.clone(),
        );
        let prebuilds = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "prebuildd_prebuilds",
            "Prebuilds not yet in a final phase, by phase, as the reconciler's last pass read them",
            prebuilds.clone(),
        );
        let prebuild_duration: HistogramFamily<OutcomeLabels> = Family::new_with_constructor(prebuild_histogram);
        registry.register(
            "prebuildd_prebuild_duration_seconds",
            "Time from a prebuild's creation to its final phase, by outcome (completed, failed, cancelled)",
            prebuild_duration.clone(),
        );
        let phase_duration: HistogramFamily<PhaseLabels> = Family::new_with_constructor(prebuild_histogram);
        registry.register(
            "prebuildd_prebuild_phase_duration_seconds",
            "Time prebuilds spent in a phase, observed when they leave it, by phase",
            phase_duration.clone(),
        );
        // 4 KiB to 64 GiB.
        let snapshot_size = Histogram::new(exponential_buckets(4096.0, 4.0, 13));
        registry.register("prebuildd_snapshot_size_bytes", "Sizes of the snapshots of completed prebuilds", snapshot_size.clone());
        let warm_pool_instances = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "prebuildd_warm_pool_instances",
            "Instances of each warm pool by state (running, stopped), as its runner reported them in the reconciler's last pass",
            warm_pool_instances.clone(),
        );
        let claims = Family::<ClaimLabels, Counter>::default();
        registry.register(
            "prebuildd_warm_pool_claims",
            "Claims of warm pool instances: hit (an instance was handed out, at once or after waiting) or miss (none came within the claim's wait, or none will come)",
            claims.clone(),
        );
        let reconciler_pass = Histogram::new(exponential_buckets(0.0005, 2.5, 14));
        registry.register(
            "prebuildd_reconciler_pass_duration_seconds",
            "Time one reconciler pass over every active prebuild and warm pool took",
            reconciler_pass.clone(),
        );
        let runner_snapshots = Family::<RunnerLabels, Gauge>::default();
        registry.register(
            "prebuildd_runner_snapshots",
            "Bytes of the snapshots each runner holds (images, archives, files), as its last collection found them",
            runner_snapshots.clone(),
        );
        let runner_members = Family::<RunnerLabels, Gauge>::default();
        registry.register(
            "prebuildd_runner_members",
            "Connected members (prebuildd runner processes) of each remote runner, as the last collection found them",
            runner_members.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "prebuildd_reconciler_leader",
            "1 while this process runs the reconciler (on PostgreSQL: holds the lease)",
            leader.clone(),
        );
        Metrics {
            registry,
            rpc_requests,
            rpc_duration,
            ok_calls: (0..RESOLVED_METHODS * Protocol::ALL).map(|_| OnceLock::new()).collect(),
            durations: (0..RESOLVED_METHODS).map(|_| OnceLock::new()).collect(),
            prebuilds,
            prebuild_duration,
            phase_duration,
            snapshot_size,
            warm_pool_instances,
            observed_pools: Mutex::new(HashSet::new()),
            claims,
            reconciler_pass,
            leader,
            runner_snapshots,
            runner_members,
        }
    }

    /// One answered API call; `code` is `ok` or a Connect code name.
    pub fn record_rpc(&self, method: RpcMethod, protocol: Protocol, code: &'static str, took: Duration) {
        let labels = || RpcLabels { method: method.name, protocol: protocol.label(), code };
        match self.ok_calls.get(method.index * Protocol::ALL + protocol as usize).filter(|_| code == "ok") {
            Some(resolved) => resolved.get_or_init(|| self.rpc_requests.get_or_create_owned(&labels())).inc(),
            None => self.rpc_requests.get_or_create(&labels()).inc(),
        };
        let seconds = took.as_secs_f64();
        match self.durations.get(method.index) {
            Some(resolved) => {
                resolved.get_or_init(|| self.rpc_duration.get_or_create_owned(&MethodLabels { method: method.name })).observe(seconds)
            }
            None => self.rpc_duration.get_or_create(&MethodLabels { method: method.name }).observe(seconds),
        }
    }

    /// One reconciler pass.
    pub fn record_pass(&self, took: Duration) {
        self.reconciler_pass.observe(took.as_secs_f64());
    }

    /// The active prebuilds of a pass, by phase; phases not in `counts` are 0.
    pub fn set_prebuilds_by_phase(&self, counts: &[(PrebuildPhase, i64)]) {
        for phase in ACTIVE_PHASES {
            let count = counts.iter().filter(|(p, _)| phase_label(*p) == phase_label(phase)).map(|(_, n)| n).sum();
            self.prebuilds.get_or_create(&PhaseLabels { phase: phase_label(phase) }).set(count);
        }
    }

    /// A prebuild left `phase` after `took` in it.
    pub fn record_phase(&self, phase: PrebuildPhase, took: Duration) {
        self.phase_duration.get_or_create(&PhaseLabels { phase: phase_label(phase) }).observe(took.as_secs_f64());
    }

    /// A prebuild reached the final phase `outcome` `took` after its
    /// creation; a completed one with a snapshot of `snapshot_size_bytes`.
    pub fn record_finished(&self, outcome: PrebuildPhase, took: Duration, snapshot_size_bytes: Option<u64>) {
        self.prebuild_duration.get_or_create(&OutcomeLabels { outcome: phase_label(outcome) }).observe(took.as_secs_f64());
        if let Some(bytes) = snapshot_size_bytes {
            self.snapshot_size.observe(bytes as f64);
        }
    }

    /// What a warm pool's runner reported in a pass.
    pub fn set_warm_pool_instances(&self, warm_pool_id: &str, running: u32, stopped: u32) {
        for (state, count) in [("running", running), ("stopped", stopped)] {
            self.warm_pool_instances.get_or_create(&PoolLabels { warm_pool_id: warm_pool_id.to_string(), state }).set(i64::from(count));
        }
        crate::sync::lock(&self.observed_pools).insert(warm_pool_id.to_string());
    }

    /// Drops the series of pools not in `existing` (deleted since).
    pub fn retain_warm_pools(&self, existing: &HashSet<&str>) {
        let mut observed = crate::sync::lock(&self.observed_pools);
        observed.retain(|id| {
            let keep = existing.contains(id.as_str());
            if !keep {
                for state in ["running", "stopped"] {
                    self.warm_pool_instances.remove(&PoolLabels { warm_pool_id: id.clone(), state });
                }
            }
            keep
        });
    }

    /// What a runner holds in snapshots, in bytes.
    pub fn set_runner_snapshots(&self, runner_id: &str, bytes: u64) {
        self.runner_snapshots
            .get_or_create(&RunnerLabels { runner_id: runner_id.to_string() })
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// How many members of a remote runner are connected.
    pub fn set_runner_members(&self, runner_id: &str, connected: usize) {
        self.runner_members
            .get_or_create(&RunnerLabels { runner_id: runner_id.to_string() })
            .set(i64::try_from(connected).unwrap_or(i64::MAX));
    }

    /// A claim: `hit` when an instance was handed out.
    pub fn record_claim(&self, hit: bool) {
        self.claims.get_or_create(&ClaimLabels { result: if hit { "hit" } else { "miss" } }).inc();
    }

    /// Whether this process leads the reconciler (always, on SQLite with
    /// the reconciler on; on PostgreSQL, while it holds the lease). One that
    /// does not lead drops the gauges of its last passes: they would go
    /// stale, and the leader reports the current ones.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
        if !leader {
            self.prebuilds.clear();
            self.warm_pool_instances.clear();
            self.runner_snapshots.clear();
            self.runner_members.clear();
            crate::sync::lock(&self.observed_pools).clear();
        }
    }

    /// Every metric in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing to a String cannot fail; a label the encoder refuses would.
            tracing::warn!(%error, "cannot encode the metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_recorded() {
        let metrics = Metrics::new();
        let get = RpcMethod { index: 2, name: "gitpod.v1.PrebuildService/GetPrebuild" };
        metrics.record_rpc(get, Protocol::Grpc, "ok", Duration::from_millis(2));
        metrics.record_rpc(get, Protocol::Grpc, "ok", Duration::from_millis(3));
        metrics.record_rpc(get, Protocol::Connect, "not_found", Duration::from_millis(1));
        let beyond = RpcMethod { index: RESOLVED_METHODS, name: "x.v1.S/M" };
        metrics.record_rpc(beyond, Protocol::HttpJson, "ok", Duration::from_millis(1));
        metrics.set_prebuilds_by_phase(&[(PrebuildPhase::Unspecified, 1), (PrebuildPhase::Pending, 2), (PrebuildPhase::Running, 3)]);
        metrics.set_warm_pool_instances("p1", 2, 1);
        metrics.set_leader(true);
        let text = metrics.render();
        for line in [
            r#"prebuildd_rpc_requests_total{method="gitpod.v1.PrebuildService/GetPrebuild",protocol="grpc",code="ok"} 2"#,
            r#"prebuildd_rpc_requests_total{method="gitpod.v1.PrebuildService/GetPrebuild",protocol="connect",code="not_found"} 1"#,
            r#"prebuildd_rpc_requests_total{method="x.v1.S/M",protocol="http-json",code="ok"} 1"#,
            r#"prebuildd_rpc_duration_seconds_count{method="gitpod.v1.PrebuildService/GetPrebuild"} 3"#,
            r#"prebuildd_rpc_duration_seconds_count{method="x.v1.S/M"} 1"#,
            r#"prebuildd_prebuilds{phase="pending"} 3"#,
            r#"prebuildd_prebuilds{phase="running"} 3"#,
            r#"prebuildd_prebuilds{phase="deleting"} 0"#,
            r#"prebuildd_warm_pool_instances{warm_pool_id="p1",state="stopped"} 1"#,
            "prebuildd_reconciler_leader 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
        metrics.retain_warm_pools(&HashSet::new());
        metrics.set_leader(false);
        let text = metrics.render();
        assert!(!text.contains("warm_pool_id=\"p1\""), "{text}");
        assert!(!text.contains("prebuildd_prebuilds{"), "a follower reports no pass gauges: {text}");
        assert!(text.lines().any(|l| l == "prebuildd_reconciler_leader 0"), "{text}");
    }
}
