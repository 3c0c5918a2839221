//! The Connect protocol (unary) and the documented JSON paths.
//!
//! `POST /gitpod.v1.PrebuildService/<Method>` (also under `/api/`) with
//! `application/json` or `application/proto`, and the Connect GET form for
//! the NO_SIDE_EFFECTS methods. This layer decodes, authenticates, calls the
//! same service method the gRPC adapter calls, and encodes; no API rule
//! lives here. Protocol reference: connectrpc.com/docs/protocol.

use super::json;
use super::request_body;
use super::MAX_MESSAGE_BYTES;
use crate::auth::{Authenticator, Caller};
use crate::error::{Code, Error, Result};
use crate::metrics::Metrics;
use crate::proto::gitpod::v1::*;
use crate::proto::prebuildd::v1::ClaimInstanceRequest;
use crate::service::Service;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use prost::Message;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// How long a request body may take to arrive.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Json,
    Proto,
}

impl Codec {
    fn content_type(self) -> &'static str {
        match self {
            Codec::Json => "application/json",
            Codec::Proto => "application/proto",
        }
    }
}

/// `token` and `pageSize` from the URL query: the REST client sends the next
/// page's token there (and a stale one in the body), so the query wins.
#[derive(Debug, Default)]
struct PageQuery {
    token: Option<String>,
    page_size: Option<i32>,
}

/// Request types that carry a `PaginationRequest`.
trait Paginated {
    fn pagination_mut(&mut self) -> Option<&mut Option<PaginationRequest>> {
        None
    }
}

impl Paginated for ListPrebuildsRequest {
    fn pagination_mut(&mut self) -> Option<&mut Option<PaginationRequest>> {
        Some(&mut self.pagination)
    }
}

impl Paginated for ListWarmPoolsRequest {
    fn pagination_mut(&mut self) -> Option<&mut Option<PaginationRequest>> {
        Some(&mut self.pagination)
    }
}

macro_rules! not_paginated {
    ($($t:ty),*) => { $(impl Paginated for $t {})* };
}
not_paginated!(
    ClaimInstanceRequest,
    CreatePrebuildRequest,
    GetPrebuildRequest,
    CancelPrebuildRequest,
    DeletePrebuildRequest,
    CreatePrebuildLogsTokenRequest,
    CreateWarmPoolRequest,
    GetWarmPoolRequest,
    UpdateWarmPoolRequest,
    DeleteWarmPoolRequest
);

impl PageQuery {
    fn apply<T: Paginated>(&self, request: &mut T) {
        if self.token.is_none() && self.page_size.is_none() {
            return;
        }
        if let Some(pagination) = request.pagination_mut() {
            let pagination = pagination.get_or_insert_with(Default::default);
            if let Some(token) = &self.token {
                pagination.token = token.clone();
            }
            if let Some(page_size) = self.page_size {
                pagination.page_size = page_size;
            }
        }
    }
}

fn decode<T: Message + Default + serde::de::DeserializeOwned>(codec: Codec, body: &[u8]) -> Result<T> {
    match codec {
        // An empty body is the empty message (as connect-go accepts it).
        _ if body.is_empty() => Ok(T::default()),
        Codec::Json => json::from_slice(body).map_err(|e| {
            Error::MalformedRequest(format!("the request body is not valid JSON for this method: {}", shorten(&e.to_string())))
        }),
        Codec::Proto => T::decode(body)
            .map_err(|e| Error::MalformedRequest(format!("the request body is not a valid protobuf message: {}", shorten(&e.to_string())))),
    }
}

/// A parser's reason, cut short: it may quote the input, which can be huge.
fn shorten(reason: &str) -> String {
    const LIMIT: usize = 300;
    if reason.len() <= LIMIT {
        return reason.to_string();
    }
    let mut end = LIMIT;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &reason[..end], reason.len() - end)
}

fn encode<T: Message + serde::Serialize>(codec: Codec, response: &T) -> Result<Vec<u8>> {
    match codec {
        Codec::Json => json::to_vec(response).map_err(|e| Error::Internal(format!("cannot encode the response as JSON: {e}"))),
        Codec::Proto => Ok(response.encode_to_vec()),
    }
}

