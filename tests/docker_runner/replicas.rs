//! Two replicas on one PostgreSQL database with a docker runner pool: the
//! pool's containers are the leader's runner's, and when that leader stops
//! the replica that takes over adopts them (by their labels) instead of
//! building the pool again.

use super::harness::*;
use crate::common::*;
use prebuildd::proto::gitpod::v1::*;
use std::time::{Duration, Instant};

const PROJECT: &str = "d0c0e000-0000-4000-8000-000000000021";

/// The index of the replica whose `/metrics` says it leads, once exactly one does.
async fn leader_of(servers: &[&TestServer]) -> usize {
    let started = Instant::now();
    loop {
        let mut leaders = Vec::new();
        for (index, server) in servers.iter().enumerate() {
            if server.metric("prebuildd_reconciler_leader").await == 1.0 {
                leaders.push(index);
            }
        }
        assert!(leaders.len() <= 1, "more than one leader: {leaders:?}");
        if let [leader] = leaders[..] {
            return leader;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no replica leads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ready_with(snapshot_id: &str) -> impl Fn(&WarmPool) -> bool + '_ {
    move |pool| {
        let status = pool.status.clone().unwrap_or_default();
        pool.spec.as_ref().and_then(|s| s.snapshot_id.clone()).as_deref() == Some(snapshot_id)
            && (status.phase, status.running_instances, status.stopped_instances) == (WarmPoolPhase::Ready as i32, 1, 1)
    }
}

#[tokio::test]
async fn a_new_leader_adopts_the_pool_containers_of_the_old_one() {
    let world = World::new();
    let repo = world.dir.path().join("replicated-repo");
    repository(&repo, &[(".devcontainer/devcontainer.json", &format!(r#"{{ "image": "{BASE_IMAGE}" }}"#))]);
    let config = world.config(&[(PROJECT, &repo)]);
    let one = on_postgres::TestServer::start_with(config).await.into_inner();
    let two = one.start_replica().await;
    let mut replicas = [one, two];
    let leader = leader_of(&replicas.iter().collect::<Vec<_>>()).await;
    let survivor = 1 - leader;

    // Everything through the replica that stays.
    let mut client = replicas[survivor].client(Some(TOKEN_A)).await;
    let first = create_prebuild(&mut client, PROJECT).await;
    completed(&replicas[survivor], &mut client, &first.id).await;
    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest {
            project_id: PROJECT.into(),
            environment_class_id: CLASS.into(),
            min_size: Some(1),
            max_size: Some(2),
            ..Default::default()
        },
    )
    .await;
    pool_until(&mut client, &pool.id, "1 running and 1 stopped", ready_with(&first.id)).await;
    let pool_filter = format!("label=dev.prebuildd.warm-pool-id={}", pool.id);
    let mut before = world.containers(&[&pool_filter]);
    before.sort();
    assert_eq!(before.len(), 2, "{before:?}");

    // The leader goes; the survivor leads and keeps the same containers.
    replicas[leader].stop().await;
    assert_eq!(leader_of(&[&replicas[survivor]]).await, 0);
    pool_until(&mut client, &pool.id, "ready under the new leader", ready_with(&first.id)).await;
    // A few passes of the new leader go by, each of which would replace
    // containers it did not adopt.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut after = world.containers(&[&pool_filter]);
    after.sort();
    assert_eq!(after, before, "the new leader adopted the pool's containers (no rebuild)");
    let now = client.get_warm_pool(GetWarmPoolRequest { warm_pool_id: pool.id.clone() }).await.unwrap().into_inner().warm_pool.unwrap();
    assert!(ready_with(&first.id)(&now), "{now:?}");

    // They are its own now: deleting the pool removes them.
    client.delete_warm_pool(DeleteWarmPoolRequest { warm_pool_id: pool.id.clone() }).await.unwrap();
    eventually("the pool's containers are removed by the new leader", || world.containers(&[&pool_filter]).is_empty()).await;
}
