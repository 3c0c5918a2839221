//! Connect streaming (`application/connect+proto`) for the gRPC services,
//! by translation to gRPC: the two frame their messages the same way (a
//! flags byte and a 4-byte length), so requests pass through with gRPC
//! headers, and responses come back with the gRPC trailers turned into
//! Connect's end-of-stream message. This is what lets `buf curl --protocol
//! connect` use server reflection (a bidirectional stream), and serves the
//! health and reflection services to any Connect client.

use crate::error::Code;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// Whether a request is Connect streaming (as opposed to Connect unary).
pub fn is_connect_stream<B>(request: &Request<B>) -> bool {
    request.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/connect+"))
}

/// Serves a Connect streaming request through the gRPC router.
pub async fn serve(grpc: Router, request: Request<Body>) -> Response {
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    if content_type != "application/connect+proto" {
        // tonic's codec is protobuf: Connect streaming JSON is not served.
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"code":"unimplemented","message":"streaming calls take application/connect+proto"}"#,
        )
            .into_response();
    }
    let (mut parts, body) = request.into_parts();
    let headers = &mut parts.headers;
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    if let Some(ms) = headers.remove("connect-timeout-ms").and_then(|v| v.to_str().ok().and_then(|t| t.parse::<u64>().ok())) {
        if let Ok(value) = HeaderValue::from_str(&format!("{}m", ms.min(99_999_999))) {
            headers.insert("grpc-timeout", value);
        }
    }
    for (connect, grpc) in [("connect-content-encoding", "grpc-encoding"), ("connect-accept-encoding", "grpc-accept-encoding")] {
        if let Some(value) = headers.remove(connect) {
            headers.insert(grpc, value);
        }
    }
    let response = match grpc.oneshot(Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (mut parts, body) = response.into_parts();
    // A trailers-only gRPC response carries its status in the headers.
    let early_status = parts.headers.get("grpc-status").is_some().then(|| parts.headers.clone());
    if let Some(encoding) = parts.headers.remove("grpc-encoding") {
        parts.headers.insert("connect-content-encoding", encoding);
    }
    for name in ["grpc-status", "grpc-message", "grpc-accept-encoding"] {
        parts.headers.remove(name);
    }
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/connect+proto"));
    parts.status = StatusCode::OK;

    let frames = futures::stream::unfold((body, early_status, false), |(mut body, early_status, done)| async move {
        if done {
            return None;
        }
        loop {
            match body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => return Some((Ok::<Bytes, std::convert::Infallible>(data), (body, early_status, false))),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            return Some((Ok(end_of_stream(&trailers)), (body, early_status, true)));
                        }
                    }
                },
                Some(Err(error)) => {
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", HeaderValue::from_static("13"));
                    tracing::debug!(%error, "gRPC response body failed");
                    return Some((Ok(end_of_stream(&trailers)), (body, early_status, true)));
                }
                None => {
                    let trailers = early_status.clone().unwrap_or_default();
                    return Some((Ok(end_of_stream(&trailers)), (body, early_status, true)));
                }
            }
        }
    });
    Response::from_parts(parts, Body::from_stream(frames))
}

/// Connect's end-of-stream message from gRPC trailers: flags 0x02, then
/// `{}` or `{"error": {"code", "message"}}`.
fn end_of_stream(trailers: &HeaderMap) -> Bytes {
    let status = trailers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok()).unwrap_or(0);
    let json = if status == 0 {
        "{}".to_string()
    } else {
        let message = trailers.get("grpc-message").and_then(|v| v.to_str().ok()).map(percent_decode).unwrap_or_default();
        serde_json::json!({ "error": { "code": code_name(status), "message": message } }).to_string()
    };
    let mut frame = BytesMut::with_capacity(5 + json.len());
    frame.put_u8(0x02);
    frame.put_u32(json.len() as u32);
    frame.put_slice(json.as_bytes());
    frame.freeze()
}

/// The Connect name of a non-zero gRPC status code.
pub(crate) fn code_name(grpc_status: i32) -> &'static str {
    let code = match grpc_status {
        1 => Code::Canceled,
        3 => Code::InvalidArgument,
        4 => Code::DeadlineExceeded,
        5 => Code::NotFound,
        6 => Code::AlreadyExists,
        7 => Code::PermissionDenied,
        8 => Code::ResourceExhausted,
        9 => Code::FailedPrecondition,
        10 => Code::Aborted,
        11 => Code::OutOfRange,
        12 => Code::Unimplemented,
        13 => Code::Internal,
        14 => Code::Unavailable,
        16 => Code::Unauthenticated,
        _ => Code::Unknown,
    };
    code.connect_name()
}

/// grpc-message is percent-encoded (the gRPC spec).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailers_become_the_end_of_stream_message() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("5"));
        trailers.insert("grpc-message", HeaderValue::from_static("prebuild%20x%20not%20found"));
        let frame = end_of_stream(&trailers);
        assert_eq!(frame[0], 0x02);
        let json: serde_json::Value = serde_json::from_slice(&frame[5..]).unwrap();
        assert_eq!(json, serde_json::json!({"error": {"code": "not_found", "message": "prebuild x not found"}}));
        assert_eq!(&end_of_stream(&HeaderMap::new())[5..], b"{}");
    }
}
