//! `prebuildd serve` as a child process (killed whenever a test leaves it
//! behind), and a write load of concurrent gRPC clients.

use crate::common::*;
use prebuildd::proto::gitpod::v1::prebuild_service_client::PrebuildServiceClient;
use prebuildd::proto::gitpod::v1::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// How long the child may take to say where it listens and answer `/healthz`.
const STARTUP_LIMIT: Duration = Duration::from_secs(30);

/// A running `prebuildd serve`. Dropping it kills the child (SIGKILL) and
/// reaps it, on every path out of a test, panics included.
pub struct Process {
    child: Child,
    /// `127.0.0.1:PORT`, parsed from the child's log line
    /// `prebuildd listening (...) addr=127.0.0.1:PORT`.
    pub addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `prebuildd serve --config <config> --data-dir <data_dir>` and
    /// waits until it listens and `/healthz` answers 200.
    pub async fn start(config: &Path, data_dir: &Path) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_prebuildd"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data_dir)
            .env("PREBUILDD_LOG", "info")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the prebuildd binary starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::oneshot::channel::<String>();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("prebuildd listening") {
                        if let Some(addr) = line.split("addr=").nth(1).and_then(|rest| rest.split_whitespace().next()) {
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(addr.to_string());
                            }
                        }
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let mut process = Process { child, addr: String::new(), log };
        process.addr = match tokio::time::timeout(STARTUP_LIMIT, rx).await {
            Ok(Ok(addr)) => addr,
            Ok(Err(_)) => panic!("prebuildd exited before listening; its log:\n{}", process.log_text()),
            Err(_) => panic!("prebuildd did not say where it listens within {STARTUP_LIMIT:?}; its log:\n{}", process.log_text()),
        };
        process.wait_healthy().await;
        process
    }

    async fn wait_healthy(&self) {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        let started = Instant::now();
        loop {
            if let Ok(response) = http.get(format!("{}/healthz", self.base_url())).send().await {
                if response.status() == 200 {
                    return;
                }
            }
            assert!(started.elapsed() < STARTUP_LIMIT, "/healthz did not answer 200 within {STARTUP_LIMIT:?}; log:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything the child wrote to stderr so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits up to `limit` for the `count`-th line of the log that contains
    /// `needle`; panics with the log if it does not come.
    pub async fn wait_for_log(&self, needle: &str, count: usize, limit: Duration) {
        let started = Instant::now();
        while self.log.lock().unwrap().iter().filter(|line| line.contains(needle)).count() < count {
            assert!(started.elapsed() < limit, "no {count}. line with {needle:?} within {limit:?}; log:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends `signal` (SIGTERM, SIGHUP, ...) to the child.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the pid of our own, not yet reaped, child.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed: {}", self.pid(), std::io::Error::last_os_error());
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL the child");
        self.child.wait().expect("reap the child");
    }

    /// Waits up to `limit` for the child to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if started.elapsed() >= limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A gRPC client with `token` as its bearer key.
    pub async fn client(&self, token: &str) -> Client {
        let channel = endpoint(&self.base_url()).connect().await.expect("connect to the child");
        PrebuildServiceClient::with_interceptor(channel, bearer(token))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn endpoint(base_url: &str) -> Endpoint {
    Channel::from_shared(base_url.to_string()).expect("url").connect_timeout(Duration::from_secs(5))
}

/// A temp dir holding `config.toml` and the data dir `data/`.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new(config_toml: &str) -> Workspace {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("config.toml"), config_toml).expect("write config");
        Workspace { dir }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub async fn start(&self) -> Process {
        Process::start(&self.config(), &self.data_dir()).await
    }
}

/// One failed request of a load run.
#[derive(Debug, Clone)]
pub struct LoadError {
    pub code: tonic::Code,
    /// Read through `Debug`, in assertion messages.
    #[allow(dead_code)]
    pub message: String,
    /// The status was made by the client from a transport error (a refused,
    /// reset or closed connection), not sent by the server.
    pub from_transport: bool,
    /// It happened after the test had started to stop or kill the server.
    pub after_stop: bool,
    /// No answer and no error came within the worker's own per-request limit.
    pub timed_out: bool,
}

impl LoadError {
    /// "The server went away": `unavailable`, or a connection error.
    pub fn is_server_gone(&self) -> bool {
        self.code == tonic::Code::Unavailable || self.from_transport
    }
}

/// What a load run saw.
#[derive(Debug, Default, Clone)]
pub struct Outcomes {
    /// IDs whose CreatePrebuild was answered OK, in the order of the answers.
    pub acknowledged: Vec<String>,
    pub errors: Vec<LoadError>,
    /// Workers that were still running when the run was finished.
    pub hung_workers: usize,
}

/// How long a worker waits for one CreatePrebuild. Creates take
/// milliseconds; the limit is far above that even on a loaded machine, and
/// below the 20 s the tests give `finish`, so a worker always ends on its own.
const REQUEST_LIMIT: Duration = Duration::from_secs(12);

/// `workers` concurrent gRPC clients (a connection each) creating prebuilds
/// on PROJECT_BACKEND as TOKEN_A until their first error.
pub struct Load {
    stopping: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Outcomes>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(base_url: &str, workers: usize) -> Load {
        let stopping = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Outcomes::default()));
        let tasks = (0..workers)
            .map(|_| {
                let (stopping, outcomes, base_url) = (stopping.clone(), outcomes.clone(), base_url.to_string());
                tokio::spawn(async move {
                    let record_error = |status: tonic::Status, timed_out: bool| {
                        let from_transport = std::error::Error::source(&status).is_some();
                        let mut message = status.message().to_string();
                        let mut source = std::error::Error::source(&status);
                        while let Some(error) = source {
                            message.push_str(&format!(" <- {error:?}"));
                            source = error.source();
                        }
                        outcomes.lock().unwrap().errors.push(LoadError {
                            code: status.code(),
                            message,
                            from_transport,
                            after_stop: stopping.load(Ordering::SeqCst),
                            timed_out,
                        });
                    };
                    let channel = match endpoint(&base_url).connect().await {
                        Ok(channel) => channel,
                        Err(error) => return record_error(tonic::Status::from_error(Box::new(error)), false),
                    };
                    let mut client = PrebuildServiceClient::with_interceptor(channel, bearer(TOKEN_A));
                    loop {
                        let request = CreatePrebuildRequest {
                            project_id: PROJECT_BACKEND.into(),
                            environment_class_id: None,
                            spec: Some(PrebuildSpec::default()),
                        };
                        match tokio::time::timeout(REQUEST_LIMIT, client.create_prebuild(request)).await {
                            Ok(Ok(response)) => {
                                let id = response.into_inner().prebuild.expect("a prebuild in the response").id;
                                outcomes.lock().unwrap().acknowledged.push(id);
                            }
                            Ok(Err(status)) => return record_error(status, false),
                            Err(_) => return record_error(tonic::Status::deadline_exceeded("the test's limit per request"), true),
                        }
                    }
                })
            })
            .collect();
        Load { stopping, outcomes, tasks }
    }

    /// Marks the moment the test starts to stop or kill the server: errors
    /// from now on are expected.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn acknowledged_so_far(&self) -> usize {
        self.outcomes.lock().unwrap().acknowledged.len()
    }

    /// Stops every worker where it is (a create in flight may be committed
    /// without being acknowledged), and returns what they saw.
    pub async fn stop(self) -> Outcomes {
        self.stopping();
        for task in &self.tasks {
            task.abort();
        }
        self.finish(Duration::from_secs(5)).await
    }

    /// Waits up to `limit` for every worker to end, and returns what they saw.
    pub async fn finish(self, limit: Duration) -> Outcomes {
        let deadline = tokio::time::Instant::now() + limit;
        let mut hung = 0;
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
                hung += 1;
            }
        }
        let mut outcomes = self.outcomes.lock().unwrap().clone();
        outcomes.hung_workers = hung;
        outcomes
    }
}

/// Fetches every ID with GetPrebuild (16 at a time); returns the ones that
/// did not come back, with the reason.
pub async fn missing_prebuilds(client: &Client, ids: &[String]) -> Vec<(String, String)> {
    use futures::StreamExt;
    futures::stream::iter(ids.iter().cloned())
        .map(|id| {
            let mut client = client.clone();
            async move {
                match client.get_prebuild(GetPrebuildRequest { prebuild_id: id.clone() }).await {
                    Ok(response) => match response.into_inner().prebuild {
                        Some(prebuild) if prebuild.id == id => None,
                        other => Some((id, format!("wrong answer: {other:?}"))),
                    },
                    Err(status) => Some((id, format!("{:?}: {}", status.code(), status.message()))),
                }
            }
        })
        .buffer_unordered(16)
        .filter_map(|missing| async move { missing })
        .collect()
        .await
}

/// `PRAGMA integrity_check` of a SQLite file, opened read-only.
pub fn integrity_check(db: &Path) -> String {
    let connection = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open the database");
    let rows: Vec<String> = connection
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |row| row.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.join("\n")
}
