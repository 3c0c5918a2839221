//! prebuildd: a self-hosted, wire-compatible implementation of the
//! `gitpod.v1.PrebuildService` API.
//!
//! Layers, top to bottom: `transport` (gRPC, HTTP) decodes and encodes;
//! `service` holds the API's rules; `store` persists; the configured world
//! lives in `catalog`. [`start`] wires them together for the binary and for
//! tests.

pub mod auth;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod error;
pub mod proto;
pub mod service;
pub mod store;
pub mod tokens;
pub mod transport;
pub mod validate;

use crate::auth::Authenticator;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::service::Service;
use crate::store::sqlite::SqliteStore;
use crate::tokens::TokenKey;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

/// A running server: its bound address and a way to stop it.
pub struct Server {
    pub addr: SocketAddr,
    pub service: Arc<Service>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    /// Stops accepting, lets in-flight requests finish, and waits.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Waits until the server stops on its own (it does not, unless shut down).
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }

    /// A handle that can trigger shutdown from elsewhere (signal handlers).
    pub fn take_shutdown_trigger(&mut self) -> Option<oneshot::Sender<()>> {
        self.shutdown.take()
    }
}

/// Opens the store, binds the listener and starts serving in the background.
pub async fn start(config: Config) -> Result<Server, Box<dyn std::error::Error + Send + Sync>> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| format!("cannot create data dir {}: {e}", config.data_dir.display()))?;
    let data_dir = config.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&data_dir)).await??;
    let tokens = TokenKey::load_or_create(&config.data_dir)
        .map_err(|e| format!("cannot read or create the token secret in {}: {e}", config.data_dir.display()))?;
    let changes = Arc::new(Notify::new());
    let service = Arc::new(Service::new(
        Arc::new(store),
        Arc::new(config.catalog.clone()),
        Arc::new(SystemClock),
        tokens,
        config.public_url.clone(),
        changes,
    ));
    let auth = Arc::new(Authenticator::new(&config.api_keys));

    let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    let grpc = transport::grpc_router(service.clone(), auth.clone());
    let http = transport::http::router(service.clone(), auth.clone());
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(transport::serve(listener, grpc, http, async move {
        let _ = shutdown_rx.await;
    }));
    tracing::info!(%addr, "prebuildd listening (gRPC, gRPC-Web, Connect and HTTP on one port)");
    Ok(Server { addr, service, shutdown: Some(shutdown_tx), task })
}
