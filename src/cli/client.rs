//! The connection to a server: the generated tonic clients over one h2c
//! channel, every call carrying the bearer key, and the error every command
//! reports, named by its Connect code.

use super::{Format, Global};
use prebuildd::proto::gitpod::v1::prebuild_service_client::PrebuildServiceClient;
use prebuildd::proto::gitpod::v1::{GetPrebuildRequest, Prebuild};
use prebuildd::proto::prebuildd::v1::catalog_service_client::CatalogServiceClient;
use prebuildd::proto::prebuildd::v1::prebuild_source_service_client::PrebuildSourceServiceClient;
use prebuildd::proto::prebuildd::v1::warm_pool_instance_service_client::WarmPoolInstanceServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A failed command: the Connect code name and the message, printed as
/// `not_found: prebuild ... not found`.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    pub code: &'static str,
    pub message: String,
}

impl Error {
    pub fn new(code: &'static str, message: impl Into<String>) -> Error {
        Error { code, message: message.into() }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Error {
        Error::new(connect_name(status.code()), status.message())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// The Connect protocol's name of a gRPC code, the names the server's
/// Connect errors and its README use.
pub fn connect_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        Cancelled => "canceled",
        Unknown => "unknown",
        InvalidArgument => "invalid_argument",
        DeadlineExceeded => "deadline_exceeded",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        FailedPrecondition => "failed_precondition",
        Aborted => "aborted",
        OutOfRange => "out_of_range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        Unauthenticated => "unauthenticated",
    }
}

/// Adds `authorization: Bearer <key>` to every call (nothing without a key:
/// the server then answers `unauthenticated`).
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Everything a command needs to talk to the server.
pub struct Client {
    pub prebuilds: PrebuildServiceClient<InterceptedService<Channel, Bearer>>,
    pub instances: WarmPoolInstanceServiceClient<InterceptedService<Channel, Bearer>>,
    pub sources: PrebuildSourceServiceClient<InterceptedService<Channel, Bearer>>,
    pub catalog: CatalogServiceClient<InterceptedService<Channel, Bearer>>,
    /// The server's base URL without a trailing slash (the logs endpoint
    /// is under it).
    pub server: String,
    pub format: Format,
}

impl Client {
    /// Connects at once, so an unreachable server is one clear error.
    pub async fn connect(global: &Global) -> Result<Client> {
        let server = global.server.trim_end_matches('/').to_string();
        let endpoint = Channel::from_shared(server.clone())
            .map_err(|e| Error::new("invalid_argument", format!("--server {server:?}: {e}")))?
            .connect_timeout(std::time::Duration::from_secs(10));
        let channel =
            endpoint.connect().await.map_err(|e| Error::new("unavailable", format!("cannot connect to {server}: {}", source_chain(&e))))?;
        let bearer = match &global.api_key {
            Some(key) => {
                Some(format!("Bearer {key}").parse().map_err(|_| Error::new("invalid_argument", "--api-key: must be printable ASCII"))?)
            }
            None => None,
        };
        Ok(Client {
            prebuilds: PrebuildServiceClient::with_interceptor(channel.clone(), Bearer(bearer.clone())),
            instances: WarmPoolInstanceServiceClient::with_interceptor(channel.clone(), Bearer(bearer.clone())),
            sources: PrebuildSourceServiceClient::with_interceptor(channel.clone(), Bearer(bearer.clone())),
            catalog: CatalogServiceClient::with_interceptor(channel, Bearer(bearer)),
            server,
            format: global.output,
        })
    }
}

/// An error with its causes (`transport error: connection refused`).
fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Wrappers often repeat their cause's text; say it once.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Every page of a list call, in order: `page(pagination)` fetches one and
/// returns its items and the next page token (empty on the last page).
pub async fn all_pages<T, F, Fut>(mut page: F) -> Result<Vec<T>>
where
    F: FnMut(prebuildd::proto::gitpod::v1::PaginationRequest) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<(Vec<T>, String), tonic::Status>>,
{
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let (items, next) = page(prebuildd::proto::gitpod::v1::PaginationRequest { page_size: 100, token }).await?;
        all.extend(items);
        if next.is_empty() {
            return Ok(all);
        }
        token = next;
    }
}

/// GetPrebuild: the prebuild, or the server's error.
pub async fn get(client: &mut Client, id: &str) -> Result<Prebuild> {
    required(client.prebuilds.get_prebuild(GetPrebuildRequest { prebuild_id: id.into() }).await?.into_inner().prebuild)
}

/// A response without its resource is the server's fault, not the user's.
pub fn required<T>(value: Option<T>) -> Result<T> {
    value.ok_or_else(|| Error::new("internal", "the server's response has no resource"))
}
