//! From a method's name to its service call: decode the request with the
//! method's own type, call the service function of the same name that the
//! gRPC adapter calls, encode the response. No API rule lives here.

use super::envelope::{Codec, PageQuery};
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::proto::gitpod::v1::*;
use crate::proto::prebuildd::v1::{
    ClaimInstanceRequest, ListEnvironmentClassesRequest, ListEnvironmentClassesResponse, ListPrebuildSourcesRequest,
    ListPrebuildSourcesResponse, ListProjectsRequest, ListProjectsResponse, ListRunnersRequest, ListRunnersResponse,
};
use crate::service::Service;
use crate::transport::json;
use prost::Message;

/// What a request takes from the call beyond its body: the pagination of
/// the URL's query (list requests), the time left before the call's
/// deadline (a claim, which may wait).
trait CallContext {
    fn pagination_mut(&mut self) -> Option<&mut Option<PaginationRequest>> {
        None
    }

    fn bound_by_deadline(&mut self, _remaining: std::time::Duration) {}
}

impl CallContext for ClaimInstanceRequest {
    fn bound_by_deadline(&mut self, remaining: std::time::Duration) {
        crate::service::claims::bound_wait(self, remaining);
    }
}

impl CallContext for ListPrebuildsRequest {
    fn pagination_mut(&mut self) -> Option<&mut Option<PaginationRequest>> {
        Some(&mut self.pagination)
    }
}

impl CallContext for ListWarmPoolsRequest {
    fn pagination_mut(&mut self) -> Option<&mut Option<PaginationRequest>> {
        Some(&mut self.pagination)
    }
}

macro_rules! plain_requests {
    ($($t:ty),*) => { $(impl CallContext for $t {})* };
}
plain_requests!(
    ListPrebuildSourcesRequest,
    ListProjectsRequest,
    ListEnvironmentClassesRequest,
    ListRunnersRequest,
    CreatePrebuildRequest,
    GetPrebuildRequest,
    CancelPrebuildRequest,
    DeletePrebuildRequest,
    CreatePrebuildLogsTokenRequest,
    CreateWarmPoolRequest,
    GetWarmPoolRequest,
    UpdateWarmPoolRequest,
    DeleteWarmPoolRequest
);

impl PageQuery {
    fn apply<T: CallContext>(&self, request: &mut T) {
        if self.token.is_none() && self.page_size.is_none() {
            return;
        }
        if let Some(pagination) = request.pagination_mut() {
            let pagination = pagination.get_or_insert_with(Default::default);
            if let Some(token) = &self.token {
                pagination.token = token.clone();
            }
            if let Some(page_size) = self.page_size {
                pagination.page_size = page_size;
            }
        }
    }
}

pub(super) fn decode<T: Message + Default + serde::de::DeserializeOwned>(codec: Codec, body: &[u8]) -> Result<T> {
    match codec {
        // An empty body is the empty message (as connect-go accepts it).
        _ if body.is_empty() => Ok(T::default()),
        Codec::Json => json::from_slice(body).map_err(|e| {
            Error::MalformedRequest(format!("the request body is not valid JSON for this method: {}", shorten(&e.to_string())))
        }),
        Codec::Proto => T::decode(body)
            .map_err(|e| Error::MalformedRequest(format!("the request body is not a valid protobuf message: {}", shorten(&e.to_string())))),
    }
}

/// A parser's reason, cut short: it may quote the input, which can be huge.
fn shorten(reason: &str) -> String {
    const LIMIT: usize = 300;
    if reason.len() <= LIMIT {
        return reason.to_string();
    }
    let mut end = LIMIT;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &reason[..end], reason.len() - end)
}

pub(super) fn encode<T: Message + serde::Serialize>(codec: Codec, response: &T) -> Result<Vec<u8>> {
    match codec {
        Codec::Json => json::to_vec(response).map_err(|e| Error::Internal(format!("cannot encode the response as JSON: {e}"))),
        Codec::Proto => Ok(response.encode_to_vec()),
    }
}

/// List responses keep their list in JSON even when it is empty
/// (`"prebuilds": []`): proto3 JSON would omit it, but the official REST
/// client (gitpod-sdk 0.11.0) requires it when it validates responses.
trait EmptyLists {
    /// The JSON key of a list that is empty in this response, if any.
    fn empty_list_key(&self) -> Option<&'static str> {
        None
    }
}

impl EmptyLists for ListPrebuildsResponse {
    fn empty_list_key(&self) -> Option<&'static str> {
        self.prebuilds.is_empty().then_some("prebuilds")
    }
}

impl EmptyLists for ListWarmPoolsResponse {
    fn empty_list_key(&self) -> Option<&'static str> {
        self.warm_pools.is_empty().then_some("warmPools")
    }
}

impl EmptyLists for ListPrebuildSourcesResponse {
    fn empty_list_key(&self) -> Option<&'static str> {
        self.sources.is_empty().then_some("sources")
    }
}

impl EmptyLists for ListProjectsResponse {
    fn empty_list_key(&self) -> Option<&'static str> {
        self.projects.is_empty().then_some("projects")
    }
}

impl EmptyLists for ListRunnersResponse {
    fn empty_list_key(&self) -> Option<&'static str> {
        self.runners.is_empty().then_some("runners")
    }
}

