//! gRPC middleware: `grpc-timeout` honoured on the server, and the status
//! of oversized messages.
//!
//! tonic's own `Server` applies it, but our gRPC services are served as
//! routes on a shared listener, so this layer does the same: the call gets
//! the client's remaining time, and when it runs out the client gets
//! DEADLINE_EXCEEDED (trailers-only, as the gRPC spec writes it).

use super::metered;
use crate::metrics::Metrics;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// When a gRPC call's deadline (`grpc-timeout`) passes: in the request's
/// extensions, for a method that waits and should answer before it (a
/// claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallDeadline(pub Instant);

/// The gRPC spec: at most 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The one gRPC middleware (one layer keeps the hot path short): applies
/// the client's deadline, fixes the status of oversized messages, and
/// records the API's calls in the metrics (with the status as fixed).
pub async fn grpc_middleware(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let method = metered::method_of(request.uri().path()).filter(|(_, under_api)| !under_api).map(|(name, _)| name);
    // Only a path that names none of the API's methods can be unknown.
    let other_path = method.is_none().then(|| request.uri().path().to_string());
    let protocol = metered::protocol_of(&request);
    let started = Instant::now();
    let mut response = with_deadline(request, next).await;
    fix_message_limit_status(&mut response);
    match (method, other_path) {
        (Some(method), _) => metered::record_grpc(&metrics, method, protocol, started, response),
        (None, Some(path)) => {
            name_unknown_methods(&mut response, &path);
            response
        }
        (None, None) => response,
    }
}

/// tonic answers an unknown service or method with UNIMPLEMENTED and no
/// message; say which method was asked for.
fn name_unknown_methods(response: &mut Response, path: &str) {
    let headers = response.headers_mut();
    let unnamed = headers.get("grpc-status").is_some_and(|s| s == "12") && headers.get("grpc-message").is_none_or(|m| m.is_empty());
    if unnamed {
        let shown: String = path.chars().take(200).filter(|c| c.is_ascii_graphic()).collect();
        if let Ok(message) = http::HeaderValue::from_str(&format!("no such method: {}", shown.replace('%', "%25"))) {
            headers.insert("grpc-message", message);
        }
    }
}

async fn with_deadline(mut request: Request, next: Next) -> Response {
    let timeout = request.headers().get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(parse_grpc_timeout);
    let Some(timeout) = timeout else {
        return next.run(request).await;
    };
    let expired = || {
        tonic::Status::deadline_exceeded(format!("the call did not finish within its deadline ({timeout:?}, from grpc-timeout)"))
            .into_http()
    };
    // Below the timer's resolution the deadline has effectively passed:
    // fail at once rather than race a timer that cannot fire that soon.
    if timeout < Duration::from_millis(1) {
        return expired();
    }
    request.extensions_mut().insert(CallDeadline(Instant::now() + timeout));
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => expired(),
    }
}

/// gRPC: a message over the size limit is RESOURCE_EXHAUSTED (as grpc-go and
/// the Connect layer say); tonic reports OUT_OF_RANGE. Its answer is
/// trailers-only (the status is in the headers), so rewriting is enough.
fn fix_message_limit_status(response: &mut Response) {
    let headers = response.headers_mut();
    if headers.get("grpc-status").is_some_and(|s| s == "11")
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| m.contains("message%20length%20too%20large") || m.contains("message length too large"))
    {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_per_the_grpc_spec() {
        assert_eq!(parse_grpc_timeout("1n"), Some(Duration::from_nanos(1)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("99999999S"), Some(Duration::from_secs(99_999_999)));
        for bad in ["", "5", "123456789S", "5x", "-5S", "S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }
}
