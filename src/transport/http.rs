//! Plain HTTP routes: `/healthz` for probes, prebuild logs, the web
//! dashboard (`/ui/`), push webhooks (`/webhooks/`, signed by the git
//! server instead of an API key), and the Connect/JSON routes.

use crate::auth::Authenticator;
use crate::logs::Logs;
use crate::metrics::Metrics;
use crate::service::Service;
use axum::routing::get;
use axum::Router;
use http::header;
use std::sync::Arc;

pub fn router(service: Arc<Service>, auth: Arc<Authenticator>, logs: Logs, metrics: Arc<Metrics>) -> Router {
    let scraped = metrics.clone();
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(move || std::future::ready(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], scraped.render()))))
        .merge(super::logs::router(service.clone(), logs.reader()))
        .merge(super::ui::router())
        .merge(crate::triggers::webhook::router(service.clone()))
        .merge(super::connect::router(service, auth, metrics))
}
