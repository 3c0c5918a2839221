//! `POST /webhooks/<provider>/<project id>`: push webhooks from GitHub,
//! GitLab, Gitea or Forgejo, and Bitbucket, on the server's one port,
//! outside the API's bearer keys: the signature made with the project's
//! `webhook_secret` is the authentication.
//!
//! | answer | when |
//! |---|---|
//! | 200 `{"result":"queued", ...}` | a push to a tracked branch: queued, joined a queued prebuild, or built already |
//! | 200 `{"result":"ignored", "reason":...}` | a ping, a tag, another event, an untracked branch, no tracked path changed |
//! | 200 `{"result":"replayed"}` | a delivery ID handled before (kept across restarts) |
//! | 401 | a missing or wrong signature, or a project without a secret: nothing starts |
//! | 404 | an unknown provider or project |
//! | 400 | a push whose body is not JSON or lacks a field (named) |
//! | 413 | a body over 8 MiB |
//! | 503 | the repository could not be read (the provider retries) |

mod providers;

pub use providers::{sign, BranchUpdate, Event, Provider};

use super::{Push, PushResult};
use crate::error::Error;
use crate::proto::prebuildd::v1::SourceTrigger;
use crate::service::Service;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use http::{HeaderMap, StatusCode};
use serde_json::json;
use std::sync::Arc;

/// The largest delivery accepted. GitHub caps its payloads at 25 MB, but a
/// push's JSON is far smaller unless it carries thousands of commits, and
/// nothing of that is needed here: the commit IDs are near the start.
pub const MAX_WEBHOOK_BYTES: usize = 8 * 1024 * 1024;

pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/webhooks/{provider}/{project_id}", post(receive))
        .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BYTES))
        .with_state(service)
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

fn refused(status: StatusCode, message: impl Into<String>) -> Response {
    answer(status, json!({ "error": message.into() }))
}

async fn receive(
    State(service): State<Arc<Service>>,
    Path((provider, project_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(provider) = Provider::from_path(&provider) else {
        return refused(
            StatusCode::NOT_FOUND,
            format!("unknown provider {provider:?}; use github, gitlab, gitea (or forgejo) or bitbucket"),
        );
    };
    let project_id = project_id.to_ascii_lowercase();
    let catalog = service.catalog();
    let Some(project) = catalog.projects.get(&project_id) else {
        return refused(StatusCode::NOT_FOUND, format!("no project {project_id} is configured"));
    };
    let Some(secret) = project.prebuilds.git.as_ref().and_then(|git| git.webhook_secret.as_deref()) else {
        return refused(
            StatusCode::UNAUTHORIZED,
            format!("project {project_id} takes no webhooks: set webhook_secret (or webhook_secret_env) in its [projects.prebuilds.git]"),
        );
    };
    if !provider.verify(&headers, &body, secret) {
        tracing::warn!(project = %project_id, provider = provider.name(), "webhook refused: bad or missing signature");
        return refused(
            StatusCode::UNAUTHORIZED,
            format!("the delivery's {} does not match the project's webhook secret", provider.signature_header()),
        );
    }
    let updates = match provider.event(&headers) {
        Event::Ping => return answer(StatusCode::OK, json!({ "result": "ignored", "reason": "ping" })),
        Event::Other(name) => {
            return answer(
                StatusCode::OK,
                json!({ "result": "ignored", "reason": format!("only push events start prebuilds (this is {name:?})") }),
            )
        }
        Event::Push => {
            let value: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(value) => value,
                Err(error) => return refused(StatusCode::BAD_REQUEST, format!("the body is not JSON: {error}")),
            };
            match provider.branch_updates(&value) {
                Ok(updates) => updates,
                Err(field) => return refused(StatusCode::BAD_REQUEST, format!("not a {} push: {field}", provider.name())),
            }
        }
    };
    if updates.is_empty() {
        return answer(StatusCode::OK, json!({ "result": "ignored", "reason": "the push moved no branch (a tag, or a deleted branch)" }));
    }
    let delivery = provider.delivery_id(&headers);
    let mut results = Vec::new();
    for (index, update) in updates.into_iter().enumerate() {
        // One delivery can move several branches (Bitbucket): each is its own
        // push, and its own delivery key.
        let key = delivery.as_ref().map(|id| format!("{}:{project_id}:{id}:{index}", provider.name()));
        let push = Push {
            project_id: project_id.clone(),
            branch: update.branch.clone(),
            commit_sha: update.after.clone(),
            before_sha: update.before,
            trigger: SourceTrigger::PushWebhook,
            provider: provider.name().to_string(),
            delivery: key,
        };
        let result = match service.triggers().push(&service, push).await {
            Ok(result) => result,
            Err(error @ (Error::Unavailable(_) | Error::Internal(_))) => {
                tracing::warn!(project = %project_id, %error, "webhook: cannot act on the push now");
                return refused(StatusCode::SERVICE_UNAVAILABLE, format!("cannot act on the push now, retry later: {error}"));
            }
            Err(error) => return refused(StatusCode::BAD_REQUEST, error.to_string()),
        };
        results.push(describe(&update.branch, &update.after, result));
    }
    if results.len() == 1 {
        return answer(StatusCode::OK, results.remove(0));
    }
    answer(StatusCode::OK, json!({ "result": "several", "branches": results }))
}

fn describe(branch: &str, commit: &str, result: PushResult) -> serde_json::Value {
    match result {
        PushResult::Replayed => json!({ "result": "replayed", "branch": branch, "commit": commit }),
        PushResult::Ignored(reason) => json!({ "result": "ignored", "branch": branch, "commit": commit, "reason": reason }),
        PushResult::Queued(enqueued) => {
            let prebuilds: Vec<serde_json::Value> = enqueued
                .iter()
                .map(|outcome| {
                    let how = match outcome {
                        crate::store::sources::Enqueued::Inserted(_) => "queued",
                        crate::store::sources::Enqueued::Collapsed(_) => "joined the queued prebuild",
                        crate::store::sources::Enqueued::Unchanged(_) => "built already",
                    };
                    json!({ "prebuildId": outcome.prebuild_id(), "outcome": how })
                })
                .collect();
            json!({ "result": "queued", "branch": branch, "commit": commit, "prebuilds": prebuilds })
        }
    }
}
