//! Plain HTTP routes: `/healthz` for probes, and the Connect/JSON routes.

use crate::auth::Authenticator;
use crate::service::Service;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

pub fn router(service: Arc<Service>, auth: Arc<Authenticator>) -> Router {
    Router::new().route("/healthz", get(|| async { "ok\n" })).merge(super::connect::router(service, auth))
}
