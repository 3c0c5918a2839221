//! Replicas as deployed: `prebuildd serve` processes on one PostgreSQL
//! database. `kill -9` of the leader hands the reconciler to a survivor,
//! which finishes the dead leader's prebuild and a new one; creates from
//! many clients across two replicas are each stored and listed once.

use crate::common::*;
use crate::process::*;
use prebuildd::proto::gitpod::v1::*;
use std::time::{Duration, Instant};

/// The test configuration with the reconciler on (at `interval`), fast
/// successful prebuilds, and the store on `postgres_url`: every process
/// started with it is a replica of the others.
fn replica_config(postgres_url: &str, interval: &str) -> String {
    let config = test_config_toml()
        .replacen("[reconciler]\nenabled = false", &format!("[reconciler]\nenabled = true\ninterval = \"{interval}\""), 1)
        .replace("step_duration = \"1h\"", "step_duration = \"20ms\"\nmax_concurrent_prebuilds = 64")
        .replace("sim://hang", "sim://ok");
    assert!(config.contains(&format!("interval = \"{interval}\"")) && config.contains("\"20ms\""), "the config edits applied");
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

/// With a 30 s interval, nothing but events moves the work along: the
/// survivor leads once the dead leader's lease runs out, starts the
/// prebuild that was running there again, and completes a new one, all
/// within seconds of the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_hands_the_reconciler_to_a_survivor() {
    // Steps slow enough that a prebuild is still running at the kill.
    let config = replica_config(&postgres::fresh_database().await, "30s").replace("step_duration = \"20ms\"", "step_duration = \"300ms\"");
    let (one, two) = (Workspace::new(&config), Workspace::new(&config));
    let mut processes = [Some(one.start().await), Some(two.start().await)];
    let both: Vec<&Process> = processes.iter().flatten().collect();
    let leader = the_leader(&both, Duration::from_secs(10)).await;
    let mut on_leader = processes[leader].as_ref().unwrap().client(TOKEN_A).await;
    let running = create_prebuild(&mut on_leader, PROJECT_BACKEND).await;
    wait_for_phase(&mut on_leader, &running.id, &[PrebuildPhase::Running], Duration::from_secs(10)).await;

    processes[leader].take().unwrap().kill9();
    let killed = Instant::now();
    let survivor = processes[1 - leader].as_ref().unwrap();
    let mut client = survivor.client(TOKEN_A).await;
    let created = create_prebuild(&mut client, PROJECT_BACKEND).await;
    for id in [&created.id, &running.id] {
        let done = wait_for_phase(&mut client, id, &[PrebuildPhase::Completed, PrebuildPhase::Failed], Duration::from_secs(10)).await;
        assert_eq!(done.status.unwrap().phase, PrebuildPhase::Completed as i32);
    }
    let completed_after = killed.elapsed();
    eprintln!("both prebuilds completed {completed_after:?} after kill -9 of the leader");
    assert!(completed_after < Duration::from_secs(10), "a survivor completes a new prebuild within 10 s of the kill");
    assert!(leads(survivor).await);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_from_24_clients_across_two_replicas_are_each_listed_once() {
    let config = replica_config(&postgres::fresh_database().await, "100ms");
    let (one, two) = (Workspace::new(&config), Workspace::new(&config));
    let (one, two) = (one.start().await, two.start().await);
    let load_one = Load::start(&one.base_url(), 12);
    let load_two = Load::start(&two.base_url(), 12);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (outcomes_one, outcomes_two) = (load_one.stop().await, load_two.stop().await);
    let errors: Vec<&LoadError> = outcomes_one.errors.iter().chain(outcomes_two.errors.iter()).collect();
    assert!(errors.is_empty(), "no create failed: {errors:?}");
    let acknowledged: Vec<String> = outcomes_one.acknowledged.iter().chain(outcomes_two.acknowledged.iter()).cloned().collect();
    eprintln!("{} creates acknowledged in 3 s across two replicas", acknowledged.len());
    assert!(acknowledged.len() > 100, "the load ran ({} creates)", acknowledged.len());

    for process in [&one, &two] {
        let listed = list_all(&mut process.client(TOKEN_A).await).await;
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
