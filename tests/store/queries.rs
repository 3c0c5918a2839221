//! The queries the reconciler, retention, collection and the limits make:
//! the work list, the newest snapshot of a pair, schedules, expiry, claims,
//! which prebuilds exist and how many are queued. One body per store, run on
//! both by `on_both_stores!` in main.rs.

use super::*;

pub(super) async fn active_prebuilds_are_the_unfinished_ones_oldest_first(t: TestStore) {
    let store = t.store.as_ref();
    let mut active = Vec::new();
    for phase in [PENDING, COMPLETED, RUNNING, FAILED, DELETING, CANCELLED, PrebuildPhase::Cancelling as i32] {
        let p = prebuild(Spec { phase, org: if phase == RUNNING { OTHER_ORG } else { ORG }, ..DEFAULT });
        store.insert_prebuild(p.clone()).await.unwrap();
        if ![COMPLETED, FAILED, CANCELLED].contains(&phase) {
            active.push(p.id);
        }
    }
    assert_eq!(prebuild_ids(&store.active_prebuilds(100).await.unwrap()), active, "every organization's, oldest first");
    assert_eq!(prebuild_ids(&store.active_prebuilds(2).await.unwrap()), active[..2].to_vec());
    store
        .update_prebuild(
            ORG,
            &active[0],
            Box::new(|p| {
                p.status.as_mut().unwrap().phase = COMPLETED;
                Ok(Change::Changed)
            }),
        )
        .await
        .unwrap();
    assert_eq!(prebuild_ids(&store.active_prebuilds(100).await.unwrap()), active[1..].to_vec(), "finishing leaves the list");
}

pub(super) async fn newest_completed_prebuild_of_a_pair(t: TestStore) {
    let store = t.store.as_ref();
    assert_eq!(store.newest_completed_prebuild_id(ORG, PROJECT_A, SMALL).await.unwrap(), None);
    let old = prebuild(Spec { phase: COMPLETED, ..DEFAULT });
    let new = prebuild(Spec { phase: COMPLETED, ..DEFAULT });
    for p in [
        old.clone(),
        new.clone(),
        prebuild(Spec { phase: RUNNING, ..DEFAULT }),
        prebuild(Spec { phase: FAILED, ..DEFAULT }),
        prebuild(Spec { phase: COMPLETED, class: LARGE, ..DEFAULT }),
        prebuild(Spec { phase: COMPLETED, project: PROJECT_B, ..DEFAULT }),
        prebuild(Spec { phase: COMPLETED, org: OTHER_ORG, ..DEFAULT }),
    ] {
        store.insert_prebuild(p).await.unwrap();
    }
    assert_eq!(store.newest_completed_prebuild_id(ORG, PROJECT_A, SMALL).await.unwrap(), Some(new.id.clone()));
    store.remove_prebuild(&new.id).await.unwrap();
    assert_eq!(store.newest_completed_prebuild_id(ORG, PROJECT_A, SMALL).await.unwrap(), Some(old.id));
}

pub(super) async fn scheduled_prebuilds_are_made_once_per_day(t: TestStore) {
    let store = t.store.as_ref();
    let scheduled = || prebuild(Spec { trigger: SCHEDULED, ..DEFAULT });
    let first = scheduled();
    assert!(store.insert_scheduled_prebuild(first.clone(), "2026-03-01").await.unwrap());
    let second = scheduled();
    assert!(!store.insert_scheduled_prebuild(second.clone(), "2026-03-01").await.unwrap(), "the day has one already");
    assert_eq!(store.get_prebuild(ORG, &second.id).await.unwrap(), None, "and the second was not inserted");
    assert_eq!(store.get_prebuild(ORG, &first.id).await.unwrap(), Some(first.clone()));
    assert!(store.insert_scheduled_prebuild(scheduled(), "2026-03-02").await.unwrap(), "the next day");
    assert!(
        store.insert_scheduled_prebuild(prebuild(Spec { trigger: SCHEDULED, class: LARGE, ..DEFAULT }), "2026-03-01").await.unwrap(),
        "another class"
    );
    // The day stays taken even after its prebuild is gone (retention).
    store.remove_prebuild(&first.id).await.unwrap();
    assert!(!store.insert_scheduled_prebuild(scheduled(), "2026-03-01").await.unwrap());
    // A failed insert (a duplicate ID) does not take the day.
    let duplicate = prebuild(Spec { trigger: SCHEDULED, project: PROJECT_B, ..DEFAULT });
    store.insert_prebuild(duplicate.clone()).await.unwrap();
    assert!(store.insert_scheduled_prebuild(duplicate.clone(), "2026-03-01").await.is_err());
    assert!(store.insert_scheduled_prebuild(prebuild(Spec { project: PROJECT_B, ..DEFAULT }), "2026-03-01").await.unwrap());
}

pub(super) async fn scheduled_prebuilds_once_per_day_between_two_processes(t: TestStore) {
    let stores = [t.store.clone(), t.second().await];
    for day in ["2026-04-01", "2026-04-02", "2026-04-03"] {
        let mut tasks = Vec::new();
        for i in 0..6 {
            let store = stores[i % 2].clone();
            tasks.push(tokio::spawn(async move {
                store.insert_scheduled_prebuild(prebuild(Spec { trigger: SCHEDULED, ..DEFAULT }), day).await.unwrap()
            }));
        }
        let mut made = 0;
        for task in tasks {
            made += task.await.unwrap() as usize;
        }
        assert_eq!(made, 1, "exactly one scheduled prebuild on {day}");
    }
    let scheduled = PrebuildFilter { triggered_by: vec![SCHEDULED], ..org_filter(ORG) };
    assert_eq!(all_prebuild_pages(stores[1].as_ref(), &scheduled, 100).await.0.len(), 3);
}

