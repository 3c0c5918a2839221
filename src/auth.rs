//! Bearer API keys to callers. Keys are held only as SHA-256 digests; the
//! same check serves gRPC metadata and HTTP headers (both are HTTP headers).

use crate::config::ApiKey;
use crate::error::{Error, Result};
use crate::proto::gitpod::v1::Subject;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Who is calling: every read and write is scoped to `organization_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub organization_id: String,
    pub subject: Subject,
}

#[derive(Debug, Default)]
pub struct Authenticator {
    by_digest: std::sync::RwLock<HashMap<[u8; 32], Caller>>,
}

fn index(keys: &[ApiKey]) -> HashMap<[u8; 32], Caller> {
    keys.iter().map(|k| (k.token_sha256, Caller { organization_id: k.organization_id.clone(), subject: k.subject.clone() })).collect()
}

impl Authenticator {
    pub fn new(keys: &[ApiKey]) -> Self {
        Authenticator { by_digest: std::sync::RwLock::new(index(keys)) }
    }

    /// Replaces the keys (configuration reload).
    pub fn replace(&self, keys: &[ApiKey]) {
        *crate::sync::write(&self.by_digest) = index(keys);
    }

    /// Checks an `Authorization` header value (`Bearer <token>`).
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Caller> {
        let header = authorization
            .ok_or_else(|| Error::Unauthenticated("missing API key: send the header \"Authorization: Bearer <api key>\"".into()))?;
        let token = bearer_token(header)
            .ok_or_else(|| Error::Unauthenticated("malformed Authorization header: expected \"Bearer <api key>\"".into()))?;
        let digest: [u8; 32] = Sha256::digest(token).into();
        crate::sync::read(&self.by_digest).get(&digest).cloned().ok_or_else(|| Error::Unauthenticated("unknown API key".into()))
    }
}

impl Authenticator {
    /// Checks a remote runner's `Authorization` header against the runner
    /// tokens in `catalog`; returns the runner's ID. A user's API key is
    /// known but refused (`permission_denied`): it can never fetch work.
    pub fn authenticate_runner(&self, catalog: &crate::catalog::Catalog, authorization: Option<&[u8]>) -> Result<String> {
        let header = authorization.ok_or_else(|| {
            Error::Unauthenticated("missing runner token: send the header \"Authorization: Bearer <runner token>\"".into())
        })?;
        let token = bearer_token(header)
            .ok_or_else(|| Error::Unauthenticated("malformed Authorization header: expected \"Bearer <runner token>\"".into()))?;
        let digest: [u8; 32] = Sha256::digest(token).into();
        if let Some(runner) = catalog.runners.values().find(|runner| runner.remote.token_sha256 == Some(digest)) {
            return Ok(runner.id.clone());
        }
        if crate::sync::read(&self.by_digest).contains_key(&digest) {
            return Err(Error::PermissionDenied(
                "this is an API key, not a runner token: runners authenticate with the token of their [[runners]] entry".into(),
            ));
        }
        Err(Error::Unauthenticated("unknown runner token".into()))
    }
}

/// The token of a `Bearer` header; the scheme name is case-insensitive (RFC 7235).
fn bearer_token(header: &[u8]) -> Option<&[u8]> {
    let header = header.trim_ascii();
    if header.len() < 7 || !header[..7].eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = header[7..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator() -> Authenticator {
        Authenticator::new(&[ApiKey {
            token_sha256: Sha256::digest(b"good-token").into(),
            organization_id: "org".into(),
            subject: Subject { id: "me".into(), principal: 2 },
        }])
    }

    #[test]
    fn accepts_a_known_bearer_token_in_any_scheme_case() {
        let auth = authenticator();
        assert_eq!(auth.authenticate(Some(b"Bearer good-token")).unwrap().organization_id, "org");
        assert!(auth.authenticate(Some(b"bearer  good-token ")).is_ok());
    }

    #[test]
    fn rejects_missing_malformed_and_unknown() {
        let auth = authenticator();
        for header in [None, Some(&b"good-token"[..]), Some(b"Basic good-token"), Some(b"Bearer "), Some(b"Bearer bad-token")] {
            assert!(matches!(auth.authenticate(header), Err(Error::Unauthenticated(_))), "{header:?}");
        }
    }
}
