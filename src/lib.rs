//! prebuildd: a self-hosted, wire-compatible implementation of the
//! `gitpod.v1.PrebuildService` API.
//!
//! Layers, top to bottom: `transport` (gRPC, HTTP) decodes and encodes;
//! `service` holds the API's rules; `store` persists; the configured world
//! lives in `catalog`. [`start`] wires them together for the binary and for
//! tests.

pub mod agent;
pub mod auth;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
pub mod fuzzing;
pub mod git;
pub mod logs;
pub mod metrics;
pub mod proto;
pub mod reconciler;
pub mod runner;
pub mod service;
pub mod store;
pub mod sync;
pub mod tasks;
pub mod tokens;
pub mod transport;
pub mod triggers;
pub mod validate;

use crate::auth::Authenticator;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::logs::Logs;
use crate::reconciler::replicas::Replicas;
use crate::reconciler::{PassReport, Reconciler};
use crate::runner::{Runners, ServerFiles};
use crate::service::{Service, ServiceParts};
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;
use crate::tasks::{TaskFailed, Tasks};
use crate::tokens::TokenKey;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A running server: its bound address and a way to stop it.
pub struct Server {
    pub addr: SocketAddr,
    pub service: Arc<Service>,
    auth: Arc<Authenticator>,
    shutdown: CancellationToken,
    /// The listener, the reconciler, leadership among replicas and the log
    /// copier (the last two on PostgreSQL only).
    tasks: Tasks,
    reconciler: Arc<Reconciler>,
}

impl Server {
    /// Stops accepting, lets in-flight requests finish, stops the
    /// reconciler, and waits. An error says which task had failed.
    pub async fn shutdown(self) -> Result<(), TaskFailed> {
        self.shutdown.cancel();
        self.tasks.wait().await
    }

    /// Waits until the server stops: after a shutdown trigger, or because
    /// one of its tasks failed (then the error says which, and why).
    pub async fn wait(self) -> Result<(), TaskFailed> {
        self.tasks.wait().await
    }

    /// Runs one whole reconciler pass now, after any pass under way, and
    /// returns what it did: lets a test see that a pass has happened
    /// instead of sleeping and hoping one did. On a replica that does not
    /// lead, the pass takes no steps (as the leader's would not).
    pub async fn reconcile_once(&self) -> PassReport {
        self.reconciler.pass().await
    }

    /// A handle that can trigger shutdown from elsewhere (signal handlers).
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        ShutdownTrigger(self.shutdown.clone())
    }

    /// A handle that applies reloaded configurations (SIGHUP).
    pub fn reloader(&self) -> Reloader {
        Reloader { service: self.service.clone(), auth: self.auth.clone() }
    }
}

/// Applies a reloaded configuration to a running server.
#[derive(Clone)]
pub struct Reloader {
    service: Arc<Service>,
    auth: Arc<Authenticator>,
}

impl Reloader {
    /// Swaps in the catalog (projects, classes, runners) and API keys. The
    /// reconciler then deletes warm pools the new configuration no longer
    /// allows. Listen address and storage (data dir, postgres_url, token_secret)
    /// changes need a restart. New runners are made here, which does file
    /// work: call it on a blocking thread.
    pub fn apply(&self, config: &Config) {
        self.auth.replace(&config.api_keys);
        self.service.set_catalog(Arc::new(config.catalog.clone()));
    }
}

/// Triggers a graceful shutdown of a [`Server`].
#[derive(Clone)]
pub struct ShutdownTrigger(CancellationToken);

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.0.cancel();
    }
}

/// The configured store: PostgreSQL when `[storage] postgres_url` is set
/// (returned a second time as itself, for what replicas share through it),
/// else SQLite in the data dir. Errors name the database (a URL without its
/// password).
async fn open_store(config: &Config) -> Result<(Arc<dyn Store>, Option<PostgresStore>), Box<dyn std::error::Error + Send + Sync>> {
    match &config.postgres_url {
        Some(url) => {
            let store = PostgresStore::open(url).await?;
            tracing::info!(url = %url, "storage: PostgreSQL");
            Ok((Arc::new(store.clone()), Some(store)))
        }
        None => {
            let data_dir = config.data_dir.clone();
            Ok((Arc::new(tokio::task::spawn_blocking(move || SqliteStore::open_owned(&data_dir)).await??), None))
        }
    }
}

