//! The Connect protocol (unary) and the documented JSON paths.
//!
//! `POST /gitpod.v1.PrebuildService/<Method>` (also under `/api/`) with
//! `application/json` or `application/proto`, and the Connect GET form for
//! the NO_SIDE_EFFECTS methods. This layer decodes, authenticates, calls the
//! same service method the gRPC adapter calls, and encodes; no API rule
//! lives here. Protocol reference: connectrpc.com/docs/protocol.
//!
//! Files: this one (the call's flow and the response), `envelope.rs`
//! (reading the request), `dispatch.rs` (name to service call), `error.rs`
//! (the error response), `fuzz.rs` (the fuzz targets' entry points).

mod dispatch;
mod envelope;
mod error;
pub mod fuzz;

use crate::auth::Authenticator;
use crate::error::{Code, Error, Result};
use crate::metrics::Metrics;
use crate::service::Service;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use envelope::{accepts_gzip, get_envelope, gunzip_limited, parse_query, post_envelope, Codec};
use error::Failure;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use std::sync::Arc;
use tracing::Instrument;

/// Responses smaller than this are not worth compressing.
const COMPRESS_MIN_BYTES: usize = 1024;

#[derive(Clone)]
struct ConnectState {
    service: Arc<Service>,
    auth: Arc<Authenticator>,
    metrics: Arc<Metrics>,
}

/// Routes for `/<service>/<method>` and `/api/<service>/<method>`, each
/// call recorded in `metrics`.
pub fn router(service: Arc<Service>, auth: Arc<Authenticator>, metrics: Arc<Metrics>) -> Router {
    Router::new().route("/{service}/{method}", any(handle)).route("/api/{service}/{method}", any(handle)).with_state(ConnectState {
        service,
        auth,
        metrics,
    })
}

async fn handle(
    State(state): State<ConnectState>,
    Path((service, method_name)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let name = format!("{service}/{method_name}");
    // Counted here rather than in a middleware layer: a layer costs a boxed
    // service call per request on the hot path.
    let started = std::time::Instant::now();
    let response = match serve(&state, &name, &method, &uri, &headers, body).await {
        Ok(response) => response,
        Err(failure) => failure.into_response(),
    };
    super::metered::record_connect(&state.metrics, uri.path(), started, &response);
    response
}

async fn serve(state: &ConnectState, name: &str, method: &Method, uri: &Uri, headers: &HeaderMap, body: Body) -> Result<Response, Failure> {
    let allows_get = super::methods::find(name).map(|(_, method)| method.allows_get).ok_or_else(|| Failure {
        status: StatusCode::NOT_FOUND,
        code: Code::Unimplemented,
        message: format!("no such method: {}", crate::validate::quoted(name)),
        extra_header: None,
    })?;
    let query = parse_query(uri);
    let envelope = if method == Method::POST {
        post_envelope(headers, &query, body).await?
    } else if method == Method::GET && allows_get {
        get_envelope(headers, &query)?
    } else {
        let allow = if allows_get { "GET, POST" } else { "POST" };
        return Err(Failure {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: Code::Unimplemented,
            message: format!("{name} accepts {allow}"),
            extra_header: Some((header::ALLOW, HeaderValue::from_static(allow))),
        });
    };

    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let caller = state.auth.authenticate(authorization)?;
    let payload = if envelope.gzip { gunzip_limited(&envelope.payload)? } else { envelope.payload.to_vec() };

    let span = tracing::debug_span!("connect", method = name, organization = %caller.organization_id);
    let work = dispatch::call(&state.service, name, &caller, envelope.codec, &payload, &envelope.page, envelope.timeout).instrument(span);
    let encoded = match envelope.timeout {
        // Already expired: fail without starting the work.
        Some(limit) if limit.is_zero() => {
            return Err(Error::DeadlineExceeded("the call's deadline (0 ms) had passed before it started".into()).into())
        }
        Some(limit) => tokio::time::timeout(limit, work)
            .await
            .map_err(|_| Error::DeadlineExceeded(format!("the call did not finish within its {} ms deadline", limit.as_millis())))??,
        None => work.await?,
    };
    Ok(ok_response(envelope.codec, encoded, accepts_gzip(headers)))
}

fn ok_response(codec: Codec, body: Vec<u8>, gzip: bool) -> Response {
    let mut builder = Response::builder().status(StatusCode::OK).header(header::CONTENT_TYPE, codec.content_type());
    let body = if gzip && body.len() >= COMPRESS_MIN_BYTES {
        builder = builder.header(header::CONTENT_ENCODING, "gzip");
        let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 3), flate2::Compression::fast());
        std::io::Write::write_all(&mut encoder, &body).and_then(|_| encoder.finish()).unwrap_or(body)
    } else {
        body
    };
    builder.body(Body::from(body)).unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
