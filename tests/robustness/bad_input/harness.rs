//! The machinery of the bad-input table: one case in each form it can
//! take (Connect JSON, Connect protobuf, gRPC), what each Connect code means
//! over HTTP and gRPC, what makes a message unreadable, and the requests
//! the table's setup needs.

use crate::common::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use prebuildd::proto::gitpod::v1::*;
use prost::Message;
use std::io::Write;
use std::time::Duration;
use tonic::codec::CompressionEncoding;

pub(super) const PREBUILDS: &str = "gitpod.v1.PrebuildService";
pub(super) const CLAIMS: &str = "prebuildd.v1.WarmPoolInstanceService";
pub(super) const MIB: usize = 1024 * 1024;
pub(super) const NO_SUCH_PREBUILD: &str = "07e03a28-65a5-4d98-b532-8ea67b188048";

/// The Connect protocol's HTTP status and the gRPC code of a Connect code.
pub(super) fn codes(code: &str) -> (u16, tonic::Code) {
    match code {
        "canceled" => (499, tonic::Code::Cancelled),
        "unknown" => (500, tonic::Code::Unknown),
        "invalid_argument" => (400, tonic::Code::InvalidArgument),
        "deadline_exceeded" => (504, tonic::Code::DeadlineExceeded),
        "not_found" => (404, tonic::Code::NotFound),
        "already_exists" => (409, tonic::Code::AlreadyExists),
        "permission_denied" => (403, tonic::Code::PermissionDenied),
        "resource_exhausted" => (429, tonic::Code::ResourceExhausted),
        "failed_precondition" => (400, tonic::Code::FailedPrecondition),
        "aborted" => (409, tonic::Code::Aborted),
        "out_of_range" => (400, tonic::Code::OutOfRange),
        "unimplemented" => (501, tonic::Code::Unimplemented),
        "internal" => (500, tonic::Code::Internal),
        "unavailable" => (503, tonic::Code::Unavailable),
        "unauthenticated" => (401, tonic::Code::Unauthenticated),
        other => panic!("not a Connect code: {other}"),
    }
}

/// Why `message` is not something to show a person, if it is not.
pub(super) fn unreadable(message: &str) -> Option<String> {
    if message.trim().is_empty() {
        return Some("empty".into());
    }
    if message.len() > 1024 {
        return Some(format!("{} bytes long", message.len()));
    }
    for debris in
        ["Error {", "Status {", "Os {", "kind: ", "panicked", "backtrace", "RUST_BACKTRACE", ".rs:", "tonic::", "hyper::", ORG_A, ORG_B]
    {
        if message.contains(debris) {
            return Some(format!("contains {debris:?}"));
        }
    }
    if message.chars().any(char::is_control) {
        return Some("contains control characters".into());
    }
    None
}

/// One bad request, in each form it can take.
#[derive(Clone)]
pub(super) struct Case {
    pub(super) what: String,
    /// `<service>/<Method>`.
    pub(super) method: String,
    /// The whole `Authorization` header, if any.
    pub(super) authorization: Option<String>,
    pub(super) json: Option<Vec<u8>>,
    /// Sent as Connect `application/proto` and, unless `connect_only`, as gRPC.
    pub(super) proto: Option<Vec<u8>>,
    pub(super) connect_only: bool,
    /// Compress the body: Connect `Content-Encoding: gzip`; gRPC a message
    /// flagged compressed with `grpc-encoding: gzip` (tonic compresses it).
    pub(super) gzip: bool,
    /// Replaces `application/json` for the JSON body.
    pub(super) content_type: Option<&'static str>,
    /// More Connect request headers, sent as they are.
    pub(super) headers: Vec<(&'static str, &'static str)>,
    /// Appended to the Connect URL (`?pageSize=...`).
    pub(super) query: String,
    pub(super) code: &'static str,
    pub(super) http_status: u16,
    /// Must appear in the message.
    pub(super) needle: &'static str,
}

pub(super) fn case(what: impl Into<String>, method: &str) -> Case {
    let method = if method.contains('/') { method.to_string() } else { format!("{PREBUILDS}/{method}") };
    Case {
        what: what.into(),
        method,
        authorization: Some(format!("Bearer {TOKEN_A}")),
        json: None,
        proto: None,
        connect_only: false,
        gzip: false,
        content_type: None,
        headers: Vec::new(),
        query: String::new(),
        code: "",
        http_status: 0,
        needle: "",
    }
}

impl Case {
    pub(super) fn json(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.json = Some(body.into());
        self
    }

    pub(super) fn proto(mut self, message: &impl Message) -> Self {
        self.proto = Some(message.encode_to_vec());
        self
    }

    pub(super) fn proto_bytes(mut self, bytes: Vec<u8>) -> Self {
        self.proto = Some(bytes);
        self
    }

    /// The same message as proto3 JSON and as protobuf.
    pub(super) fn message<M: Message + serde::Serialize>(self, message: &M) -> Self {
        let json = prebuildd::transport::json::to_vec(message).expect("the message has a JSON form");
        self.json(json).proto(message)
    }

    pub(super) fn authorization(mut self, header: Option<&str>) -> Self {
        self.authorization = header.map(str::to_string);
        self
    }

    pub(super) fn token(self, token: &str) -> Self {
        self.authorization(Some(&format!("Bearer {token}")))
    }

    pub(super) fn connect_only(mut self) -> Self {
        self.connect_only = true;
        self
    }

    pub(super) fn gzip(mut self) -> Self {
        self.gzip = true;
        self
    }

    pub(super) fn content_type(mut self, content_type: &'static str) -> Self {
        self.content_type = Some(content_type);
        self.connect_only()
    }