pub(super) async fn expired_prebuilds_by_phase_and_age(t: TestStore) {
    let store = t.store.as_ref();
    let completed_old = finished(COMPLETED, 1_000);
    let failed_old = finished(FAILED, 2_000);
    let cancelled_old = finished(CANCELLED, 3_000);
    let completed_new = finished(COMPLETED, 50_000);
    let failed_new = finished(FAILED, 60_000);
    let running = prebuild(Spec { phase: RUNNING, ..DEFAULT });
    // Finished long ago but being deleted already: not retention's to pick.
    let deleting = finished(DELETING, 500);
    for p in [&failed_old, &completed_new, &cancelled_old, &completed_old, &failed_new, &running, &deleting] {
        store.insert_prebuild(p.clone()).await.unwrap();
    }
    let expired = |completed_before: i64, failed_before: i64, limit: usize| async move {
        prebuild_ids(&store.expired_prebuilds(Micros(completed_before), Micros(failed_before), limit).await.unwrap())
    };
    assert_eq!(expired(10_000, 10_000, 10).await, vec![completed_old.id.clone(), failed_old.id.clone(), cancelled_old.id.clone()]);
    assert_eq!(expired(10_000, 10_000, 2).await, vec![completed_old.id.clone(), failed_old.id.clone()], "oldest first");
    assert_eq!(expired(100_000, 0, 10).await, vec![completed_old.id.clone(), completed_new.id.clone()], "each phase its own age");
    assert_eq!(expired(0, 100_000, 10).await, vec![failed_old.id.clone(), cancelled_old.id.clone(), failed_new.id.clone()]);
    assert_eq!(expired(1_000, 2_000, 10).await, Vec::<String>::new(), "strictly before");
}

pub(super) async fn claims_count_since_and_are_pruned(t: TestStore) {
    let store = t.store.as_ref();
    let (pool, other) = (uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().to_string());
    for at in [100, 200, 200, 300] {
        store.record_claim(&pool, Micros(at)).await.unwrap();
    }
    store.record_claim(&other, Micros(250)).await.unwrap();
    assert_eq!(store.claims_since(&pool, Micros(0)).await.unwrap(), 4);
    assert_eq!(store.claims_since(&pool, Micros(200)).await.unwrap(), 3, "since is inclusive");
    assert_eq!(store.claims_since(&pool, Micros(301)).await.unwrap(), 0);
    assert_eq!(store.claims_since(&other, Micros(0)).await.unwrap(), 1);
    store.prune_claims(Micros(200)).await.unwrap();
    assert_eq!(store.claims_since(&pool, Micros(0)).await.unwrap(), 3, "prune drops those strictly before");
    store.prune_claims(Micros(1_000)).await.unwrap();
    assert_eq!(store.claims_since(&pool, Micros(0)).await.unwrap(), 0);
    assert_eq!(store.claims_since(&other, Micros(0)).await.unwrap(), 0);
}

pub(super) async fn existing_prebuild_ids_are_those_not_removed_in_any_organization(t: TestStore) {
    let store = t.store.as_ref();
    let (kept, removed) = (prebuild(DEFAULT), prebuild(DEFAULT));
    let mut other = prebuild(DEFAULT);
    other.metadata.as_mut().unwrap().organization_id = "0ther000-0000-4000-8000-000000000000".into();
    for p in [&kept, &removed, &other] {
        store.insert_prebuild(p.clone()).await.unwrap();
    }
    store.remove_prebuild(&removed.id).await.unwrap();
    let never = uuid::Uuid::now_v7().to_string();
    let asked = [kept.id.clone(), removed.id.clone(), other.id.clone(), never];
    let existing = store.existing_prebuild_ids(&asked).await.unwrap();
    assert_eq!(existing, [kept.id.clone(), other.id.clone()].into_iter().collect());
    assert!(store.existing_prebuild_ids(&[]).await.unwrap().is_empty());
    // More than one statement's worth of IDs.
    let many: Vec<String> = (0..1200).map(|_| uuid::Uuid::now_v7().to_string()).chain([kept.id.clone()]).collect();
    assert_eq!(store.existing_prebuild_ids(&many).await.unwrap().len(), 1);
}

pub(super) async fn pending_prebuilds_are_counted_per_project_up_to_a_limit(t: TestStore) {
    let store = t.store.as_ref();
    for spec in [Spec { phase: PENDING, ..DEFAULT }; 5]
        .into_iter()
        .chain([Spec { phase: RUNNING, ..DEFAULT }, Spec { phase: COMPLETED, ..DEFAULT }])
    {
        store.insert_prebuild(prebuild(spec)).await.unwrap();
    }
    store.insert_prebuild(prebuild(Spec { phase: PENDING, project: PROJECT_B, ..DEFAULT })).await.unwrap();
    assert_eq!(store.pending_prebuilds(PROJECT_A, 100).await.unwrap(), 5, "only PENDING ones, only of the project");
    assert_eq!(store.pending_prebuilds(PROJECT_A, 3).await.unwrap(), 3, "counted up to the limit");
    assert_eq!(store.pending_prebuilds(PROJECT_B, 100).await.unwrap(), 1);
    // One that starts no longer counts.
    let started = prebuild(Spec { phase: PENDING, ..DEFAULT });
    store.insert_prebuild(started.clone()).await.unwrap();
    assert_eq!(store.pending_prebuilds(PROJECT_A, 100).await.unwrap(), 6);
    store
        .update_prebuild(
            ORG,
            &started.id,
            Box::new(|p| {
                p.status.as_mut().unwrap().phase = RUNNING;
                Ok(Change::Changed)
            }),
        )
        .await
        .unwrap();
    assert_eq!(store.pending_prebuilds(PROJECT_A, 100).await.unwrap(), 5);
}
