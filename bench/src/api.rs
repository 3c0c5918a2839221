//! The API scenarios: phases A, B and C (see `main.rs`).
//!
//! (A) the API scenarios on a table of 1,000 prebuilds; (B) the same
//! list query after seeding the table to a million rows; (C) the reconciler
//! with 10,000 active prebuilds on the simulated runner, and the API's p99
//! while it runs.
//!

use crate::load::{self, Stats};
use crate::server::*;
use crate::{docker, events, overload, plain, postgres, Options};
use bytes::Bytes;
use prebuildd::config::DEMO_API_KEY;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Grpc,
    ConnectJson,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Grpc => "gRPC",
            Protocol::ConnectJson => "Connect JSON",
        }
    }
}

/// One request of a scenario, pre-encoded for both protocols; `variants`
/// rotate so writes really change something.
#[derive(Clone)]
pub(crate) struct Scenario {
    name: &'static str,
    method: &'static str,
    proto: Vec<Bytes>,
    json: Vec<Bytes>,
}

pub(crate) struct Clients {
    grpc: Vec<tonic::client::Grpc<tonic::transport::Channel>>,
    http: reqwest::Client,
    base: String,
}

impl Clients {
    pub(crate) async fn new(base: &str, concurrency: usize) -> Result<Clients, String> {
        let mut grpc = Vec::new();
        for _ in 0..2 {
            let channel = tonic::transport::Channel::from_shared(base.to_string())
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            grpc.push(tonic::client::Grpc::new(channel));
        }
        let http = reqwest::Client::builder().http1_only().pool_max_idle_per_host(concurrency).build().map_err(|e| e.to_string())?;
        Ok(Clients { grpc, http, base: base.to_string() })
    }

    /// One call; `path` is `/<service>/<method>`.
    pub(crate) async fn call(&self, protocol: Protocol, path: &str, body: Bytes, n: u64) -> Result<Bytes, String> {
        match protocol {
            Protocol::Grpc => {
                let mut grpc = self.grpc[(n % self.grpc.len() as u64) as usize].clone();
                grpc.ready().await.map_err(|e| e.to_string())?;
                let mut request = tonic::Request::new(body);
                request.metadata_mut().insert("authorization", format!("Bearer {DEMO_API_KEY}").parse().map_err(|_| "header")?);
                let path = http::uri::PathAndQuery::try_from(path).map_err(|e| e.to_string())?;
                grpc.unary(request, path, prebuildd::transport::raw_codec::RawCodec)
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
            }
            Protocol::ConnectJson => {
                let response = self
                    .http
                    .post(format!("{}{path}", self.base))
                    .header("content-type", "application/json")
                    .header("authorization", format!("Bearer {DEMO_API_KEY}"))
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status();
                let bytes = response.bytes().await.map_err(|e| e.to_string())?;
                if status.is_success() {
                    Ok(bytes)
                } else {
                    Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)))
                }
            }
        }
    }
}

fn bodies_of(scenario: &Scenario, protocol: Protocol) -> Vec<Bytes> {
    if protocol == Protocol::Grpc {
        scenario.proto.clone()
    } else {
        scenario.json.clone()
    }
}

pub(crate) fn json(value: serde_json::Value) -> Bytes {
    Bytes::from(value.to_string())
}

pub(crate) fn proto(message: &impl prost::Message) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

pub(crate) async fn measure(clients: &Arc<Clients>, options: &Options, protocol: Protocol, path: String, bodies: Vec<Bytes>) -> Stats {
    let clients = clients.clone();
    let path = Arc::new(path);
    let bodies = Arc::new(bodies);
    load::run(options.concurrency, options.duration, move |n| {
        let clients = clients.clone();
        let path = path.clone();
        let body = bodies[(n % bodies.len() as u64) as usize].clone();
        async move { clients.call(protocol, &path, body, n).await.is_ok() }
    })
    .await
}

pub(crate) fn row(name: &str, protocol: &str, stats: &Stats, baseline: Option<&Stats>) {
    let ratio = baseline.map_or("".to_string(), |b| format!("{:.2}x", stats.per_second() / b.per_second().max(1e-9)));
    println!(
        "{name:<16} {protocol:<13} {:>10.0} req/s {:>8.2} ms p50 {:>8.2} ms p99 {:>8.2} ms max  errors {:<6} {ratio}",
        stats.per_second(),
        stats.quantile_ms(0.5),
        stats.quantile_ms(0.99),
        stats.max_ms(),
        stats.errors
    );
}

