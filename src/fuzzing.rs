//! Entry points for the `cargo fuzz` targets in `fuzz/`: the Connect
//! request decoding (JSON, protobuf, the GET query form) and the pagination
//! token. Each takes arbitrary input and must never panic; errors are fine.

use crate::tokens::TokenKey;
use crate::transport::connect::fuzz;
use crate::transport::methods;

/// A Connect POST body for the `selector`-th method, as JSON or protobuf.
pub fn connect_body(selector: u8, json: bool, body: &[u8]) {
    let _ = fuzz::decode_body(methods::nth(selector.into()).name, json, body);
}

/// A Connect GET query string for the `selector`-th method.
pub fn connect_get_query(selector: u8, query: &str) {
    let _ = fuzz::decode_get_query(methods::nth(selector.into()).name, query);
}

/// A pagination token from a client: never panics, and only a token this
/// key issued for this query opens.
pub fn page_token(token: &str) {
    let key = TokenKey::from_bytes([7; 32]);
    let now = std::time::SystemTime::now();
    if let Ok(cursor) = key.open_page_token(token, 42, now) {
        // Only possible if the input is a token we made: it must round-trip.
        assert_eq!(key.open_page_token(&key.page_token(cursor, 42, now), 42, now).ok(), Some(cursor));
    }
    let _ = key.open_logs_token(token, now);
}
