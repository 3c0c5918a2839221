//! The web dashboard: the files of `web/dist/` (built from `web/` with
//! `npm ci && npm run build`, committed), embedded in the binary at compile
//! time and served under `/ui/`. The files need no API key: the page asks for
//! one and sends it with its API calls, like any other client.
//!
//! `/ui` redirects to `/ui/`; a path that names no file is a route of the
//! page itself and gets `index.html` (the page routes in the browser), except
//! under `assets/`, where a missing file is a plain 404. Vite names assets by
//! their content's hash, so they are cached for good; `index.html` is
//! revalidated on every load (by its ETag), so a new binary's page is picked
//! up at once. Responses are gzipped for clients that accept it.

use axum::extract::Path;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use http::{header, HeaderMap, HeaderValue, StatusCode};

#[derive(rust_embed::Embed)]
#[folder = "web/dist/"]
struct Assets;

const INDEX: &str = "index.html";
/// What the page may load and call: its own files; the API on its own
/// origin, and the log URL, which is `server.public_url` and may be another
/// origin (the API answers cross-origin calls; see `cors` in mod.rs).
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; connect-src 'self' http: https:; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

pub fn router() -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|headers: HeaderMap| async move { serve(INDEX, &headers) }))
        .route("/ui/{*path}", get(|Path(path): Path<String>, headers: HeaderMap| async move { serve(&path, &headers) }))
        .layer(tower_http::compression::CompressionLayer::new().gzip(true))
}

/// The file's media type, with `charset=utf-8` for text (Vite writes UTF-8).
fn content_type(mimetype: &str) -> String {
    if mimetype.starts_with("text/") || mimetype == "application/json" || mimetype == "image/svg+xml" {
        format!("{mimetype}; charset=utf-8")
    } else {
        mimetype.to_string()
    }
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let (name, file) = match Assets::get(path) {
        Some(file) => (path, file),
        None if path.starts_with("assets/") => return (StatusCode::NOT_FOUND, "no such file\n").into_response(),
        None => match Assets::get(INDEX) {
            Some(file) => (INDEX, file),
            None => return (StatusCode::NOT_FOUND, "the dashboard was built without its files\n").into_response(),
        },
    };
    let etag = format!("\"{}\"", hex::encode(file.metadata.sha256_hash()));
    let cache_control = if name.starts_with("assets/") { "public, max-age=31536000, immutable" } else { "no-cache" };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"));
    let mut response = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { file.data.into_owned().into_response() };
    let response_headers = response.headers_mut();
    if !fresh {
        if let Ok(value) = HeaderValue::from_str(&content_type(file.metadata.mimetype())) {
            response_headers.insert(header::CONTENT_TYPE, value);
        }
    }
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response_headers.insert(header::ETAG, value);
    }
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
    response_headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if name == INDEX {
        response_headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    }
    response
}