/// Runs every phase and prints the results.
pub async fn run(options: Options) -> Result<(), String> {
    let work = std::env::temp_dir().join(format!("prebuildd-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    if options.only.as_deref().is_some_and(|only| only.eq_ignore_ascii_case("docker")) {
        let result = docker::run(&work).await;
        let _ = tokio::fs::remove_dir_all(&work).await;
        return result;
    }
    if options.only.as_deref().is_some_and(|only| only.eq_ignore_ascii_case("registry")) {
        let result = docker::run_registry(&work).await;
        let _ = tokio::fs::remove_dir_all(&work).await;
        return result;
    }
    if options.only.as_deref().is_some_and(|only| only.eq_ignore_ascii_case("incremental")) {
        // The local runner, then the docker runner.
        let local = crate::incremental::run(&work.join("local")).await;
        let docker = crate::docker::run_incremental(&work.join("docker")).await;
        let _ = tokio::fs::remove_dir_all(&work).await;
        return local.and(docker);
    }
    if options.only.as_deref().is_some_and(|only| only.eq_ignore_ascii_case("postgres")) {
        let result = postgres::run(&work, &options).await;
        let _ = tokio::fs::remove_dir_all(&work).await;
        return result;
    }
    if options.only.as_deref().is_some_and(|only| only.eq_ignore_ascii_case("overload")) {
        let result = overload::run(&work, &options).await;
        let _ = tokio::fs::remove_dir_all(&work).await;
        return result;
    }
    if options.only.as_deref().is_some_and(|only| only.eq_ignore_ascii_case("events")) {
        let result = events::run(&work, &options).await;
        let _ = tokio::fs::remove_dir_all(&work).await;
        return result;
    }
    println!(
        "prebuildd bench: concurrency {}, {} s per run, {} cores",
        options.concurrency,
        options.duration.as_secs_f64(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let result = phases(&work, &options).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn phases(work: &Path, options: &Options) -> Result<(), String> {
    use prebuildd::proto::gitpod::v1::*;

    // Phase A: the API on a table of 1,000 prebuilds.
    let data_a = work.join("api");
    prebuildd::store::sqlite::seed_prebuilds(&data_a, seed_rows(LIST_PROJECT, 1000)).map_err(|e| e.to_string())?;
    let server = ChildServer::start(&data_a, false, 4)?;
    server.ready().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (idle_rss, _) = server.rss_mib();
    let clients = Arc::new(Clients::new(&server.base, options.concurrency).await?);

    // Fixtures: a prebuild to get, a pool to update.
    let created = clients
        .call(
            Protocol::ConnectJson,
            "/gitpod.v1.PrebuildService/CreatePrebuild",
            json(serde_json::json!({"projectId": CREATE_PROJECT, "spec": {}})),
            0,
        )
        .await?;
    let created: serde_json::Value = serde_json::from_slice(&created).map_err(|e| e.to_string())?;
    let prebuild_id = created["prebuild"]["id"].as_str().ok_or("no prebuild id")?.to_string();
    let pool = clients
        .call(
            Protocol::ConnectJson,
            "/gitpod.v1.PrebuildService/CreateWarmPool",
            json(serde_json::json!({"projectId": LIST_PROJECT, "environmentClassId": CLASS, "minSize": 0, "maxSize": 2})),
            0,
        )
        .await?;
    let pool: serde_json::Value = serde_json::from_slice(&pool).map_err(|e| e.to_string())?;
    let pool_id = pool["warmPool"]["id"].as_str().ok_or("no warm pool id")?.to_string();

    let list_filter = || list_prebuilds_request::Filter { project_ids: vec![LIST_PROJECT.into()], ..Default::default() };
    let scenarios = [
        Scenario {
            name: "GetPrebuild",
            method: "GetPrebuild",
            proto: vec![proto(&GetPrebuildRequest { prebuild_id: prebuild_id.clone() })],
            json: vec![json(serde_json::json!({"prebuildId": prebuild_id}))],
        },
        Scenario {
            name: "ListPrebuilds",
            method: "ListPrebuilds",
            proto: vec![proto(&ListPrebuildsRequest {
                pagination: Some(PaginationRequest { page_size: 25, token: String::new() }),
                filter: Some(list_filter()),
            })],
            json: vec![json(serde_json::json!({"pagination": {"pageSize": 25}, "filter": {"projectIds": [LIST_PROJECT]}}))],
        },
        Scenario {
            name: "UpdateWarmPool",
            method: "UpdateWarmPool",
            proto: (1..=2)
                .map(|max| proto(&UpdateWarmPoolRequest { warm_pool_id: pool_id.clone(), max_size: Some(max), ..Default::default() }))
                .collect(),
            json: (1..=2).map(|max| json(serde_json::json!({"warmPoolId": pool_id, "maxSize": max}))).collect(),
        },
        Scenario {
            name: "CreatePrebuild",
            method: "CreatePrebuild",
            proto: vec![proto(&CreatePrebuildRequest {
                project_id: CREATE_PROJECT.into(),
                environment_class_id: None,
                spec: Some(PrebuildSpec::default()),
            })],
            json: vec![json(serde_json::json!({"projectId": CREATE_PROJECT, "spec": {}}))],
        },
    ];

    println!("\n== Phase A: API scenarios (1,000 prebuilds in the listed project), each vs. its baseline");
    let mut idle_get_p99 = 0.0;
    let mut small_list_p50 = 0.0;
    for scenario in scenarios.iter().filter(|s| options.only.as_deref().is_none_or(|only| only == s.name)) {
        for protocol in [Protocol::Grpc, Protocol::ConnectJson] {
            let real_path = format!("/gitpod.v1.PrebuildService/{}", scenario.method);
            let bodies = if protocol == Protocol::Grpc { scenario.proto.clone() } else { scenario.json.clone() };
            // Store the real response as the baseline's canned answer.
            let sample = clients.call(protocol, &real_path, bodies[0].clone(), 0).await?;
            let baseline_name = format!("{}-{}", scenario.name, if protocol == Protocol::Grpc { "proto" } else { "json" });
            clients
                .http
                .put(format!("{}/prebuildd.bench.v1.Baseline/{baseline_name}", clients.base))
                .body(sample)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let baseline =
                measure(&clients, options, protocol, format!("/prebuildd.bench.v1.Baseline/{baseline_name}"), bodies.clone()).await;
            let real = measure(&clients, options, protocol, real_path, bodies).await;
            row(&format!("{} (base)", scenario.name), protocol.name(), &baseline, None);
            row(scenario.name, protocol.name(), &real, Some(&baseline));
            if scenario.name == "GetPrebuild" {
                // The same answer from a plain server of the same stack, in
                // its own process: the ratio that includes our listener.
                let kind = if protocol == Protocol::Grpc { plain::PlainProtocol::Grpc } else { plain::PlainProtocol::Json };
                let sample = clients
                    .call(protocol, &format!("/gitpod.v1.PrebuildService/{}", scenario.method), bodies_of(scenario, protocol)[0].clone(), 0)
                    .await?;
                let plain_server = plain::PlainServer::start(work, kind, &sample).await?;
                let plain_clients = Arc::new(Clients::new(&plain_server.base, options.concurrency).await?);
                let outside = measure(
                    &plain_clients,
                    options,
                    protocol,
                    "/gitpod.v1.PrebuildService/GetPrebuild".into(),
                    bodies_of(scenario, protocol),
                )
                .await;
                drop(plain_server);
                row(&format!("{} (plain)", scenario.name), protocol.name(), &outside, None);
                println!(
                    "{:<16} {:<13} {:.2}x of the plain server",
                    scenario.name,
                    protocol.name(),
                    real.per_second() / outside.per_second().max(1e-9)
                );
            }
            if scenario.name == "GetPrebuild" && protocol == Protocol::Grpc {
                idle_get_p99 = real.quantile_ms(0.99);
            }
            if scenario.name == "ListPrebuilds" && protocol == Protocol::Grpc {
                small_list_p50 = real.quantile_ms(0.5);
            }
        }
    }
    let (_, peak_rss) = server.rss_mib();
    println!("server RSS: idle {idle_rss:.1} MiB, peak during phase A {peak_rss:.1} MiB");
    server.stop();
    if options.only.is_some() {
        return Ok(());
    }

    // Phase B: the same list query with a large table.
    println!("\n== Phase B: ListPrebuilds page of 25 with a project filter, {} rows in the table", options.large_rows);
    let more = options.large_rows.saturating_sub(1000);
    let in_list = more / 10;
    let seeding = Instant::now();
    prebuildd::store::sqlite::seed_prebuilds(&data_a, seed_rows(LIST_PROJECT, in_list).chain(seed_rows(FILLER_PROJECT, more - in_list)))
        .map_err(|e| e.to_string())?;
    println!("seeded {more} rows in {:.1} s", seeding.elapsed().as_secs_f64());
    let server = ChildServer::start(&data_a, false, 4)?;
    server.ready().await?;
    let clients = Arc::new(Clients::new(&server.base, options.concurrency).await?);
    let list = &scenarios[1];
    let large = measure(&clients, options, Protocol::Grpc, "/gitpod.v1.PrebuildService/ListPrebuilds".into(), list.proto.clone()).await;
    row("ListPrebuilds", "gRPC", &large, None);
    println!(
        "list p50: {small_list_p50:.2} ms with 1,000 rows, {:.2} ms with {} rows: {:.2}x (target <= 2x)",
        large.quantile_ms(0.5),
        options.large_rows,
        large.quantile_ms(0.5) / small_list_p50.max(1e-9)
    );
    let (_, peak_rss_b) = server.rss_mib();
    println!("server peak RSS during phase B: {peak_rss_b:.1} MiB");
    server.stop();

    // Phase C: the reconciler with many active prebuilds.
    println!("\n== Phase C: reconciler with {} active prebuilds on the simulated runner", options.active_prebuilds);
    let data_c = work.join("reconciler");
    prebuildd::store::sqlite::seed_prebuilds(&data_c, seed_rows(CREATE_PROJECT, options.active_prebuilds)).map_err(|e| e.to_string())?;
    let server = ChildServer::start(&data_c, true, options.active_prebuilds + 10)?;
    server.ready().await?;
    // Let the first passes start every prebuild, then watch steady passes.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        if server.metric(PASSES).await.unwrap_or(0.0) >= 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let clients = Arc::new(Clients::new(&server.base, options.concurrency).await?);
    let sample =
        clients.call(Protocol::Grpc, "/gitpod.v1.PrebuildService/ListPrebuilds", proto(&ListPrebuildsRequest::default()), 0).await?;
    let busy_get = {
        let listed = ListPrebuildsResponse::decode_bytes(&sample)?;
        let id = listed.prebuilds.first().map(|p| p.id.clone()).ok_or("no prebuilds")?;
        measure(
            &clients,
            options,
            Protocol::Grpc,
            "/gitpod.v1.PrebuildService/GetPrebuild".into(),
            vec![proto(&GetPrebuildRequest { prebuild_id: id })],
        )
        .await
    };
    // Pass times from the pass histogram: the mean of the passes between
    // two looks (a look every 100 ms, so mostly a single pass).
    let mut passes = Vec::new();
    let watch = Instant::now();
    let (mut last_count, mut last_sum) = (server.metric(PASSES).await.unwrap_or(0.0), server.metric(PASS_SECONDS).await.unwrap_or(0.0));
    while watch.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (count, sum) = (server.metric(PASSES).await.unwrap_or(0.0), server.metric(PASS_SECONDS).await.unwrap_or(0.0));
        if count > last_count {
            passes.push((sum - last_sum) / (count - last_count) * 1000.0);
            (last_count, last_sum) = (count, sum);
        }
    }
    let active = server.metric("prebuildd_prebuilds").await.unwrap_or(0.0);
    passes.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let running = {
        let filter = list_prebuilds_request::Filter { phases: vec![PrebuildPhase::Pending as i32], ..Default::default() };
        let body = proto(&ListPrebuildsRequest {
            pagination: Some(PaginationRequest { page_size: 1, token: String::new() }),
            filter: Some(filter),
        });
        ListPrebuildsResponse::decode_bytes(&clients.call(Protocol::Grpc, "/gitpod.v1.PrebuildService/ListPrebuilds", body, 0).await?)?
            .prebuilds
            .is_empty()
    };
    println!(
        "active prebuilds {active:.0} (all started: {running}); steady passes observed: {}; pass time median {:.1} ms, max {:.1} ms (target < 200 ms)",
        passes.len(),
        passes.get(passes.len() / 2).copied().unwrap_or(0.0),
        passes.last().copied().unwrap_or(0.0)
    );
    row("GetPrebuild busy", "gRPC", &busy_get, None);
    println!(
        "GetPrebuild p99 while reconciling: {:.2} ms vs idle {idle_get_p99:.2} ms: {:.2}x (target <= 2x)",
        busy_get.quantile_ms(0.99),
        busy_get.quantile_ms(0.99) / idle_get_p99.max(1e-9)
    );
    let (rss_c, peak_c) = server.rss_mib();
    println!("server RSS during phase C: {rss_c:.1} MiB, peak {peak_c:.1} MiB");
    server.stop();

    // Phase D: runner events.
    events::run(work, options).await
}

pub(crate) trait DecodeBytes: Sized {
    fn decode_bytes(bytes: &[u8]) -> Result<Self, String>;
}

impl<T: prost::Message + Default> DecodeBytes for T {
    fn decode_bytes(bytes: &[u8]) -> Result<Self, String> {
        T::decode(bytes).map_err(|e| e.to_string())
    }
}
