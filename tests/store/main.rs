//! The `Store` contract, one test body per rule, each run against both
//! stores: SQLite in a temp dir and PostgreSQL in a fresh database of a real
//! server (tests/common/postgres.rs). What the service and reconciler rely
//! on: tenancy, filters, keyset pages, optimistic updates that lose nothing
//! (also between two processes on one database), the warm pool pair's
//! uniqueness, the once-per-day schedule row, retention and claims, and
//! that an acknowledged write is visible to any other process at once.

#[path = "../common/postgres.rs"]
mod postgres;

mod builders;
mod fencing;
mod postgres_only;
mod queries;
mod sources;
mod sqlite_owned;

use builders::*;
use sources::*;

use prebuildd::domain::Micros;
use prebuildd::error::Error;
use prebuildd::proto::gitpod::v1::prebuild_metadata::PrebuildTrigger;
use prebuildd::proto::gitpod::v1::*;
use prebuildd::store::postgres::{PostgresStore, PostgresUrl};
use prebuildd::store::sqlite::SqliteStore;
use prebuildd::store::{Change, Page, PageRequest, PrebuildFilter, Store, WarmPoolFilter};
use queries::*;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const ORG: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const OTHER_ORG: &str = "bbbbbbbb-0000-4000-8000-000000000002";
const PROJECT_A: &str = "9e000000-0000-4000-8000-00000000000a";
const PROJECT_B: &str = "9e000000-0000-4000-8000-00000000000b";
const SMALL: &str = "c1a55000-0000-4000-8000-000000000001";
const LARGE: &str = "c1a55000-0000-4000-8000-000000000002";
const ALICE: &str = "a11ce000-0000-4000-8000-0000000000a1";
const BOB: &str = "b0b00000-0000-4000-8000-0000000000b0";
const RUNNER: &str = "7a000000-0000-4000-8000-000000000001";

const PENDING: i32 = PrebuildPhase::Pending as i32;
const RUNNING: i32 = PrebuildPhase::Running as i32;
const COMPLETED: i32 = PrebuildPhase::Completed as i32;
const FAILED: i32 = PrebuildPhase::Failed as i32;
const CANCELLED: i32 = PrebuildPhase::Cancelled as i32;
const DELETING: i32 = PrebuildPhase::Deleting as i32;
const MANUAL: i32 = PrebuildTrigger::Manual as i32;
const SCHEDULED: i32 = PrebuildTrigger::Scheduled as i32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

enum Location {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

/// A store under test, and where its data lives (to open a second store on
/// it: another process, or the same one after a restart).
pub struct TestStore {
    pub store: Arc<dyn Store>,
    location: Location,
}

impl TestStore {
    pub async fn open(backend: Backend) -> TestStore {
        let location = match backend {
            Backend::Sqlite => Location::Sqlite(tempfile::tempdir().expect("temp dir")),
            Backend::Postgres => Location::Postgres(postgres::fresh_database().await),
        };
        let store = open_at(&location).await;
        TestStore { store, location }
    }

    /// Another store on the same data.
    pub async fn second(&self) -> Arc<dyn Store> {
        open_at(&self.location).await
    }

    /// The PostgreSQL database's URL (None on SQLite).
    pub fn postgres_url(&self) -> Option<&str> {
        match &self.location {
            Location::Postgres(url) => Some(url),
            Location::Sqlite(_) => None,
        }
    }

    pub fn sqlite_dir(&self) -> Option<&std::path::Path> {
        match &self.location {
            Location::Sqlite(dir) => Some(dir.path()),
            Location::Postgres(_) => None,
        }
    }
}

async fn open_at(location: &Location) -> Arc<dyn Store> {
    match location {
        Location::Sqlite(dir) => Arc::new(SqliteStore::open(dir.path()).expect("sqlite store opens")),
        Location::Postgres(url) => {
            Arc::new(PostgresStore::open(&PostgresUrl::parse(url).expect("url")).await.expect("postgres store opens"))
        }
    }
}

/// Each listed test body (`async fn name(TestStore)`) becomes
/// `sqlite::name` and `postgres::name`.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::TestStore::open(super::Backend::Sqlite).await).await
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::TestStore::open(super::Backend::Postgres).await).await
                }
            )*
        }
    };
}