/// List responses keep their list in JSON even when it is empty
/// (`"prebuilds": []`): proto3 JSON would omit it, but the official REST
/// client (gitpod-sdk 0.11.0) requires it when it validates responses.
trait EmptyLists {
    /// The JSON key of a list that is empty in this response, if any.
    fn empty_list_key(&self) -> Option<&'static str> {
        None
    }
}

impl EmptyLists for ListPrebuildsResponse {
    fn empty_list_key(&self) -> Option<&'static str> {
        self.prebuilds.is_empty().then_some("prebuilds")
    }
}

impl EmptyLists for ListWarmPoolsResponse {
    fn empty_list_key(&self) -> Option<&'static str> {
        self.warm_pools.is_empty().then_some("warmPools")
    }
}

macro_rules! no_lists {
    ($($t:ty),*) => { $(impl EmptyLists for $t {})* };
}
no_lists!(
    CreatePrebuildResponse,
    GetPrebuildResponse,
    CancelPrebuildResponse,
    DeletePrebuildResponse,
    CreatePrebuildLogsTokenResponse,
    CreateWarmPoolResponse,
    GetWarmPoolResponse,
    UpdateWarmPoolResponse,
    DeleteWarmPoolResponse,
    crate::proto::prebuildd::v1::ClaimInstanceResponse
);

fn encode_response<T: Message + serde::Serialize + EmptyLists>(codec: Codec, response: &T) -> Result<Vec<u8>> {
    let encoded = encode(codec, response)?;
    match (codec, response.empty_list_key()) {
        (Codec::Json, Some(key)) => {
            let mut value: serde_json::Value =
                serde_json::from_slice(&encoded).map_err(|e| Error::Internal(format!("re-reading our own JSON: {e}")))?;
            if let Some(object) = value.as_object_mut() {
                object.insert(key.to_string(), serde_json::Value::Array(Vec::new()));
            }
            serde_json::to_vec(&value).map_err(|e| Error::Internal(format!("cannot encode the response as JSON: {e}")))
        }
        _ => Ok(encoded),
    }
}

/// The methods: name, service method, request type, and whether the Connect
/// GET form is allowed (idempotency level NO_SIDE_EFFECTS).
macro_rules! connect_rpcs {
    ($($name:literal => $method:ident($req:ty), get: $get:literal;)*) => {
        /// `Some(allows_get)` for a known method name.
        fn lookup(name: &str) -> Option<bool> {
            match name {
                $($name => Some($get),)*
                _ => None,
            }
        }

        async fn call(service: &Service, name: &str, caller: &Caller, codec: Codec, body: &[u8], page: &PageQuery) -> Result<Vec<u8>> {
            match name {
                $($name => {
                    let mut request: $req = decode(codec, body)?;
                    page.apply(&mut request);
                    let response = service.$method(caller, request).await?;
                    encode_response(codec, &response)
                })*
                _ => Err(Error::NotFound(format!("unknown method {name}"))),
            }
        }

        /// The method names, for the fuzz targets.
        pub const METHOD_NAMES: &[&str] = &[$($name),*];

        /// Decodes a request body as the method's request type, and checks
        /// that what decodes survives a JSON round trip unchanged (a fuzz
        /// property). Never panics on any input.
        pub fn decode_round_trip(name: &str, json: bool, body: &[u8]) -> Result<()> {
            let codec = if json { Codec::Json } else { Codec::Proto };
            match name {
                $($name => {
                    let request: $req = decode(codec, body)?;
                    let text = encode(Codec::Json, &request)?;
                    let again: $req = decode(Codec::Json, &text)?;
                    assert_eq!(again, request, "JSON round trip of {name}");
                    Ok(())
                })*
                _ => Err(Error::NotFound(format!("unknown method {name}"))),
            }
        }
    };
}

