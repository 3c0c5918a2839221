//! A Connect failure as the client gets it: unary errors are JSON
//! (`{"code": ..., "message": ...}`) whatever the request's codec, with the
//! HTTP status the protocol gives each code, or its own (415, 404, 405).

use crate::error::{Code, Error};
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

/// A failure before or outside the service call, with its own HTTP status
/// where the Connect protocol gives one (415, 404, 405).
pub(super) struct Failure {
    pub(super) status: StatusCode,
    pub(super) code: Code,
    pub(super) message: String,
    pub(super) extra_header: Option<(header::HeaderName, HeaderValue)>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let code = error.code();
        Failure {
            status: StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: error.client_message(),
            extra_header: None,
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        // Connect: unary errors are JSON, whatever the request's codec.
        let body = serde_json::json!({ "code": self.code.connect_name(), "message": self.message });
        let mut response =
            (self.status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body.to_string()).into_response();
        if let Some((name, value)) = self.extra_header {
            response.headers_mut().insert(name, value);
        }
        // For the metrics layer: the code, without parsing the body again.
        response.extensions_mut().insert(self.code);
        response
    }
}

pub(super) fn unsupported_media_type(message: String) -> Failure {
    Failure {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        code: Code::Unimplemented,
        message,
        extra_header: Some((
            header::HeaderName::from_static("accept-post"),
            HeaderValue::from_static("application/json, application/proto"),
        )),
    }
}