on_both_stores!(
    insert_and_get_are_scoped_to_the_organization,
    prebuild_lists_filter_and_page_newest_first,
    pages_resume_after_their_last_row_while_rows_come_and_go,
    warm_pool_lists_filter_and_page,
    updates_rewrite_the_row_and_its_columns,
    concurrent_updates_lose_nothing,
    updates_from_two_processes_lose_nothing,
    remove_deletes_for_good,
    existing_prebuild_ids_are_those_not_removed_in_any_organization,
    pending_prebuilds_are_counted_per_project_up_to_a_limit,
    active_prebuilds_are_the_unfinished_ones_oldest_first,
    newest_completed_prebuild_of_a_pair,
    one_warm_pool_per_project_and_class,
    scheduled_prebuilds_are_made_once_per_day,
    scheduled_prebuilds_once_per_day_between_two_processes,
    expired_prebuilds_by_phase_and_age,
    claims_count_since_and_are_pruned,
    acknowledged_writes_are_visible_to_another_process_and_survive_reopening,
    concurrent_inserts_each_land_once,
    pushes_queue_collapse_and_recognise_built_commits,
    sources_are_recorded_at_start_only_on_the_versions_seen,
    bases_are_completed_full_prebuilds_newest_first,
    deliveries_are_pruned_by_age_and_count,
    a_branch_that_feeds_no_pool_never_becomes_the_pairs_snapshot,
);

// ---- the bodies ------------------------------------------------------------------

async fn insert_and_get_are_scoped_to_the_organization(t: TestStore) {
    let store = t.store.as_ref();
    let p = prebuild(DEFAULT);
    store.insert_prebuild(p.clone()).await.unwrap();
    assert_eq!(store.get_prebuild(ORG, &p.id).await.unwrap(), Some(p.clone()), "the message comes back as stored");
    assert_eq!(store.get_prebuild(OTHER_ORG, &p.id).await.unwrap(), None, "another organization does not see it");
    assert_eq!(store.get_prebuild(ORG, &uuid::Uuid::now_v7().to_string()).await.unwrap(), None);
    assert!(matches!(store.insert_prebuild(p.clone()).await, Err(Error::AlreadyExists(_))), "IDs are unique");

    let pool = warm_pool(ORG, PROJECT_A, SMALL);
    store.insert_warm_pool(pool.clone()).await.unwrap();
    assert_eq!(store.get_warm_pool(ORG, &pool.id).await.unwrap(), Some(pool.clone()));
    assert_eq!(store.get_warm_pool(OTHER_ORG, &pool.id).await.unwrap(), None);
    let empty = store.list_prebuilds(org_filter(OTHER_ORG), first_page(10)).await.unwrap();
    assert!(empty.items.is_empty() && empty.next_after_seq.is_none());
}

