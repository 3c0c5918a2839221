//! The one error type of the domain, and its mappings to gRPC and Connect.
//!
//! Every layer returns [`Error`]; the transports map it exactly once: to a
//! `tonic::Status` for gRPC, and to a Connect code and HTTP status for the
//! Connect layer. Messages say what to fix; internal details are logged, never
//! sent to the client.

use std::fmt;

/// A domain error. The variant decides the status code; the text is what the
/// caller reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request is malformed; `field` names the offending field
    /// (`spec.timeout`), `reason` says what is expected.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// A malformed request body (protobuf or JSON) as a whole.
    #[error("{0}")]
    MalformedRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this (a user's API key on the
    /// runner service, say).
    #[error("{0}")]
    PermissionDenied(String),
    /// A limit was reached (a message too large, a queue full); the message
    /// names the limit.
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    Unavailable(String),
    /// The request asks for something this server does not do (an
    /// unsupported compression, say).
    #[error("{0}")]
    Unimplemented(String),
    /// An unexpected fault. The text is for the log only; clients see a
    /// generic message.
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The status codes we use, named as in the gRPC and Connect specifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    Unauthenticated,
}

impl Code {
    /// The Connect protocol's name for the code (`"not_found"`).
    pub fn connect_name(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The HTTP status the Connect protocol assigns to the code.
    pub fn http_status(self) -> u16 {
        match self {
            Code::Canceled => 499,
            Code::Unknown | Code::Internal => 500,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            Code::Unauthenticated => 401,
        }
    }

    pub fn grpc(self) -> tonic::Code {
        match self {
            Code::Canceled => tonic::Code::Cancelled,
            Code::Unknown => tonic::Code::Unknown,
            Code::InvalidArgument => tonic::Code::InvalidArgument,
            Code::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            Code::NotFound => tonic::Code::NotFound,
            Code::AlreadyExists => tonic::Code::AlreadyExists,
            Code::PermissionDenied => tonic::Code::PermissionDenied,
            Code::ResourceExhausted => tonic::Code::ResourceExhausted,
            Code::FailedPrecondition => tonic::Code::FailedPrecondition,
            Code::Aborted => tonic::Code::Aborted,
            Code::OutOfRange => tonic::Code::OutOfRange,
            Code::Unimplemented => tonic::Code::Unimplemented,
            Code::Internal => tonic::Code::Internal,
            Code::Unavailable => tonic::Code::Unavailable,
            Code::Unauthenticated => tonic::Code::Unauthenticated,
        }
    }
}

/// What a client is told instead of an internal fault's details.
const INTERNAL_MESSAGE: &str = "internal error; the server log has the details";

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument { field: field.into(), reason: reason.into() }
    }

    pub fn internal(context: impl fmt::Display) -> Self {
        Error::Internal(context.to_string())
    }

    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument { .. } | Error::MalformedRequest(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::Internal(_) => Code::Internal,
        }
    }

    /// The message a client may see. Internal faults are logged here, once,
    /// and replaced by a generic text.
    pub fn client_message(&self) -> String {
        match self {
            Error::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                INTERNAL_MESSAGE.to_string()
            }
            other => other.to_string(),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        tonic::Status::new(error.code().grpc(), error.client_message())
    }
}

impl From<rusqlite::Error> for Error {
    fn from(error: rusqlite::Error) -> Self {
        Error::Internal(format!("sqlite: {error}"))
    }
}

impl From<prost::DecodeError> for Error {
    fn from(error: prost::DecodeError) -> Self {
        Error::Internal(format!("stored record does not decode: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_to_the_connect_name_http_status_and_grpc_code() {
        let table = [
            (Code::Canceled, "canceled", 499, tonic::Code::Cancelled),
            (Code::Unknown, "unknown", 500, tonic::Code::Unknown),
            (Code::InvalidArgument, "invalid_argument", 400, tonic::Code::InvalidArgument),
            (Code::DeadlineExceeded, "deadline_exceeded", 504, tonic::Code::DeadlineExceeded),
            (Code::NotFound, "not_found", 404, tonic::Code::NotFound),
            (Code::AlreadyExists, "already_exists", 409, tonic::Code::AlreadyExists),
            (Code::PermissionDenied, "permission_denied", 403, tonic::Code::PermissionDenied),
            (Code::ResourceExhausted, "resource_exhausted", 429, tonic::Code::ResourceExhausted),
            (Code::FailedPrecondition, "failed_precondition", 400, tonic::Code::FailedPrecondition),
            (Code::Aborted, "aborted", 409, tonic::Code::Aborted),
            (Code::OutOfRange, "out_of_range", 400, tonic::Code::OutOfRange),
            (Code::Unimplemented, "unimplemented", 501, tonic::Code::Unimplemented),
            (Code::Internal, "internal", 500, tonic::Code::Internal),
            (Code::Unavailable, "unavailable", 503, tonic::Code::Unavailable),
            (Code::Unauthenticated, "unauthenticated", 401, tonic::Code::Unauthenticated),
        ];
        for (code, name, status, grpc) in table {
            assert_eq!((code.connect_name(), code.http_status(), code.grpc()), (name, status, grpc));
        }
    }

    #[test]
    fn internal_details_never_reach_the_client() {
        let status = tonic::Status::from(Error::Internal("sqlite: disk I/O error at /secret/path".into()));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("secret"));
        assert_eq!(Error::invalid("spec.timeout", "too long").to_string(), "spec.timeout: too long");
    }
}
