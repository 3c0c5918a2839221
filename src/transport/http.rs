//! Plain HTTP routes: `/healthz` for probes.

use axum::routing::get;
use axum::Router;

pub fn router() -> Router {
    Router::new().route("/healthz", get(|| async { "ok\n" }))
}
