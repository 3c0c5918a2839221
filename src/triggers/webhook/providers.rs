//! What each git server sends: how it signs a delivery, which header names
//! the event and the delivery, and where a push's branch and commits are in
//! its JSON. Only pushes to branches start prebuilds; tags and pull or
//! merge requests are acknowledged and ignored.
//!
//! - **GitHub**: `X-Hub-Signature-256: sha256=<hex>` (HMAC-SHA256 of the
//!   raw body), `X-GitHub-Event` (`push`, `ping`), `X-GitHub-Delivery`;
//!   `ref`, `before`, `after`, `deleted`.
//! - **GitLab**: `X-Gitlab-Token` (the secret itself, compared in constant
//!   time), `X-Gitlab-Event` (`Push Hook`), `Idempotency-Key` (else
//!   `X-Gitlab-Event-UUID`); `ref`, `before`, `after` (`checkout_sha`).
//! - **Gitea and Forgejo**: `X-Gitea-Signature` or `X-Forgejo-Signature`
//!   (HMAC-SHA256 hex, no prefix), `X-Gitea-Event`/`X-Forgejo-Event`
//!   (`push`), `X-Gitea-Delivery`/`X-Forgejo-Delivery`; GitHub's fields.
//! - **Bitbucket** Cloud and Data Center: `X-Hub-Signature: sha256=<hex>`,
//!   `X-Event-Key` (`repo:push` on Cloud, `repo:refs_changed` on Data
//!   Center, `diagnostics:ping`), `X-Request-UUID` (Cloud) or
//!   `X-Request-Id` (Data Center); Cloud's `push.changes[].new`, Data
//!   Center's `changes[]` with `ref.id`, `fromHash`, `toHash`.

use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde_json::Value;
use sha2::Sha256;

/// The git servers whose webhooks are understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    GitLab,
    Gitea,
    Bitbucket,
}

impl Provider {
    /// The provider of a webhook URL's path segment.
    pub fn from_path(segment: &str) -> Option<Provider> {
        match segment {
            "github" => Some(Provider::GitHub),
            "gitlab" => Some(Provider::GitLab),
            "gitea" | "forgejo" => Some(Provider::Gitea),
            "bitbucket" => Some(Provider::Bitbucket),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::GitLab => "gitlab",
            Provider::Gitea => "gitea",
            Provider::Bitbucket => "bitbucket",
        }
    }

