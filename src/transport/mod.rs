//! The one listener: HTTP/1.1 and HTTP/2 cleartext (h2c) on one port.
//!
//! Requests whose content type is `application/grpc*` go to the gRPC
//! services (PrebuildService, health, reflection); everything else goes to
//! the HTTP router (`/healthz`, and the Connect and log routes). Both kinds
//! share paths (`/gitpod.v1.PrebuildService/<Method>` is gRPC and Connect),
//! so the split is by content type, not by path.

pub mod baseline;
pub mod codec;
pub mod connect;
pub mod connect_stream;
pub mod deadline;
pub mod grpc;
pub mod http;
pub mod json;
pub mod logs;
pub mod metered;
pub mod methods;
pub mod raw_codec;
pub mod request_body;
pub mod runner_service;
pub mod ui;

use crate::auth::Authenticator;
use crate::metrics::Metrics;
use crate::proto::gitpod::v1::prebuild_service_server::PrebuildServiceServer;
use crate::proto::prebuildd::v1::catalog_service_server::CatalogServiceServer;
use crate::proto::prebuildd::v1::prebuild_source_service_server::PrebuildSourceServiceServer;
use crate::proto::prebuildd::v1::runner_service_server::RunnerServiceServer;
use crate::proto::prebuildd::v1::warm_pool_instance_service_server::WarmPoolInstanceServiceServer;
use crate::service::Service;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tower::ServiceExt;

