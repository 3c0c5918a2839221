//! The benchmark's baseline: trivial handlers on the same listener that
//! answer with canned bytes, touching neither the store nor the service.
//! Every benchmark figure is a ratio to these, measured side by side, so the
//! numbers mean the same on a busy or a quiet machine.
//!
//! Served only with `[bench] baseline = true`. The benchmark first stores
//! the real response of each scenario with `PUT /prebuildd.bench.v1.Baseline/<name>`,
//! so the canned answer has exactly the real one's size; then
//! `POST /prebuildd.bench.v1.Baseline/<name>` returns it over Connect
//! (any content type) or gRPC (`application/grpc`).

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use http::{header, HeaderMap, StatusCode};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

type Canned = Arc<RwLock<HashMap<String, Bytes>>>;

/// Adds the baseline routes to the gRPC and HTTP routers.
pub fn add_routes(grpc: Router, http: Router) -> (Router, Router) {
    let canned: Canned = Arc::default();
    let grpc_routes = Router::new().route("/prebuildd.bench.v1.Baseline/{name}", post(grpc_answer)).with_state(canned.clone());
    let http_routes = Router::new().route("/prebuildd.bench.v1.Baseline/{name}", post(connect_answer).put(store)).with_state(canned);
    (grpc.merge(grpc_routes), http.merge(http_routes))
}

async fn store(State(canned): State<Canned>, Path(name): Path<String>, body: Bytes) -> StatusCode {
    crate::sync::write(&canned).insert(name, body);
    StatusCode::NO_CONTENT
}

fn lookup(canned: &Canned, name: &str) -> Option<Bytes> {
    crate::sync::read(canned).get(name).cloned()
}

async fn connect_answer(State(canned): State<Canned>, Path(name): Path<String>, headers: HeaderMap, _body: Bytes) -> Response {
    let Some(bytes) = lookup(&canned, &name) else { return StatusCode::NOT_FOUND.into_response() };
    let content_type = headers.get(header::CONTENT_TYPE).cloned().unwrap_or_else(|| header::HeaderValue::from_static("application/json"));
    ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
}

/// A unary gRPC answer: one length-prefixed message, then `grpc-status: 0`
/// in the trailers.
async fn grpc_answer(State(canned): State<Canned>, Path(name): Path<String>, _body: Bytes) -> Response {
    let Some(message) = lookup(&canned, &name) else {
        return tonic::Status::not_found(format!("no canned answer {name}")).into_http();
    };
    let mut framed = Vec::with_capacity(message.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", header::HeaderValue::from_static("0"));
    let frames = futures::stream::iter([
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(framed))),
        Ok(http_body::Frame::trailers(trailers)),
    ]);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/grpc")
        .body(Body::new(http_body_util::StreamBody::new(frames)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
