//! The benchmark's outside baseline: plain servers of the same stack, each
//! in its own process, answering GetPrebuild with a canned response of the
//! real one's size. A bare tonic server over h2c (gRPC), and a bare axum
//! server over HTTP/1.1 (Connect JSON). prebuildd's figures are also given
//! as ratios to these, so the cost of prebuildd's own listener (the
//! protocol split, the middleware, auth) is measured, not cancelled out.
//!
//! `prebuildd bench` starts them as `prebuildd bench-plain-server`.

use crate::proto::gitpod::v1::prebuild_service_server::{PrebuildService, PrebuildServiceServer};
use crate::proto::gitpod::v1::*;
use bytes::Bytes;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use tonic::{Request, Response, Status};

/// Which plain server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlainProtocol {
    /// tonic, h2c: the canned GetPrebuildResponse.
    Grpc,
    /// axum on hyper, HTTP/1.1: the canned JSON body.
    Json,
}

/// The tonic service: GetPrebuild answers with the canned message; nothing
/// else is served.
struct Canned {
    response: GetPrebuildResponse,
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("the plain server answers GetPrebuild only"))
}

#[tonic::async_trait]
impl PrebuildService for Canned {
    async fn get_prebuild(&self, _: Request<GetPrebuildRequest>) -> Result<Response<GetPrebuildResponse>, Status> {
        Ok(Response::new(self.response.clone()))
    }
    async fn create_prebuild(&self, _: Request<CreatePrebuildRequest>) -> Result<Response<CreatePrebuildResponse>, Status> {
        unimplemented()
    }
    async fn list_prebuilds(&self, _: Request<ListPrebuildsRequest>) -> Result<Response<ListPrebuildsResponse>, Status> {
        unimplemented()
    }
    async fn cancel_prebuild(&self, _: Request<CancelPrebuildRequest>) -> Result<Response<CancelPrebuildResponse>, Status> {
        unimplemented()
    }
    async fn delete_prebuild(&self, _: Request<DeletePrebuildRequest>) -> Result<Response<DeletePrebuildResponse>, Status> {
        unimplemented()
    }
    async fn create_prebuild_logs_token(
        &self,
        _: Request<CreatePrebuildLogsTokenRequest>,
    ) -> Result<Response<CreatePrebuildLogsTokenResponse>, Status> {
        unimplemented()
    }
    async fn create_warm_pool(&self, _: Request<CreateWarmPoolRequest>) -> Result<Response<CreateWarmPoolResponse>, Status> {
        unimplemented()
    }
    async fn get_warm_pool(&self, _: Request<GetWarmPoolRequest>) -> Result<Response<GetWarmPoolResponse>, Status> {
        unimplemented()
    }
    async fn list_warm_pools(&self, _: Request<ListWarmPoolsRequest>) -> Result<Response<ListWarmPoolsResponse>, Status> {
        unimplemented()
    }
    async fn update_warm_pool(&self, _: Request<UpdateWarmPoolRequest>) -> Result<Response<UpdateWarmPoolResponse>, Status> {
        unimplemented()
    }
    async fn delete_warm_pool(&self, _: Request<DeleteWarmPoolRequest>) -> Result<Response<DeleteWarmPoolResponse>, Status> {
        unimplemented()
    }
}

/// Serves one plain server until the process is killed. `response` is the
/// encoded GetPrebuildResponse (gRPC) or the JSON body (Connect).
pub async fn serve(protocol: PlainProtocol, listen: SocketAddr, response: Bytes) -> Result<(), String> {
    match protocol {
        PlainProtocol::Grpc => {
            let response = <GetPrebuildResponse as prost::Message>::decode(response).map_err(|e| format!("the canned response: {e}"))?;
            tonic::transport::Server::builder()
                .add_service(PrebuildServiceServer::new(Canned { response }))
                .serve(listen)
                .await
                .map_err(|e| e.to_string())
        }
        PlainProtocol::Json => {
            let router = axum::Router::new().route(
                "/gitpod.v1.PrebuildService/GetPrebuild",
                axum::routing::post(move || {
                    let response = response.clone();
                    async move { ([(http::header::CONTENT_TYPE, "application/json")], response) }
                }),
            );
            let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| e.to_string())?;
            axum::serve(listener, router).await.map_err(|e| e.to_string())
        }
    }
}

/// A plain server child process; killed when dropped.
pub struct PlainServer {
    child: Child,
    pub base: String,
}

impl PlainServer {
    /// Starts `prebuildd bench-plain-server` answering with `response`
    /// (written next to the other files in `work`) and waits until it
    /// accepts connections.
    pub async fn start(work: &Path, protocol: PlainProtocol, response: &[u8]) -> Result<PlainServer, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let file = work.join(format!("plain-{protocol:?}.bin"));
        std::fs::write(&file, response).map_err(|e| e.to_string())?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let name = if protocol == PlainProtocol::Grpc { "grpc" } else { "json" };
        let child = Command::new(exe)
            .args(["bench-plain-server", "--protocol", name, "--listen", &format!("127.0.0.1:{port}"), "--response"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the plain server: {e}"))?;
        let server = PlainServer { child, base: format!("http://127.0.0.1:{port}") };
        let started = std::time::Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if started.elapsed() > std::time::Duration::from_secs(20) {
                return Err("the plain server did not come up".into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok(server)
    }
}

impl Drop for PlainServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
