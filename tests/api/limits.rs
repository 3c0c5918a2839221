//! Bounded everywhere, as a client sees it: past the cap on queued prebuilds
//! of a project CreatePrebuild is `resource_exhausted` naming the cap, and
//! past the limit on calls in flight a call is `unavailable` at once, in its
//! own protocol, while probes and metrics still answer.

use crate::common::*;
use prebuildd::proto::gitpod::v1::*;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tonic::Code;

#[tokio::test]
async fn past_the_cap_on_queued_prebuilds_a_create_is_resource_exhausted() {
    // The reconciler is off: every prebuild stays PENDING.
    let config = test_config_toml().replace("max_pending_prebuilds_per_project = 0", "max_pending_prebuilds_per_project = 3");
    let server = TestServer::start_with(config).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let mut created = Vec::new();
    for _ in 0..3 {
        created.push(create_prebuild(&mut client, PROJECT_BACKEND).await);
    }
    let request =
        || CreatePrebuildRequest { project_id: PROJECT_BACKEND.into(), environment_class_id: None, spec: Some(Default::default()) };
    let status = client.create_prebuild(request()).await.expect_err("a fourth is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("max_pending_prebuilds_per_project = 3"), "the message names the cap: {}", status.message());

    // Over Connect: 429 with the Connect code.
    let response = reqwest::Client::new()
        .post(format!("{}/gitpod.v1.PrebuildService/CreatePrebuild", server.base_url()))
        .bearer_auth(TOKEN_A)
        .header("content-type", "application/json")
        .body(format!(r#"{{"projectId": "{PROJECT_BACKEND}", "spec": {{}}}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "resource_exhausted");

    // The cap is per project, and a prebuild that leaves PENDING frees a place.
    create_prebuild(&mut client, PROJECT_FRONTEND).await;
    client.cancel_prebuild(CancelPrebuildRequest { prebuild_id: created[0].id.clone() }).await.unwrap();
    client.create_prebuild(request()).await.expect("a place was freed");
    assert_eq!(client.create_prebuild(request()).await.expect_err("full again").code(), Code::ResourceExhausted);
}

/// Opens a connection and sends a call's headers but not all of its body:
/// the call is in flight until the connection goes.
async fn call_in_flight(server: &TestServer) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /gitpod.v1.PrebuildService/ListPrebuilds HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer {TOKEN_A}\r\nContent-Length: 100\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

#[tokio::test]
async fn past_the_limit_on_calls_in_flight_a_call_is_unavailable_at_once() {
    let config = test_config_toml().replace("[limits]\n", "[limits]\nmax_requests_in_flight = 2\n");
    let server = TestServer::start_with(config).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    client.list_prebuilds(ListPrebuildsRequest::default()).await.expect("below the limit");
    let first = call_in_flight(&server).await;
    let _second = call_in_flight(&server).await;

    // gRPC: UNAVAILABLE, at once, until a place is free.
    let started = Instant::now();
    let refused = loop {
        match client.list_prebuilds(ListPrebuildsRequest::default()).await {
            Err(status) => break status,
            // The two calls may not have reached the server yet.
            Ok(_) => {
                assert!(started.elapsed() < Duration::from_secs(5), "the limit was never reached");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("max_requests_in_flight"), "{refused:?}");
    let started = Instant::now();
    assert_eq!(
        client.get_prebuild(GetPrebuildRequest { prebuild_id: PROJECT_BACKEND.into() }).await.unwrap_err().code(),
        Code::Unavailable
    );
    assert!(started.elapsed() < Duration::from_secs(1), "refused at once: {:?}", started.elapsed());

    // Connect: 503 with the Connect code.
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{}/gitpod.v1.PrebuildService/ListPrebuilds", server.base_url()))
        .bearer_auth(TOKEN_A)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["code"], "unavailable");
    // Probes and scrapes still answer.
    assert_eq!(http.get(format!("{}/healthz", server.base_url())).send().await.unwrap().status(), 200);
    assert_eq!(http.get(format!("{}/metrics", server.base_url())).send().await.unwrap().status(), 200);

    // A call that ends frees its place.
    drop(first);
    let started = Instant::now();
    while client.list_prebuilds(ListPrebuildsRequest::default()).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(5), "the place was never freed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