async fn prebuild_lists_filter_and_page_newest_first(t: TestStore) {
    let store = t.store.as_ref();
    let mut created = Vec::new();
    for i in 0..40 {
        let spec = Spec {
            org: if i % 10 == 9 { OTHER_ORG } else { ORG },
            project: if i % 2 == 0 { PROJECT_A } else { PROJECT_B },
            class: if i % 4 < 2 { SMALL } else { LARGE },
            phase: [PENDING, RUNNING, COMPLETED, FAILED, CANCELLED][i % 5],
            trigger: if i % 3 == 0 { SCHEDULED } else { MANUAL },
            creator: if i % 7 < 3 { BOB } else { ALICE },
            executor: if i % 6 == 0 { BOB } else { ALICE },
        };
        let p = prebuild(spec);
        store.insert_prebuild(p.clone()).await.unwrap();
        created.push(p);
    }
    let expect = |filter: &PrebuildFilter| {
        created
            .iter()
            .rev()
            .filter(|p| {
                let m = p.metadata.as_ref().unwrap();
                let any = |values: &[String], value: &str| values.is_empty() || values.iter().any(|v| v == value);
                let any_i32 = |values: &[i32], value: i32| values.is_empty() || values.contains(&value);
                m.organization_id == filter.organization_id
                    && any(&filter.project_ids, &m.project_id)
                    && any_i32(&filter.phases, phase_of(p))
                    && any_i32(&filter.triggered_by, m.triggered_by)
                    && any(&filter.creator_ids, &m.creator.as_ref().unwrap().id)
                    && any(&filter.executor_ids, &m.executor.as_ref().unwrap().id)
            })
            .map(|p| p.id.clone())
            .collect::<Vec<_>>()
    };
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let filters = [
        org_filter(ORG),
        org_filter(OTHER_ORG),
        PrebuildFilter { project_ids: s(&[PROJECT_A]), ..org_filter(ORG) },
        PrebuildFilter { project_ids: s(&[PROJECT_A, PROJECT_B]), ..org_filter(ORG) },
        PrebuildFilter { phases: vec![COMPLETED], ..org_filter(ORG) },
        PrebuildFilter { phases: vec![FAILED, CANCELLED], ..org_filter(ORG) },
        PrebuildFilter { triggered_by: vec![SCHEDULED], ..org_filter(ORG) },
        PrebuildFilter { triggered_by: vec![MANUAL, SCHEDULED], ..org_filter(ORG) },
        PrebuildFilter { creator_ids: s(&[BOB]), ..org_filter(ORG) },
        PrebuildFilter { creator_ids: s(&[BOB, ALICE]), ..org_filter(ORG) },
        PrebuildFilter { executor_ids: s(&[BOB]), ..org_filter(ORG) },
        PrebuildFilter { project_ids: s(&[PROJECT_B]), creator_ids: s(&[ALICE]), phases: vec![PENDING, RUNNING], ..org_filter(ORG) },
        PrebuildFilter {
            project_ids: s(&[PROJECT_A]),
            phases: vec![PENDING, COMPLETED],
            triggered_by: vec![SCHEDULED],
            creator_ids: s(&[ALICE, BOB]),
            executor_ids: s(&[BOB]),
            ..org_filter(ORG)
        },
        PrebuildFilter { project_ids: s(&["9e000000-0000-4000-8000-0000000000ff"]), ..org_filter(ORG) },
    ];
    for filter in &filters {
        let want = expect(filter);
        for limit in [1, 3, 7, 100] {
            let (got, sizes) = all_prebuild_pages(store, filter, limit).await;
            assert_eq!(got, want, "{filter:?}, pages of {limit}");
            let full_pages = want.len() / limit;
            let mut want_sizes = vec![limit; full_pages];
            if want.len() % limit != 0 || want.is_empty() {
                want_sizes.push(want.len() % limit);
            }
            assert_eq!(sizes, want_sizes, "{filter:?}: full pages, then the rest; no empty page after a full one");
        }
    }
    // The token is the last row's position in insertion order, the same on
    // both stores (seq counts from 1).
    let page = store.list_prebuilds(org_filter(ORG), first_page(2)).await.unwrap();
    assert_eq!(page.next_after_seq, Some(38), "row 40 is another organization's: the page is rows 39 and 38");
}

