//! `--only overload`: CreatePrebuild at four times the rate the server
//! sustains, against a runner that is busy (so every prebuild stays
//! queued), to see that overload is refused quickly instead of growing the
//! server's memory and latency.
//!
//! First the sustainable rate: `concurrency` clients creating as fast as
//! they can, with no cap on queued prebuilds. Then an open loop (requests
//! sent on a fixed schedule whatever the answers, so a slow server cannot
//! slow the load down) at four times that rate for `duration`, twice: with
//! the default limits (the cap of 1,000 queued prebuilds per project), and
//! with the cap lifted (only the limits on calls in flight and on the
//! store's queues). Reported: the rate offered, the accepted creates and
//! their latency from the moment each was due (p50, p99), the share
//! refused by code, and the server's RSS.

use crate::api::{proto, Clients, Protocol};
use crate::load::Stats;
use crate::server::{config, ChildServer, CREATE_PROJECT};
use crate::Options;
use bytes::Bytes;
use prebuildd::proto::gitpod::v1::{CreatePrebuildRequest, PrebuildSpec};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CREATE: &str = "/gitpod.v1.PrebuildService/CreatePrebuild";
/// Calls the load generator keeps open at most: past it a due call is not
/// sent (counted as "not sent"), so the client's own memory stays bounded.
const MAX_OUTSTANDING: usize = 20_000;

/// What an open-loop run saw.
#[derive(Default)]
struct Outcome {
    /// Latencies of accepted calls, from when each was due (microseconds).
    accepted: Vec<u32>,
    /// Refused or failed calls by their code.
    refused: BTreeMap<String, u64>,
    /// The first message of each code, for the report.
    examples: BTreeMap<String, String>,
    not_sent: u64,
}

fn create_body() -> Bytes {
    proto(&CreatePrebuildRequest { project_id: CREATE_PROJECT.into(), environment_class_id: None, spec: Some(PrebuildSpec::default()) })
}

/// The code of a failed call, as the client's error says it.
fn code_of(error: &str) -> String {
    error.split(':').next().unwrap_or(error).trim().to_string()
}

/// Sends a create every `1 / rate` seconds for `duration`, whatever the
/// answers, and waits for the answers.
async fn open_loop(clients: Arc<Clients>, rate: f64, duration: Duration) -> (Outcome, f64) {
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let outstanding = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let body = create_body();
    let started = Instant::now();
    let mut sent = 0u64;
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    while started.elapsed() < duration {
        ticks.tick().await;
        // Every call due by now: the schedule, not the ticks, decides.
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let at = started + Duration::from_secs_f64(sent as f64 / rate);
            sent += 1;
            if outstanding.load(std::sync::atomic::Ordering::Relaxed) >= MAX_OUTSTANDING {
                outcome.lock().unwrap().not_sent += 1;
                continue;
            }
            outstanding.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (clients, body, outcome, outstanding) = (clients.clone(), body.clone(), outcome.clone(), outstanding.clone());
            tasks.push(tokio::spawn(async move {
                let result = clients.call(Protocol::Grpc, CREATE, body, sent).await;
                let latency = at.elapsed().as_micros().min(u32::MAX as u128) as u32;
                outstanding.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                let mut outcome = outcome.lock().unwrap();
                match result {
                    Ok(_) => outcome.accepted.push(latency),
                    Err(error) => {
                        let code = code_of(&error);
                        *outcome.refused.entry(code.clone()).or_default() += 1;
                        outcome.examples.entry(code).or_insert(error);
                    }
                }
            }));
        }
    }
    let offered = sent as f64 / started.elapsed().as_secs_f64();
    for task in tasks {
        let _ = task.await;
    }
    let mut outcome = std::mem::take(&mut *outcome.lock().unwrap());
    outcome.accepted.sort_unstable();
    (outcome, offered)
}

fn quantile_ms(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0
}

/// A server whose runner is busy: four slots, prebuilds that never end.
fn start(work: &Path, name: &str, cap: Option<u32>) -> Result<ChildServer, String> {
    let cap = cap.map_or("0".to_string(), |cap| cap.to_string());
    ChildServer::start_with(&work.join(name), |listen| {
        config(listen, true, 4).replace("max_pending_prebuilds_per_project = 0", &format!("max_pending_prebuilds_per_project = {cap}"))
    })
}

pub async fn run(work: &Path, options: &Options) -> Result<(), String> {
    println!(
        "prebuildd-bench --only overload: CreatePrebuild over gRPC against a busy runner, {} s per run, {} cores",
        options.duration.as_secs_f64(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    // The sustainable rate: a closed loop, nothing refused.
    let server = start(work, "sustained", None)?;
    server.ready().await?;
    let clients = Arc::new(Clients::new(&server.base, options.concurrency).await?);
    let sustained: Stats = crate::api::measure(&clients, options, Protocol::Grpc, CREATE.to_string(), vec![create_body()]).await;
    let (_, sustained_peak) = server.rss_mib();
    println!(
        "sustained (closed loop, {} clients, no cap): {:.0} creates/s, p50 {:.2} ms, p99 {:.2} ms, errors {}; server RSS peak {sustained_peak:.1} MiB",
        options.concurrency,
        sustained.per_second(),
        sustained.quantile_ms(0.5),
        sustained.quantile_ms(0.99),
        sustained.errors
    );
    server.stop();
    let rate = 4.0 * sustained.per_second();

    println!("\n| limits | offered/s | accepted/s | accepted p50 ms | accepted p99 ms | refused | by code | RSS start → end (peak) MiB |");
    println!("|---|---:|---:|---:|---:|---:|---|---|");
    for (name, cap) in [("default (1,000 queued per project)", Some(1000)), ("no cap on queued prebuilds", None)] {
        let server = start(work, if cap.is_some() { "capped" } else { "uncapped" }, cap)?;
        server.ready().await?;
        let clients = Arc::new(Clients::new(&server.base, options.concurrency).await?);
        let (rss_start, _) = server.rss_mib();
        let started = Instant::now();
        let (outcome, offered) = open_loop(clients, rate, options.duration).await;
        let elapsed = started.elapsed().as_secs_f64();
        let (rss_end, rss_peak) = server.rss_mib();
        let refused: u64 = outcome.refused.values().sum();
        let total = (outcome.accepted.len() as u64 + refused).max(1);
        let by_code: Vec<String> = outcome.refused.iter().map(|(code, n)| format!("{code} {n}")).collect();
        println!(
            "| {name} | {offered:.0} | {:.0} | {:.2} | {:.2} | {:.1}% | {}{} | {rss_start:.1} → {rss_end:.1} ({rss_peak:.1}) |",
            outcome.accepted.len() as f64 / elapsed,
            quantile_ms(&outcome.accepted, 0.5),
            quantile_ms(&outcome.accepted, 0.99),
            100.0 * refused as f64 / total as f64,
            by_code.join(", "),
            if outcome.not_sent > 0 {
                format!("; {} not sent (client at {MAX_OUTSTANDING} open calls)", outcome.not_sent)
            } else {
                String::new()
            },
        );
        for (code, example) in &outcome.examples {
            let example: String = example.chars().take(160).collect();
            println!("    {code}, e.g.: {example}");
        }
        server.stop();
    }
    Ok(())
}
