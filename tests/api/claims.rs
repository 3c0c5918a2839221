//! Claims that wait: a claim that finds no ready instance waits for the one
//! being provisioned (first come, first served) up to its `wait`, the call's
//! deadline or 60 s, and answers `unavailable` only when none comes in that
//! time or none will come at all.

use crate::common::*;
use prebuildd::proto::gitpod::v1::*;
use prebuildd::proto::prebuildd::v1::warm_pool_instance_service_client::WarmPoolInstanceServiceClient;
use prebuildd::proto::prebuildd::v1::{ClaimInstanceRequest, ClaimInstanceResponse};
use std::time::{Duration, Instant};
use tonic::Code;

type Claims = WarmPoolInstanceServiceClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>>;

/// The reconciler on with a 30 s interval (runner events move everything),
/// prebuilds that complete, instances ready `step` after they are made.
fn config(step: &str) -> String {
    let config = test_config_toml()
        .replacen("[reconciler]\nenabled = false", "[reconciler]\nenabled = true\ninterval = \"30s\"", 1)
        .replace("step_duration = \"1h\"", &format!("step_duration = \"{step}\""))
        .replace("sim://hang", "sim://ok");
    assert!(config.contains("interval = \"30s\"") && config.contains(&format!("\"{step}\"")), "the config edits applied");
    config
}

