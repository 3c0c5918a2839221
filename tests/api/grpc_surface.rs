//! What gRPC tooling sees: reflection (v1 and v1alpha) and health without an
//! API key, `/healthz` over HTTP/1.1, gzip, and malformed protobuf.

use crate::common::*;
use prebuildd::proto::gitpod::v1::*;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

async fn reflect(server: &TestServer, request: MessageRequest) -> MessageResponse {
    let mut client = ServerReflectionClient::new(server.channel().await);
    let outbound = tokio_stream::iter(vec![ServerReflectionRequest { host: String::new(), message_request: Some(request) }]);
    let mut inbound = client.server_reflection_info(outbound).await.expect("reflection answers without an API key").into_inner();
    inbound.next().await.expect("one response").expect("ok").message_response.expect("has a message")
}

#[tokio::test]
async fn reflection_lists_and_describes_our_services_without_a_key() {
    let server = TestServer::start().await;
    let MessageResponse::ListServicesResponse(list) = reflect(&server, MessageRequest::ListServices(String::new())).await else {
        panic!("expected a service list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["gitpod.v1.PrebuildService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"] {
        assert!(names.contains(&expected.to_string()), "{expected} missing from {names:?}");
    }

    let MessageResponse::FileDescriptorResponse(files) =
        reflect(&server, MessageRequest::FileContainingSymbol("gitpod.v1.PrebuildService".into())).await
    else {
        panic!("expected file descriptors")
    };
    use prost::Message;
    let file = prost_types::FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice()).unwrap();
    assert_eq!(file.name(), "gitpod/v1/prebuild.proto");
    assert_eq!(file.service[0].method.len(), 11);

    // v1alpha, which older grpcurl versions use.
    let mut alpha = tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let outbound = tokio_stream::iter(vec![tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
    }]);
    let response = alpha.server_reflection_info(outbound).await.unwrap().into_inner().next().await.unwrap().unwrap();
    assert!(matches!(
        response.message_response,
        Some(tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(_))
    ));
}

#[tokio::test]
async fn health_and_healthz_answer_without_a_key() {
    let server = TestServer::start().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    for service in ["", "gitpod.v1.PrebuildService"] {
        let response = health.check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(response.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32, "service {service:?}");
    }
    let response =
        reqwest::Client::builder().http1_only().build().unwrap().get(format!("{}/healthz", server.base_url())).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
}

#[tokio::test]
async fn grpc_timeout_is_honoured() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    // A raw HTTP/2 request: tonic's client would enforce the deadline itself.
    let raw = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let response = raw
        .post(format!("{}/gitpod.v1.PrebuildService/ListPrebuilds", server.base_url()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "1n")
        .header("authorization", format!("Bearer {TOKEN_A}"))
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_string()), Some("4".to_string()), "DEADLINE_EXCEEDED");
    let mut ample = tonic::Request::new(ListPrebuildsRequest::default());
    ample.set_timeout(std::time::Duration::from_secs(10));
    client.list_prebuilds(ample).await.expect("a generous deadline is met");
}

#[tokio::test]
async fn gzip_requests_and_responses_work() {
    let server = TestServer::start().await;
    let mut client = server
        .client(Some(TOKEN_A))
        .await
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let prebuild = create_prebuild(&mut client, PROJECT_BACKEND).await;
    let listed = client.list_prebuilds(ListPrebuildsRequest::default()).await.unwrap().into_inner().prebuilds;
    assert_eq!(listed, vec![prebuild]);
}

#[tokio::test]
async fn malformed_protobuf_is_invalid_argument() {
    let server = TestServer::start().await;
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    for garbage in [vec![0xff, 0xff, 0xff], vec![0x0a, 0x50, b'a'], vec![0x0a]] {
        grpc.ready().await.unwrap();
        let mut request = tonic::Request::new(bytes::Bytes::from(garbage));
        request.metadata_mut().insert("authorization", format!("Bearer {TOKEN_A}").parse().unwrap());
        let path = http::uri::PathAndQuery::from_static("/gitpod.v1.PrebuildService/GetPrebuild");
        let result = grpc.unary(request, path, prebuildd::transport::raw_codec::RawCodec).await;
        assert_status(result, Code::InvalidArgument, "not a valid protobuf message");
    }
    // An unknown method or service is UNIMPLEMENTED, and says which.
    for path in ["/gitpod.v1.PrebuildService/DropAllPrebuilds", "/gitpod.v1.NoSuchService/GetPrebuild"] {
        grpc.ready().await.unwrap();
        let mut request = tonic::Request::new(bytes::Bytes::new());
        request.metadata_mut().insert("authorization", format!("Bearer {TOKEN_A}").parse().unwrap());
        let result = grpc.unary(request, http::uri::PathAndQuery::from_static(path), prebuildd::transport::raw_codec::RawCodec).await;
        assert_status(result, Code::Unimplemented, path);
    }
    // The server is still fine.
    let mut client = server.client(Some(TOKEN_A)).await;
    client.list_prebuilds(ListPrebuildsRequest::default()).await.expect("still serving");
}
