//! Entry points for the fuzz targets (`crate::fuzzing`): the decoding of a
//! Connect request, without a server. Each must return an error, never
//! panic, on any input.

use super::dispatch::decode_round_trip;
use super::envelope::{get_envelope, gunzip_limited, Codec};
use crate::error::{Error, Result};
use http::HeaderMap;

/// Decodes a request body as the method's request type, and checks that
/// what decodes survives a JSON round trip unchanged.
pub fn decode_body(name: &str, json: bool, body: &[u8]) -> Result<()> {
    decode_round_trip(name, json, body)
}

/// Decodes a Connect GET query string the way a GET request would be
/// (encoding, base64, compression, message), for the fuzz targets.
pub fn decode_get_query(name: &str, query: &str) -> Result<()> {
    let query: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let envelope = get_envelope(&HeaderMap::new(), &query).map_err(|f| Error::MalformedRequest(f.message))?;
    let payload = if envelope.gzip { gunzip_limited(&envelope.payload)? } else { envelope.payload.to_vec() };
    decode_round_trip(name, envelope.codec == Codec::Json, &payload)
}
