//! Signed, opaque tokens: list page tokens and prebuild log tokens.
//!
//! Both are `base64url(purpose | payload | HMAC-SHA256)` with a secret kept in
//! the data dir, so they survive restarts, cannot be forged or edited, and a
//! token of one purpose is never accepted as the other.

use crate::error::{Error, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

type HmacSha256 = Hmac<Sha256>;

const PURPOSE_PAGE: u8 = 1;
const PURPOSE_LOGS: u8 = 2;
/// Page tokens carry a shortened MAC: they guard against garbage and edits,
/// not against an attacker with 2^64 tries (they grant nothing).
const PAGE_MAC_LEN: usize = 12;
const LOGS_MAC_LEN: usize = 32;

/// How long a page token stays valid; a client paging slower than this
/// starts again from the first page.
pub const PAGE_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The reference: "Generated tokens are valid for one hour."
pub const LOGS_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Clone)]
pub struct TokenKey {
    key: [u8; 32],
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// What a logs token grants: reading one prebuild's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsGrant {
    pub organization_id: String,
    pub prebuild_id: String,
}

/// The position a page token resumes after, bound to the query it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCursor {
    pub after_seq: i64,
}

impl TokenKey {
    pub fn from_bytes(key: [u8; 32]) -> Self {
        TokenKey { key }
    }

