//! Starts a real prebuildd on an ephemeral port with a real store (a SQLite
//! file, or a database on a real PostgreSQL server), and builds clients for
//! it. Shared by every integration test.

#![allow(dead_code)]

pub mod child;
pub mod network;
pub mod postgres;
pub mod repos;
pub mod runner_process;

use prebuildd::clock::OffsetClock;
use prebuildd::config::{Config, Overrides};
use prebuildd::proto::gitpod::v1::prebuild_service_client::PrebuildServiceClient;
use prebuildd::store::postgres::PostgresUrl;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub const ORG_A: &str = "aaaaaaaa-0000-4000-8000-000000000001";
pub const ORG_B: &str = "bbbbbbbb-0000-4000-8000-000000000002";
pub const TOKEN_A: &str = "token-org-a-alice";
pub const TOKEN_A2: &str = "token-org-a-bob";
pub const TOKEN_B: &str = "token-org-b-carol";
pub const ALICE: &str = "a11ce000-0000-4000-8000-0000000000a1";
pub const BOB: &str = "b0b00000-0000-4000-8000-0000000000b0";
pub const CAROL: &str = "ca201000-0000-4000-8000-0000000000c0";
pub const EXECUTOR: &str = "e7ec0000-0000-4000-8000-0000000000e0";
pub const RUNNER: &str = "7a000000-0000-4000-8000-000000000001";
pub const CLASS_SMALL: &str = "c1a55000-0000-4000-8000-000000000001";
pub const CLASS_LARGE: &str = "c1a55000-0000-4000-8000-000000000002";
pub const CLASS_UNLISTED: &str = "c1a55000-0000-4000-8000-000000000003";
/// Org A, prebuilds on small and large, default small, executor configured.
pub const PROJECT_BACKEND: &str = "9e000000-0000-4000-8000-000000000001";
/// Org A, prebuilds on small, no executor, timeout 1800s.
pub const PROJECT_FRONTEND: &str = "9e000000-0000-4000-8000-000000000002";
/// Org A, prebuilds disabled.
pub const PROJECT_DISABLED: &str = "9e000000-0000-4000-8000-000000000003";
/// Org B.
pub const PROJECT_B: &str = "9e000000-0000-4000-8000-000000000004";

/// The start of a configuration of its own for a test's server: an
/// ephemeral port, a fast reconciler, organization A and its API key.
pub fn org_a_header() -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[reconciler]
interval = "50ms"
[[organizations]]
id = "{ORG_A}"
name = "Org A"
[[api_keys]]
token = "{TOKEN_A}"
organization_id = "{ORG_A}"
subject_id = "{ALICE}"
"#
    )
}

/// The configuration integration tests run with: two organizations, three
/// keys, one runner, three classes and four projects.
pub fn test_config_toml() -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "http://prebuildd.test"

# These tests check the API's own rules: nothing runs.
[reconciler]
enabled = false

# The load tests queue far more than the default cap on PENDING prebuilds;
# tests/api/limits.rs tests the cap.
[limits]
max_pending_prebuilds_per_project = 0

[[organizations]]
id = "{ORG_A}"
name = "Org A"

[[organizations]]
id = "{ORG_B}"
name = "Org B"

[[api_keys]]
token = "{TOKEN_A}"
organization_id = "{ORG_A}"
subject_id = "{ALICE}"
principal = "PRINCIPAL_USER"

[[api_keys]]
token = "{TOKEN_A2}"
organization_id = "{ORG_A}"
subject_id = "{BOB}"
principal = "PRINCIPAL_SERVICE_ACCOUNT"

[[api_keys]]
token = "{TOKEN_B}"
organization_id = "{ORG_B}"
subject_id = "{CAROL}"

[[runners]]
id = "{RUNNER}"
kind = "simulated"
step_duration = "1h"

[[environment_classes]]
id = "{CLASS_SMALL}"
runner_id = "{RUNNER}"
name = "small"

