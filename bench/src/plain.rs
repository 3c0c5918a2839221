//! The benchmark's outside baseline: plain servers of the same stack, each
//! in its own process, answering GetPrebuild with a canned response of the
//! real one's size. A bare tonic server over h2c (gRPC), and a bare axum
//! server over HTTP/1.1 (Connect JSON). prebuildd's figures are also given
//! as ratios to these, so the cost of prebuildd's own listener (the
//! protocol split, the middleware, auth) is measured, not cancelled out.
//!
//! The benchmark starts them as `prebuildd-bench plain-server`.

use bytes::Bytes;
use prebuildd::proto::gitpod::v1::{GetPrebuildRequest, GetPrebuildResponse};
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

/// GetPrebuild as tonic serves a unary method: its codec decodes the
/// request and encodes the canned response. The server routes only this
/// method; any other path gets the router's 404.
#[derive(Clone)]
struct CannedGet(std::sync::Arc<GetPrebuildResponse>);

impl tonic::server::UnaryService<GetPrebuildRequest> for CannedGet {
    type Response = GetPrebuildResponse;
    type Future = std::future::Ready<Result<Response<GetPrebuildResponse>, Status>>;

    fn call(&mut self, _: Request<GetPrebuildRequest>) -> Self::Future {
        std::future::ready(Ok(Response::new(GetPrebuildResponse::clone(&self.0))))
    }
}

/// Serves one plain server until the process is killed. `response` is the
/// encoded GetPrebuildResponse (gRPC) or the JSON body (Connect).
pub async fn serve(protocol: PlainProtocol, listen: SocketAddr, response: Bytes) -> Result<(), String> {
    match protocol {
        PlainProtocol::Grpc => {
            let response = <GetPrebuildResponse as prost::Message>::decode(response).map_err(|e| format!("the canned response: {e}"))?;
            let canned = CannedGet(std::sync::Arc::new(response));
            let router = axum::Router::new().route(
                "/gitpod.v1.PrebuildService/GetPrebuild",
                axum::routing::post(move |request: http::Request<axum::body::Body>| {
                    let canned = canned.clone();
                    async move { tonic::server::Grpc::new(tonic_prost::ProstCodec::default()).unary(canned, request).await }
                }),
            );
            tonic::transport::Server::builder()
                .add_routes(tonic::service::Routes::from(router))
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
    /// Starts `prebuildd-bench plain-server` answering with `response`
    /// (written next to the other files in `work`) and waits until it
    /// accepts connections.
    pub async fn start(work: &Path, protocol: PlainProtocol, response: &[u8]) -> Result<PlainServer, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let file = work.join(format!("plain-{protocol:?}.bin"));
        std::fs::write(&file, response).map_err(|e| e.to_string())?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let name = if protocol == PlainProtocol::Grpc { "grpc" } else { "json" };
        let child = Command::new(exe)
            .args(["plain-server", "--protocol", name, "--listen", &format!("127.0.0.1:{port}"), "--response"])
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

#[cfg(test)]
mod tests {
    use super::*;
    use prebuildd::proto::gitpod::v1::prebuild_service_client::PrebuildServiceClient;
    use prebuildd::proto::gitpod::v1::Prebuild;

    fn free_address() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
    }

    async fn wait_for(address: SocketAddr) {
        while tokio::net::TcpStream::connect(address).await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn the_plain_grpc_server_answers_get_prebuild_with_the_canned_message_and_nothing_else() {
        let canned = GetPrebuildResponse { prebuild: Some(Prebuild { id: "canned".into(), ..Default::default() }) };
        let address = free_address();
        tokio::spawn(serve(PlainProtocol::Grpc, address, prost::Message::encode_to_vec(&canned).into()));
        wait_for(address).await;
        let mut client = PrebuildServiceClient::connect(format!("http://{address}")).await.unwrap();
        let answer = client.get_prebuild(GetPrebuildRequest { prebuild_id: "any".into() }).await.unwrap().into_inner();
        assert_eq!(answer, canned);
        let other = client.list_prebuilds(prebuildd::proto::gitpod::v1::ListPrebuildsRequest::default()).await;
        assert!(other.is_err(), "only GetPrebuild is served");
    }

    #[tokio::test]
    async fn the_plain_json_server_answers_get_prebuild_with_the_canned_body() {
        let address = free_address();
        tokio::spawn(serve(PlainProtocol::Json, address, Bytes::from_static(br#"{"prebuild":{"id":"canned"}}"#)));
        wait_for(address).await;
        let response =
            reqwest::Client::new().post(format!("http://{address}/gitpod.v1.PrebuildService/GetPrebuild")).body("{}").send().await.unwrap();
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.text().await.unwrap(), r#"{"prebuild":{"id":"canned"}}"#);
    }
}
