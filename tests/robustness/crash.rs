//! Crash durability: `kill -9` in the middle of a write load loses no
//! acknowledged create, leaves a database that passes `PRAGMA
//! integrity_check`, and the reconciler picks the work up again after the
//! restart (prebuilds in progress at the crash, and older ones, complete).

use crate::common::*;
use crate::process::*;
use prebuildd::proto::gitpod::v1::*;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// The test configuration with the reconciler on and a fast simulated
/// runner whose prebuilds complete (`sim://ok`).
fn reconciling_config() -> String {
    let config = test_config_toml();
    let reconciling = config
        .replacen("[reconciler]\nenabled = false", "[reconciler]\nenabled = true\ninterval = \"50ms\"", 1)
        .replacen("step_duration = \"1h\"", "step_duration = \"50ms\"\nmax_concurrent_prebuilds = 8", 1)
        .replace("sim://hang", "sim://ok");
    assert!(reconciling.contains("interval = \"50ms\"") && reconciling.contains("step_duration = \"50ms\""), "the config edits applied");
    reconciling
}

/// The phases between PENDING and a final phase: work the runner was doing.
const IN_PROGRESS: [PrebuildPhase; 5] =
    [PrebuildPhase::Starting, PrebuildPhase::Running, PrebuildPhase::Stopping, PrebuildPhase::Snapshotting, PrebuildPhase::Cancelling];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_write_load_loses_no_acknowledged_create() {
    let workspace = Workspace::new(&reconciling_config());
    let mut process = workspace.start().await;

    let load = Load::start(&process.base_url(), 32);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The precondition below, before the kill: some prebuild is in progress
    // (on a busy machine the first passes can lag behind the load).
    let mut watcher = process.client(TOKEN_A).await;
    let started = Instant::now();
    let seen_in_progress = loop {
        let filter = list_prebuilds_request::Filter { phases: IN_PROGRESS.iter().map(|p| *p as i32).collect(), ..Default::default() };
        let page = watcher.list_prebuilds(ListPrebuildsRequest { pagination: None, filter: Some(filter) }).await;
        let seen = page.map(|page| page.into_inner().prebuilds.len()).unwrap_or(0);
        if seen > 0 || started.elapsed() > Duration::from_secs(15) {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let waited = started.elapsed();
    load.stopping();
    process.kill9();
    let outcomes = load.finish(Duration::from_secs(20)).await;
    let crash_log = process.log_text();
    drop(process);

    assert_eq!(outcomes.hung_workers, 0, "every worker ends within its own request limit");
    let unnoticed: Vec<&LoadError> = outcomes.errors.iter().filter(|e| e.timed_out).collect();
    assert!(unnoticed.is_empty(), "every client noticed the crash: {unnoticed:?}");
    let early: Vec<&LoadError> = outcomes.errors.iter().filter(|e| !e.after_stop).collect();
    assert!(early.is_empty(), "creates failed before the kill: {early:?}");
    let acknowledged = outcomes.acknowledged;
    assert!(acknowledged.len() >= 32, "the load ran: only {} acknowledged creates", acknowledged.len());
    let unique: HashSet<&String> = acknowledged.iter().collect();
    assert_eq!(unique.len(), acknowledged.len(), "every acknowledged create has its own ID");

    // The files the crash left, exactly as the restart will find them (a
    // copy, so that reading them changes nothing): consistent, and with the
    // prebuilds the runner was working on at the crash.
    let crash_copy = tempfile::tempdir().unwrap();
    for file in ["prebuildd.db", "prebuildd.db-wal", "prebuildd.db-shm"] {
        let from = workspace.data_dir().join(file);
        if from.exists() {
            std::fs::copy(&from, crash_copy.path().join(file)).unwrap();
        }
    }
    let in_progress: Vec<String> = {
        let db = rusqlite::Connection::open(crash_copy.path().join("prebuildd.db")).unwrap();
        let integrity: String = db.query_row("PRAGMA integrity_check", [], |row| row.get(0)).unwrap();
        assert_eq!(integrity, "ok", "the database as the crash left it");
        let phases: Vec<String> = IN_PROGRESS.iter().map(|p| (*p as i32).to_string()).collect();
        let sql = format!("SELECT id FROM prebuilds WHERE phase IN ({}) ORDER BY seq", phases.join(","));
        let mut statement = db.prepare(&sql).unwrap();
        let ids = statement.query_map([], |row| row.get::<_, String>(0)).unwrap().map(Result::unwrap).collect();
        ids
    };
    assert!(
        !in_progress.is_empty(),
        "the reconciler was working when the process was killed (a test precondition; the API showed {seen_in_progress} in progress \
         {waited:?} after the load started); log:\n{crash_log}"
    );

    eprintln!("kill -9: {} creates acknowledged, {} prebuilds in progress at the crash", acknowledged.len(), in_progress.len());

    // Restart on the same data dir: every acknowledged create is there.
    let mut process = workspace.start().await;
    let client = process.client(TOKEN_A).await;
    let missing = missing_prebuilds(&client, &acknowledged).await;
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged creates are missing after kill -9, e.g. {:?}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(5)]
    );

    // The reconciler resumes: what was in progress at the crash, and the
    // oldest acknowledged creates, reach COMPLETED.
    let mut seen = HashSet::new();
    let mut waiting: Vec<String> = in_progress.iter().chain(acknowledged.iter().take(8)).filter(|id| seen.insert(*id)).cloned().collect();
    let started = Instant::now();
    let mut client = client;
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for id in waiting {
            let prebuild =
                client.get_prebuild(GetPrebuildRequest { prebuild_id: id.clone() }).await.unwrap().into_inner().prebuild.unwrap();
            let status = prebuild.status.unwrap_or_default();
            let phase = PrebuildPhase::try_from(status.phase).unwrap_or(PrebuildPhase::Unspecified);
            match phase {
                PrebuildPhase::Completed => {}
                PrebuildPhase::Failed | PrebuildPhase::Cancelled => {
                    panic!("{id} ended {phase:?} after the restart, not COMPLETED: {:?}", status.failure_message)
                }
                _ => still.push(id),
            }
        }
        waiting = still;
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "the reconciler did not finish {} prebuilds after the restart (e.g. {:?}); log:\n{}",
            waiting.len(),
            waiting.first(),
            process.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    eprintln!("kill -9: the reconciler finished them {:?} after the restart", started.elapsed());

    // Stop it properly, then the database file itself must be sound.
    process.signal(libc::SIGTERM);
    let status = process.wait_exit(Duration::from_secs(35)).await.expect("prebuildd exits after SIGTERM");
    assert!(status.success(), "a clean exit: {status:?}");
    assert_eq!(integrity_check(&workspace.data_dir().join("prebuildd.db")), "ok");
}
