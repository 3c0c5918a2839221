//! `GET /logs/prebuilds/<id>`: a prebuild's log, for the holder of a token
//! from CreatePrebuildLogsToken (`Authorization: Bearer <token>` or
//! `?access_token=`). Streams live while the prebuild runs (chunked,
//! following the file until the prebuild ends), the archived log afterwards.

use crate::domain::phase_of;
use crate::error::{Error, Result};
use crate::logs::Logs;
use crate::service::Service;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{header, HeaderMap, StatusCode};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// How often a live log is checked for new lines.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);
const CHUNK: usize = 64 * 1024;

#[derive(Clone)]
struct LogState {
    service: Arc<Service>,
    logs: Logs,
}

pub fn router(service: Arc<Service>, logs: Logs) -> Router {
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
    let prebuild_id = grant.prebuild_id.clone();
    let store = state.service.store().clone();
    if store.get_prebuild(&grant.organization_id, &prebuild_id).await?.is_none() {
        return Err(Error::NotFound(format!("prebuild {prebuild_id} not found")));
    }
    if let Some(shared) = state.logs.shared() {
        return Ok(text_response(Body::from_stream(follow_shared(shared.clone(), store, grant))));
    }
    let path = state.logs.path(&prebuild_id);

    // Follow the file: send what is new; when at the end, stop if the
    // prebuild has finished (or is gone), else wait and look again.
    struct Follow {
        file: Option<tokio::fs::File>,
        offset: u64,
        done: bool,
    }
    let follow = Follow { file: None, offset: 0, done: false };
    let stream = futures::stream::unfold(follow, move |mut follow| {
        let path = path.clone();
        let store = store.clone();
        let grant = grant.clone();
        async move {
            loop {
                if follow.done {
                    return None;
                }
                if follow.file.is_none() {
                    follow.file = tokio::fs::File::open(&path).await.ok();
                    if let Some(file) = follow.file.as_mut() {
                        if file.seek(std::io::SeekFrom::Start(follow.offset)).await.is_err() {
                            follow.file = None;
                        }
                    }
                }
                if let Some(file) = follow.file.as_mut() {
                    let mut buffer = vec![0u8; CHUNK];
                    match file.read(&mut buffer).await {
                        Ok(0) => {}
                        Ok(n) => {
                            buffer.truncate(n);
                            follow.offset += n as u64;
                            return Some((Ok::<Bytes, std::io::Error>(Bytes::from(buffer)), follow));
                        }
                        Err(error) => return Some((Err(error), Follow { done: true, ..follow })),
                    }
                }
                // At the end of what is written: is more coming?
                let finished = match store.get_prebuild(&grant.organization_id, &grant.prebuild_id).await {
                    Ok(Some(prebuild)) => phase_of(&prebuild).has_ended(),
                    _ => true,
                };
                if finished {
                    // One last read: lines written just before the end.
                    follow.done = true;
                    if let Some(file) = follow.file.as_mut() {
                        let mut rest = Vec::new();
                        if file.read_to_end(&mut rest).await.is_ok() && !rest.is_empty() {
                            return Some((Ok(Bytes::from(rest)), follow));
                        }
                    }
                    return None;
                }
                tokio::time::sleep(FOLLOW_INTERVAL).await;
                // Reopen if the file did not exist yet.
                if follow.file.is_none() {
                    continue;
                }
            }
        }
    });
    Ok(text_response(Body::from_stream(stream)))
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

/// Chunks read from the database at once.
const SHARED_CHUNKS: i64 = 64;

/// Follows a log shared through PostgreSQL (whichever replica runs the
/// prebuild copies it there every [`crate::logs::COPY_INTERVAL`]): sends
/// what is there, then looks again every [`FOLLOW_INTERVAL`] until the
/// prebuild has finished and a few copy intervals have brought nothing more
/// (the lines its runner wrote last are copied after it finished).
fn follow_shared(
    shared: crate::store::postgres::PostgresStore,
    store: Arc<dyn crate::store::Store>,
    grant: crate::tokens::LogsGrant,
) -> impl futures::Stream<Item = std::result::Result<Bytes, std::io::Error>> {
    struct Follow {
        after_seq: i64,
        /// Empty looks since the prebuild was seen finished.
        quiet_since_finished: Option<u32>,
    }
    const QUIET_LOOKS: u32 = 4;
    futures::stream::unfold(Follow { after_seq: 0, quiet_since_finished: None }, move |mut follow| {
        let (shared, store, grant) = (shared.clone(), store.clone(), grant.clone());
        async move {
            loop {
                let chunks = match shared.log_chunks_after(&grant.prebuild_id, follow.after_seq, SHARED_CHUNKS).await {
                    Ok(chunks) => chunks,
                    Err(error) => {
                        return Some((
                            Err(std::io::Error::other(error.to_string())),
                            Follow { quiet_since_finished: Some(QUIET_LOOKS), ..follow },
                        ))
                    }
                };
                if let Some((last, _)) = chunks.last() {
                    follow.after_seq = *last;
                    let mut bytes = Vec::new();
                    for (_, chunk) in chunks {
                        bytes.extend_from_slice(&chunk);
                    }
                    return Some((Ok(Bytes::from(bytes)), follow));
                }
                match follow.quiet_since_finished {
                    Some(looks) if looks >= QUIET_LOOKS => return None,
                    Some(looks) => follow.quiet_since_finished = Some(looks + 1),
                    None => {
                        let finished = match store.get_prebuild(&grant.organization_id, &grant.prebuild_id).await {
                            Ok(Some(prebuild)) => phase_of(&prebuild).has_ended(),
                            _ => true,
                        };
                        if finished {
                            follow.quiet_since_finished = Some(0);
                        }
                    }
                }
                tokio::time::sleep(FOLLOW_INTERVAL).await;
            }
        }
    })
}