async fn pages_resume_after_their_last_row_while_rows_come_and_go(t: TestStore) {
    let store = t.store.as_ref();
    let mut created = Vec::new();
    for _ in 0..6 {
        let p = prebuild(DEFAULT);
        store.insert_prebuild(p.clone()).await.unwrap();
        created.push(p.id);
    }
    let first = store.list_prebuilds(org_filter(ORG), first_page(2)).await.unwrap();
    assert_eq!(prebuild_ids(&first.items), vec![created[5].clone(), created[4].clone()]);
    // A newer row and a removed row on the next page do not shift it.
    store.insert_prebuild(prebuild(DEFAULT)).await.unwrap();
    assert!(store.remove_prebuild(&created[3]).await.unwrap());
    let second = store.list_prebuilds(org_filter(ORG), PageRequest { after_seq: first.next_after_seq, limit: 2 }).await.unwrap();
    assert_eq!(prebuild_ids(&second.items), vec![created[2].clone(), created[1].clone()]);
    let third = store.list_prebuilds(org_filter(ORG), PageRequest { after_seq: second.next_after_seq, limit: 2 }).await.unwrap();
    assert_eq!(prebuild_ids(&third.items), vec![created[0].clone()]);
    assert_eq!(third.next_after_seq, None);
}

async fn warm_pool_lists_filter_and_page(t: TestStore) {
    let store = t.store.as_ref();
    let mut created = Vec::new();
    for (org, project, class) in
        [(ORG, PROJECT_A, SMALL), (ORG, PROJECT_A, LARGE), (OTHER_ORG, PROJECT_A, SMALL), (ORG, PROJECT_B, SMALL), (ORG, PROJECT_B, LARGE)]
    {
        let pool = warm_pool(org, project, class);
        store.insert_warm_pool(pool.clone()).await.unwrap();
        created.push(pool);
    }
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let all_pages = |filter: WarmPoolFilter, limit: usize| async move {
        let (mut all, mut after_seq) = (Vec::new(), None);
        loop {
            let page = store.list_warm_pools(filter.clone(), PageRequest { after_seq, limit }).await.unwrap();
            all.extend(ids(&page.items, |p| &p.id));
            match page.next_after_seq {
                Some(next) => after_seq = Some(next),
                None => return all,
            }
        }
    };
    let id = |i: usize| created[i].id.clone();
    let org = || WarmPoolFilter { organization_id: ORG.into(), ..Default::default() };
    for limit in [1, 2, 10] {
        assert_eq!(all_pages(org(), limit).await, vec![id(4), id(3), id(1), id(0)]);
        assert_eq!(all_pages(WarmPoolFilter { project_ids: s(&[PROJECT_A]), ..org() }, limit).await, vec![id(1), id(0)]);
        assert_eq!(all_pages(WarmPoolFilter { environment_class_ids: s(&[SMALL]), ..org() }, limit).await, vec![id(3), id(0)]);
        assert_eq!(
            all_pages(WarmPoolFilter { project_ids: s(&[PROJECT_A, PROJECT_B]), environment_class_ids: s(&[LARGE]), ..org() }, limit).await,
            vec![id(4), id(1)]
        );
    }
    assert_eq!(all_pages(WarmPoolFilter { organization_id: OTHER_ORG.into(), ..Default::default() }, 10).await, vec![id(2)]);
    assert_eq!(ids(&store.all_warm_pools().await.unwrap(), |p| &p.id), ids(&created, |p| &p.id), "every organization's, oldest first");
}

