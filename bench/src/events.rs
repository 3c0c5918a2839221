//! Phase D (`--only events`): how late a runner's progress reaches the
//! store when only runner events move it.
//!
//! The server's reconciler ticks every 30 s, so a tick never helps; the
//! simulated runner takes one step of `STEP` per phase, so a prebuild's job
//! completes exactly four steps after it started. Every prebuild's record
//! tells when that was: its environment ID is a version 7 UUID made just
//! before the job starts (milliseconds since the epoch), and its
//! `completionTime` is when the COMPLETED phase was stored. The lag,
//! completion time minus (environment time + four steps), is the time from
//! the runner's event to the stored phase, plus the STARTING write before
//! the job started (so it errs high). Target: p99 under 50 ms.

use crate::server::{ChildServer, CLASS, ORG, RUNNER, USER};
use crate::Options;
use prebuildd::config::DEMO_API_KEY;
use prebuildd::proto::gitpod::v1::prebuild_service_client::PrebuildServiceClient;
use prebuildd::proto::gitpod::v1::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// The simulated runner's step.
const STEP: Duration = Duration::from_millis(100);
/// Prebuilds measured, and how many run at once.
const PREBUILDS: usize = 400;
const SLOTS: usize = 16;
const PROJECT: &str = "e0e00000-0000-4000-8000-0000000000d1";

fn config(listen: &str) -> String {
    format!(
        "[server]\nlisten = \"{listen}\"\n[reconciler]\ninterval = \"30s\"\n\
         [[organizations]]\nid = \"{ORG}\"\nname = \"Bench\"\n\
         [[api_keys]]\ntoken = \"{DEMO_API_KEY}\"\norganization_id = \"{ORG}\"\nsubject_id = \"{USER}\"\n\
         [[runners]]\nid = \"{RUNNER}\"\nkind = \"simulated\"\nmax_concurrent_prebuilds = {SLOTS}\nstep_duration = \"{}ms\"\n\
         [[environment_classes]]\nid = \"{CLASS}\"\nrunner_id = \"{RUNNER}\"\nname = \"small\"\n\
         [[projects]]\nid = \"{PROJECT}\"\norganization_id = \"{ORG}\"\nname = \"events\"\nrepository = \"sim://ok\"\n\
         default_environment_class_id = \"{CLASS}\"\n[projects.prebuilds]\nenabled = true\nenvironment_class_ids = [\"{CLASS}\"]\n",
        STEP.as_millis()
    )
}

/// Milliseconds since the epoch in a version 7 UUID.
fn uuid_ms(id: &str) -> Option<f64> {
    let (seconds, nanos) = uuid::Uuid::parse_str(id).ok()?.get_timestamp()?.to_unix();
    Some(seconds as f64 * 1000.0 + f64::from(nanos) / 1e6)
}

fn completion_ms(prebuild: &Prebuild) -> Option<f64> {
    let at = prebuild.status.as_ref()?.completion_time.as_ref()?;
    Some(at.seconds as f64 * 1000.0 + f64::from(at.nanos) / 1e6)
}

pub async fn run(work: &Path, _options: &Options) -> Result<(), String> {
    println!(
        "\n== Phase D: runner event to stored phase, reconciler interval 30 s, {PREBUILDS} simulated prebuilds of 4 x {} ms, {SLOTS} at a time",
        STEP.as_millis()
    );
    let server = ChildServer::start_with(&work.join("events"), config)?;
    server.ready().await?;
    let channel = tonic::transport::Channel::from_shared(server.base.clone())
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let bearer: tonic::metadata::MetadataValue<tonic::metadata::Ascii> = format!("Bearer {DEMO_API_KEY}").parse().map_err(|_| "header")?;
    let mut client = PrebuildServiceClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
        request.metadata_mut().insert("authorization", bearer.clone());
        Ok(request)
    });
    let started = Instant::now();
    let mut ids = Vec::with_capacity(PREBUILDS);
    for _ in 0..PREBUILDS {
        let request = CreatePrebuildRequest { project_id: PROJECT.into(), environment_class_id: None, spec: Some(PrebuildSpec::default()) };
        let created = client.create_prebuild(request).await.map_err(|e| e.to_string())?.into_inner().prebuild.ok_or("no prebuild")?;
        ids.push(created.id);
    }
    // Wait for all of them: a 30 s tick would show as a lag of seconds.
    let mut done = Vec::with_capacity(PREBUILDS);
    for id in &ids {
        loop {
            let prebuild = client
                .get_prebuild(GetPrebuildRequest { prebuild_id: id.clone() })
                .await
                .map_err(|e| e.to_string())?
                .into_inner()
                .prebuild
                .ok_or("no prebuild")?;
            let phase = prebuild.status.as_ref().map_or(0, |s| s.phase);
            if phase == PrebuildPhase::Completed as i32 {
                done.push(prebuild);
                break;
            }
            if phase == PrebuildPhase::Failed as i32 || started.elapsed() > Duration::from_secs(600) {
                return Err(format!("prebuild {id} did not complete: {prebuild:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let all_done = started.elapsed();
    let mut lags: Vec<f64> = done
        .iter()
        .filter_map(|p| {
            let environment = uuid_ms(&p.status.as_ref()?.environment_id)?;
            Some(completion_ms(p)? - environment - 4.0 * STEP.as_millis() as f64)
        })
        .collect();
    lags.sort_by(f64::total_cmp);
    if lags.len() != PREBUILDS {
        return Err(format!("{} of {PREBUILDS} prebuilds have no environment or completion time", PREBUILDS - lags.len()));
    }
    let quantile = |q: f64| lags[((lags.len() - 1) as f64 * q).round() as usize];
    println!(
        "all {PREBUILDS} completed in {:.1} s (the work alone: {:.1} s)",
        all_done.as_secs_f64(),
        (PREBUILDS / SLOTS) as f64 * 4.0 * STEP.as_secs_f64()
    );
    println!(
        "event to stored COMPLETED: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 < 50 ms: {})",
        quantile(0.5),
        quantile(0.9),
        quantile(0.99),
        quantile(1.0),
        if quantile(0.99) < 50.0 { "met" } else { "NOT met" }
    );
    let passes = server.metric("prebuildd_reconciler_pass_duration_seconds_count").await.unwrap_or(0.0);
    println!("reconciler passes: {passes:.0} ({:.1} per prebuild), all woken by events", passes / PREBUILDS as f64);
    server.stop();
    Ok(())
}