    /// The header the signature (or GitLab's token) comes in, for messages.
    pub fn signature_header(self) -> &'static str {
        match self {
            Provider::GitHub => "X-Hub-Signature-256",
            Provider::GitLab => "X-Gitlab-Token",
            Provider::Gitea => "X-Gitea-Signature (or X-Forgejo-Signature)",
            Provider::Bitbucket => "X-Hub-Signature",
        }
    }

    /// Whether the delivery is signed with `secret`: an HMAC-SHA256 of the
    /// raw body, or GitLab's token. Every comparison takes the same time
    /// whatever the bytes (the HMAC's verify, a digest of GitLab's token).
    pub fn verify(self, headers: &HeaderMap, body: &[u8], secret: &[u8]) -> bool {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        match self {
            Provider::GitLab => header("x-gitlab-token").is_some_and(|token| equal_secrets(token.as_bytes(), secret)),
            Provider::GitHub => {
                header("x-hub-signature-256").and_then(|v| v.strip_prefix("sha256=")).is_some_and(|hex| hmac_ok(secret, body, hex))
            }
            Provider::Bitbucket => {
                header("x-hub-signature").and_then(|v| v.strip_prefix("sha256=")).is_some_and(|hex| hmac_ok(secret, body, hex))
            }
            Provider::Gitea => header("x-gitea-signature")
                .or_else(|| header("x-forgejo-signature"))
                .map(|v| v.strip_prefix("sha256=").unwrap_or(v))
                .is_some_and(|hex| hmac_ok(secret, body, hex)),
        }
    }

    /// The delivery's ID, stable across the provider's redeliveries.
    pub fn delivery_id(self, headers: &HeaderMap) -> Option<String> {
        let names: &[&str] = match self {
            Provider::GitHub => &["x-github-delivery"],
            Provider::GitLab => &["idempotency-key", "x-gitlab-event-uuid"],
            Provider::Gitea => &["x-gitea-delivery", "x-forgejo-delivery"],
            Provider::Bitbucket => &["x-request-uuid", "x-request-id"],
        };
        names
            .iter()
            .find_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
            .map(|id| id.trim().chars().take(200).collect::<String>())
            .filter(|id| !id.is_empty())
    }

    /// What kind of event the delivery is.
    pub fn event(self, headers: &HeaderMap) -> Event {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().trim().to_string();
        let name = match self {
            Provider::GitHub => header("x-github-event"),
            Provider::GitLab => header("x-gitlab-event"),
            Provider::Gitea => Some(header("x-gitea-event")).filter(|e| !e.is_empty()).unwrap_or_else(|| header("x-forgejo-event")),
            Provider::Bitbucket => header("x-event-key"),
        };
        match (self, name.as_str()) {
            (Provider::GitHub, "push") | (Provider::GitLab, "Push Hook") | (Provider::Gitea, "push") => Event::Push,
            (Provider::Bitbucket, "repo:push" | "repo:refs_changed") => Event::Push,
            (Provider::GitHub, "ping") | (Provider::Bitbucket, "diagnostics:ping") => Event::Ping,
            _ => Event::Other(name),
        }
    }

    /// The branch updates a push event's body reports; an error names the
    /// field that is missing or malformed.
    pub fn branch_updates(self, body: &Value) -> Result<Vec<BranchUpdate>, String> {
        match self {
            Provider::GitHub | Provider::GitLab | Provider::Gitea => {
                let reference = string(body, "ref")?;
                let after = string(body, "after")?;
                let before = body.get("before").and_then(Value::as_str).map(str::to_string);
                let Some(branch) = reference.strip_prefix("refs/heads/") else { return Ok(Vec::new()) };
                if body.get("deleted").and_then(Value::as_bool) == Some(true) || crate::git::is_zero_sha(&after) {
                    return Ok(Vec::new());
                }
                Ok(vec![BranchUpdate { branch: branch.to_string(), before, after: checked_sha("after", &after)? }])
            }
            Provider::Bitbucket => {
                if let Some(changes) = body.pointer("/push/changes").and_then(Value::as_array) {
                    let mut updates = Vec::new();
                    for (i, change) in changes.iter().enumerate() {
                        let Some(new) = change.get("new").filter(|n| !n.is_null()) else { continue };
                        if new.get("type").and_then(Value::as_str) != Some("branch") {
                            continue;
                        }
                        let branch = string(new, "name").map_err(|e| format!("push.changes[{i}].new.{e}"))?;
                        let hash = new
                            .pointer("/target/hash")
                            .and_then(Value::as_str)
                            .ok_or_else(|| format!("push.changes[{i}].new.target.hash: missing"))?;
                        let before = change.pointer("/old/target/hash").and_then(Value::as_str).map(str::to_string);
                        updates.push(BranchUpdate {
                            branch,
                            before,
                            after: checked_sha(&format!("push.changes[{i}].new.target.hash"), hash)?,
                        });
                    }
                    return Ok(updates);
                }
                let changes = body.get("changes").and_then(Value::as_array).ok_or("push.changes or changes: missing")?;
                let mut updates = Vec::new();
                for (i, change) in changes.iter().enumerate() {
                    let reference =
                        change.pointer("/ref/id").and_then(Value::as_str).ok_or_else(|| format!("changes[{i}].ref.id: missing"))?;
                    let Some(branch) = reference.strip_prefix("refs/heads/") else { continue };
                    if change.get("type").and_then(Value::as_str) == Some("DELETE") {
                        continue;
                    }
                    let to = string(change, "toHash").map_err(|e| format!("changes[{i}].{e}"))?;
                    let before = change.get("fromHash").and_then(Value::as_str).map(str::to_string);
                    updates.push(BranchUpdate {
                        branch: branch.to_string(),
                        before,
                        after: checked_sha(&format!("changes[{i}].toHash"), &to)?,
                    });
                }
                Ok(updates)
            }
        }
    }
}

/// A delivery's kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Push,
    Ping,
    /// Anything else, by the name the provider gave it.
    Other(String),
}

/// A branch a push moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchUpdate {
    pub branch: String,
    pub before: Option<String>,
    pub after: String,
}

fn string(value: &Value, field: &str) -> Result<String, String> {
    value.get(field).and_then(Value::as_str).map(str::to_string).ok_or_else(|| format!("{field}: missing or not a string"))
}

fn checked_sha(field: &str, sha: &str) -> Result<String, String> {
    if crate::git::is_sha(sha) {
        Ok(sha.to_ascii_lowercase())
    } else {
        Err(format!("{field}: {sha:?} is not a commit ID"))
    }
}

fn hmac_ok(secret: &[u8], body: &[u8], hex_signature: &str) -> bool {
    let Ok(signature) = hex::decode(hex_signature) else { return false };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return false };
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&signature).is_ok()
}

/// Constant-time equality of two secrets of any length: their HMACs under
/// a key of the moment are compared (equal lengths, constant time).
fn equal_secrets(given: &[u8], secret: &[u8]) -> bool {
    let key: [u8; 32] = rand::random();
    let digest = |bytes: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes a key of any length");
        mac.update(bytes);
        mac
    };
    let expected = digest(secret).finalize().into_bytes();
    digest(given).verify_slice(&expected).is_ok()
}