/// The token secret: as configured (`[storage] token_secret`); else in the
/// database on PostgreSQL, so that every replica verifies the tokens any
/// other minted; else in the data dir.
async fn token_key(config: &Config, postgres: Option<&PostgresStore>) -> Result<TokenKey, Box<dyn std::error::Error + Send + Sync>> {
    if let Some(key) = &config.token_secret {
        return Ok(key.clone());
    }
    match postgres {
        Some(store) => Ok(TokenKey::from_bytes(
            store.shared_token_secret().await.map_err(|e| format!("cannot read or create the token secret in the database: {e}"))?,
        )),
        None => Ok(TokenKey::load_or_create(&config.data_dir)
            .map_err(|e| format!("cannot read or create the token secret in {}: {e}", config.data_dir.display()))?),
    }
}

/// Opens the store, binds the listener and starts serving and reconciling
/// in the background.
pub async fn start(config: Config) -> Result<Server, Box<dyn std::error::Error + Send + Sync>> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// [`start`] with a clock of the caller's choosing (tests drive time).
pub async fn start_with_clock(config: Config, clock: Arc<dyn clock::Clock>) -> Result<Server, Box<dyn std::error::Error + Send + Sync>> {
    start_with_private_files(config, clock, Vec::new()).await
}

/// [`start_with_clock`], naming the server's files outside its data dir
/// that what runners run must never see: the configuration file (it holds
/// the API keys), when there is one. The data dir is always hidden.
pub async fn start_with_private_files(
    config: Config,
    clock: Arc<dyn clock::Clock>,
    private_files: Vec<PathBuf>,
) -> Result<Server, Box<dyn std::error::Error + Send + Sync>> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| format!("cannot create data dir {}: {e}", config.data_dir.display()))?;
    let (store, postgres) = open_store(&config).await?;
    let tokens = token_key(&config, postgres.as_ref()).await?;
    let logs = Logs::new(&config.data_dir).map_err(|e| format!("cannot create the log dir in {}: {e}", config.data_dir.display()))?;
    let logs = match &postgres {
        Some(store) => logs.shared_through(Arc::new(logs::SharedLogs::new(store.clone()))),
        None => logs,
    };
    let changes = Arc::new(Notify::new());
    let files = ServerFiles { data_dir: config.data_dir.clone(), private_files };
    // Runners sweep their roots as they are made: file work, off the runtime.
    let catalog = config.catalog.clone();
    let runners = Arc::new(tokio::task::spawn_blocking(move || Runners::new(files, &catalog)).await?);
    let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    let metrics = Arc::new(metrics::Metrics::new());
    let service = Arc::new(Service::new(ServiceParts {
        store,
        catalog: Arc::new(config.catalog.clone()),
        clock,
        tokens,
        public_url: config.public_url.clone().unwrap_or_else(|| format!("http://{addr}")),
        changes: changes.clone(),
        runners: runners.clone(),
        metrics: metrics.clone(),
        max_pending_prebuilds_per_project: config.limits.max_pending_prebuilds_per_project,
    }));
    let auth = Arc::new(Authenticator::new(&config.api_keys));

    let shutdown = CancellationToken::new();
    let grpc = transport::grpc_router(service.clone(), auth.clone(), metrics.clone(), shutdown.clone());
    let http = transport::http::router(service.clone(), auth.clone(), logs.clone(), metrics.clone());
    let (grpc, http) = if config.bench_baseline { transport::baseline::add_routes(grpc, http) } else { (grpc, http) };
    let mut tasks = Tasks::new(shutdown.clone());
    tasks.spawn(
        "listener",
        transport::serve(listener, grpc, http, config.header_read_timeout, config.limits, shutdown.clone().cancelled_owned()),
    );
    // Every replica copies its log files, also one that no longer leads (a
    // pass may have written after its last copy).
    if let Some(store) = &postgres {
        tasks.spawn("log copier", logs::copy_to_database(logs.clone(), store.clone(), shutdown.clone().cancelled_owned()));
    }
    let reconciler = Reconciler::new(service.clone(), runners.clone(), logs, changes, config.reconcile_interval, config.retention);
    let reconciler = if config.reconcile {
        let reconciler = match postgres {
            // Replicas may share the database: one leads the reconciler.
            Some(store) => {
                let (replicas, task) = Replicas::on_postgres(store, metrics, shutdown.clone().cancelled_owned());
                tasks.spawn("leadership", task);
                runners.follow_leadership(replicas.leadership());
                Arc::new(reconciler.with_replicas(replicas))
            }
            None => {
                metrics.set_leader(true);
                Arc::new(reconciler)
            }
        };
        tasks.spawn("reconciler", reconciler.clone().run(shutdown.clone().cancelled_owned()));
        reconciler
    } else {
        tracing::warn!("the reconciler is disabled ([reconciler] enabled = false): nothing will run");
        Arc::new(reconciler)
    };
    tracing::info!(%addr, "prebuildd listening (gRPC, gRPC-Web, Connect and HTTP on one port)");
    Ok(Server { addr, service, auth, shutdown, tasks, reconciler })
}
