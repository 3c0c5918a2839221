//! `GET /metrics` on a running server: calls over gRPC, gRPC-Web, Connect
//! and the `/api/` JSON paths (answered and failed), a prebuild completing
//! on the simulated runner, one left running, a warm pool and claims; then
//! the scrape parses as Prometheus text and shows those series, with the
//! label values and the changes they caused.

use crate::common::*;
use prebuildd::proto::gitpod::v1::*;
use prebuildd::proto::prebuildd::v1::warm_pool_instance_service_client::WarmPoolInstanceServiceClient;
use prebuildd::proto::prebuildd::v1::ClaimInstanceRequest;
use prometheus_parse::{LineInfo, Scrape, Value};
use prost::Message;
use std::time::{Duration, Instant};
use tonic::Code;

const PATIENCE: Duration = Duration::from_secs(20);
const GET: &str = "gitpod.v1.PrebuildService/GetPrebuild";
const LIST: &str = "gitpod.v1.PrebuildService/ListPrebuilds";
const CLAIM: &str = "prebuildd.v1.WarmPoolInstanceService/ClaimInstance";
const NO_SUCH_PREBUILD: &str = "00000000-0000-4000-8000-00000000dead";

/// The test configuration with the reconciler on and fast: the backend
/// project completes its prebuilds (`sim://ok`), the frontend's hang.
fn config() -> String {
    test_config_toml()
        .replacen("enabled = false", "enabled = true\ninterval = \"40ms\"", 1)
        .replace("step_duration = \"1h\"", "step_duration = \"60ms\"\nmax_concurrent_prebuilds = 8")
        .replacen("sim://hang", "sim://ok", 1)
}

/// One scrape: the parsed samples, after checking that every line is
/// Prometheus text (a sample, HELP, TYPE, or another comment).
struct Metrics {
    scrape: Scrape,
}

impl Metrics {
    async fn scrape(server: &TestServer) -> Metrics {
        let response = reqwest::get(format!("{}/metrics", server.base_url())).await.expect("GET /metrics");
        assert_eq!(response.status(), 200);
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        assert!(content_type.starts_with("application/openmetrics-text"), "content type {content_type}");
        let text = response.text().await.expect("metrics text");
        for line in text.lines() {
            let parsed = LineInfo::parse(line);
            let understood = matches!(parsed, LineInfo::Sample { .. } | LineInfo::Doc { .. } | LineInfo::Type { .. })
                || (line.starts_with("# ") && !line.starts_with("# TYPE") && !line.starts_with("# HELP"));
            assert!(understood, "not Prometheus text: {line:?}");
        }
        assert!(text.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");
        Metrics { scrape }
    }

    /// The value of the series `name{labels}` (labels exactly these), if any.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.scrape.samples.iter().find_map(|sample| {
            let same_labels = sample.labels.len() == labels.len() && labels.iter().all(|(k, v)| sample.labels.get(k) == Some(*v));
            if sample.metric != name || !same_labels {
                return None;
            }
            match &sample.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(*v),
                Value::Histogram(_) | Value::Summary(_) => None,
            }
        })
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    fn rpcs(&self, method: &str, protocol: &str, code: &str) -> f64 {
        self.value("prebuildd_rpc_requests_total", &[("method", method), ("protocol", protocol), ("code", code)])
    }

    /// Every value of label `label` among the series of `name`.
    fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut values: Vec<String> =
            self.scrape.samples.iter().filter(|s| s.metric == name).filter_map(|s| s.labels.get(label).map(str::to_string)).collect();
        values.sort();
        values.dedup();
        values
    }

    /// The buckets of histogram `name{labels}`: (upper bound, cumulative count).
    fn buckets(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
        self.scrape
            .samples
            .iter()
            .find_map(|s| match &s.value {
                Value::Histogram(buckets) if s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)) => {
                    Some(buckets.iter().map(|b| (b.less_than, b.count)).collect())
                }
                _ => None,
            })
            .unwrap_or_default()
    }
}