/// The signature a provider would send for `body` (for tests and the
/// benchmark, which post deliveries as the providers do).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn signatures_verify_only_with_the_secret() {
        let (secret, body) = (b"0123456789abcdef-secret".as_slice(), br#"{"ref":"refs/heads/main"}"#.as_slice());
        let good = sign(secret, body);
        let github = headers(&[("x-hub-signature-256", &format!("sha256={good}"))]);
        assert!(Provider::GitHub.verify(&github, body, secret));
        assert!(!Provider::GitHub.verify(&github, b"{}", secret), "another body");
        assert!(!Provider::GitHub.verify(&github, body, b"another-secret-0123456"));
        assert!(!Provider::GitHub.verify(&headers(&[("x-hub-signature-256", &good)]), body, secret), "the prefix is required");
        assert!(!Provider::GitHub.verify(&HeaderMap::new(), body, secret));
        assert!(Provider::Bitbucket.verify(&headers(&[("x-hub-signature", &format!("sha256={good}"))]), body, secret));
        assert!(Provider::Gitea.verify(&headers(&[("x-gitea-signature", &good)]), body, secret));
        assert!(Provider::Gitea.verify(&headers(&[("x-forgejo-signature", &good)]), body, secret));
        assert!(!Provider::Gitea.verify(&headers(&[("x-gitea-signature", "zz")]), body, secret));
        assert!(Provider::GitLab.verify(&headers(&[("x-gitlab-token", "0123456789abcdef-secret")]), body, secret));
        assert!(!Provider::GitLab.verify(&headers(&[("x-gitlab-token", "0123456789abcdef-secreT")]), body, secret));
        assert!(!Provider::GitLab.verify(&headers(&[("x-gitlab-token", "0123")]), body, secret));
    }

    #[test]
    fn events_and_deliveries() {
        assert_eq!(Provider::GitHub.event(&headers(&[("x-github-event", "push")])), Event::Push);
        assert_eq!(Provider::GitHub.event(&headers(&[("x-github-event", "ping")])), Event::Ping);
        assert_eq!(Provider::GitLab.event(&headers(&[("x-gitlab-event", "Tag Push Hook")])), Event::Other("Tag Push Hook".into()));
        assert_eq!(Provider::Gitea.event(&headers(&[("x-forgejo-event", "push")])), Event::Push);
        assert_eq!(Provider::Bitbucket.event(&headers(&[("x-event-key", "repo:refs_changed")])), Event::Push);
        assert_eq!(Provider::GitLab.delivery_id(&headers(&[("x-gitlab-event-uuid", "u1")])).as_deref(), Some("u1"));
        assert_eq!(
            Provider::GitLab.delivery_id(&headers(&[("idempotency-key", "k1"), ("x-gitlab-event-uuid", "u1")])).as_deref(),
            Some("k1")
        );
        assert_eq!(Provider::Bitbucket.delivery_id(&headers(&[("x-request-id", "r1")])).as_deref(), Some("r1"));
    }

    #[test]
    fn pushes_are_read_from_each_body() {
        let (a, b) = ("a".repeat(40), "b".repeat(40));
        let github: Value = serde_json::json!({"ref": "refs/heads/main", "before": a, "after": b, "deleted": false});
        assert_eq!(
            Provider::GitHub.branch_updates(&github).unwrap(),
            vec![BranchUpdate { branch: "main".into(), before: Some(a.clone()), after: b.clone() }]
        );
        let tag: Value = serde_json::json!({"ref": "refs/tags/v1", "before": a, "after": b});
        assert!(Provider::GitLab.branch_updates(&tag).unwrap().is_empty(), "tags start nothing");
        let deleted: Value = serde_json::json!({"ref": "refs/heads/x", "before": a, "after": "0".repeat(40), "deleted": true});
        assert!(Provider::Gitea.branch_updates(&deleted).unwrap().is_empty());
        assert!(Provider::GitHub.branch_updates(&serde_json::json!({"ref": "refs/heads/x"})).unwrap_err().starts_with("after:"));

        let cloud: Value = serde_json::json!({"push": {"changes": [
            {"new": {"type": "branch", "name": "main", "target": {"hash": b}}, "old": {"type": "branch", "name": "main", "target": {"hash": a}}},
            {"new": null, "old": {"type": "branch", "name": "gone", "target": {"hash": a}}},
            {"new": {"type": "tag", "name": "v1", "target": {"hash": b}}}
        ]}});
        assert_eq!(
            Provider::Bitbucket.branch_updates(&cloud).unwrap(),
            vec![BranchUpdate { branch: "main".into(), before: Some(a.clone()), after: b.clone() }]
        );
        let data_center: Value = serde_json::json!({"changes": [
            {"ref": {"id": "refs/heads/release/1", "displayId": "release/1", "type": "BRANCH"}, "fromHash": a, "toHash": b, "type": "UPDATE"},
            {"ref": {"id": "refs/heads/old"}, "fromHash": a, "toHash": "0".repeat(40), "type": "DELETE"}
        ]});
        assert_eq!(Provider::Bitbucket.branch_updates(&data_center).unwrap()[0].branch, "release/1");
        assert_eq!(Provider::Bitbucket.branch_updates(&data_center).unwrap().len(), 1);
        assert!(Provider::Bitbucket.branch_updates(&serde_json::json!({})).is_err());
    }
}
