//! gRPC adapter: authenticate from metadata, call the service, map errors.

use crate::auth::Authenticator;
use crate::error::Error;
use crate::proto::gitpod::v1::prebuild_service_server::PrebuildService;
use crate::proto::gitpod::v1::*;
use crate::proto::prebuildd::v1::catalog_service_server::CatalogService;
use crate::proto::prebuildd::v1::prebuild_source_service_server::PrebuildSourceService;
use crate::proto::prebuildd::v1::warm_pool_instance_service_server::WarmPoolInstanceService;
use crate::proto::prebuildd::v1::{
    ClaimInstanceRequest, ClaimInstanceResponse, ListEnvironmentClassesRequest, ListEnvironmentClassesResponse, ListPrebuildSourcesRequest,
    ListPrebuildSourcesResponse, ListProjectsRequest, ListProjectsResponse, ListRunnersRequest, ListRunnersResponse,
};
use crate::service::claims::bound_wait;
use crate::service::Service;
use crate::transport::deadline::CallDeadline;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tracing::Instrument;

#[derive(Debug, Clone)]
pub struct GrpcPrebuildService {
    service: Arc<Service>,
    auth: Arc<Authenticator>,
}

impl GrpcPrebuildService {
    pub fn new(service: Arc<Service>, auth: Arc<Authenticator>) -> Self {
        GrpcPrebuildService { service, auth }
    }
}

/// A gRPC service impl: each method authenticates, calls the service
/// method of the same name and maps its error. (The whole impl is generated
/// here so that `async_trait` sees the expanded methods.)
macro_rules! grpc_service {
    ($service_trait:path, $adapter:ident { $($name:ident($req:ty) -> $resp:ty;)* }) => {
        #[tonic::async_trait]
        impl $service_trait for $adapter {
            $(
                async fn $name(&self, request: Request<$req>) -> Result<Response<$resp>, Status> {
                    let caller = self.auth.authenticate(request.metadata().get("authorization").map(|v| v.as_bytes()))?;
                    let span = tracing::debug_span!("rpc", method = stringify!($name), organization = %caller.organization_id);
                    self.service.$name(&caller, request.into_inner()).instrument(span).await.map(Response::new).map_err(|e: Error| e.into())
                }
            )*
        }
    };
}

grpc_service!(PrebuildService, GrpcPrebuildService {
    create_prebuild(CreatePrebuildRequest) -> CreatePrebuildResponse;
    list_prebuilds(ListPrebuildsRequest) -> ListPrebuildsResponse;
    get_prebuild(GetPrebuildRequest) -> GetPrebuildResponse;
    cancel_prebuild(CancelPrebuildRequest) -> CancelPrebuildResponse;
    delete_prebuild(DeletePrebuildRequest) -> DeletePrebuildResponse;
    create_prebuild_logs_token(CreatePrebuildLogsTokenRequest) -> CreatePrebuildLogsTokenResponse;
    create_warm_pool(CreateWarmPoolRequest) -> CreateWarmPoolResponse;
    get_warm_pool(GetWarmPoolRequest) -> GetWarmPoolResponse;
    list_warm_pools(ListWarmPoolsRequest) -> ListWarmPoolsResponse;
    update_warm_pool(UpdateWarmPoolRequest) -> UpdateWarmPoolResponse;
    delete_warm_pool(DeleteWarmPoolRequest) -> DeleteWarmPoolResponse;
});

/// `prebuildd.v1.WarmPoolInstanceService` over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcWarmPoolInstanceService {
    service: Arc<Service>,
    auth: Arc<Authenticator>,
}

impl GrpcWarmPoolInstanceService {
    pub fn new(service: Arc<Service>, auth: Arc<Authenticator>) -> Self {
        GrpcWarmPoolInstanceService { service, auth }
    }
}

#[tonic::async_trait]
impl WarmPoolInstanceService for GrpcWarmPoolInstanceService {
    /// A claim may wait for an instance: it answers before the call's
    /// deadline, if it has one.
    async fn claim_instance(&self, request: Request<ClaimInstanceRequest>) -> Result<Response<ClaimInstanceResponse>, Status> {
        let caller = self.auth.authenticate(request.metadata().get("authorization").map(|v| v.as_bytes()))?;
        let deadline = request.extensions().get::<CallDeadline>().copied();
        let mut claim = request.into_inner();
        if let Some(CallDeadline(at)) = deadline {
            bound_wait(&mut claim, at.saturating_duration_since(std::time::Instant::now()));
        }
        let span = tracing::debug_span!("rpc", method = "claim_instance", organization = %caller.organization_id);
        self.service.claim_instance(&caller, claim).instrument(span).await.map(Response::new).map_err(|e: Error| e.into())
    }
}
/// `prebuildd.v1.PrebuildSourceService` and `prebuildd.v1.CatalogService`
/// over gRPC (one adapter: both only read).
#[derive(Debug, Clone)]
pub struct GrpcExtensionService {
    service: Arc<Service>,
    auth: Arc<Authenticator>,
}

impl GrpcExtensionService {
    pub fn new(service: Arc<Service>, auth: Arc<Authenticator>) -> Self {
        GrpcExtensionService { service, auth }
    }
}

grpc_service!(PrebuildSourceService, GrpcExtensionService {
    list_prebuild_sources(ListPrebuildSourcesRequest) -> ListPrebuildSourcesResponse;
});

grpc_service!(CatalogService, GrpcExtensionService {
    list_projects(ListProjectsRequest) -> ListProjectsResponse;
    list_environment_classes(ListEnvironmentClassesRequest) -> ListEnvironmentClassesResponse;
    list_runners(ListRunnersRequest) -> ListRunnersResponse;
});
