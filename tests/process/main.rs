//! prebuildd as a separate process, the way it is deployed: `kill -9` in
//! the middle of writes, SIGTERM under load, and a slow client.

#[path = "../common/mod.rs"]
mod common;

use common::*;
use prebuildd::proto::gitpod::v1::*;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A prebuildd child process; killed when dropped.
struct Process {
    child: Child,
    addr: String,
}

impl Process {
    /// Starts `prebuildd serve` and waits for the address it listens on.
    fn start(config: &str, data_dir: &Path) -> Process {
        let config_path = data_dir.join("test-config.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_prebuildd"))
            .args(["serve", "--config"])
            .arg(&config_path)
            .arg("--data-dir")
            .arg(data_dir)
            .env("PREBUILDD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(addr) = line.split("addr=").nth(1) {
                        let _ = tx.send(addr.trim().to_string());
                        sent = true;
                    }
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(30)).expect("the server says where it listens");
        Process { child, addr }
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn client(&self) -> Client {
        let channel = tonic::transport::Channel::from_shared(self.base_url()).unwrap().connect().await.unwrap();
        prebuildd::proto::gitpod::v1::prebuild_service_client::PrebuildServiceClient::with_interceptor(channel, bearer(TOKEN_A))
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listen_anywhere(config: String) -> String {
    config.replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:0\"\nheader_read_timeout = \"1s\"")
}

/// What a load run saw: acknowledged IDs, error codes, and its tasks.
type Load = (Arc<Mutex<Vec<String>>>, Arc<Mutex<Vec<tonic::Code>>>, Vec<tokio::task::JoinHandle<()>>);