/// How long shutdown waits for in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Largest request message we accept (also the Connect body limit).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Builds the gRPC side: PrebuildService, our WarmPoolInstanceService,
/// PrebuildSourceService and CatalogService,
/// grpc.health.v1 and reflection
/// (v1 and v1alpha) for everything we serve.
pub fn grpc_router(
    service: Arc<Service>,
    auth: Arc<Authenticator>,
    metrics: Arc<Metrics>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Router {
    let prebuilds = PrebuildServiceServer::new(grpc::GrpcPrebuildService::new(service.clone(), auth.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let runners = RunnerServiceServer::new(runner_service::GrpcRunnerService::new(service.clone(), auth.clone(), shutdown))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let extension = grpc::GrpcExtensionService::new(service.clone(), auth.clone());
    let sources = PrebuildSourceServiceServer::new(extension.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let catalog = CatalogServiceServer::new(extension)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let claims = WarmPoolInstanceServiceServer::new(grpc::GrpcWarmPoolInstanceService::new(service, auth))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(MAX_MESSAGE_BYTES);

    let (health_reporter, health) = tonic_health::server::health_reporter();
    // Health is static: the process serves when it accepts connections.
    tokio::spawn(async move {
        health_reporter.set_serving::<PrebuildServiceServer<grpc::GrpcPrebuildService>>().await;
    });

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor set is valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the embedded descriptor set is valid");

    tonic::service::Routes::new(prebuilds)
        .add_service(claims)
        .add_service(sources)
        .add_service(catalog)
        .add_service(runners)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .into_axum_router()
        .layer(axum::middleware::from_fn_with_state(metrics, deadline::grpc_middleware))
}

/// CORS, so browsers on other origins can call the API (gRPC-Web and
/// Connect). Any origin may call: the API authenticates with bearer keys,
/// never cookies, so a page gains nothing it could not do without CORS.
fn cors() -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
    CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods([::http::Method::GET, ::http::Method::POST])
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([
            ::http::HeaderName::from_static("grpc-status"),
            ::http::HeaderName::from_static("grpc-message"),
            ::http::HeaderName::from_static("grpc-status-details-bin"),
            ::http::HeaderName::from_static("connect-content-encoding"),
            ::http::header::CONTENT_ENCODING,
        ])
        .max_age(Duration::from_secs(7200))
}

/// The HTTP/2 connection preface (RFC 9113, section 3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits (at most `limit`) until the client's first bytes say which HTTP
/// version it speaks: the whole HTTP/2 preface, or anything else (HTTP/1).
async fn protocol_chosen_within(stream: &tokio::net::TcpStream, limit: Duration) -> bool {
    let chosen = async {
        let mut buffer = [0u8; 24];
        loop {
            match stream.peek(&mut buffer).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n >= HTTP2_PREFACE.len() || !HTTP2_PREFACE.starts_with(&buffer[..n]) => return true,
                // Part of the preface: wait for the rest.
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    };
    tokio::time::timeout(limit, chosen).await.unwrap_or(false)
}

fn is_grpc_web<B>(request: &::http::Request<B>) -> bool {
    request.headers().get(::http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc-web"))
}

fn is_grpc<B>(request: &::http::Request<B>) -> bool {
    request.headers().get(::http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Whether a request is exempt from the limit on calls in flight: probes and
/// scrapes are cheap, and must answer while the API is overloaded (that is
/// when they matter).
fn is_exempt<B>(request: &::http::Request<B>) -> bool {
    matches!(request.uri().path(), "/healthz" | "/metrics")
}

/// The answer to a call past the limit on calls in flight, in the call's
/// own protocol: gRPC's UNAVAILABLE (trailers-only), else Connect's error
/// JSON with HTTP 503. Clients retry it with backoff. The request's body is
/// read first (up to the message limit, briefly): an HTTP/2 stream answered
/// before its body is reset, and a burst of such resets makes the client's
/// connection end (its other calls with it).
async fn overloaded(request: ::http::Request<axum::body::Body>, limit: usize) -> axum::response::Response {
    use http_body_util::BodyExt;
    let (parts, body) = request.into_parts();
    let drained = http_body_util::Limited::new(body, MAX_MESSAGE_BYTES).collect();
    let _ = tokio::time::timeout(Duration::from_secs(1), drained).await;
    overloaded_answer(&::http::Request::from_parts(parts, ()), limit)
}

fn overloaded_answer<B>(request: &::http::Request<B>, limit: usize) -> axum::response::Response {
    let message = format!("the server is at its limit of {limit} calls in flight ([limits] max_requests_in_flight); retry with backoff");
    if is_grpc(request) {
        let mut response = tonic::Status::unavailable(message).into_http::<axum::body::Body>();
        if is_grpc_web(request) {
            if let Some(content_type) = request.headers().get(::http::header::CONTENT_TYPE) {
                response.headers_mut().insert(::http::header::CONTENT_TYPE, content_type.clone());
            }
        }
        return response;
    }
    let body = serde_json::json!({ "code": "unavailable", "message": message }).to_string();
    let mut response = axum::response::Response::new(axum::body::Body::from(body));
    *response.status_mut() = ::http::StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(::http::header::CONTENT_TYPE, ::http::HeaderValue::from_static("application/json"));
    response
}

/// Serves `grpc` and `http` on `listener` until `shutdown` resolves, then
/// stops accepting and waits (up to [`SHUTDOWN_GRACE`]) for in-flight
/// requests to finish. Past `limits`, a call is refused at once with
/// `unavailable`, and a connection is closed as it comes: overload costs
/// the clients a retry, not the server its memory and everyone's latency.
pub async fn serve(
    listener: TcpListener,
    grpc: Router,
    http: Router,
    header_read_timeout: Duration,
    limits: crate::config::Limits,
    shutdown: impl Future<Output = ()>,
) {
    let calls = Arc::new(tokio::sync::Semaphore::new(limits.max_requests_in_flight));
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    // gRPC-Web (browsers, `buf curl --protocol grpcweb`) is translated by
    // tonic-web in front of the same services; plain gRPC skips that layer.
    let grpc_web = grpc.clone().layer(tonic_web::GrpcWebLayer::new());
    let dispatch = tower::service_fn(move |request: ::http::Request<hyper::body::Incoming>| {
        let mut request = request.map(axum::body::Body::new);
        let grpc = grpc.clone();
        let grpc_web = grpc_web.clone();
        let http = http.clone();
        // Held until the handler has answered (a streamed body goes on
        // without it).
        let permit = if is_exempt(&request) { Ok(None) } else { calls.clone().try_acquire_owned().map(Some) };
        let max_calls = limits.max_requests_in_flight;
        async move {
            let Ok(_permit) = permit else {
                return Ok(overloaded(request, max_calls).await);
            };
            // Translated calls reach the gRPC services marked with the
            // protocol they came in on (for the metrics); plain gRPC is not.
            if is_grpc_web(&request) {
                request.extensions_mut().insert(metered::Protocol::GrpcWeb);
                grpc_web.oneshot(request).await
            } else if is_grpc(&request) {
                grpc.oneshot(request).await
            } else if connect_stream::is_connect_stream(&request) {
                request.extensions_mut().insert(metered::Protocol::Connect);
                Ok(connect_stream::serve(grpc, request).await)
            } else {
                http.oneshot(request).await
            }
        }
    });
    let dispatch = tower::ServiceBuilder::new().layer(cors()).service(dispatch);

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_read_timeout).keep_alive(true);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(Duration::from_secs(30))).max_concurrent_streams(1024);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(connection_permit) = connections.clone().try_acquire_owned() else {
                    tracing::debug!(limit = limits.max_connections, "at the limit of open connections; closing a new one");
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (builder, dispatch, watcher) = (builder.clone(), dispatch.clone(), graceful.watcher());
                tokio::spawn(async move {
                    let _connection_permit = connection_permit;
                    // The header read timeout starts once HTTP/1 is chosen; a
                    // client that sends nothing, or half the HTTP/2 preface,
                    // is cut off by this one.
                    if !protocol_chosen_within(&stream, header_read_timeout).await {
                        return;
                    }
                    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(dispatch));
                    if let Err(error) = watcher.watch(connection.into_owned()).await {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("shutdown grace period over; closing remaining connections"),
    }
}
