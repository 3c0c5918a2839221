//! `prebuildd bench --only postgres`: CreatePrebuild (durable) and
//! GetPrebuild over gRPC on SQLite, on PostgreSQL with one replica and on
//! PostgreSQL with two replicas, in one run. Not part of the default run
//! (it needs Debian's `postgresql` package: `initdb` and `postgres` under
//! /usr/lib/postgresql/<version>/bin).
//!
//! It starts a throwaway PostgreSQL server of its own (a cluster in the
//! bench's temp dir, on a free port, with the server's default durability:
//! `fsync` and `synchronous_commit` on), one database per setup, and the
//! servers under test as child processes. With two replicas the clients are
//! split between them, as a load balancer would, and the figures are summed.

use crate::api::{measure, proto, row, Clients, DecodeBytes, Protocol};
use crate::load::Stats;
use crate::server::{config, ChildServer, CREATE_PROJECT};
use crate::Options;
use prebuildd::proto::gitpod::v1::{CreatePrebuildRequest, GetPrebuildRequest, PrebuildSpec};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A PostgreSQL server for the bench, stopped when dropped.
struct Postgres {
    child: tokio::process::Child,
    port: u16,
}

fn postgres_bin(program: &str) -> Result<PathBuf, String> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "PostgreSQL is not installed (apt-get install postgresql)".to_string())?
        .flatten()
        .map(|e| e.path().join("bin").join(program))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop().ok_or_else(|| format!("no {program} under /usr/lib/postgresql/*/bin (apt-get install postgresql)"))
}

/// Runs a command as the `postgres` user when we are root (PostgreSQL
/// refuses to run as root).
fn as_postgres(program: &Path) -> tokio::process::Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut command = tokio::process::Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        tokio::process::Command::new(program)
    }
}

impl Postgres {
    async fn start(dir: &Path) -> Result<Postgres, String> {
        let (initdb, postgres) = (postgres_bin("initdb")?, postgres_bin("postgres")?);
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let status = std::process::Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir).status();
            if !status.is_ok_and(|s| s.success()) {
                return Err(format!("cannot give {} to the postgres user", dir.display()));
            }
        }
        let data = dir.join("cluster");
        let output = as_postgres(&initdb)
            .args(["--auth=trust", "--no-sync", "-U", "postgres", "-D"])
            .arg(&data)
            .output()
            .await
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !output.status.success() {
            return Err(format!("initdb failed: {}", String::from_utf8_lossy(&output.stderr)));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let child = as_postgres(&postgres)
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start postgres: {e}"))?;
        let server = Postgres { child, port };
        let started = Instant::now();
        while tokio_postgres::connect(&server.url("postgres"), tokio_postgres::NoTls).await.is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                return Err("PostgreSQL did not start within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(server)
    }

    fn url(&self, database: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{database}", self.port)
    }

    async fn create_database(&self, name: &str) -> Result<String, String> {
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.map_err(|e| e.to_string())?;
        Ok(self.url(name))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Several servers measured as one: `concurrency` split between them.
async fn measure_all(all: &[Arc<Clients>], options: &Options, path: &str, bodies: Vec<bytes::Bytes>) -> Stats {
    let share = Options { concurrency: (options.concurrency / all.len()).max(1), ..options.clone() };
    let runs = all.iter().map(|clients| measure(clients, &share, Protocol::Grpc, path.to_string(), bodies.clone()));
    let results = futures::future::join_all(runs).await;
    Stats::combine(results)
}

/// Starts `replicas` servers on `store` (`None`: SQLite), and measures.
async fn setup(work: &Path, name: &str, store: Option<&str>, replicas: usize, options: &Options) -> Result<(), String> {
    let mut servers = Vec::new();
    for replica in 0..replicas {
        let data_dir = work.join(format!("{name}-{replica}"));
        let storage = store.map(|url| format!("\n[storage]\npostgres_url = \"{url}\"\n")).unwrap_or_default();
        let server = ChildServer::start_with(&data_dir, |listen| config(listen, false, 4) + &storage)?;
        server.ready().await?;
        servers.push(server);
    }
    let mut all = Vec::new();
    for server in &servers {
        all.push(Arc::new(Clients::new(&server.base, options.concurrency / replicas).await?));
    }
    let create = proto(&CreatePrebuildRequest {
        project_id: CREATE_PROJECT.into(),
        environment_class_id: None,
        spec: Some(PrebuildSpec::default()),
    });
    let created = all[0].call(Protocol::Grpc, "/gitpod.v1.PrebuildService/CreatePrebuild", create.clone(), 0).await?;
    let created = <prebuildd::proto::gitpod::v1::CreatePrebuildResponse as DecodeBytes>::decode_bytes(&created)?;
    let prebuild_id = created.prebuild.map(|p| p.id).ok_or("no prebuild in the response")?;
    let get = proto(&GetPrebuildRequest { prebuild_id });
    for (scenario, path, body) in [
        ("GetPrebuild", "/gitpod.v1.PrebuildService/GetPrebuild", get),
        ("CreatePrebuild", "/gitpod.v1.PrebuildService/CreatePrebuild", create),
    ] {
        let stats = measure_all(&all, options, path, vec![body]).await;
        row(scenario, name, &stats, None);
    }
    for server in servers {
        tokio::task::spawn_blocking(move || server.stop()).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The scenario: SQLite, PostgreSQL, PostgreSQL with two replicas.
pub async fn run(work: &Path, options: &Options) -> Result<(), String> {
    println!(
        "prebuildd bench --only postgres: concurrency {}, {} s per run, {} cores; gRPC; CreatePrebuild is durable",
        options.concurrency,
        options.duration.as_secs_f64(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let postgres = Postgres::start(&work.join("postgres")).await?;
    setup(work, "sqlite", None, 1, options).await?;
    let one = postgres.create_database("bench_one").await?;
    setup(work, "postgres", Some(&one), 1, options).await?;
    let two = postgres.create_database("bench_two").await?;
    setup(work, "postgres x2", Some(&two), 2, options).await?;
    drop(postgres);
    Ok(())
}
