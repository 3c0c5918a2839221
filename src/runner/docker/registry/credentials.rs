//! A registry's credentials from the runner host's Docker config, as the
//! Docker CLI finds them after `docker login`: `config.json` in the
//! runner's `docker_config` directory (else `DOCKER_CONFIG`, else
//! `~/.docker`), its `credHelpers` entry for the host, else its
//! `credsStore`, else its `auths` entry. Helpers are the
//! `docker-credential-<name>` programs the CLI runs (`get`, the server's
//! address on stdin, JSON on stdout). Nothing comes from the server: the
//! credentials never leave the runner's machine.

use base64::Engine as _;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::AsyncWriteExt;

/// What a registry is logged in with.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Password {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (what some registries hand `docker login`).
    IdentityToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Password { username, .. } => write!(f, "Password({username}, ***)"),
            Credentials::IdentityToken(_) => write!(f, "IdentityToken(***)"),
        }
    }
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// The keys `auths` may know a host by (the CLI writes the bare host; old
/// configs have URLs).
fn auth_keys(host: &str) -> [String; 4] {
    [host.to_string(), format!("https://{host}"), format!("http://{host}"), format!("https://{host}/v1/")]
}

/// The credentials for `host` in the Docker config directory `dir`, if it
/// has any. A config that cannot be read or a helper that fails is an
/// error (saying which); no config, or no entry for the host, is `None`.
pub async fn for_host(dir: Option<&Path>, host: &str) -> Result<Option<Credentials>, String> {
    let Some(dir) = dir else { return Ok(None) };
    let path = dir.join("config.json");
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
    };
    let config: ConfigFile = serde_json::from_str(&text).map_err(|e| format!("{} is not a Docker config: {e}", path.display()))?;
    if let Some(helper) = config.cred_helpers.get(host).or(config.creds_store.as_ref()) {
        if let Some(found) = from_helper(helper, host).await? {
            return Ok(Some(found));
        }
    }
    let Some(entry) = auth_keys(host).iter().find_map(|key| config.auths.get(key)) else { return Ok(None) };
    from_entry(entry).map_err(|e| format!("{}: the entry of {host}: {e}", path.display()))
}

fn from_entry(entry: &AuthEntry) -> Result<Option<Credentials>, String> {
    if let Some(token) = entry.identity_token.as_ref().filter(|t| !t.is_empty()) {
        return Ok(Some(Credentials::IdentityToken(token.clone())));
    }
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        return Ok(Some(Credentials::Password { username: username.clone(), password: password.clone() }));
    }
    let Some(auth) = entry.auth.as_ref().filter(|a| !a.is_empty()) else { return Ok(None) };
    let decoded = base64::engine::general_purpose::STANDARD.decode(auth.trim()).map_err(|_| "auth is not base64".to_string())?;
    let decoded = String::from_utf8(decoded).map_err(|_| "auth is not UTF-8".to_string())?;
    let (username, password) = decoded.split_once(':').ok_or_else(|| "auth is not user:password".to_string())?;
    Ok(Some(Credentials::Password { username: username.to_string(), password: password.to_string() }))
}

/// Asks `docker-credential-<helper>`; its "credentials not found" is `None`.
async fn from_helper(helper: &str, host: &str) -> Result<Option<Credentials>, String> {
    let program = PathBuf::from(format!("docker-credential-{helper}"));
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run the Docker credential helper {}: {e}", program.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(host.as_bytes()).await.map_err(|e| format!("{}: {e}", program.display()))?;
    }
    let output = child.wait_with_output().await.map_err(|e| format!("{}: {e}", program.display()))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
        if said.to_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        return Err(format!("the Docker credential helper {} failed for {host}: {}", program.display(), said.trim()));
    }
    let answer: HelperAnswer = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("the Docker credential helper {} answered no credentials for {host}: {e}", program.display()))?;
    // The helpers' convention: the user name "<token>" means the secret is
    // an identity token.
    Ok(Some(match answer.username.as_str() {
        "<token>" => Credentials::IdentityToken(answer.secret),
        _ => Credentials::Password { username: answer.username, password: answer.secret },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) {
        std::fs::write(dir.join("config.json"), text).unwrap();
    }

    #[tokio::test]
    async fn the_auths_entry_of_the_host_is_read() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(for_host(Some(dir.path()), "r.example.com").await.unwrap(), None, "no config: none");
        let auth = base64::engine::general_purpose::STANDARD.encode("ci:s3cret");
        write(
            dir.path(),
            &format!(
                r#"{{"auths": {{"r.example.com:5000": {{"auth": "{auth}"}}, "https://old.example.com": {{"identitytoken": "tok"}}}}}}"#
            ),
        );
        assert_eq!(
            for_host(Some(dir.path()), "r.example.com:5000").await.unwrap(),
            Some(Credentials::Password { username: "ci".into(), password: "s3cret".into() })
        );
        assert_eq!(for_host(Some(dir.path()), "old.example.com").await.unwrap(), Some(Credentials::IdentityToken("tok".into())));
        assert_eq!(for_host(Some(dir.path()), "other.example.com").await.unwrap(), None);
        assert_eq!(for_host(None, "r.example.com:5000").await.unwrap(), None);
    }

    #[tokio::test]
    async fn broken_configs_and_missing_helpers_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "{ not json");
        assert!(for_host(Some(dir.path()), "r.example.com").await.unwrap_err().contains("is not a Docker config"));
        write(dir.path(), r#"{"auths": {"r.example.com": {"auth": "!!"}}}"#);
        assert!(for_host(Some(dir.path()), "r.example.com").await.unwrap_err().contains("not base64"));
        write(dir.path(), r#"{"credHelpers": {"r.example.com": "prebuildd-test-missing-helper"}}"#);
        let error = for_host(Some(dir.path()), "r.example.com").await.unwrap_err();
        assert!(error.contains("docker-credential-prebuildd-test-missing-helper"), "{error}");
    }
}
