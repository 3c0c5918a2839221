//! Deleting a pushed snapshot's manifest from its registry with the
//! distribution API (`DELETE /v2/<name>/manifests/<digest>`): the one call
//! the Docker Engine cannot make. It authenticates as the Docker CLI does:
//! Basic with the Docker config's credentials, or a bearer token from the
//! registry's token service when it asks for one (`WWW-Authenticate:
//! Bearer realm=...,service=...,scope=...`).
//!
//! HTTPS first, with the system's CAs and the runner's `ca_file`; plain
//! HTTP only for a registry on this machine's loopback addresses, as Docker
//! itself allows by default.

use super::credentials::Credentials;
use super::name::DigestReference;
use std::path::Path;
use std::time::Duration;

/// What became of a deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// The manifest is gone (deleted now, or before).
    Gone,
    /// The registry refuses: asking again will not help. Says why.
    Refused(String),
}

const TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a registry host (with its port) is on this machine's loopback.
fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn client(ca_file: Option<&Path>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().timeout(TIMEOUT).redirect(reqwest::redirect::Policy::limited(5));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
        for certificate in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("ca_file {}: {e}", path.display()))? {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder.build().map_err(|e| format!("cannot make an HTTP client: {e}"))
}

/// Deletes the manifest. `Err` is a failure worth another try (the
/// registry did not answer, or answered 5xx).
pub async fn delete_manifest(
    reference: &DigestReference,
    credentials: Option<&Credentials>,
    ca_file: Option<&Path>,
) -> Result<Deleted, String> {
    // The CA file is small; reading it is the only blocking work.
    let ca_file = ca_file.map(Path::to_path_buf);
    let client = tokio::task::spawn_blocking(move || client(ca_file.as_deref())).await.map_err(|e| e.to_string())??;
    let schemes: &[&str] = if is_loopback(&reference.host) { &["https", "http"] } else { &["https"] };
    let mut last_error = String::new();
    for scheme in schemes {
        let url = format!("{scheme}://{}/v2/{}/manifests/{}", reference.host, reference.path, reference.digest);
        match delete_at(&client, &url, reference, credentials).await {
            Ok(deleted) => return Ok(deleted),
            Err(Attempt::Unreachable(error)) => last_error = error,
            Err(Attempt::Failed(error)) => return Err(error),
        }
    }
    Err(last_error)
}

enum Attempt {
    /// No HTTP answer at all (the next scheme may do).
    Unreachable(String),
    Failed(String),
}

async fn delete_at(
    client: &reqwest::Client,
    url: &str,
    reference: &DigestReference,
    credentials: Option<&Credentials>,
) -> Result<Deleted, Attempt> {
    let unreachable = |e: reqwest::Error| Attempt::Unreachable(format!("DELETE {url}: {e}"));
    let mut response = client.delete(url).send().await.map_err(unreachable)?;
    if response.status() == reqwest::StatusCode::UNAUTHORIZED {
        let challenge =
            response.headers().get(reqwest::header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let authorization = authorize(client, &challenge, reference, credentials).await.map_err(Attempt::Failed)?;
        let Some(authorization) = authorization else {
            return Ok(Deleted::Refused(format!(
                "the registry wants credentials to delete {reference} and the Docker config has none for {}",
                reference.host
            )));
        };
        response = client.delete(url).header(reqwest::header::AUTHORIZATION, authorization).send().await.map_err(unreachable)?;
    }
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    match status.as_u16() {
        200..=299 | 404 => Ok(Deleted::Gone),
        405 => Ok(Deleted::Refused(format!(
            "the registry does not allow deletes (405 Method Not Allowed; for the CNCF distribution registry, set storage.delete.enabled): {}",
            body.trim()
        ))),
        400 if body.contains("UNSUPPORTED") => Ok(Deleted::Refused(format!("the registry does not support deletes: {}", body.trim()))),
        401 | 403 => Ok(Deleted::Refused(format!(
            "the registry refused the Docker config's credentials for {} ({status}): {}",
            reference.host,
            body.trim()
        ))),
        400..=499 => Ok(Deleted::Refused(format!("the registry answered {status}: {}", body.trim()))),
        _ => Err(Attempt::Failed(format!("DELETE {url}: the registry answered {status}: {}", body.trim()))),
    }
}

/// The `Authorization` header a challenge asks for, or `None` without
/// credentials to give.
async fn authorize(
    client: &reqwest::Client,
    challenge: &str,
    reference: &DigestReference,
    credentials: Option<&Credentials>,
) -> Result<Option<String>, String> {
    use base64::Engine as _;
    let basic = |username: &str, password: &str| {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")))
    };
    let (scheme, parameters) = challenge.split_once(' ').unwrap_or((challenge, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Ok(match credentials {
            Some(Credentials::Password { username, password }) => Some(basic(username, password)),
            _ => None,
        });
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(format!("the registry asks for {scheme:?} authentication, which prebuildd does not speak"));
    }
    let parameters = challenge_parameters(parameters);
    let realm = parameters.get("realm").ok_or_else(|| format!("the registry's bearer challenge names no realm: {challenge}"))?;
    let scope = parameters.get("scope").cloned().unwrap_or_else(|| format!("repository:{}:delete", reference.path));
    let service = parameters.get("service").cloned().unwrap_or_default();
    let request = match credentials {
        Some(Credentials::IdentityToken(token)) => client.post(realm).form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", token.as_str()),
            ("service", service.as_str()),
            ("scope", scope.as_str()),
            ("client_id", "prebuildd"),
        ]),
        Some(Credentials::Password { username, password }) => client
            .get(realm)
            .query(&[("service", service.as_str()), ("scope", scope.as_str())])
            .header(reqwest::header::AUTHORIZATION, basic(username, password)),
        None => client.get(realm).query(&[("service", service.as_str()), ("scope", scope.as_str())]),
    };
    let response = request.send().await.map_err(|e| format!("the registry's token service {realm}: {e}"))?;
    if !response.status().is_success() {
        return Ok(None);
    }
    let answer: serde_json::Value = response.json().await.map_err(|e| format!("the registry's token service {realm}: {e}"))?;
    let token = answer.get("token").or_else(|| answer.get("access_token")).and_then(|t| t.as_str());
    Ok(token.map(|token| format!("Bearer {token}")))
}

/// `realm="...",service="...",scope="..."` as a map.
fn challenge_parameters(text: &str) -> std::collections::HashMap<String, String> {
    let mut parameters = std::collections::HashMap::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            },
            None => after.split_once(',').unwrap_or((after, "")),
        };
        parameters.insert(key, value.to_string());
        rest = next.trim_start_matches(',').trim();
    }
    parameters
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_are_read() {
        let parameters = challenge_parameters(
            r#"realm="https://auth.example.com/token",service="registry.example.com",scope="repository:p/x:pull,push""#,
        );
        assert_eq!(parameters["realm"], "https://auth.example.com/token");
        assert_eq!(parameters["service"], "registry.example.com");
        assert_eq!(parameters["scope"], "repository:p/x:pull,push");
        assert_eq!(challenge_parameters("realm=plain")["realm"], "plain");
    }

    #[test]
    fn only_loopback_registries_may_be_plain_http() {
        for host in ["localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000", "localhost"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["registry.example.com", "10.0.0.1:5000", "localhost.example.com:5000", "[fd00::1]:5000"] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