[[environment_classes]]
id = "{CLASS_LARGE}"
runner_id = "{RUNNER}"
name = "large"

[[environment_classes]]
id = "{CLASS_UNLISTED}"
runner_id = "{RUNNER}"
name = "gpu"

[[projects]]
id = "{PROJECT_BACKEND}"
organization_id = "{ORG_A}"
name = "backend"
repository = "sim://hang"
default_environment_class_id = "{CLASS_SMALL}"
[projects.prebuilds]
enabled = true
environment_class_ids = ["{CLASS_SMALL}", "{CLASS_LARGE}"]
executor = {{ id = "{EXECUTOR}", principal = "PRINCIPAL_SERVICE_ACCOUNT" }}

[[projects]]
id = "{PROJECT_FRONTEND}"
organization_id = "{ORG_A}"
name = "frontend"
repository = "sim://hang"
default_environment_class_id = "{CLASS_SMALL}"
[projects.prebuilds]
enabled = true
environment_class_ids = ["{CLASS_SMALL}"]
timeout = "1800s"

[[projects]]
id = "{PROJECT_DISABLED}"
organization_id = "{ORG_A}"
name = "disabled"
repository = "sim://hang"
default_environment_class_id = "{CLASS_SMALL}"
[projects.prebuilds]
enabled = false

[[projects]]
id = "{PROJECT_B}"
organization_id = "{ORG_B}"
name = "other"
repository = "sim://hang"
default_environment_class_id = "{CLASS_SMALL}"
[projects.prebuilds]
enabled = true
environment_class_ids = ["{CLASS_SMALL}"]
"#
    )
}

/// Where a test server keeps its prebuilds and warm pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in the server's data dir (the default).
    Sqlite,
    /// A fresh database on the test process's PostgreSQL server
    /// (tests/common/postgres.rs).
    Postgres,
}

impl Backend {
    /// `PREBUILDD_TEST_STORE=postgres` runs every [`TestServer::start`] on
    /// PostgreSQL; anything else (or nothing) on SQLite.
    pub fn from_env() -> Backend {
        match std::env::var("PREBUILDD_TEST_STORE").as_deref() {
            Ok("postgres") => Backend::Postgres,
            _ => Backend::Sqlite,
        }
    }
}

