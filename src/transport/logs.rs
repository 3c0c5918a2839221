//! `GET /logs/prebuilds/<id>`: a prebuild's log, for the holder of a token
//! from CreatePrebuildLogsToken (`Authorization: Bearer <token>` or
//! `?access_token=`). Streams live while the prebuild runs (chunked,
//! following the log until the prebuild ends), the archived log afterwards.
//!
//! The log is read through a [`LogStore`], whichever backend holds it. A
//! failure of the store or of the log store while streaming ends the
//! response with an error (the client sees a broken body, not the end of a
//! log that was cut short).

use crate::domain::phase_of;
use crate::error::{Error, Result};
use crate::logs::LogStore;
use crate::service::Service;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::{header, HeaderMap, StatusCode};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a live log is checked for new lines.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Clone)]
struct LogState {
    service: Arc<Service>,
    logs: Arc<dyn LogStore>,
}

pub fn router(service: Arc<Service>, logs: Arc<dyn LogStore>) -> Router {
    Router::new().route("/logs/prebuilds/{prebuild_id}", get(stream_log)).with_state(LogState { service, logs })
}

fn error_response(error: Error) -> Response {
    let code = error.code();
    let body = serde_json::json!({ "code": code.connect_name(), "message": error.client_message() });
    (
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn stream_log(
    State(state): State<LogState>,
    Path(prebuild_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    match open(&state, &prebuild_id, &query, &headers).await {
        Ok(response) => response,
        Err(error) => error_response(error),
    }
}

async fn open(state: &LogState, prebuild_id: &str, query: &HashMap<String, String>, headers: &HeaderMap) -> Result<Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .or_else(|| query.get("access_token").map(String::as_str))
        .ok_or_else(|| {
            Error::Unauthenticated(
                "missing logs token: send \"Authorization: Bearer <token>\" or ?access_token=<token>, from CreatePrebuildLogsToken".into(),
            )
        })?;
    let grant = state.service.tokens().open_logs_token(token, state.service.clock().now())?;
    if !grant.prebuild_id.eq_ignore_ascii_case(prebuild_id) {
        return Err(Error::Unauthenticated("this logs token is for another prebuild".into()));
    }
    let store = state.service.store().clone();
    if store.get_prebuild(&grant.organization_id, &grant.prebuild_id).await?.is_none() {
        return Err(Error::NotFound(format!("prebuild {} not found", grant.prebuild_id)));
    }
    Ok(text_response(Body::from_stream(follow(state.logs.clone(), store, grant))))
}

fn text_response(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .header("x-content-type-options", "nosniff")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Where a follower is.
struct Follow {
    cursor: u64,
    /// When the prebuild was first seen ended (final, deleting or gone).
    ended_at: Option<Instant>,
    /// Set after an error has been sent: the stream ends.
    failed: bool,
}

/// Follows a prebuild's log: sends what is there, then looks again every
/// [`FOLLOW_INTERVAL`] while the prebuild runs. Once it has ended, reading
/// goes on until a read finds nothing new at least the log store's
/// settling time after the end (the lines its runner wrote last may reach
/// the store later). An error of either store ends the body with that
/// error.
fn follow(
    logs: Arc<dyn LogStore>,
    store: Arc<dyn crate::store::Store>,
    grant: crate::tokens::LogsGrant,
) -> impl futures::Stream<Item = std::result::Result<bytes::Bytes, std::io::Error>> {
    let failure = |error: Error| {
        tracing::warn!(%error, "a prebuild log stream failed");
        std::io::Error::other(error.to_string())
    };
    futures::stream::unfold(Follow { cursor: 0, ended_at: None, failed: false }, move |mut follow| {
        let (logs, store, grant) = (logs.clone(), store.clone(), grant.clone());
        async move {
            if follow.failed {
                return None;
            }
            loop {
                let read = match logs.read(&grant.prebuild_id, follow.cursor).await {
                    Ok(read) => read,
                    Err(error) => return Some((Err(failure(error)), Follow { failed: true, ..follow })),
                };
                if !read.bytes.is_empty() {
                    follow.cursor = read.cursor;
                    return Some((Ok(read.bytes), follow));
                }
                match follow.ended_at {
                    Some(at) if at.elapsed() >= logs.settling_time() => return None,
                    Some(_) => {}
                    None => match store.get_prebuild(&grant.organization_id, &grant.prebuild_id).await {
                        Ok(prebuild) if prebuild.as_ref().is_none_or(|p| phase_of(p).has_ended()) => {
                            // Read once more at once: lines written just before the end.
                            follow.ended_at = Some(Instant::now());
                            continue;
                        }
                        Ok(_) => {}
                        Err(error) => return Some((Err(failure(error)), Follow { failed: true, ..follow })),
                    },
                }
                tokio::time::sleep(FOLLOW_INTERVAL).await;
            }
        }
    })
}