    /// Reads the secret from `<data_dir>/token-secret`, creating it (mode 0600)
    /// on first start.
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<Self> {
        let path = data_dir.join("token-secret");
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == 32 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&bytes);
                Ok(TokenKey { key })
            }
            Ok(_) => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} is not a 32-byte secret", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                let tmp = data_dir.join("token-secret.tmp");
                {
                    use std::io::Write;
                    let mut options = std::fs::OpenOptions::new();
                    options.write(true).create(true).truncate(true);
                    #[cfg(unix)]
                    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                    let mut file = options.open(&tmp)?;
                    file.write_all(&key)?;
                    file.sync_all()?;
                }
                std::fs::rename(&tmp, &path)?;
                Ok(TokenKey { key })
            }
            Err(e) => Err(e),
        }
    }

    fn mac(&self, data: &[u8]) -> [u8; 32] {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    fn seal(&self, purpose: u8, payload: &[u8], mac_len: usize) -> String {
        let mut data = Vec::with_capacity(1 + payload.len() + mac_len);
        data.push(purpose);
        data.extend_from_slice(payload);
        let mac = self.mac(&data);
        data.extend_from_slice(&mac[..mac_len]);
        URL_SAFE_NO_PAD.encode(data)
    }

    fn open(&self, purpose: u8, token: &str, mac_len: usize) -> Option<Vec<u8>> {
        if token.len() > 512 {
            return None;
        }
        let data = URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).ok()?;
        if data.len() < 1 + mac_len || data[0] != purpose {
            return None;
        }
        let (signed, mac) = data.split_at(data.len() - mac_len);
        let expected = self.mac(signed);
        // Constant-time comparison: the MAC is a secret-derived value.
        let diff = expected[..mac_len].iter().zip(mac).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (diff == 0).then(|| signed[1..].to_vec())
    }

    /// A page token resuming after `cursor`, valid for `query_fingerprint` only.
    pub fn page_token(&self, cursor: PageCursor, query_fingerprint: u64, now: SystemTime) -> String {
        let mut payload = Vec::with_capacity(24);
        payload.extend_from_slice(&cursor.after_seq.to_be_bytes());
        payload.extend_from_slice(&query_fingerprint.to_be_bytes());
        payload.extend_from_slice(&unix_seconds(now).to_be_bytes());
        self.seal(PURPOSE_PAGE, &payload, PAGE_MAC_LEN)
    }

    /// Checks a page token against the query it is used with.
    pub fn open_page_token(&self, token: &str, query_fingerprint: u64, now: SystemTime) -> Result<PageCursor> {
        let field = "pagination.token";
        let payload = self.open(PURPOSE_PAGE, token, PAGE_MAC_LEN).filter(|p| p.len() == 24).ok_or_else(|| {
            Error::invalid(
                field,
                "is not a token this server issued; pass the nextToken of a previous response, or none for the first page",
            )
        })?;
        let after_seq = i64::from_be_bytes(payload[0..8].try_into().expect("8 bytes"));
        let fingerprint = u64::from_be_bytes(payload[8..16].try_into().expect("8 bytes"));
        let issued = u64::from_be_bytes(payload[16..24].try_into().expect("8 bytes"));
        if fingerprint != query_fingerprint {
            return Err(Error::invalid(field, "belongs to a different filter; a page token only continues the query that returned it"));
        }
        if unix_seconds(now).saturating_sub(issued) > PAGE_TOKEN_LIFETIME.as_secs() {
            return Err(Error::invalid(field, "has expired; start again from the first page"));
        }
        Ok(PageCursor { after_seq })
    }

    /// A token that grants reading one prebuild's logs until it expires.
    pub fn logs_token(&self, grant: &LogsGrant, now: SystemTime) -> String {
        let expires = unix_seconds(now) + LOGS_TOKEN_LIFETIME.as_secs();
        let mut payload = Vec::with_capacity(8 + 80);
        payload.extend_from_slice(&expires.to_be_bytes());
        payload.extend_from_slice(grant.organization_id.as_bytes());
        payload.push(b'/');
        payload.extend_from_slice(grant.prebuild_id.as_bytes());
        self.seal(PURPOSE_LOGS, &payload, LOGS_MAC_LEN)
    }

    /// What a logs token grants, if it is genuine and not expired.
    pub fn open_logs_token(&self, token: &str, now: SystemTime) -> Result<LogsGrant> {
        let payload = self
            .open(PURPOSE_LOGS, token, LOGS_MAC_LEN)
            .filter(|p| p.len() > 8)
            .ok_or_else(|| Error::Unauthenticated("invalid logs token; create one with CreatePrebuildLogsToken".into()))?;
        let expires = u64::from_be_bytes(payload[0..8].try_into().expect("8 bytes"));
        if unix_seconds(now) > expires {
            return Err(Error::Unauthenticated("the logs token has expired; create a new one with CreatePrebuildLogsToken".into()));
        }
        let text = std::str::from_utf8(&payload[8..]).map_err(|_| Error::Unauthenticated("invalid logs token".into()))?;
        let (organization_id, prebuild_id) = text.split_once('/').ok_or_else(|| Error::Unauthenticated("invalid logs token".into()))?;
        Ok(LogsGrant { organization_id: organization_id.to_string(), prebuild_id: prebuild_id.to_string() })
    }
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> TokenKey {
        TokenKey::from_bytes([byte; 32])
    }

    #[test]
    fn page_tokens_round_trip_and_bind_to_the_query() {
        let now = SystemTime::now();
        let token = key(1).page_token(PageCursor { after_seq: 42 }, 7, now);
        assert_eq!(key(1).open_page_token(&token, 7, now).unwrap(), PageCursor { after_seq: 42 });
        assert!(key(1).open_page_token(&token, 8, now).unwrap_err().to_string().contains("different filter"));
        assert!(key(2).open_page_token(&token, 7, now).is_err());
        let later = now + PAGE_TOKEN_LIFETIME + Duration::from_secs(2);
        assert!(key(1).open_page_token(&token, 7, later).unwrap_err().to_string().contains("expired"));
    }

    #[test]
    fn garbage_and_edited_tokens_are_rejected() {
        let now = SystemTime::now();
        let token = key(1).page_token(PageCursor { after_seq: 42 }, 7, now);
        let mut edited = token.clone().into_bytes();
        edited[3] = if edited[3] == b'A' { b'B' } else { b'A' };
        for bad in ["", "nextToken", "!!!!", &"A".repeat(10_000), std::str::from_utf8(&edited).unwrap()] {
            let err = key(1).open_page_token(bad, 7, now).unwrap_err();
            assert!(err.to_string().starts_with("pagination.token: "), "{err}");
        }
    }

    #[test]
    fn logs_tokens_grant_one_prebuild_for_one_hour() {
        let now = SystemTime::now();
        let grant = LogsGrant { organization_id: "org".into(), prebuild_id: "07e03a28-65a5-4d98-b532-8ea67b188048".into() };
        let token = key(1).logs_token(&grant, now);
        assert_eq!(key(1).open_logs_token(&token, now).unwrap(), grant);
        assert!(key(1).open_logs_token(&token, now + Duration::from_secs(3601)).is_err());
        let page = key(1).page_token(PageCursor { after_seq: 1 }, 1, now);
        assert!(key(1).open_logs_token(&page, now).is_err());
    }
}
