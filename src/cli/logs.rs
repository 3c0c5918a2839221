//! `prebuilds logs`: a logs token from CreatePrebuildLogsToken, then a GET
//! of `<server>/logs/prebuilds/<id>`, printed as it arrives.
//!
//! The endpoint streams a running prebuild's log until the prebuild ends,
//! and has no "what exists now" mode. With `--follow` that stream is read
//! to its end. Without it, a finished prebuild's archived log is printed
//! whole; a running prebuild's log is printed up to the moment the server
//! has sent nothing for [`QUIET`] (what it had written so far), and the
//! command exits.

use super::client::{get, Client, Error, Result};
use super::output::prebuild_phase;
use prebuildd::proto::gitpod::v1::CreatePrebuildLogsTokenRequest;
use std::io::Write;
use std::time::Duration;

/// How long a stream without --follow may be silent before the log counts
/// as printed up to "now".
const QUIET: Duration = Duration::from_millis(500);

pub async fn print(client: &mut Client, id: &str, follow: bool) -> Result<()> {
    let running = !(prebuild_phase(&get(client, id).await?)).has_ended();
    let request = CreatePrebuildLogsTokenRequest { prebuild_id: id.into() };
    let token = client.prebuilds.create_prebuild_logs_token(request).await?.into_inner().access_token;
    let url = format!("{}/logs/prebuilds/{id}", client.server);
    let unavailable = |e: reqwest::Error| Error::new("unavailable", format!("GET {url}: {e}"));
    let mut response = reqwest::Client::new().get(&url).bearer_auth(token).send().await.map_err(unavailable)?;
    if !response.status().is_success() {
        return Err(http_error(response).await);
    }
    let mut stdout = std::io::stdout();
    loop {
        let next = if follow || !running {
            response.chunk().await
        } else {
            match tokio::time::timeout(QUIET, response.chunk()).await {
                Ok(next) => next,
                Err(_) => break,
            }
        };
        match next {
            Ok(Some(chunk)) => {
                // A closed stdout (`| head`) ends the command quietly.
                if stdout.write_all(&chunk).and_then(|_| stdout.flush()).is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(error) => return Err(unavailable(error)),
        }
    }
    Ok(())
}

/// The endpoint's JSON error (`{"code": ..., "message": ...}`) as ours.
async fn http_error(response: reqwest::Response) -> Error {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let code = match json["code"].as_str() {
        Some("unauthenticated") => "unauthenticated",
        Some("not_found") => "not_found",
        Some("permission_denied") => "permission_denied",
        Some("invalid_argument") => "invalid_argument",
        Some("unavailable") => "unavailable",
        _ if status.as_u16() == 401 => "unauthenticated",
        _ if status.as_u16() == 404 => "not_found",
        _ => "unknown",
    };
    let message = json["message"].as_str().map(str::to_string).unwrap_or_else(|| format!("HTTP {status}: {text}"));
    Error::new(code, message)
}