/// Creates prebuilds from `workers` clients until stopped; returns the IDs
/// whose creation was acknowledged and every error code seen.
fn create_load(process: &Process, workers: usize) -> Load {
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let tasks = (0..workers)
        .map(|_| {
            let (acknowledged, errors, base) = (acknowledged.clone(), errors.clone(), process.base_url());
            tokio::spawn(async move {
                let Ok(channel) = tonic::transport::Channel::from_shared(base).unwrap().connect().await else { return };
                let mut client = prebuildd::proto::gitpod::v1::prebuild_service_client::PrebuildServiceClient::with_interceptor(
                    channel,
                    bearer(TOKEN_A),
                );
                loop {
                    let request = CreatePrebuildRequest {
                        project_id: PROJECT_BACKEND.into(),
                        environment_class_id: None,
                        spec: Some(Default::default()),
                    };
                    match client.create_prebuild(request).await {
                        Ok(response) => acknowledged.lock().unwrap().push(response.into_inner().prebuild.unwrap().id),
                        Err(status) => {
                            // The client reports a connection torn down under a
                            // stream as an h2 error; that is "the server went
                            // away", not a server-side internal error.
                            let code =
                                if status.message().contains("h2 protocol error") { tonic::Code::Unavailable } else { status.code() };
                            errors.lock().unwrap().push(code);
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    (acknowledged, errors, tasks)
}

#[tokio::test]
async fn kill_9_in_the_middle_loses_no_acknowledged_write() {
    let data = tempfile::tempdir().unwrap();
    // Reconciler on, so the restart must also resume the work.
    let config = listen_anywhere(test_config_toml())
        .replacen("enabled = false", "enabled = true\ninterval = \"50ms\"", 1)
        .replace("step_duration = \"1h\"", "step_duration = \"20ms\"\nmax_concurrent_prebuilds = 64")
        .replace("sim://hang", "sim://ok");
    let process = Process::start(&config, data.path());
    let (acknowledged, _errors, tasks) = create_load(&process, 32);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(process); // SIGKILL, mid-write
    for task in tasks {
        let _ = task.await;
    }
    let acknowledged: Vec<String> = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() > 100, "the load ran ({} creates)", acknowledged.len());

    let process = Process::start(&config, data.path());
    let mut client = process.client().await;
    let mut stored = HashSet::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_prebuilds(ListPrebuildsRequest { pagination: Some(PaginationRequest { page_size: 100, token }), filter: None })
            .await
            .unwrap()
            .into_inner();
        stored.extend(page.prebuilds.into_iter().map(|p| p.id));
        token = page.pagination.unwrap().next_token;
        if token.is_empty() {
            break;
        }
    }
    let lost: Vec<&String> = acknowledged.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(lost.is_empty(), "{} acknowledged creates were lost, e.g. {:?}", lost.len(), lost.first());

    // The reconciler resumes: the first acknowledged prebuild completes.
    let started = Instant::now();
    loop {
        let prebuild =
            client.get_prebuild(GetPrebuildRequest { prebuild_id: acknowledged[0].clone() }).await.unwrap().into_inner().prebuild.unwrap();
        if prebuild.status.as_ref().unwrap().phase == PrebuildPhase::Completed as i32 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the reconciler did not resume: {prebuild:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(process);
    let db = rusqlite::Connection::open_with_flags(data.path().join("prebuildd.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let integrity: String = db.query_row("PRAGMA integrity_check", [], |row| row.get(0)).unwrap();
    assert_eq!(integrity, "ok");
}

#[tokio::test]
async fn sigterm_under_load_finishes_requests_and_exits() {
    let data = tempfile::tempdir().unwrap();
    let config = listen_anywhere(test_config_toml());
    let mut process = Process::start(&config, data.path());
    let (acknowledged, errors, tasks) = create_load(&process, 16);
    tokio::time::sleep(Duration::from_millis(700)).await;
    process.signal(libc::SIGTERM);
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = process.child.try_wait().unwrap() {
            break status;
        }
        assert!(stopping.elapsed() < Duration::from_secs(35), "prebuildd did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "a graceful exit: {status:?}");
    for task in tasks {
        let _ = task.await;
    }
    let codes = errors.lock().unwrap().clone();
    assert!(
        codes.iter().all(|c| matches!(c, tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled)),
        "only 'the server went away' errors: {codes:?}"
    );
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(!acknowledged.is_empty());

    let process = Process::start(&config, data.path());
    let mut client = process.client().await;
    for id in acknowledged.iter().rev().take(50).chain(acknowledged.iter().take(50)) {
        client.get_prebuild(GetPrebuildRequest { prebuild_id: id.clone() }).await.unwrap_or_else(|e| panic!("acknowledged {id} lost: {e}"));
    }
}

#[tokio::test]
async fn a_slow_client_is_disconnected() {
    let data = tempfile::tempdir().unwrap();
    let process = Process::start(&listen_anywhere(test_config_toml()), data.path());
    let mut stream = std::net::TcpStream::connect(&process.addr).unwrap();
    stream.write_all(b"POST /gitpod.v1.PrebuildService/ListPrebuilds HTTP/1.1\r\nHost: x\r\n").unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    let closed = loop {
        match stream.read(&mut buffer) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    assert!(closed && started.elapsed() < Duration::from_secs(5), "the server must close a connection whose headers never finish");
    // A client that sends nothing at all, or half the HTTP/2 preface, too.
    for first_bytes in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let mut stream = std::net::TcpStream::connect(&process.addr).unwrap();
        stream.write_all(first_bytes).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let started = Instant::now();
        let closed = match stream.read(&mut buffer) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        };
        assert!(closed && started.elapsed() < Duration::from_secs(5), "an idle connection ({first_bytes:?}) must be closed");
    }
    // And it still serves everyone else.
    let response = reqwest::get(format!("{}/healthz", process.base_url())).await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn sighup_reloads_the_config_and_drops_pools_it_no_longer_allows() {
    let data = tempfile::tempdir().unwrap();
    let config = listen_anywhere(test_config_toml()).replacen("enabled = false", "enabled = true\ninterval = \"50ms\"", 1);
    let process = Process::start(&config, data.path());
    let mut client = process.client().await;
    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest { project_id: PROJECT_BACKEND.into(), environment_class_id: CLASS_LARGE.into(), ..Default::default() },
    )
    .await;
    // The backend project drops the large class from its prebuild configuration.
    let without_large = config.replacen(
        &format!("environment_class_ids = [\"{CLASS_SMALL}\", \"{CLASS_LARGE}\"]"),
        &format!("environment_class_ids = [\"{CLASS_SMALL}\"]"),
        1,
    );
    assert_ne!(without_large, config);
    std::fs::write(data.path().join("test-config.toml"), without_large).unwrap();
    process.signal(libc::SIGHUP);
    let started = Instant::now();
    while client.get_warm_pool(GetWarmPoolRequest { warm_pool_id: pool.id.clone() }).await.is_ok() {
        assert!(started.elapsed() < Duration::from_secs(20), "the pool was not deleted after SIGHUP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An invalid file is ignored: the server keeps serving.
    std::fs::write(data.path().join("test-config.toml"), "not = [valid").unwrap();
    process.signal(libc::SIGHUP);
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.list_prebuilds(ListPrebuildsRequest::default()).await.expect("still serving after an invalid reload");
}

// ---- replicas on one PostgreSQL database -------------------------------------

/// The test configuration with the reconciler on, fast successful
/// prebuilds, and the store on `postgres_url`: every process started with it
/// is a replica of the others.
fn replica_config(postgres_url: &str) -> String {
    let config = listen_anywhere(test_config_toml())
        .replacen("enabled = false", "enabled = true\ninterval = \"100ms\"", 1)
        .replace("step_duration = \"1h\"", "step_duration = \"20ms\"\nmax_concurrent_prebuilds = 64")
        .replace("sim://hang", "sim://ok");
    format!("{config}\n[storage]\npostgres_url = \"{postgres_url}\"\n")
}

async fn leads(process: &Process) -> bool {
    let Ok(response) = reqwest::get(format!("{}/metrics", process.base_url())).await else { return false };
    let text = response.text().await.unwrap_or_default();
    text.lines().any(|line| line.trim() == "prebuildd_reconciler_leader 1")
}

/// Waits until exactly one of `processes` leads; returns its index.
async fn the_leader(processes: &[&Process], patience: Duration) -> usize {
    let started = Instant::now();
    loop {
        let mut leaders = Vec::new();
        for (index, process) in processes.iter().enumerate() {
            if leads(process).await {
                leaders.push(index);
            }
        }
        assert!(leaders.len() <= 1, "more than one leader: {leaders:?}");
        if let [leader] = leaders[..] {
            return leader;
        }
        assert!(started.elapsed() < patience, "no process led within {patience:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every prebuild ID a ListPrebuilds walk returns, duplicates included.
async fn list_all(client: &mut Client) -> Vec<String> {
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_prebuilds(ListPrebuildsRequest { pagination: Some(PaginationRequest { page_size: 100, token }), filter: None })
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.prebuilds.into_iter().map(|p| p.id));
        token = page.pagination.unwrap().next_token;
        if token.is_empty() {
            return ids;
        }
    }
}

#[tokio::test]
async fn kill_9_of_the_leader_hands_the_reconciler_to_a_survivor() {
    // Steps slow enough that a prebuild is still running at the kill.
    let config = replica_config(&postgres::fresh_database().await).replace("step_duration = \"20ms\"", "step_duration = \"300ms\"");
    let (data_one, data_two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut processes = [Some(Process::start(&config, data_one.path())), Some(Process::start(&config, data_two.path()))];
    let both: Vec<&Process> = processes.iter().flatten().collect();
    let leader = the_leader(&both, Duration::from_secs(10)).await;
    let mut on_leader = processes[leader].as_ref().unwrap().client().await;
    let running = create_prebuild(&mut on_leader, PROJECT_BACKEND).await;
    wait_for_phase(&mut on_leader, &running.id, &[PrebuildPhase::Running], Duration::from_secs(10)).await;

    processes[leader].take().unwrap().signal(libc::SIGKILL);
    let killed = Instant::now();
    let survivor = processes[1 - leader].as_ref().unwrap();
    the_leader(&[survivor], Duration::from_secs(8)).await;
    eprintln!("the survivor led {:?} after kill -9 of the leader", killed.elapsed());

    // The prebuild the dead leader was running is started again there and
    // completes, and so does a new one.
    let mut client = survivor.client().await;
    let created = create_prebuild(&mut client, PROJECT_BACKEND).await;
    for id in [&running.id, &created.id] {
        let done = wait_for_phase(&mut client, id, &[PrebuildPhase::Completed, PrebuildPhase::Failed], Duration::from_secs(30)).await;
        assert_eq!(done.status.unwrap().phase, PrebuildPhase::Completed as i32);
    }
    let token = client
        .create_prebuild_logs_token(CreatePrebuildLogsTokenRequest { prebuild_id: running.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let url = format!("{}/logs/prebuilds/{}", survivor.base_url(), running.id);
    let log = reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap().text().await.unwrap();
    assert!(log.contains("starting it again") && log.contains("[simulated] completed"), "{log}");
}

#[tokio::test]
async fn creates_from_24_clients_across_two_replicas_are_each_listed_once() {
    let config = replica_config(&postgres::fresh_database().await);
    let (data_one, data_two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let one = Process::start(&config, data_one.path());
    let two = Process::start(&config, data_two.path());
    let (acknowledged_one, errors_one, tasks_one) = create_load(&one, 12);
    let (acknowledged_two, errors_two, tasks_two) = create_load(&two, 12);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Stopping a client mid-call may leave a create committed but not
    // acknowledged: listed, but not counted.
    for task in tasks_one.into_iter().chain(tasks_two) {
        task.abort();
        let _ = task.await;
    }
    let errors: Vec<tonic::Code> = errors_one.lock().unwrap().iter().chain(errors_two.lock().unwrap().iter()).copied().collect();
    assert!(errors.is_empty(), "no create failed: {errors:?}");
    let acknowledged: Vec<String> =
        acknowledged_one.lock().unwrap().iter().chain(acknowledged_two.lock().unwrap().iter()).cloned().collect();
    eprintln!("{} creates acknowledged in 3 s across two replicas", acknowledged.len());
    assert!(acknowledged.len() > 100, "the load ran ({} creates)", acknowledged.len());

    for process in [&one, &two] {
        let listed = list_all(&mut process.client().await).await;
        let mut times: std::collections::HashMap<&str, usize> = Default::default();
        for id in &listed {
            *times.entry(id.as_str()).or_default() += 1;
        }
        let twice: Vec<&&str> = times.iter().filter(|(_, n)| **n > 1).map(|(id, _)| id).collect();
        assert!(twice.is_empty(), "listed more than once: {twice:?}");
        let missing: Vec<&String> = acknowledged.iter().filter(|id| !times.contains_key(id.as_str())).collect();
        assert!(missing.is_empty(), "{} acknowledged creates are not listed, e.g. {:?}", missing.len(), missing.first());
    }
}