/// A running server with its own data dir, removed on drop.
pub struct TestServer {
    server: Option<prebuildd::Server>,
    pub addr: SocketAddr,
    pub config_toml: String,
    /// The server's clock: real time plus whatever a test adds.
    pub clock: Arc<OffsetClock>,
    data_dir: tempfile::TempDir,
    /// The server's PostgreSQL database, when it runs on one.
    postgres_url: Option<String>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(test_config_toml()).await
    }

    pub async fn start_with(config_toml: String) -> TestServer {
        Self::start_with_store(config_toml, Backend::from_env()).await
    }

    /// Starts on the given store; on PostgreSQL, in a database of its own.
    pub async fn start_with_store(config_toml: String, backend: Backend) -> TestServer {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let clock = Arc::new(OffsetClock::default());
        let postgres_url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(postgres::fresh_database().await),
        };
        let server = launch(&config_toml, data_dir.path(), postgres_url.as_deref(), clock.clone()).await;
        TestServer { addr: server.addr, server: Some(server), config_toml, clock, data_dir, postgres_url }
    }

    /// Another server on this one's PostgreSQL database, as a second
    /// replica would run: the same configuration, its own data dir and
    /// clock.
    pub async fn start_replica(&self) -> TestServer {
        self.start_replica_with(self.config_toml.clone()).await
    }

    /// [`Self::start_replica`] with a configuration of its own.
    pub async fn start_replica_with(&self, config_toml: String) -> TestServer {
        let postgres_url = Some(self.postgres_url.clone().expect("replicas share a PostgreSQL database"));
        let data_dir = tempfile::tempdir().expect("temp dir");
        let clock = Arc::new(OffsetClock::default());
        let server = launch(&config_toml, data_dir.path(), postgres_url.as_deref(), clock.clone()).await;
        TestServer { addr: server.addr, server: Some(server), config_toml, clock, data_dir, postgres_url }
    }

    /// Stops the server gracefully (it can be started again with
    /// [`Self::restart`]).
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("the server stops cleanly");
        }
    }

    /// The value of a gauge or counter at `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.base_url())).await.expect("GET /metrics").text().await.expect("metrics text");
        text.lines()
            .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .find_map(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
    }

    pub fn backend(&self) -> Backend {
        if self.postgres_url.is_some() {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    /// Applies a new configuration as SIGHUP would.
    pub fn reload(&mut self, config_toml: String) {
        let config = parse_config(&config_toml, self.data_dir.path(), self.postgres_url.as_deref());
        self.server.as_ref().expect("running").reloader().apply(&config);
        self.config_toml = config_toml;
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The database the server stores in, when it is on PostgreSQL.
    pub fn postgres_url(&self) -> Option<&str> {
        self.postgres_url.as_deref()
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server gracefully and starts a new one on the same data dir.
    pub async fn restart(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("the server stops cleanly");
        }
        let server = launch(&self.config_toml, self.data_dir.path(), self.postgres_url.as_deref(), self.clock.clone()).await;
        self.addr = server.addr;
        self.server = Some(server);
    }

    pub fn service(&self) -> &prebuildd::service::Service {
        &self.server.as_ref().expect("running").service
    }

    /// One whole reconciler pass, after the one under way: what a test
    /// awaits before asserting that something did *not* happen.
    pub async fn reconcile_once(&self) -> prebuildd::reconciler::PassReport {
        self.server.as_ref().expect("running").reconcile_once().await
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.base_url()).expect("url").connect().await.expect("connect")
    }

    /// A gRPC client that sends `token` as its bearer key (or none).
    pub async fn client(&self, token: Option<&str>) -> Client {
        PrebuildServiceClient::with_interceptor(self.channel().await, Bearer(token.map(|t| format!("Bearer {t}").parse().expect("ascii"))))
    }
}

fn parse_config(config_toml: &str, data_dir: &Path, postgres_url: Option<&str>) -> Config {
    let overrides = Overrides { listen: None, data_dir: Some(PathBuf::from(data_dir)) };
    let mut config = Config::parse(config_toml, &overrides).expect("test config is valid");
    if let Some(url) = postgres_url {
        config.postgres_url = Some(PostgresUrl::parse(url).expect("a valid test database URL"));
    }
    config
}

async fn launch(config_toml: &str, data_dir: &Path, postgres_url: Option<&str>, clock: Arc<OffsetClock>) -> prebuildd::Server {
    let config = parse_config(config_toml, data_dir, postgres_url);
    prebuildd::start_with_clock(config, clock).await.expect("server starts")
}

/// The same test bodies on PostgreSQL: a test module compiled a second time
/// inside a module whose `common` is this crate's with [`TestServer`]
/// replaced by `on_postgres::TestServer` (see tests/api/postgres.rs) starts
/// every server on a fresh PostgreSQL database, unchanged.
pub mod on_postgres {
    use super::{test_config_toml, Backend};

    /// A [`super::TestServer`] started on PostgreSQL; it is one in every
    /// other respect (it dereferences to it).
    pub struct TestServer(super::TestServer);

    impl TestServer {
        pub async fn start() -> TestServer {
            Self::start_with(test_config_toml()).await
        }

        pub async fn start_with(config_toml: String) -> TestServer {
            TestServer(super::TestServer::start_with_store(config_toml, Backend::Postgres).await)
        }

        /// The server itself, to keep beside its replicas.
        pub fn into_inner(self) -> super::TestServer {
            self.0
        }
    }

    impl std::ops::Deref for TestServer {
        type Target = super::TestServer;
        fn deref(&self) -> &super::TestServer {
            &self.0
        }
    }

    impl std::ops::DerefMut for TestServer {
        fn deref_mut(&mut self) -> &mut super::TestServer {
            &mut self.0
        }
    }
}

pub type Client = PrebuildServiceClient<InterceptedService<Channel, Bearer>>;

/// An interceptor adding `authorization: Bearer <token>`.
pub fn bearer(token: &str) -> Bearer {
    Bearer(Some(format!("Bearer {token}").parse().expect("ascii")))
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Asserts a gRPC error's code and that its message contains `needle`.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: tonic::Code, needle: &str) {
    match result {
        Ok(value) => panic!("expected {code:?} containing {needle:?}, got Ok({value:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "message: {}", status.message());
            assert!(status.message().contains(needle), "expected {needle:?} in {:?}", status.message());
        }
    }
}

use prebuildd::proto::gitpod::v1::{CreatePrebuildRequest, CreateWarmPoolRequest, Prebuild, PrebuildPhase, PrebuildSpec, WarmPool};
use prebuildd::store::Change;

/// Creates a prebuild on `project_id` with default settings.
pub async fn create_prebuild(client: &mut Client, project_id: &str) -> Prebuild {
    create_prebuild_in_class(client, project_id, None).await
}

/// Creates a prebuild on `project_id` of the given environment class (the
/// project's default without one).
pub async fn create_prebuild_in_class(client: &mut Client, project_id: &str, class_id: Option<&str>) -> Prebuild {
    client
        .create_prebuild(CreatePrebuildRequest {
            project_id: project_id.into(),
            environment_class_id: class_id.map(str::to_string),
            spec: Some(PrebuildSpec::default()),
        })
        .await
        .expect("create prebuild")
        .into_inner()
        .prebuild
        .expect("prebuild in response")
}

/// Creates a warm pool and returns it.
pub async fn create_warm_pool(client: &mut Client, request: CreateWarmPoolRequest) -> WarmPool {
    client.create_warm_pool(request).await.expect("create warm pool").into_inner().warm_pool.expect("warm pool in response")
}

impl TestServer {
    /// Moves a prebuild to `phase` as a runner would (the reconciler's job;
    /// used to reach phases the API alone cannot).
    pub async fn force_phase(&self, organization_id: &str, prebuild_id: &str, phase: PrebuildPhase) -> Prebuild {
        self.service()
            .store()
            .update_prebuild(
                organization_id,
                prebuild_id,
                Box::new(move |p| {
                    let status = p.status.get_or_insert_with(Default::default);
                    status.phase = phase as i32;
                    status.status_version += 1;
                    Ok(Change::Changed)
                }),
            )
            .await
            .expect("store update")
            .expect("prebuild exists")
    }
}

/// A timestamp as (seconds, nanos), for ordering comparisons.
pub fn instant(ts: &Option<pbjson_types::Timestamp>) -> (i64, i32) {
    let ts = ts.as_ref().expect("timestamp set");
    (ts.seconds, ts.nanos)
}

/// Runs git in `dir` with a throwaway identity; panics if it fails.
pub fn git(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

/// Polls a prebuild until its phase is one of `done`; panics after `patience`.
pub async fn wait_for_phase(client: &mut Client, id: &str, done: &[PrebuildPhase], patience: std::time::Duration) -> Prebuild {
    let started = std::time::Instant::now();
    loop {
        let request = prebuildd::proto::gitpod::v1::GetPrebuildRequest { prebuild_id: id.into() };
        let prebuild = client.get_prebuild(request).await.expect("get prebuild").into_inner().prebuild.expect("prebuild");
        let phase = PrebuildPhase::try_from(prebuild.status.as_ref().expect("status").phase).expect("a known phase");
        if done.contains(&phase) {
            return prebuild;
        }
        assert!(started.elapsed() < patience, "prebuild stuck in {phase:?}: {prebuild:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Where fixtures go that sandboxed commands must see as the host has them:
/// not under /tmp (a sandbox has its own), wherever the checkout lies.
pub fn outside_tmp() -> &'static Path {
    Path::new("/var/tmp")
}