/// A server with a completed snapshot and a READY pool of `max_size` (min 1).
async fn ready_pool(step: &str, max_size: i32) -> (TestServer, WarmPool) {
    let server = TestServer::start_with(config(step)).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let prebuild = create_prebuild(&mut client, PROJECT_BACKEND).await;
    wait_for_phase(&mut client, &prebuild.id, &[PrebuildPhase::Completed], Duration::from_secs(30)).await;
    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest {
            project_id: PROJECT_BACKEND.into(),
            environment_class_id: CLASS_SMALL.into(),
            min_size: Some(1),
            max_size: Some(max_size),
            ..Default::default()
        },
    )
    .await;
    let started = Instant::now();
    loop {
        let now = client.get_warm_pool(GetWarmPoolRequest { warm_pool_id: pool.id.clone() }).await.unwrap().into_inner().warm_pool.unwrap();
        let status = now.status.clone().unwrap();
        if status.phase == WarmPoolPhase::Ready as i32 && status.running_instances >= 1 {
            return (server, now);
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the pool never got ready: {now:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn claims(server: &TestServer) -> Claims {
    WarmPoolInstanceServiceClient::with_interceptor(server.channel().await, bearer(TOKEN_A))
}

fn claim(pool: &WarmPool, wait: Option<Duration>) -> ClaimInstanceRequest {
    ClaimInstanceRequest {
        warm_pool_id: pool.id.clone(),
        wait: wait.map(|w| pbjson_types::Duration { seconds: w.as_secs() as i64, nanos: w.subsec_nanos() as i32 }),
    }
}

fn instance_id(response: ClaimInstanceResponse) -> String {
    response.instance.expect("an instance").id
}

#[tokio::test]
async fn claims_wait_for_the_backfill_and_are_served_in_the_order_they_came() {
    // One instance at a time, each ready 400 ms after it is made.
    let (server, pool) = ready_pool("400ms", 1).await;
    let claims = claims(&server).await;
    let started = Instant::now();
    let waiting: Vec<_> = (0..3)
        .map(|n| {
            let (mut claims, request) = (claims.clone(), claim(&pool, None));
            tokio::spawn(async move {
                // They come 100 ms apart, each into the line of the one before.
                tokio::time::sleep(Duration::from_millis(100 * n)).await;
                let response = claims.claim_instance(request).await.map(|r| instance_id(r.into_inner()));
                (n, response, started.elapsed())
            })
        })
        .collect();
    let mut answered = Vec::new();
    for task in waiting {
        answered.push(task.await.unwrap());
    }
    let ids: std::collections::HashSet<&String> = answered.iter().map(|(_, r, _)| r.as_ref().expect("every claim got one")).collect();
    assert_eq!(ids.len(), 3, "three different instances: {answered:?}");
    let mut by_answer = answered.clone();
    by_answer.sort_by_key(|(_, _, at)| *at);
    assert_eq!(by_answer.iter().map(|(n, _, _)| *n).collect::<Vec<_>>(), vec![0, 1, 2], "first come, first served: {answered:?}");
    assert!(answered[2].2 >= Duration::from_millis(400), "the later ones waited for instances to be made: {answered:?}");
    assert!(answered[2].2 < Duration::from_secs(10), "and were not left to a 30 s tick: {answered:?}");
}

#[tokio::test]
async fn a_claim_answers_unavailable_before_its_deadline_when_nothing_comes_in_time() {
    // Instances take 2 s to make: none comes within the deadlines below,
    // which all pass within about a second of the first claim.
    let (server, pool) = ready_pool("2s", 1).await;
    let mut claims = claims(&server).await;
    claims.claim_instance(claim(&pool, None)).await.expect("the ready one");

    // gRPC: the call's deadline.
    let mut request = tonic::Request::new(claim(&pool, None));
    request.set_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let status = claims.claim_instance(request).await.expect_err("nothing within 500 ms");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("within"), "{status:?}");
    assert!(started.elapsed() < Duration::from_millis(500), "answered before the deadline: {:?}", started.elapsed());
    assert!(started.elapsed() >= Duration::from_millis(300), "after waiting most of it: {:?}", started.elapsed());

    // The request's own wait.
    let started = Instant::now();
    assert_status(claims.claim_instance(claim(&pool, Some(Duration::from_millis(300)))).await, Code::Unavailable, "300ms");
    assert!((Duration::from_millis(300)..Duration::from_secs(2)).contains(&started.elapsed()), "{:?}", started.elapsed());
    assert_status(claims.claim_instance(claim(&pool, Some(Duration::ZERO))).await, Code::Unavailable, "0s");

    // Connect: Connect-Timeout-Ms.
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(format!("{}/prebuildd.v1.WarmPoolInstanceService/ClaimInstance", server.base_url()))
        .bearer_auth(TOKEN_A)
        .header("content-type", "application/json")
        .header("connect-timeout-ms", "400")
        .body(format!(r#"{{"warmPoolId": "{}"}}"#, pool.id))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "unavailable", "{body}");
    assert!(started.elapsed() < Duration::from_millis(400), "{:?}", started.elapsed());

    // A wait longer than allowed is the caller's mistake.
    assert_status(claims.claim_instance(claim(&pool, Some(Duration::from_secs(61)))).await, Code::InvalidArgument, "wait: ");
}

#[tokio::test]
async fn a_claim_that_waits_gets_the_instance_its_demand_makes_in_a_pool_at_zero() {
    let server = TestServer::start_with(config("300ms")).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let mut claims = claims(&server).await;
    let prebuild = create_prebuild(&mut client, PROJECT_BACKEND).await;
    wait_for_phase(&mut client, &prebuild.id, &[PrebuildPhase::Completed], Duration::from_secs(30)).await;
    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest {
            project_id: PROJECT_BACKEND.into(),
            environment_class_id: CLASS_SMALL.into(),
            min_size: Some(0),
            max_size: Some(1),
            ..Default::default()
        },
    )
    .await;
    server.reconcile_once().await;
    let idle = client.get_warm_pool(GetWarmPoolRequest { warm_pool_id: pool.id.clone() }).await.unwrap().into_inner().warm_pool.unwrap();
    assert_eq!(idle.status.unwrap().running_instances, 0, "scaled to zero");
    let started = Instant::now();
    let instance = claims.claim_instance(claim(&pool, None)).await.expect("one made for this claim").into_inner().instance.unwrap();
    assert_eq!(instance.snapshot_id, prebuild.id);
    // The pool keeps its one slot as a stopped instance at zero: the claim
    // waited while it was started (half a step on the simulated runner).
    assert!(started.elapsed() >= Duration::from_millis(150), "it waited while the instance was started: {:?}", started.elapsed());

    // A pool with no snapshot will get no instance: unavailable at once.
    let empty = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest { project_id: PROJECT_BACKEND.into(), environment_class_id: CLASS_LARGE.into(), ..Default::default() },
    )
    .await;
    let started = Instant::now();
    let status = claims.claim_instance(claim(&empty, None)).await.expect_err("no snapshot");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("none will come") && status.message().contains("no snapshot"), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
}
