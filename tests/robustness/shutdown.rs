//! Graceful shutdown under load: SIGTERM while 16 clients create prebuilds.
//! The process exits promptly and cleanly, every request either succeeded
//! or failed because the server went away, and every acknowledged create
//! is there after a restart.

use crate::common::*;
use crate::process::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_exits_promptly_and_keeps_every_acknowledged_create() {
    let workspace = Workspace::new(&test_config_toml());
    let mut process = workspace.start().await;

    let load = Load::start(&process.base_url(), 16);
    // Let the load get going (every worker connected and writing).
    let warming = Instant::now();
    while load.acknowledged_so_far() < 64 {
        assert!(warming.elapsed() < Duration::from_secs(20), "the load did not start; log:\n{}", process.log_text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    load.stopping();
    let signalled = Instant::now();
    process.signal(libc::SIGTERM);
    let status = process.wait_exit(Duration::from_secs(35)).await;
    let exit_time = signalled.elapsed();
    let status = status.unwrap_or_else(|| panic!("prebuildd still runs 35 s after SIGTERM; log:\n{}", process.log_text()));
    assert!(status.success(), "a graceful exit has status 0: {status:?}; log:\n{}", process.log_text());
    // The grace period is for slow requests; creates take milliseconds.
    assert!(exit_time < Duration::from_secs(10), "SIGTERM took {exit_time:?} to stop the process");
    let log = process.log_text();
    assert!(!log.contains("panicked"), "no panic during shutdown:\n{log}");
    drop(process);

    let outcomes = load.finish(Duration::from_secs(20)).await;
    assert_eq!(outcomes.hung_workers, 0, "every worker ends within its own request limit");
    let early: Vec<&LoadError> = outcomes.errors.iter().filter(|e| !e.after_stop).collect();
    assert!(early.is_empty(), "creates failed before SIGTERM: {early:?}");
    // The process has exited (asserted above), so the kernel has closed every
    // connection it held: nothing on the server side can keep a request
    // waiting. tonic's client can still miss the close of a connection that
    // ended with a graceful GOAWAY and leave one call pending on it; such a
    // call (it was never answered, so it is not in `acknowledged`) is the
    // client's, and is only reported.
    let unnoticed: Vec<&LoadError> = outcomes.errors.iter().filter(|e| e.timed_out).collect();
    let other: Vec<&LoadError> = outcomes.errors.iter().filter(|e| !e.is_server_gone() && !e.timed_out).collect();
    assert!(other.is_empty(), "during shutdown a request succeeds or fails with unavailable / a connection error, got: {other:?}");
    assert!(!outcomes.acknowledged.is_empty());
    eprintln!(
        "SIGTERM: exit after {exit_time:?}, {} creates acknowledged, {} calls the client left pending, errors: {:?}",
        outcomes.acknowledged.len(),
        unnoticed.len(),
        outcomes.errors.iter().filter(|e| e.code != tonic::Code::Unavailable).collect::<Vec<_>>()
    );

    let process = workspace.start().await;
    let client = process.client(TOKEN_A).await;
    let missing = missing_prebuilds(&client, &outcomes.acknowledged).await;
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged creates are missing after SIGTERM, e.g. {:?}",
        missing.len(),
        outcomes.acknowledged.len(),
        &missing[..missing.len().min(5)]
    );
}

/// SIGTERM while a request is half sent: the listener closes at once, the
/// request in flight is still served when the rest arrives, and then the
/// process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_request_in_flight_finish() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let workspace = Workspace::new(&test_config_toml());
    let mut process = workspace.start().await;

    let body = format!(r#"{{"projectId": "{PROJECT_BACKEND}", "spec": {{"timeout": "1200s"}}}}"#);
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    let mut stream = tokio::net::TcpStream::connect(&process.addr).await.unwrap();
    let head = format!(
        "POST /gitpod.v1.PrebuildService/CreatePrebuild HTTP/1.1\r\nHost: prebuildd.test\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {TOKEN_A}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    process.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(process.wait_exit(Duration::ZERO).await.is_none(), "prebuildd exited with a request in flight; log:\n{}", process.log_text());
    assert!(tokio::net::TcpStream::connect(&process.addr).await.is_err(), "the listener is closed once SIGTERM arrives");

    stream.write_all(rest).await.unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    assert!(read.is_ok(), "the response (and the connection's end) came within 10 s");
    let response = String::from_utf8_lossy(&response).to_string();
    assert!(response.starts_with("HTTP/1.1 200"), "the request in flight was served: {response:?}");
    let json = &response[response.find("\r\n\r\n").expect("a header end") + 4..];
    let created: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("a JSON body ({e}): {response:?}"));
    let id = created["prebuild"]["id"].as_str().expect("a prebuild ID").to_string();

    let status = process.wait_exit(Duration::from_secs(10)).await.expect("prebuildd exits once the request is done");
    assert!(status.success(), "{status:?}");
    drop(process);

    let process = workspace.start().await;
    let client = process.client(TOKEN_A).await;
    assert!(missing_prebuilds(&client, &[id]).await.is_empty(), "the prebuild created during shutdown is stored");
}

/// The same over HTTP/2 (gRPC): the call's headers are out, its message is
/// not, when SIGTERM arrives; the call is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_grpc_call_in_flight_finish() {
    use prebuildd::proto::gitpod::v1::*;
    use prost::Message;
    let workspace = Workspace::new(&test_config_toml());
    let mut process = workspace.start().await;

    let channel = tonic::transport::Channel::from_shared(process.base_url()).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let (send, message) = tokio::sync::oneshot::channel::<bytes::Bytes>();
    // A request stream whose one message comes when the test sends it.
    let mut request = tonic::Request::new(futures::stream::once(async move { message.await.expect("the test sends the message") }));
    request.metadata_mut().insert("authorization", format!("Bearer {TOKEN_A}").parse().unwrap());
    let path = http::uri::PathAndQuery::from_static("/gitpod.v1.PrebuildService/CreatePrebuild");
    let call = tokio::spawn(async move { grpc.client_streaming(request, path, prebuildd::transport::raw_codec::RawCodec).await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    process.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(process.wait_exit(Duration::ZERO).await.is_none(), "prebuildd exited with a call in flight; log:\n{}", process.log_text());

    let create = CreatePrebuildRequest { project_id: PROJECT_BACKEND.into(), environment_class_id: None, spec: Some(Default::default()) };
    send.send(create.encode_to_vec().into()).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), call).await.expect("answered within 10 s").unwrap();
    let response = response.unwrap_or_else(|status| panic!("the call in flight failed: {status:?}"));
    let id = CreatePrebuildResponse::decode(response.into_inner()).unwrap().prebuild.unwrap().id;

    let status = process.wait_exit(Duration::from_secs(10)).await.expect("prebuildd exits once the call is done");
    assert!(status.success(), "{status:?}");
    drop(process);

    let process = workspace.start().await;
    let client = process.client(TOKEN_A).await;
    assert!(missing_prebuilds(&client, &[id]).await.is_empty(), "the prebuild created during shutdown is stored");
}