/// Decodes a Connect GET query string the way a GET request would be
/// (encoding, base64, compression, message), for the fuzz targets.
pub fn decode_get_query(name: &str, query: &str) -> Result<()> {
    let query: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let envelope = get_envelope(&HeaderMap::new(), &query).map_err(|f| Error::MalformedRequest(f.message))?;
    let payload = if envelope.gzip { gunzip_limited(&envelope.payload)? } else { envelope.payload.to_vec() };
    decode_round_trip(name, envelope.codec == Codec::Json, &payload)
}

connect_rpcs! {
    "gitpod.v1.PrebuildService/CreatePrebuild" => create_prebuild(CreatePrebuildRequest), get: false;
    "gitpod.v1.PrebuildService/ListPrebuilds" => list_prebuilds(ListPrebuildsRequest), get: true;
    "gitpod.v1.PrebuildService/GetPrebuild" => get_prebuild(GetPrebuildRequest), get: true;
    "gitpod.v1.PrebuildService/CancelPrebuild" => cancel_prebuild(CancelPrebuildRequest), get: false;
    "gitpod.v1.PrebuildService/DeletePrebuild" => delete_prebuild(DeletePrebuildRequest), get: false;
    "gitpod.v1.PrebuildService/CreatePrebuildLogsToken" => create_prebuild_logs_token(CreatePrebuildLogsTokenRequest), get: false;
    "gitpod.v1.PrebuildService/CreateWarmPool" => create_warm_pool(CreateWarmPoolRequest), get: false;
    "gitpod.v1.PrebuildService/GetWarmPool" => get_warm_pool(GetWarmPoolRequest), get: true;
    "gitpod.v1.PrebuildService/ListWarmPools" => list_warm_pools(ListWarmPoolsRequest), get: true;
    "gitpod.v1.PrebuildService/UpdateWarmPool" => update_warm_pool(UpdateWarmPoolRequest), get: false;
    "gitpod.v1.PrebuildService/DeleteWarmPool" => delete_warm_pool(DeleteWarmPoolRequest), get: false;
    "prebuildd.v1.WarmPoolInstanceService/ClaimInstance" => claim_instance(ClaimInstanceRequest), get: false;
}

