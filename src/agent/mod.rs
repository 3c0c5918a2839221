//! `prebuildd runner`: a runner on its own machine. It opens no port: it
//! connects out to the server's `prebuildd.v1.RunnerService`, reconnects
//! with backoff, and does what the server sends with a local engine (the
//! simulated, local or docker runner, exactly as the server would run it).
//!
//! The server is the source of truth; this side holds only what its engine
//! holds. After a restart the engine knows what it keeps across restarts
//! (the docker engine adopts its containers by label; the others keep
//! snapshots), the hello reports it, and the server sends the rest again.

pub mod config;
mod connection;
mod tail;

pub use config::AgentConfig;

use crate::catalog::Catalog;
use crate::error::Error;
use crate::logs::Logs;
use crate::runner::{JobState, PoolObservation, PoolTarget, Runner, RunnerEvents, Runners, ServerFiles};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A connection that lasted this long resets the backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);

/// Why the runner stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The server refused the runner's credentials; retrying cannot help.
    #[error("the server refused this runner: {0}")]
    Refused(String),
    /// The engine or the data dir cannot be set up.
    #[error("{0}")]
    Setup(String),
}

/// What this runner holds besides its engine: the jobs and pools the server
/// gave it, and how far each job's log has been sent.
pub(crate) struct Agent {
    config: AgentConfig,
    engine: Arc<dyn Runner>,
    /// The engine's events: a job or pool changed, report it now.
    events: RunnerEvents,
    logs: Logs,
    state: Mutex<AgentState>,
    /// Random per process start: tells the server a reconnect of this
    /// process from another process under the same member name.
    process_id: String,
}

#[derive(Default)]
struct AgentState {
    jobs: HashMap<String, Job>,
    pools: HashMap<String, Pool>,
    /// Pools whose instances are being removed.
    removing_pools: HashSet<String>,
}

struct Job {
    /// The state last sent to the server (sent again on a reconnect).
    reported: Option<JobState>,
    /// How much of the local log file has been sent.
    log_offset: u64,
    /// Being removed: no more reports.
    removing: bool,
}

struct Pool {
    target: PoolTarget,
    reported: Option<PoolObservation>,
}

use crate::sync::lock;

impl Agent {
    fn new(config: AgentConfig) -> Result<Agent, AgentError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| AgentError::Setup(format!("cannot create the data dir {}: {e}", config.data_dir.display())))?;
        let logs = Logs::new(&config.data_dir)
            .map_err(|e| AgentError::Setup(format!("cannot create the log dir in {}: {e}", config.data_dir.display())))?;
        let mut catalog = Catalog::default();
        catalog.runners.insert(config.runner_id.clone(), config.engine.clone());
        // The engine is built as the server builds its runners; what it runs
        // never sees this runner's data dir or its config file (the token).
        let files = ServerFiles {
            data_dir: config.data_dir.clone(),
            private_files: if config.path.as_os_str().is_empty() { Vec::new() } else { vec![config.path.clone()] },
        };
        let runners = Runners::new(files, &catalog);
        let engine =
            runners.get(&config.runner_id).ok_or_else(|| AgentError::Setup("cannot start the engine; see the log above".into()))?;
        let events = runners.events().clone();
        let process_id = uuid::Uuid::new_v4().to_string();
        Ok(Agent { config, engine, events, logs, state: Mutex::new(AgentState::default()), process_id })
    }
}

/// Runs the runner until `shutdown` resolves, or until the server refuses
/// its credentials.
pub async fn run(config: AgentConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<(), AgentError> {
    // The engine sweeps its root as it is made: file work, off the runtime.
    let agent = tokio::task::spawn_blocking(move || Agent::new(config))
        .await
        .map_err(|e| AgentError::Setup(format!("cannot start the engine: {e}")))??;
    let agent = Arc::new(agent);
    tracing::info!(server = %agent.config.server, runner = %agent.config.runner_id, member = %agent.config.member, "runner starting");
    let work = async {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = Instant::now();
            match connection::attach(&agent).await {
                Ok(()) => tracing::warn!("the server ended the connection; reconnecting"),
                Err(status) if matches!(status.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied) => {
                    let code = if status.code() == tonic::Code::Unauthenticated { "unauthenticated" } else { "permission_denied" };
                    return Err(AgentError::Refused(format!("{code}: {}", status.message())));
                }
                // Another process is connected under this member name: this
                // one waits (it takes over should that one go away), saying
                // why at every try.
                Err(status) if status.code() == tonic::Code::AlreadyExists => {
                    tracing::error!(member = %agent.config.member, message = status.message(), "the server refused this member; retrying");
                    backoff = MAX_BACKOFF;
                }
                Err(status) => tracing::warn!(code = ?status.code(), message = status.message(), "not connected to the server; retrying"),
            }
            if started.elapsed() >= STABLE_CONNECTION {
                backoff = FIRST_BACKOFF;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    };
    tokio::select! {
        result = work => result,
        _ = shutdown => {
            tracing::info!("runner stopping");
            Ok(())
        }
    }
}

impl From<Error> for AgentError {
    fn from(error: Error) -> Self {
        AgentError::Setup(error.to_string())
    }
}