async fn updates_rewrite_the_row_and_its_columns(t: TestStore) {
    let store = t.store.as_ref();
    let p = prebuild(DEFAULT);
    store.insert_prebuild(p.clone()).await.unwrap();

    let updated = store
        .update_prebuild(
            ORG,
            &p.id,
            Box::new(|p| {
                let status = p.status.get_or_insert_with(Default::default);
                status.phase = COMPLETED;
                status.completion_time = Some(pbjson_types::Timestamp { seconds: 1000, nanos: 0 });
                Ok(Change::Changed)
            }),
        )
        .await
        .unwrap()
        .expect("exists");
    assert_eq!(phase_of(&updated), COMPLETED);
    assert_eq!(store.get_prebuild(ORG, &p.id).await.unwrap(), Some(updated.clone()));
    let completed = PrebuildFilter { phases: vec![COMPLETED], ..org_filter(ORG) };
    assert_eq!(all_prebuild_pages(store, &completed, 10).await.0, vec![p.id.clone()], "the phase column follows");
    assert_eq!(
        prebuild_ids(&store.expired_prebuilds(Micros(1_000_000_001), Micros(0), 10).await.unwrap()),
        vec![p.id.clone()],
        "finished_at too"
    );

    // Unchanged writes nothing; an error aborts and leaves the row.
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let same = store
        .update_prebuild(
            ORG,
            &p.id,
            Box::new(move |p| {
                counter.fetch_add(1, Ordering::SeqCst);
                p.status.as_mut().unwrap().failure_message = "not written".into();
                Ok(Change::Unchanged)
            }),
        )
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(same.unwrap().status.unwrap().failure_message, "not written", "the caller gets what its closure made");
    assert_eq!(store.get_prebuild(ORG, &p.id).await.unwrap(), Some(updated.clone()), "but nothing was written");
    let refused = store
        .update_prebuild(
            ORG,
            &p.id,
            Box::new(|p| {
                p.status.as_mut().unwrap().phase = FAILED;
                Err(Error::FailedPrecondition("no".into()))
            }),
        )
        .await;
    assert_eq!(refused, Err(Error::FailedPrecondition("no".into())));
    assert_eq!(store.get_prebuild(ORG, &p.id).await.unwrap(), Some(updated));

    assert_eq!(store.update_prebuild(OTHER_ORG, &p.id, Box::new(bump_status)).await.unwrap(), None, "scoped to the organization");
    assert_eq!(store.update_prebuild(ORG, &uuid::Uuid::now_v7().to_string(), Box::new(bump_status)).await.unwrap(), None);

    let pool = warm_pool(ORG, PROJECT_A, SMALL);
    store.insert_warm_pool(pool.clone()).await.unwrap();
    let grown = store
        .update_warm_pool(
            ORG,
            &pool.id,
            Box::new(|p| {
                let spec = p.spec.get_or_insert_with(Default::default);
                spec.max_size = Some(5);
                spec.spec_version += 1;
                Ok(Change::Changed)
            }),
        )
        .await
        .unwrap()
        .expect("exists");
    assert_eq!(grown.spec.as_ref().unwrap().max_size, Some(5));
    assert_eq!(store.get_warm_pool(ORG, &pool.id).await.unwrap(), Some(grown));
    assert_eq!(store.update_warm_pool(OTHER_ORG, &pool.id, Box::new(|_| Ok(Change::Changed))).await.unwrap(), None);
}

