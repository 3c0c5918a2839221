//! A remote runner with PostgreSQL replicas: only the leader gives work, so
//! a follower refuses the runner's connection with `unavailable` (the runner
//! retries); the leader accepts it and the work completes.

use crate::common::on_postgres;
use crate::common::*;
use crate::harness::*;
use prebuildd::proto::gitpod::v1::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_sends_the_runner_away_and_the_leader_gives_it_work() {
    let one = on_postgres::TestServer::start_with(server_config("60s")).await.into_inner();
    let two = one.start_replica().await;
    let servers = [&one, &two];
    let started = Instant::now();
    let leader = loop {
        let mut leaders = Vec::new();
        for (index, server) in servers.iter().enumerate() {
            if server.metric("prebuildd_reconciler_leader").await == 1.0 {
                leaders.push(index);
            }
        }
        if let [leader] = leaders[..] {
            break leader;
        }
        assert!(started.elapsed() < PATIENCE, "no single leader: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (leader, follower) = (servers[leader], servers[1 - leader]);
    let mut client = follower.client(Some(TOKEN_A)).await;
    let prebuild = create_prebuild(&mut client, PROJECT_BACKEND).await;

    let runner_dir = tempfile::tempdir().unwrap();
    let data = runner_dir.path().join("data");
    let turned_away = RunnerProcess::start(&follower.base_url(), RUNNER_TOKEN, &data, "50ms");
    let started = Instant::now();
    while !turned_away.log_text().contains("does not lead the reconciler") {
        assert!(started.elapsed() < PATIENCE, "the follower did not send the runner away:\n{}", turned_away.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(phase(&get_prebuild(&mut client, &prebuild.id).await), PrebuildPhase::Pending, "no work from a follower");
    drop(turned_away);

    let runner = RunnerProcess::start(&leader.base_url(), RUNNER_TOKEN, &data, "50ms");
    wait_phase(&mut client, &prebuild.id, PrebuildPhase::Completed, || runner.log_text()).await;
}