/// Scrapes until `check` holds (gauges follow the reconciler's passes).
async fn scrape_until(server: &TestServer, what: &str, check: impl Fn(&Metrics) -> bool) -> Metrics {
    let started = Instant::now();
    loop {
        let metrics = Metrics::scrape(server).await;
        if check(&metrics) {
            return metrics;
        }
        assert!(started.elapsed() < PATIENCE, "never saw {what} in /metrics");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_phase(client: &mut Client, id: &str, want: PrebuildPhase) {
    let started = Instant::now();
    loop {
        let prebuild = client.get_prebuild(GetPrebuildRequest { prebuild_id: id.into() }).await.unwrap().into_inner().prebuild.unwrap();
        if prebuild.status.as_ref().unwrap().phase == want as i32 {
            return;
        }
        assert!(started.elapsed() < PATIENCE, "prebuild {id} never reached {want:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A Connect JSON call on `path` (a method path, or one under `/api/`).
async fn connect_json(server: &TestServer, path: &str, token: Option<&str>, body: serde_json::Value) -> u16 {
    let mut request = reqwest::Client::new()
        .post(format!("{}/{path}", server.base_url()))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("Connect call").status().as_u16()
}

/// A unary gRPC-Web call (binary): its `grpc-status`, from the headers of
/// a trailers-only answer or else the trailer frame.
async fn grpc_web_get(server: &TestServer, prebuild_id: &str) -> String {
    let message = GetPrebuildRequest { prebuild_id: prebuild_id.into() }.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let response = reqwest::Client::new()
        .post(format!("{}/{GET}", server.base_url()))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .bearer_auth(TOKEN_A)
        .body(framed)
        .send()
        .await
        .expect("gRPC-Web call");
    assert_eq!(response.status(), 200);
    if let Some(status) = response.headers().get("grpc-status") {
        return status.to_str().unwrap().to_string();
    }
    let body = response.bytes().await.unwrap();
    let text = String::from_utf8_lossy(&body).into_owned();
    text.split("grpc-status:").nth(1).map(|rest| rest.chars().take_while(char::is_ascii_digit).collect()).unwrap_or(text)
}

#[tokio::test]
async fn metrics_show_calls_prebuilds_pools_and_claims() {
    let server = TestServer::start_with(config()).await;
    let before = Metrics::scrape(&server).await;
    assert_eq!(before.value("prebuildd_reconciler_leader", &[]), 1.0, "one server with the reconciler on leads");
    assert_eq!(before.rpcs(LIST, "grpc", "ok"), 0.0);

    // Calls that succeed and calls that fail, over every protocol.
    let mut client = server.client(Some(TOKEN_A)).await;
    client.list_prebuilds(ListPrebuildsRequest::default()).await.expect("list over gRPC");
    client.list_prebuilds(ListPrebuildsRequest::default()).await.expect("list over gRPC");
    assert_status(client.get_prebuild(GetPrebuildRequest { prebuild_id: NO_SUCH_PREBUILD.into() }).await, Code::NotFound, "not found");
    let mut anonymous = server.client(None).await;
    assert_status(anonymous.list_prebuilds(ListPrebuildsRequest::default()).await, Code::Unauthenticated, "");
    assert_eq!(grpc_web_get(&server, NO_SUCH_PREBUILD).await, "5", "gRPC-Web answers NOT_FOUND");
    assert_eq!(connect_json(&server, LIST, Some(TOKEN_A), serde_json::json!({})).await, 200);
    assert_eq!(connect_json(&server, GET, Some(TOKEN_A), serde_json::json!({"prebuildId": "not-a-uuid"})).await, 400);
    assert_eq!(connect_json(&server, &format!("api/{LIST}"), Some(TOKEN_A), serde_json::json!({})).await, 200);
    assert_eq!(connect_json(&server, GET, None, serde_json::json!({})).await, 401);

    // A prebuild that completes, and one that stays running.
    let done = create_prebuild(&mut client, PROJECT_BACKEND).await;
    wait_phase(&mut client, &done.id, PrebuildPhase::Completed).await;
    let hanging = create_prebuild(&mut client, PROJECT_FRONTEND).await;
    wait_phase(&mut client, &hanging.id, PrebuildPhase::Running).await;

    // A pool with a ready instance: one claim hits; a pool of another class
    // has no snapshot, so its claim misses.
    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest {
            project_id: PROJECT_BACKEND.into(),
            environment_class_id: CLASS_SMALL.into(),
            min_size: Some(1),
            max_size: Some(3),
            ..Default::default()
        },
    )
    .await;
    let empty = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest {
            project_id: PROJECT_BACKEND.into(),
            environment_class_id: CLASS_LARGE.into(),
            min_size: Some(0),
            max_size: Some(1),
            ..Default::default()
        },
    )
    .await;
    let mut claims = WarmPoolInstanceServiceClient::with_interceptor(server.channel().await, bearer(TOKEN_A));
    let started = Instant::now();
    loop {
        match claims.claim_instance(ClaimInstanceRequest { warm_pool_id: pool.id.clone(), wait: None }).await {
            Ok(_) => break,
            Err(status) if status.code() == Code::Unavailable && started.elapsed() < PATIENCE => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(status) => panic!("the pool never handed out an instance: {status:?}"),
        }
    }
    let misses_while_waiting = (Metrics::scrape(&server).await).value("prebuildd_warm_pool_claims_total", &[("result", "miss")]);
    assert_status(
        claims.claim_instance(ClaimInstanceRequest { warm_pool_id: empty.id.clone(), wait: None }).await,
        Code::Unavailable,
        "no warm instance",
    );

    let metrics = scrape_until(&server, "the running prebuild and the pool's instances", |m| {
        m.value("prebuildd_prebuilds", &[("phase", "running")]) == 1.0
            && m.value("prebuildd_warm_pool_instances", &[("warm_pool_id", &pool.id), ("state", "running")]) >= 1.0
    })
    .await;

    // Calls: by method, protocol and code, as the clients saw them.
    assert_eq!(metrics.rpcs(LIST, "grpc", "ok"), 2.0);
    assert_eq!(metrics.rpcs(GET, "grpc", "not_found"), 1.0);
    assert_eq!(metrics.rpcs(LIST, "grpc", "unauthenticated"), 1.0);
    assert_eq!(metrics.rpcs(GET, "grpc-web", "not_found"), 1.0);
    assert_eq!(metrics.rpcs(LIST, "connect", "ok"), 1.0);
    assert_eq!(metrics.rpcs(GET, "connect", "invalid_argument"), 1.0);
    assert_eq!(metrics.rpcs(GET, "connect", "unauthenticated"), 1.0);
    assert_eq!(metrics.rpcs(LIST, "http-json", "ok"), 1.0);
    assert!(metrics.rpcs(GET, "grpc", "ok") >= 2.0, "the polling GetPrebuild calls");
    assert!(metrics.rpcs(CLAIM, "grpc", "ok") >= 1.0);
    assert!(metrics.rpcs(CLAIM, "grpc", "unavailable") >= 1.0);
    let protocols = metrics.label_values("prebuildd_rpc_requests_total", "protocol");
    assert_eq!(protocols, ["connect", "grpc", "grpc-web", "http-json"]);
    let list_calls = metrics.value("prebuildd_rpc_duration_seconds_count", &[("method", LIST)]);
    assert_eq!(list_calls, 5.0, "every ListPrebuilds call is timed once, failed ones too");
    let buckets = metrics.buckets("prebuildd_rpc_duration_seconds", &[("method", LIST)]);
    assert_eq!(buckets.last().map(|b| b.1), Some(5.0), "the +Inf bucket holds every call: {buckets:?}");
    assert!(!metrics.label_values("prebuildd_rpc_requests_total", "method").iter().any(|m| m.contains("Health")));

    // Prebuilds: the completed one, timed; its snapshot; the running one.
    assert_eq!(metrics.value("prebuildd_prebuild_duration_seconds_count", &[("outcome", "completed")]), 1.0);
    assert!(metrics.value("prebuildd_prebuild_duration_seconds_sum", &[("outcome", "completed")]) > 0.0);
    // PENDING and STARTING are always written, and left; a busy machine may
    // see the runner skip a later phase between two passes.
    for phase in ["pending", "starting"] {
        assert!(
            metrics.value("prebuildd_prebuild_phase_duration_seconds_count", &[("phase", phase)]) >= 1.0,
            "the completed prebuild left {phase}"
        );
    }
    assert_eq!(metrics.value("prebuildd_snapshot_size_bytes_count", &[]), 1.0);
    assert_eq!(metrics.value("prebuildd_snapshot_size_bytes_sum", &[]), 4096.0, "the simulated runner's snapshot size");
    assert_eq!(metrics.value("prebuildd_prebuilds", &[("phase", "pending")]), 0.0);
    assert_eq!(
        metrics.label_values("prebuildd_prebuilds", "phase"),
        ["cancelling", "deleting", "pending", "running", "snapshotting", "starting", "stopping"],
        "every active phase has a series"
    );

    // Pools and claims.
    assert!(metrics.get("prebuildd_warm_pool_instances", &[("warm_pool_id", &pool.id), ("state", "stopped")]).is_some());
    assert_eq!(metrics.get("prebuildd_warm_pool_instances", &[("warm_pool_id", &empty.id), ("state", "running")]), Some(0.0));
    assert_eq!(metrics.value("prebuildd_warm_pool_claims_total", &[("result", "hit")]), 1.0);
    assert_eq!(metrics.value("prebuildd_warm_pool_claims_total", &[("result", "miss")]), misses_while_waiting + 1.0);

    // The reconciler: passes timed, and still leading.
    assert!(
        metrics.value("prebuildd_reconciler_pass_duration_seconds_count", &[])
            > before.value("prebuildd_reconciler_pass_duration_seconds_count", &[])
    );
    assert_eq!(metrics.value("prebuildd_reconciler_leader", &[]), 1.0);

    // Cancelling the running prebuild ends it: the gauge and the outcomes follow.
    client.cancel_prebuild(CancelPrebuildRequest { prebuild_id: hanging.id.clone() }).await.unwrap();
    wait_phase(&mut client, &hanging.id, PrebuildPhase::Cancelled).await;
    let after = scrape_until(&server, "the cancelled prebuild gone from the gauge", |m| {
        m.value("prebuildd_prebuilds", &[("phase", "running")]) == 0.0
    })
    .await;
    assert_eq!(after.value("prebuildd_prebuild_duration_seconds_count", &[("outcome", "cancelled")]), 1.0);
    assert!(after.value("prebuildd_prebuild_phase_duration_seconds_count", &[("phase", "cancelling")]) >= 1.0);
    assert!(
        after.value("prebuildd_prebuild_phase_duration_seconds_count", &[("phase", "running")])
            > metrics.value("prebuildd_prebuild_phase_duration_seconds_count", &[("phase", "running")]),
        "the cancelled prebuild left RUNNING"
    );

    // A deleted pool's series go.
    client.delete_warm_pool(DeleteWarmPoolRequest { warm_pool_id: empty.id.clone() }).await.unwrap();
    scrape_until(&server, "the deleted pool's series gone", |m| {
        m.get("prebuildd_warm_pool_instances", &[("warm_pool_id", &empty.id), ("state", "running")]).is_none()
    })
    .await;
}

#[tokio::test]
async fn without_the_reconciler_there_is_no_leader_and_no_pass_gauge_but_a_cancel_is_timed() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    create_prebuild(&mut client, PROJECT_BACKEND).await;
    // A pending prebuild cancelled through the API ends there: the cancel
    // times it, with no reconciler involved.
    let cancelled = create_prebuild(&mut client, PROJECT_BACKEND).await;
    client.cancel_prebuild(CancelPrebuildRequest { prebuild_id: cancelled.id.clone() }).await.unwrap();
    client.cancel_prebuild(CancelPrebuildRequest { prebuild_id: cancelled.id.clone() }).await.unwrap();
    let metrics = Metrics::scrape(&server).await;
    assert_eq!(
        metrics.value("prebuildd_prebuild_duration_seconds_count", &[("outcome", "cancelled")]),
        1.0,
        "cancelling twice ends it once"
    );
    assert_eq!(metrics.value("prebuildd_prebuild_phase_duration_seconds_count", &[("phase", "pending")]), 1.0);
    assert_eq!(metrics.rpcs("gitpod.v1.PrebuildService/CancelPrebuild", "grpc", "ok"), 2.0);
    assert_eq!(metrics.value("prebuildd_reconciler_leader", &[]), 0.0);
    assert_eq!(metrics.label_values("prebuildd_prebuilds", "phase"), Vec::<String>::new());
    assert_eq!(metrics.value("prebuildd_reconciler_pass_duration_seconds_count", &[]), 0.0);
    assert_eq!(metrics.rpcs("gitpod.v1.PrebuildService/CreatePrebuild", "grpc", "ok"), 2.0);
}
