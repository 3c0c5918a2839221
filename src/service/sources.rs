//! `prebuildd.v1.PrebuildSourceService`: which commit each prebuild builds
//! and what started it. Our own extension beside the official Prebuild,
//! which stays as the schema has it.

use super::Service;
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::proto::prebuildd::v1::{ListPrebuildSourcesRequest, ListPrebuildSourcesResponse};
use crate::validate;

/// The most prebuilds one call asks about (a page of ListPrebuilds).
const MAX_IDS: usize = 100;

impl Service {
    pub async fn list_prebuild_sources(&self, caller: &Caller, request: ListPrebuildSourcesRequest) -> Result<ListPrebuildSourcesResponse> {
        if request.prebuild_ids.is_empty() {
            return Err(Error::invalid("prebuild_ids", "must name at least one prebuild"));
        }
        let ids = validate::uuid_list("prebuild_ids", &request.prebuild_ids, MAX_IDS)?;
        let sources = self.store.prebuild_sources(&caller.organization_id, &ids).await?;
        Ok(ListPrebuildSourcesResponse { sources })
    }
}
