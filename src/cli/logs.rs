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
use http_body_util::BodyExt;
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
    let unavailable = |e: &dyn std::fmt::Display| Error::new("unavailable", format!("GET {url}: {e}"));
    let response = http_get(&url, &token).await.map_err(|e| unavailable(&e))?;
    let (parts, mut body) = response.into_parts();
    if !parts.status.is_success() {
        let text = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        return Err(http_error(parts.status, &text));
    }
    let mut stdout = std::io::stdout();
    loop {
        let next = if follow || !running {
            body.frame().await
        } else {
            match tokio::time::timeout(QUIET, body.frame()).await {
                Ok(next) => next,
                Err(_) => break,
            }
        };
        match next {
            Some(Ok(frame)) => {
                let Ok(chunk) = frame.into_data() else { continue };
                // A closed stdout (`| head`) ends the command quietly.
                if stdout.write_all(&chunk).and_then(|_| stdout.flush()).is_err() {
                    break;
                }
            }
            None => break,
            // The server ended the stream with an error (its store failed):
            // what was printed is not the whole log.
            Some(Err(error)) => return Err(unavailable(&error)),
        }
    }
    Ok(())
}

/// A GET of `url` (plain `http://`, as the CLI's server URLs are) with a
/// bearer token, over HTTP/1.1 on a connection of its own; the response's
/// body streams.
async fn http_get(url: &str, token: &str) -> std::result::Result<hyper::Response<hyper::body::Incoming>, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// servers are supported".into());
    }
    let authority = uri.authority().ok_or("the URL has no host")?.clone();
    let address = if authority.port().is_some() { authority.to_string() } else { format!("{authority}:80") };
    let stream = tokio::net::TcpStream::connect(&address).await.map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "the logs connection ended with an error");
        }
    });
    let request = http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority.as_str())
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    sender.send_request(request).await.map_err(|e| e.to_string())
}

/// The endpoint's JSON error (`{"code": ..., "message": ...}`) as ours.
fn http_error(status: http::StatusCode, body: &[u8]) -> Error {
    let text = String::from_utf8_lossy(body);
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
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