    pub(super) fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self.connect_only()
    }

    pub(super) fn query(mut self, query: &str) -> Self {
        self.query = query.to_string();
        self.connect_only()
    }

    pub(super) fn expect(mut self, code: &'static str, needle: &'static str) -> Self {
        self.code = code;
        self.http_status = codes(code).0;
        self.needle = needle;
        self
    }

    pub(super) fn http_status(mut self, status: u16) -> Self {
        self.http_status = status;
        self
    }
}

pub(super) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// The start of a long text, for failure messages.
pub(super) fn clip(text: &str) -> String {
    text.chars().take(300).collect()
}

/// Runs one case in each of its forms; returns what went wrong.
pub(super) async fn run(case: &Case, base_url: &str, http: &reqwest::Client, channel: &tonic::transport::Channel) -> Vec<String> {
    let mut problems = Vec::new();
    let mut problem = |form: &str, text: String| problems.push(format!("{} [{} over {form}]: {text}", case.what, case.method));

    let mut bodies = Vec::new();
    if let Some(json) = &case.json {
        bodies.push((case.content_type.unwrap_or("application/json"), json.clone()));
    }
    if let Some(proto) = &case.proto {
        bodies.push(("application/proto", proto.clone()));
    }
    for (content_type, body) in bodies {
        let form = format!("Connect {content_type}");
        let mut request = http.post(format!("{base_url}/{}{}", case.method, case.query)).header("content-type", content_type);
        if let Some(authorization) = &case.authorization {
            request = request.header("authorization", authorization);
        }
        for (name, value) in &case.headers {
            request = request.header(*name, *value);
        }
        let body = if case.gzip {
            request = request.header("content-encoding", "gzip");
            gzip(&body)
        } else {
            body
        };
        let response = match request.body(body).send().await {
            Ok(response) => response,
            Err(error) => {
                problem(&form, format!("no response: {error}"));
                continue;
            }
        };
        let status = response.status().as_u16();
        let json_error = response.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        let text = response.text().await.unwrap_or_default();
        let error: serde_json::Value = match serde_json::from_str(&text) {
            Ok(value) if json_error => value,
            _ => {
                problem(&form, format!("HTTP {status}, not a Connect JSON error: {:?}", clip(&text)));
                continue;
            }
        };
        let code = error["code"].as_str().unwrap_or_default();
        let message = error["message"].as_str().unwrap_or_default();
        if (status, code) != (case.http_status, case.code) {
            problem(&form, format!("expected HTTP {} {}, got HTTP {status} {code}: {message:?}", case.http_status, case.code));
        } else if let Some(why) = unreadable(message) {
            problem(&form, format!("unreadable message ({why}): {:?}", clip(message)));
        } else if !message.contains(case.needle) {
            problem(&form, format!("expected {:?} in {message:?}", case.needle));
        }
    }

    if let (false, Some(proto)) = (case.connect_only, &case.proto) {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        if case.gzip {
            grpc = grpc.send_compressed(CompressionEncoding::Gzip);
        }
        let expected = codes(case.code).1;
        let result = async {
            grpc.ready().await.map_err(|e| tonic::Status::unavailable(format!("channel not ready: {e}")))?;
            let mut request = tonic::Request::new(bytes::Bytes::from(proto.clone()));
            request.set_timeout(Duration::from_secs(30));
            if let Some(authorization) = &case.authorization {
                request.metadata_mut().insert("authorization", authorization.parse().expect("an ASCII header"));
            }
            let path = http::uri::PathAndQuery::try_from(format!("/{}", case.method)).unwrap();
            grpc.unary(request, path, prebuildd::transport::raw_codec::RawCodec).await
        }
        .await;
        match result {
            Ok(_) => problem("gRPC", format!("expected {expected:?}, got OK")),
            Err(status) if status.code() != expected => {
                problem("gRPC", format!("expected {expected:?}, got {:?}: {:?}", status.code(), status.message()))
            }
            Err(status) => {
                if let Some(why) = unreadable(status.message()) {
                    problem("gRPC", format!("unreadable message ({why}): {:?}", clip(status.message())));
                } else if !status.message().contains(case.needle) {
                    problem("gRPC", format!("expected {:?} in {:?}", case.needle, status.message()));
                }
            }
        }
    }
    problems
}

/// A valid page token with one byte of its payload changed (the MAC no
/// longer matches).
pub(super) fn edited(token: &str) -> String {
    let mut bytes = URL_SAFE_NO_PAD.decode(token).expect("page tokens are base64url");
    bytes[3] ^= 0x01;
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(super) fn list_with(page_size: i32, token: &str) -> ListPrebuildsRequest {
    ListPrebuildsRequest { pagination: Some(PaginationRequest { page_size, token: token.into() }), filter: None }
}

pub(super) fn list_phases(phases: Vec<i32>) -> ListPrebuildsRequest {
    ListPrebuildsRequest { pagination: None, filter: Some(list_prebuilds_request::Filter { phases, ..Default::default() }) }
}

pub(super) async fn next_token(client: &mut Client, request: ListPrebuildsRequest) -> String {
    let token = client.list_prebuilds(request).await.unwrap().into_inner().pagination.unwrap().next_token;
    assert!(!token.is_empty(), "there is a next page");
    token
}

pub(super) async fn everything(client: &mut Client) -> (ListPrebuildsResponse, ListWarmPoolsResponse) {
    let prebuilds = client.list_prebuilds(list_with(100, "")).await.unwrap().into_inner();
    let pools = client
        .list_warm_pools(ListWarmPoolsRequest {
            pagination: Some(PaginationRequest { page_size: 100, token: String::new() }),
            filter: None,
        })
        .await
        .unwrap()
        .into_inner();
    (prebuilds, pools)
}
