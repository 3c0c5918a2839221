//! How a Connect request says what it is: the POST form's headers (codec,
//! compression, protocol version, timeout) and body, or the GET form's query
//! (`encoding`, `message`, `base64`, `compression`), and the pagination
//! parameters of the URL. Protocol reference: connectrpc.com/docs/protocol.

use super::error::{unsupported_media_type, Failure};
use crate::error::{Error, Result};
use crate::transport::{request_body, MAX_MESSAGE_BYTES};
use axum::body::Body;
use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderMap, Uri};
use std::io::Read;
use std::time::Duration;

/// How long a request body may take to arrive.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Json,
    Proto,
}

impl Codec {
    pub(super) fn content_type(self) -> &'static str {
        match self {
            Codec::Json => "application/json",
            Codec::Proto => "application/proto",
        }
    }
}

/// `token` and `pageSize` from the URL query: the REST client sends the next
/// page's token there (and a stale one in the body), so the query wins.
#[derive(Debug, Default)]
pub(crate) struct PageQuery {
    pub(super) token: Option<String>,
    pub(super) page_size: Option<i32>,
}

/// Everything the request says about how to read it.
pub(super) struct Envelope {
    pub(super) codec: Codec,
    pub(super) gzip: bool,
    pub(super) payload: Bytes,
    pub(super) page: PageQuery,
    pub(super) timeout: Option<Duration>,
}

pub(super) fn parse_query(uri: &Uri) -> Vec<(String, String)> {
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

pub(super) fn timeout(headers: &HeaderMap) -> Result<Option<Duration>> {
    let Some(value) = headers.get("connect-timeout-ms") else { return Ok(None) };
    // Connect: at most 10 digits of milliseconds.
    let text = value.to_str().unwrap_or_default();
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::invalid("Connect-Timeout-Ms", "must be a positive integer of at most 10 digits"));
    }
    Ok(Some(Duration::from_millis(text.parse().unwrap_or(u64::MAX))))
}

pub(super) fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().any(|v| {
        v.to_str().unwrap_or_default().split(',').any(|e| e.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case("gzip"))
    })
}

pub(super) async fn post_envelope(headers: &HeaderMap, query: &[(String, String)], body: Body) -> Result<Envelope, Failure> {
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

pub(super) fn get_envelope(headers: &HeaderMap, query: &[(String, String)]) -> Result<Envelope, Failure> {
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
pub(super) fn gunzip_limited(compressed: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity((compressed.len() * 4).min(MAX_MESSAGE_BYTES));
    let mut decoder = flate2::read::GzDecoder::new(compressed).take(MAX_MESSAGE_BYTES as u64 + 1);
    decoder.read_to_end(&mut out).map_err(|e| Error::MalformedRequest(format!("the request body is not valid gzip: {e}")))?;
    if out.len() > MAX_MESSAGE_BYTES {
        return Err(Error::ResourceExhausted(format!("the request body inflates past the {MAX_MESSAGE_BYTES}-byte limit")));
    }
    Ok(out)
}
