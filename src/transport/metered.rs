//! Counting and timing every API call once, where the transports meet it:
//! the gRPC middleware (plain gRPC, gRPC-Web and Connect streaming, which
//! all reach the gRPC services) and the Connect handler.
//!
//! The result code is read from the response, so it is the code the client
//! sees, whoever produced it (the service, the codec, a deadline): gRPC's
//! `grpc-status` (in the headers of a trailers-only answer, else in the
//! trailers at the end of the body), or the code the Connect layer put in
//! the response's extensions.
//!
//! Only the API's own methods are counted (their names bound the label
//! values); health checks, reflection and unknown paths are not.

use crate::error::Code;
pub use crate::metrics::Protocol;
use crate::metrics::{Metrics, RpcMethod};
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::HeaderMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// The method a request path names, if it is one of the API's: its
/// `service/Method` name, and whether it came under `/api/`.
pub fn method_of(path: &str) -> Option<(RpcMethod, bool)> {
    let (name, under_api) = match path.strip_prefix("/api/") {
        Some(rest) => (rest, true),
        None => (path.strip_prefix('/')?, false),
    };
    let (index, method) = super::methods::find(name)?;
    Some((RpcMethod { index, name: method.name }, under_api))
}

/// The protocol the dispatcher marked a request with before it reached the
/// gRPC services (plain gRPC carries no mark).
pub fn protocol_of(request: &Request) -> Protocol {
    request.extensions().get::<Protocol>().copied().unwrap_or(Protocol::Grpc)
}

/// The Connect name of a `grpc-status` value (`"ok"` for 0).
fn grpc_code_name(headers: &HeaderMap) -> Option<&'static str> {
    let status = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(if status == 0 { "ok" } else { super::connect_stream::code_name(status) })
}

/// A call whose result is not known yet.
struct Pending {
    metrics: Arc<Metrics>,
    method: RpcMethod,
    protocol: Protocol,
    started: Instant,
}

impl Pending {
    fn finish(self, code: &'static str) {
        self.metrics.record_rpc(self.method, self.protocol, code, self.started.elapsed());
    }
}

/// Records a gRPC call: at once when the answer is trailers-only, else when
/// its body ends (at the trailers).
pub fn record_grpc(metrics: &Arc<Metrics>, method: RpcMethod, protocol: Protocol, started: Instant, response: Response) -> Response {
    let pending = Pending { metrics: metrics.clone(), method, protocol, started };
    if let Some(code) = grpc_code_name(response.headers()) {
        pending.finish(code);
        return response;
    }
    response.map(|body| Body::new(UntilTrailers { body, pending: Some(pending) }))
}

/// A gRPC response body that records its call at its trailers; a body
/// dropped before them (the client went away) records `canceled`.
struct UntilTrailers {
    body: Body,
    pending: Option<Pending>,
}

impl http_body::Body for UntilTrailers {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    if let Some(pending) = self.pending.take() {
                        pending.finish(grpc_code_name(trailers).unwrap_or("unknown"));
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(pending) = self.pending.take() {
                    pending.finish(Code::Internal.connect_name());
                }
            }
            Poll::Ready(None) => {
                if let Some(pending) = self.pending.take() {
                    pending.finish(Code::Unknown.connect_name());
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UntilTrailers {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.finish(Code::Canceled.connect_name());
        }
    }
}

/// Records a Connect (or `/api/`) call once its handler has answered:
/// Connect bodies are whole by then. Paths that name no API method are not
/// counted.
pub fn record_connect(metrics: &Metrics, path: &str, started: Instant, response: &Response) {
    let Some((method, under_api)) = method_of(path) else { return };
    let protocol = if under_api { Protocol::HttpJson } else { Protocol::Connect };
    let code = match response.extensions().get::<Code>() {
        Some(code) => code.connect_name(),
        None if response.status().is_success() => "ok",
        None => Code::Unknown.connect_name(),
    };
    metrics.record_rpc(method, protocol, code, started.elapsed());
}

#[cfg(test)]
mod tests {
    use super::super::methods::METHODS;
    use super::*;

    #[test]
    fn only_the_apis_methods_are_named() {
        let named = |path| method_of(path).map(|(method, under_api)| (method.name, under_api));
        assert_eq!(named("/gitpod.v1.PrebuildService/GetPrebuild"), Some(("gitpod.v1.PrebuildService/GetPrebuild", false)));
        assert_eq!(
            named("/api/prebuildd.v1.WarmPoolInstanceService/ClaimInstance"),
            Some(("prebuildd.v1.WarmPoolInstanceService/ClaimInstance", true))
        );
        let indexes: std::collections::HashSet<usize> =
            METHODS.iter().filter_map(|method| method_of(&format!("/{}", method.name))).map(|(m, _)| m.index).collect();
        assert_eq!(indexes.len(), METHODS.len(), "one index per method");
        for other in
            ["/grpc.health.v1.Health/Check", "/gitpod.v1.PrebuildService/Nope", "/healthz", "", "gitpod.v1.PrebuildService/GetPrebuild"]
        {
            assert_eq!(method_of(other), None, "{other}");
        }
    }
}