/// A failure before or outside the service call, with its own HTTP status
/// where the Connect protocol gives one (415, 404, 405).
struct Failure {
    status: StatusCode,
    code: Code,
    message: String,
    extra_header: Option<(header::HeaderName, HeaderValue)>,
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

fn unsupported_media_type(message: String) -> Failure {
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

/// Everything the request says about how to read it.
struct Envelope {
    codec: Codec,
    gzip: bool,
    payload: Bytes,
    page: PageQuery,
    timeout: Option<Duration>,
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
    let allows_get = lookup(name).ok_or_else(|| Failure {
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
    let work = call(&state.service, name, &caller, envelope.codec, &payload, &envelope.page).instrument(span);
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

fn parse_query(uri: &Uri) -> Vec<(String, String)> {
    uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

fn query_value<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn page_query(query: &[(String, String)]) -> Result<PageQuery> {
    let page_size = query_value(query, "pageSize")
        .or_else(|| query_value(query, "page_size"))
        .map(|v| {
            v.parse::<i32>().map_err(|_| Error::invalid("pagination.page_size", format!("{} is not a number", crate::validate::quoted(v))))
        })
        .transpose()?;
    Ok(PageQuery { token: query_value(query, "token").map(str::to_string), page_size })
}

fn timeout(headers: &HeaderMap) -> Result<Option<Duration>> {
    let Some(value) = headers.get("connect-timeout-ms") else { return Ok(None) };
    // Connect: at most 10 digits of milliseconds.
    let text = value.to_str().unwrap_or_default();
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::invalid("Connect-Timeout-Ms", "must be a positive integer of at most 10 digits"));
    }
    Ok(Some(Duration::from_millis(text.parse().unwrap_or(u64::MAX))))
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().any(|v| {
        v.to_str().unwrap_or_default().split(',').any(|e| e.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case("gzip"))
    })
}

async fn post_envelope(headers: &HeaderMap, query: &[(String, String)], body: Body) -> Result<Envelope, Failure> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let mut parts = content_type.split(';');
    let media_type = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let codec = match media_type.as_str() {
        "application/json" => Codec::Json,
        "application/proto" => Codec::Proto,
        "" => return Err(unsupported_media_type("missing Content-Type: send application/json or application/proto".into())),
        other => {
            return Err(unsupported_media_type(format!("unsupported Content-Type {other:?}: send application/json or application/proto")))
        }
    };
    for parameter in parts {
        if let Some((key, value)) = parameter.split_once('=') {
            if key.trim().eq_ignore_ascii_case("charset") && !value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8") {
                return Err(unsupported_media_type(format!("unsupported charset {:?}: JSON must be UTF-8", value.trim())));
            }
        }
    }
    if let Some(version) = headers.get("connect-protocol-version") {
        if version.as_bytes() != b"1" {
            return Err(Error::invalid("Connect-Protocol-Version", "must be 1").into());
        }
    }
    let gzip = match headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or_default().trim().to_ascii_lowercase()) {
        None => false,
        Some(encoding) if encoding.is_empty() || encoding == "identity" => false,
        Some(encoding) if encoding == "gzip" => true,
        Some(encoding) => {
            return Err(Failure::from(Error::Unimplemented(format!("unsupported Content-Encoding {encoding:?}: send gzip or identity"))));
        }
    };
    let timeout = timeout(headers)?;
    let page = page_query(query)?;
    // A client that sends its body slower than this holds nothing forever.
    let payload = request_body::read_limited(body, MAX_MESSAGE_BYTES, BODY_READ_TIMEOUT).await?;
    Ok(Envelope { codec, gzip, payload, page, timeout })
}

fn get_envelope(headers: &HeaderMap, query: &[(String, String)]) -> Result<Envelope, Failure> {
    if let Some(version) = query_value(query, "connect") {
        if version != "v1" {
            return Err(Error::invalid("connect", "must be v1").into());
        }
    }
    let codec = match query_value(query, "encoding") {
        Some("json") => Codec::Json,
        Some("proto") => Codec::Proto,
        Some(other) => return Err(unsupported_media_type(format!("unsupported encoding {other:?}: use json or proto"))),
        None => return Err(unsupported_media_type("missing encoding query parameter: use encoding=json or encoding=proto".into())),
    };
    let gzip = match query_value(query, "compression") {
        None | Some("identity") | Some("") => false,
        Some("gzip") => true,
        Some(other) => return Err(Error::Unimplemented(format!("unsupported compression {other:?}: use gzip or identity")).into()),
    };
    let message = query_value(query, "message").unwrap_or_default();
    let payload = if query_value(query, "base64") == Some("1") {
        // Connect: URL-safe base64, padding optional.
        let trimmed = message.trim_end_matches('=');
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(trimmed)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
            .map_err(|e| Error::invalid("message", format!("is not valid base64: {e}")))?
    } else {
        message.as_bytes().to_vec()
    };
    if payload.len() > MAX_MESSAGE_BYTES {
        return Err(Error::ResourceExhausted(format!("the request message is larger than the {MAX_MESSAGE_BYTES}-byte limit")).into());
    }
    Ok(Envelope { codec, gzip, payload: Bytes::from(payload), page: page_query(query)?, timeout: timeout(headers)? })
}

/// Inflates a gzip body, refusing to inflate past the message limit (a small
/// body can expand enormously: a "gzip bomb").
fn gunzip_limited(compressed: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity((compressed.len() * 4).min(MAX_MESSAGE_BYTES));
    let mut decoder = flate2::read::GzDecoder::new(compressed).take(MAX_MESSAGE_BYTES as u64 + 1);
    decoder.read_to_end(&mut out).map_err(|e| Error::MalformedRequest(format!("the request body is not valid gzip: {e}")))?;
    if out.len() > MAX_MESSAGE_BYTES {
        return Err(Error::ResourceExhausted(format!("the request body inflates past the {MAX_MESSAGE_BYTES}-byte limit")));
    }
    Ok(out)
}