/// Runs `writers` tasks of `each` increments of status_version against the
/// stores in turn; returns how many succeeded. Losing too many optimistic
/// races is `unavailable` (the caller retries); any other error fails.
async fn increment_concurrently(stores: &[Arc<dyn Store>], id: &str, writers: usize, each: usize) -> u64 {
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let store = stores[writer % stores.len()].clone();
        let id = id.to_string();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u64;
            for _ in 0..each {
                match store.update_prebuild(ORG, &id, Box::new(bump_status)).await {
                    Ok(Some(_)) => ok += 1,
                    Err(Error::Unavailable(_)) => {}
                    other => panic!("unexpected update result {other:?}"),
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for task in tasks {
        ok += task.await.unwrap();
    }
    ok
}

async fn concurrent_updates_lose_nothing(t: TestStore) {
    let store = t.store.clone();
    let p = prebuild(DEFAULT);
    store.insert_prebuild(p.clone()).await.unwrap();
    let ok = increment_concurrently(std::slice::from_ref(&store), &p.id, 8, 10).await;
    assert!(ok > 0);
    let now = store.get_prebuild(ORG, &p.id).await.unwrap().unwrap();
    assert_eq!(now.status.unwrap().status_version, 1 + ok, "every acknowledged update is in the row, none twice");
}

/// Many inserts at once (which the stores may commit together), some of
/// them the same prebuild twice: each ID is inserted by exactly one caller,
/// every other caller with it gets `already_exists`, and every row is as
/// its caller stored it, in both processes.
async fn concurrent_inserts_each_land_once(t: TestStore) {
    let stores = [t.store.clone(), t.second().await];
    let prebuilds: Vec<Prebuild> = (0..60).map(|i| prebuild(Spec { creator: if i % 2 == 0 { ALICE } else { BOB }, ..DEFAULT })).collect();
    let mut tasks = Vec::new();
    for (i, p) in prebuilds.iter().enumerate() {
        // Every third prebuild is inserted three times, by both processes.
        let copies = if i % 3 == 0 { 3 } else { 1 };
        for copy in 0..copies {
            let (store, p) = (stores[(i + copy) % 2].clone(), p.clone());
            tasks.push(tokio::spawn(async move { (p.id.clone(), store.insert_prebuild(p).await) }));
        }
    }
    let mut inserted = std::collections::HashMap::<String, usize>::new();
    for task in tasks {
        let (id, result) = task.await.unwrap();
        match result {
            Ok(()) => *inserted.entry(id).or_default() += 1,
            Err(Error::AlreadyExists(message)) => assert!(message.contains(&id), "{message}"),
            Err(other) => panic!("an insert failed: {other:?}"),
        }
    }
    assert_eq!(inserted.len(), prebuilds.len(), "every prebuild was inserted");
    assert!(inserted.values().all(|n| *n == 1), "by exactly one caller each: {inserted:?}");
    for store in &stores {
        for p in &prebuilds {
            assert_eq!(store.get_prebuild(ORG, &p.id).await.unwrap().as_ref(), Some(p));
        }
        let (listed, _) = all_prebuild_pages(store.as_ref(), &org_filter(ORG), 25).await;
        assert_eq!(listed.len(), prebuilds.len(), "listed once each");
    }
}

async fn updates_from_two_processes_lose_nothing(t: TestStore) {
    let stores = [t.store.clone(), t.second().await];
    let p = prebuild(DEFAULT);
    stores[0].insert_prebuild(p.clone()).await.unwrap();
    let ok = increment_concurrently(&stores, &p.id, 6, 10).await;
    assert!(ok > 0);
    for store in &stores {
        let now = store.get_prebuild(ORG, &p.id).await.unwrap().unwrap();
        assert_eq!(now.status.unwrap().status_version, 1 + ok, "the version check holds across processes");
    }
}

async fn remove_deletes_for_good(t: TestStore) {
    let store = t.store.as_ref();
    let p = prebuild(DEFAULT);
    store.insert_prebuild(p.clone()).await.unwrap();
    assert!(store.remove_prebuild(&p.id).await.unwrap());
    assert!(!store.remove_prebuild(&p.id).await.unwrap(), "a second removal finds nothing");
    assert_eq!(store.get_prebuild(ORG, &p.id).await.unwrap(), None);
    assert!(store.list_prebuilds(org_filter(ORG), first_page(10)).await.unwrap().items.is_empty());

    let pool = warm_pool(ORG, PROJECT_A, SMALL);
    store.insert_warm_pool(pool.clone()).await.unwrap();
    store.record_claim(&pool.id, Micros(100)).await.unwrap();
    assert!(store.remove_warm_pool(&pool.id).await.unwrap());
    assert!(!store.remove_warm_pool(&pool.id).await.unwrap());
    assert_eq!(store.get_warm_pool(ORG, &pool.id).await.unwrap(), None);
    assert_eq!(store.claims_since(&pool.id, Micros(0)).await.unwrap(), 0, "its claims go with it");
    store.insert_warm_pool(warm_pool(ORG, PROJECT_A, SMALL)).await.expect("the pair is free again");
}

async fn one_warm_pool_per_project_and_class(t: TestStore) {
    let store = t.store.as_ref();
    store.insert_warm_pool(warm_pool(ORG, PROJECT_A, SMALL)).await.unwrap();
    let again = store.insert_warm_pool(warm_pool(ORG, PROJECT_A, SMALL)).await;
    match again {
        Err(Error::AlreadyExists(message)) => assert!(message.contains(PROJECT_A) && message.contains(SMALL), "{message}"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    store.insert_warm_pool(warm_pool(ORG, PROJECT_A, LARGE)).await.expect("another class");
    store.insert_warm_pool(warm_pool(ORG, PROJECT_B, SMALL)).await.expect("another project");
    store.insert_warm_pool(warm_pool(OTHER_ORG, PROJECT_A, SMALL)).await.expect("another organization");
    assert_eq!(store.all_warm_pools().await.unwrap().len(), 4);
}

async fn acknowledged_writes_are_visible_to_another_process_and_survive_reopening(t: TestStore) {
    let other = t.second().await;
    let p = prebuild(DEFAULT);
    t.store.insert_prebuild(p.clone()).await.unwrap();
    assert_eq!(other.get_prebuild(ORG, &p.id).await.unwrap(), Some(p.clone()), "committed when acknowledged");
    let updated = t.store.update_prebuild(ORG, &p.id, Box::new(bump_status)).await.unwrap();
    assert_eq!(other.get_prebuild(ORG, &p.id).await.unwrap(), updated);
    let pool = warm_pool(ORG, PROJECT_A, SMALL);
    other.insert_warm_pool(pool.clone()).await.unwrap();
    assert_eq!(t.store.get_warm_pool(ORG, &pool.id).await.unwrap(), Some(pool.clone()));
    drop(other);

    // Reopening (a restart) applies no migration twice and keeps everything.
    let reopened = t.second().await;
    assert_eq!(reopened.get_prebuild(ORG, &p.id).await.unwrap(), updated);
    assert_eq!(reopened.get_warm_pool(ORG, &pool.id).await.unwrap(), Some(pool));
    let p2 = prebuild(DEFAULT);
    reopened.insert_prebuild(p2.clone()).await.unwrap();
    let page = reopened.list_prebuilds(org_filter(ORG), first_page(10)).await.unwrap();
    assert_eq!(prebuild_ids(&page.items), vec![p2.id, p.id], "seq goes on after a restart");
}

/// The index names of both schemas, compared: the same per-filter indexes.
#[tokio::test]
async fn both_stores_have_the_same_indexes() {
    let sqlite = TestStore::open(Backend::Sqlite).await;
    let postgres = TestStore::open(Backend::Postgres).await;
    let conn = rusqlite::Connection::open(sqlite.sqlite_dir().unwrap().join("prebuildd.db")).unwrap();
    let mut statement = conn
        .prepare("SELECT tbl_name || '.' || name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex%'")
        .unwrap();
    let sqlite_indexes: BTreeSet<String> = statement.query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect();
    let client = postgres_only::connect(postgres.postgres_url().unwrap()).await;
    let rows = client
        .query(
            "SELECT tablename || '.' || indexname FROM pg_indexes WHERE schemaname = current_schema()
             AND indexname NOT LIKE '%_pkey' AND indexname NOT LIKE '%_key'
             -- Shared logs are files on SQLite (one process, no replicas).
             AND tablename <> 'prebuild_log_chunks'",
            &[],
        )
        .await
        .unwrap();
    let postgres_indexes: BTreeSet<String> = rows.iter().map(|row| row.get(0)).collect();
    assert!(sqlite_indexes.len() >= 12, "{sqlite_indexes:?}");
    assert_eq!(postgres_indexes, sqlite_indexes);
}
