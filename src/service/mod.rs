//! The API's rules: validation, tenancy, defaults and state changes, for
//! every transport alike. Nothing here knows about HTTP, gRPC or SQL: the
//! transports decode a request, authenticate, call a method here with the
//! prost request type, and encode what it returns.

mod catalog;
pub mod claims;
mod prebuilds;
mod sources;
mod warm_pools;

pub use prebuilds::{mark_deleting, new_prebuild, prebuild_class, NewPrebuild};
pub use warm_pools::mark_pool_deleting;

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::proto::gitpod::v1::PaginationRequest;
use crate::runner::Runners;
use crate::store::{PageRequest, Store};
use crate::tokens::{PageCursor, TokenKey};
use crate::validate;
use sha2::{Digest, Sha256};
use std::sync::{Arc, RwLock};
use tokio::sync::Notify;

/// Page size when the client sends none (the reference: "Defaults to 25").
pub const DEFAULT_PAGE_SIZE: usize = 25;
/// The reference: "Maximum 100."
pub const MAX_PAGE_SIZE: i32 = 100;

/// What a [`Service`] is made of.
pub struct ServiceParts {
    pub store: Arc<dyn Store>,
    pub catalog: Arc<Catalog>,
    pub clock: Arc<dyn Clock>,
    pub tokens: TokenKey,
    /// Base of `logUrl`.
    pub public_url: String,
    pub changes: Arc<Notify>,
    pub runners: Arc<Runners>,
    /// Where claims (and the cancellations decided here) are counted.
    pub metrics: Arc<Metrics>,
    /// The cap on PENDING prebuilds per project (`None`: no cap).
    pub max_pending_prebuilds_per_project: Option<u32>,
}

/// The PrebuildService, independent of transport.
pub struct Service {
    store: Arc<dyn Store>,
    catalog: RwLock<Arc<Catalog>>,
    clock: Arc<dyn Clock>,
    tokens: TokenKey,
    public_url: String,
    /// Woken on every write so the reconciler acts at once, not on its tick.
    changes: Arc<Notify>,
    runners: Arc<Runners>,
    metrics: Arc<Metrics>,
    /// Claims waiting for an instance, per pool, in order.
    claim_lines: claims::ClaimLines,
    max_pending_prebuilds_per_project: Option<u32>,
    /// Pushes and polls, and what a prebuild builds when it starts.
    triggers: Arc<crate::triggers::Triggers>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("public_url", &self.public_url).finish_non_exhaustive()
    }
}

impl Service {
    pub fn new(parts: ServiceParts) -> Self {
        let ServiceParts { store, catalog, clock, tokens, public_url, changes, runners, metrics, max_pending_prebuilds_per_project } =
            parts;
        let triggers = Arc::new(crate::triggers::Triggers::new(runners.data_dir()));
        Service {
            store,
            catalog: RwLock::new(catalog),
            clock,
            tokens,
            public_url,
            changes,
            runners,
            metrics,
            claim_lines: Default::default(),
            max_pending_prebuilds_per_project,
            triggers,
        }
    }

    /// The current catalog (a cheap `Arc` clone; a reload swaps it whole).
    pub fn catalog(&self) -> Arc<Catalog> {
        crate::sync::read(&self.catalog).clone()
    }

    /// Replaces the catalog (configuration reload); new runners start.
    pub fn set_catalog(&self, catalog: Arc<Catalog>) {
        self.runners.sync(&catalog);
        *crate::sync::write(&self.catalog) = catalog;
        self.changes.notify_one();
    }

    pub fn triggers(&self) -> &Arc<crate::triggers::Triggers> {
        &self.triggers
    }

    pub fn runners(&self) -> &Arc<Runners> {
        &self.runners
    }

    /// The server's metrics (the reconciler records into them too).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn changes(&self) -> &Arc<Notify> {
        &self.changes
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn tokens(&self) -> &TokenKey {
        &self.tokens
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    fn changed(&self) {
        self.changes.notify_one();
    }

    /// Validates `pagination` and resolves its token for the query with
    /// this fingerprint.
    fn page_request(&self, pagination: Option<&PaginationRequest>, fingerprint: u64) -> Result<PageRequest> {
        let (page_size, token) = match pagination {
            Some(p) => (p.page_size, p.token.as_str()),
            None => (0, ""),
        };
        let page_size = validate::int_range("pagination.page_size", page_size, 0, MAX_PAGE_SIZE)?;
        let limit = if page_size == 0 { DEFAULT_PAGE_SIZE } else { page_size as usize };
        let after_seq =
            if token.is_empty() { None } else { Some(self.tokens.open_page_token(token, fingerprint, self.clock.now())?.after_seq) };
        Ok(PageRequest { after_seq, limit })
    }

    /// The `nextToken` for a page: empty on the last page.
    fn next_page_token(&self, next_after_seq: Option<i64>, fingerprint: u64) -> String {
        match next_after_seq {
            Some(after_seq) => self.tokens.page_token(PageCursor { after_seq }, fingerprint, self.clock.now()),
            None => String::new(),
        }
    }
}

/// The URL where a prebuild's log can be read (`logUrl`).
pub fn log_url(public_url: &str, prebuild_id: &str) -> String {
    format!("{public_url}/logs/prebuilds/{prebuild_id}")
}

/// A stable fingerprint of a list query (sorted, so item order within a
/// filter does not matter), binding page tokens to the query they continue.
fn query_fingerprint(parts: &[(&str, Vec<String>)]) -> u64 {
    let mut hasher = Sha256::new();
    for (name, values) in parts {
        let mut values = values.clone();
        values.sort();
        values.dedup();
        hasher.update(name.as_bytes());
        hasher.update([0]);
        for value in values {
            hasher.update(value.as_bytes());
            hasher.update([1]);
        }
        hasher.update([2]);
    }
    let digest = hasher.finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("SHA-256 has 32 bytes"))
}
