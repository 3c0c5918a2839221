//! The prebuild sources' contract (`store::sources`), on both stores:
//! pushes queue, collapse into the queued prebuild of their branch,
//! recognise a commit built already and ignore a replayed delivery, in one
//! transaction; sources are recorded at start only on the versions seen;
//! bases are completed full prebuilds; deliveries are pruned by age and
//! count; a branch that does not feed warm pools never becomes a pair's
//! snapshot.

use super::*;
use prebuildd::proto::prebuildd::v1::{PrebuildSource, SourceTrigger};
use prebuildd::store::sources::{Enqueued, PushBatch, PushOutcome};

fn push_source(branch: &str, commit: &str) -> PrebuildSource {
    PrebuildSource {
        trigger: SourceTrigger::PushWebhook as i32,
        provider: "github".into(),
        branch: branch.into(),
        commit_sha: commit.into(),
        feeds_warm_pools: true,
        ..Default::default()
    }
}

fn sha(n: u8) -> String {
    format!("{n:02x}").repeat(20)
}

async fn push(store: &Arc<dyn Store>, delivery: Option<&str>, branch: &str, commit: &str) -> PushOutcome {
    let batch = PushBatch {
        delivery: delivery.map(str::to_string),
        received_at: Micros(1_700_000_000_000_000),
        prebuilds: vec![(prebuild(Spec { trigger: SCHEDULED, ..DEFAULT }), push_source(branch, commit))],
    };
    store.enqueue_push(batch).await.expect("enqueue")
}

fn one(outcome: PushOutcome) -> Enqueued {
    match outcome {
        PushOutcome::Enqueued(mut outcomes) => outcomes.remove(0),
        PushOutcome::Replayed => panic!("replayed"),
    }
}

async fn source_of(store: &Arc<dyn Store>, id: &str) -> PrebuildSource {
    store.prebuild_sources(ORG, &[id.to_string()]).await.expect("sources").pop().expect("found")
}

async fn set_phase(store: &Arc<dyn Store>, id: &str, phase: i32) {
    store
        .update_prebuild(
            ORG,
            id,
            Box::new(move |p| {
                p.status.as_mut().unwrap().phase = phase;
                Ok(Change::Changed)
            }),
        )
        .await
        .expect("update")
        .expect("exists");
}

pub async fn pushes_queue_collapse_and_recognise_built_commits(t: TestStore) {
    let store = &t.store;
    let Enqueued::Inserted(first) = one(push(store, Some("github:p:1"), "main", &sha(1)).await) else { panic!("inserted") };
    assert_eq!(push(store, Some("github:p:1"), "main", &sha(9)).await, PushOutcome::Replayed, "a replay writes nothing");
    // While it waits, a newer commit joins it, and its spec version grows.
    assert_eq!(one(push(store, Some("github:p:2"), "main", &sha(2)).await), Enqueued::Collapsed(first.clone()));
    assert_eq!(source_of(store, &first).await.commit_sha, sha(2));
    let stored = store.get_prebuild(ORG, &first).await.unwrap().unwrap();
    assert_eq!(stored.spec.unwrap().spec_version, 2);
    // Once it runs, the next commit is queued beside it, and joined again.
    set_phase(store, &first, RUNNING).await;
    let Enqueued::Inserted(second) = one(push(store, None, "main", &sha(3)).await) else { panic!("inserted") };
    assert_eq!(one(push(store, None, "main", &sha(4)).await), Enqueued::Collapsed(second.clone()));
    assert_eq!(one(push(store, Some("github:p:3"), "main", &sha(4)).await), Enqueued::Unchanged(second.clone()), "built already");
    // Another branch is another queue.
    let Enqueued::Inserted(other) = one(push(store, None, "dev", &sha(4)).await) else { panic!("inserted") };
    let active = store.active_branch_prebuilds().await.unwrap();
    let described: Vec<(String, String, i32)> = active.iter().map(|p| (p.branch.clone(), p.commit_sha.clone(), p.phase)).collect();
    assert_eq!(described, vec![("main".into(), sha(2), RUNNING), ("main".into(), sha(4), PENDING), ("dev".into(), sha(4), PENDING)]);
    assert_eq!(active.iter().map(|p| p.prebuild_id.clone()).collect::<Vec<_>>(), vec![first.clone(), second, other]);
    // A finished commit is built already too, whatever its outcome.
    set_phase(store, &first, FAILED).await;
    assert!(matches!(one(push(store, None, "main", &sha(4)).await), Enqueued::Unchanged(_)));
    // Other organizations see none of it; the official triggers read back.
    assert!(store.prebuild_sources(OTHER_ORG, std::slice::from_ref(&first)).await.unwrap().is_empty());
    let manual = prebuild(DEFAULT);
    let scheduled = prebuild(Spec { trigger: SCHEDULED, ..DEFAULT });
    store.insert_prebuild(manual.clone()).await.unwrap();
    store.insert_prebuild(scheduled.clone()).await.unwrap();
    let sources = store.prebuild_sources(ORG, &[scheduled.id.clone(), manual.id.clone()]).await.unwrap();
    assert_eq!(sources.iter().map(|s| s.trigger).collect::<Vec<_>>(), vec![SourceTrigger::Schedule as i32, SourceTrigger::Api as i32]);
    assert!(sources.iter().all(|s| s.commit_sha.is_empty() && s.feeds_warm_pools));
}