impl EmptyLists for ListEnvironmentClassesResponse {
    fn empty_list_key(&self) -> Option<&'static str> {
        self.environment_classes.is_empty().then_some("environmentClasses")
    }
}

macro_rules! no_lists {
    ($($t:ty),*) => { $(impl EmptyLists for $t {})* };
}
no_lists!(
    CreatePrebuildResponse,
    GetPrebuildResponse,
    CancelPrebuildResponse,
    DeletePrebuildResponse,
    CreatePrebuildLogsTokenResponse,
    CreateWarmPoolResponse,
    GetWarmPoolResponse,
    UpdateWarmPoolResponse,
    DeleteWarmPoolResponse,
    crate::proto::prebuildd::v1::ClaimInstanceResponse
);

fn encode_response<T: Message + serde::Serialize + EmptyLists>(codec: Codec, response: &T) -> Result<Vec<u8>> {
    let encoded = encode(codec, response)?;
    match (codec, response.empty_list_key()) {
        (Codec::Json, Some(key)) => {
            let mut value: serde_json::Value =
                serde_json::from_slice(&encoded).map_err(|e| Error::Internal(format!("re-reading our own JSON: {e}")))?;
            if let Some(object) = value.as_object_mut() {
                object.insert(key.to_string(), serde_json::Value::Array(Vec::new()));
            }
            serde_json::to_vec(&value).map_err(|e| Error::Internal(format!("cannot encode the response as JSON: {e}")))
        }
        _ => Ok(encoded),
    }
}

/// The methods: name, service method and request type.
macro_rules! connect_rpcs {
    ($($name:literal => $method:ident($req:ty);)*) => {
        pub(super) async fn call(
            service: &Service,
            name: &str,
            caller: &Caller,
            codec: Codec,
            body: &[u8],
            page: &PageQuery,
            timeout: Option<std::time::Duration>,
        ) -> Result<Vec<u8>> {
            match name {
                $($name => {
                    let mut request: $req = decode(codec, body)?;
                    page.apply(&mut request);
                    if let Some(timeout) = timeout {
                        request.bound_by_deadline(timeout);
                    }
                    let response = service.$method(caller, request).await?;
                    encode_response(codec, &response)
                })*
                _ => Err(Error::NotFound(format!("unknown method {name}"))),
            }
        }

        /// The methods dispatched here (a test compares them with the table
        /// in `transport::methods`).
        #[cfg(test)]
        const DISPATCHED: &[&str] = &[$($name),*];

        /// Decodes a request body as the method's request type, and checks
        /// that what decodes survives a JSON round trip unchanged (a fuzz
        /// property). Never panics on any input.
        pub(super) fn decode_round_trip(name: &str, json: bool, body: &[u8]) -> Result<()> {
            let codec = if json { Codec::Json } else { Codec::Proto };
            match name {
                $($name => {
                    let request: $req = decode(codec, body)?;
                    let text = encode(Codec::Json, &request)?;
                    let again: $req = decode(Codec::Json, &text)?;
                    assert_eq!(again, request, "JSON round trip of {name}");
                    Ok(())
                })*
                _ => Err(Error::NotFound(format!("unknown method {name}"))),
            }
        }
    };
}

connect_rpcs! {
    "gitpod.v1.PrebuildService/CreatePrebuild" => create_prebuild(CreatePrebuildRequest);
    "gitpod.v1.PrebuildService/ListPrebuilds" => list_prebuilds(ListPrebuildsRequest);
    "gitpod.v1.PrebuildService/GetPrebuild" => get_prebuild(GetPrebuildRequest);
    "gitpod.v1.PrebuildService/CancelPrebuild" => cancel_prebuild(CancelPrebuildRequest);
    "gitpod.v1.PrebuildService/DeletePrebuild" => delete_prebuild(DeletePrebuildRequest);
    "gitpod.v1.PrebuildService/CreatePrebuildLogsToken" => create_prebuild_logs_token(CreatePrebuildLogsTokenRequest);
    "gitpod.v1.PrebuildService/CreateWarmPool" => create_warm_pool(CreateWarmPoolRequest);
    "gitpod.v1.PrebuildService/GetWarmPool" => get_warm_pool(GetWarmPoolRequest);
    "gitpod.v1.PrebuildService/ListWarmPools" => list_warm_pools(ListWarmPoolsRequest);
    "gitpod.v1.PrebuildService/UpdateWarmPool" => update_warm_pool(UpdateWarmPoolRequest);
    "gitpod.v1.PrebuildService/DeleteWarmPool" => delete_warm_pool(DeleteWarmPoolRequest);
    "prebuildd.v1.WarmPoolInstanceService/ClaimInstance" => claim_instance(ClaimInstanceRequest);
    "prebuildd.v1.PrebuildSourceService/ListPrebuildSources" => list_prebuild_sources(ListPrebuildSourcesRequest);
    "prebuildd.v1.CatalogService/ListProjects" => list_projects(ListProjectsRequest);
    "prebuildd.v1.CatalogService/ListEnvironmentClasses" => list_environment_classes(ListEnvironmentClassesRequest);
    "prebuildd.v1.CatalogService/ListRunners" => list_runners(ListRunnersRequest);
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_method_of_the_table_is_dispatched_and_nothing_else() {
        let table: Vec<&str> = crate::transport::methods::METHODS.iter().map(|m| m.name).collect();
        assert_eq!(super::DISPATCHED, table.as_slice());
    }
}