pub async fn sources_are_recorded_at_start_only_on_the_versions_seen(t: TestStore) {
    let store = &t.store;
    let manual = prebuild(DEFAULT);
    store.insert_prebuild(manual.clone()).await.unwrap();
    let settled = PrebuildSource { trigger: SourceTrigger::Api as i32, branch: "main".into(), commit_sha: sha(7), ..Default::default() };
    assert!(!store.record_source(ORG, &manual.id, (1, 2), settled.clone()).await.unwrap(), "the prebuild changed since");
    assert!(!store.record_source(OTHER_ORG, &manual.id, (1, 1), settled.clone()).await.unwrap());
    assert!(store.record_source(ORG, &manual.id, (1, 1), settled.clone()).await.unwrap());
    let read = source_of(store, &manual.id).await;
    assert_eq!((read.branch.as_str(), read.commit_sha.as_str(), read.feeds_warm_pools), ("main", sha(7).as_str(), false));
}

pub async fn bases_are_completed_full_prebuilds_newest_first(t: TestStore) {
    let store = &t.store;
    let mut ids: Vec<String> = Vec::new();
    for (n, phase, incremental) in [(1u8, COMPLETED, false), (2, COMPLETED, false), (3, FAILED, false), (4, COMPLETED, true)] {
        let p = finished(phase, 1_700_000_000_000_000 + i64::from(n));
        store.insert_prebuild(p.clone()).await.unwrap();
        let source = PrebuildSource {
            commit_sha: sha(n),
            configuration_fingerprint: "f".into(),
            incremental,
            base_prebuild_id: if incremental { ids[1].clone() } else { String::new() },
            base_commit_sha: if incremental { sha(2) } else { String::new() },
            ..Default::default()
        };
        assert!(store.record_source(ORG, &p.id, (1, 1), source).await.unwrap());
        ids.push(p.id);
    }
    let bases = store.base_candidates(ORG, PROJECT_A, SMALL, 10).await.unwrap();
    let seen: Vec<(String, String, u32)> =
        bases.iter().map(|b| (b.prebuild_id.clone(), b.commit_sha.clone(), b.incremental_builds)).collect();
    assert_eq!(seen, vec![(ids[1].clone(), sha(2), 1), (ids[0].clone(), sha(1), 0)], "no failed or incremental one");
    assert_eq!(bases[0].finished_at, Some(Micros(1_700_000_000_000_002)));
    assert!(store.base_candidates(ORG, PROJECT_A, LARGE, 10).await.unwrap().is_empty());
    assert_eq!(store.last_built(ORG, PROJECT_A).await.unwrap().map(|s| s.commit_sha), Some(sha(4)));
    assert!(store.last_built(OTHER_ORG, PROJECT_A).await.unwrap().is_none());
}

pub async fn deliveries_are_pruned_by_age_and_count(t: TestStore) {
    let store = &t.store;
    for (n, at) in [(1, 100), (2, 200), (3, 300), (4, 400)] {
        let batch = PushBatch { delivery: Some(format!("d{n}")), received_at: Micros(at), prebuilds: Vec::new() };
        assert_eq!(store.enqueue_push(batch).await.unwrap(), PushOutcome::Enqueued(Vec::new()));
    }
    assert_eq!(store.prune_deliveries(Micros(150), 2).await.unwrap(), 2, "d1 by age, d2 beyond the newest two");
    for (n, replayed) in [(1, false), (2, false), (3, true), (4, true)] {
        let batch = PushBatch { delivery: Some(format!("d{n}")), received_at: Micros(500), prebuilds: Vec::new() };
        assert_eq!(store.enqueue_push(batch).await.unwrap() == PushOutcome::Replayed, replayed, "d{n}");
    }
}

pub async fn a_branch_that_feeds_no_pool_never_becomes_the_pairs_snapshot(t: TestStore) {
    let store = &t.store;
    let main = prebuild(Spec { phase: COMPLETED, ..DEFAULT });
    let feature = prebuild(Spec { phase: COMPLETED, ..DEFAULT });
    store.insert_prebuild(main.clone()).await.unwrap();
    store.insert_prebuild(feature.clone()).await.unwrap();
    let not_pool = PrebuildSource { branch: "feature/x".into(), commit_sha: sha(1), feeds_warm_pools: false, ..Default::default() };
    assert!(store.record_source(ORG, &feature.id, (1, 1), not_pool).await.unwrap());
    assert_eq!(store.newest_completed_prebuild_id(ORG, PROJECT_A, SMALL).await.unwrap(), Some(main.id), "not the newer feature one");
}
