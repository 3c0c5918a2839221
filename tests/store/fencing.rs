//! The reconciler's writes on PostgreSQL are fenced by its lease: a replica
//! whose lease ran out or was taken over writes nothing and stops leading,
//! the one holding the new term writes, and a takeover waits for the old
//! term's write in flight instead of overlapping it.

use super::postgres_only::connect;
use super::{phase_of, prebuild, warm_pool, DEFAULT, ORG, PROJECT_A, RUNNING, SMALL};
use prebuildd::domain::Micros;
use prebuildd::error::Error;
use prebuildd::proto::gitpod::v1::PrebuildPhase;
use prebuildd::store::postgres::{LeaseFence, PostgresStore, PostgresUrl};
use prebuildd::store::{Change, PrebuildUpdate, Store};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(3600);
const STARTING: i32 = PrebuildPhase::Starting as i32;

async fn open(url: &str) -> PostgresStore {
    PostgresStore::open(&PostgresUrl::parse(url).expect("url")).await.expect("open")
}

/// A replica's fence holding the term it took (or failing the test).
async fn take_lease(store: &PostgresStore, holder: &str) -> LeaseFence {
    let fence = LeaseFence::new(holder);
    let term = store.acquire_lease(holder, LONG).await.unwrap();
    assert!(term.is_some(), "{holder} takes the lease");
    fence.hold(term);
    fence
}

fn set_phase(phase: i32) -> PrebuildUpdate {
    Box::new(move |p| {
        p.status.get_or_insert_with(Default::default).phase = phase;
        Ok(Change::Changed)
    })
}

/// What a stale leader's fenced write must fail with.
#[track_caller]
fn assert_fenced<T: std::fmt::Debug>(result: prebuildd::error::Result<T>, what: &str) {
    match result {
        Err(Error::FailedPrecondition(message)) => assert!(message.contains("reconciler lease"), "{what}: {message}"),
        other => panic!("{what}: a stale leader's write must fail with failed_precondition, got {other:?}"),
    }
}

/// The lease runs out in the database (the holder was paused or cut off
/// for longer than its lease), as time would make it.
async fn expire_lease(url: &str) {
    connect(url).await.batch_execute("UPDATE reconciler_lease SET expires_at = now() - interval '1 second'").await.unwrap();
}

#[tokio::test]
async fn a_stale_leader_writes_nothing_and_the_new_leader_writes() {
    let url = super::postgres::fresh_database().await;
    let store = open(&url).await;
    let p = prebuild(DEFAULT);
    store.insert_prebuild(p.clone()).await.unwrap();
    let pool = warm_pool(ORG, PROJECT_A, SMALL);
    store.insert_warm_pool(pool.clone()).await.unwrap();

    let old_fence = take_lease(&store, "old").await;
    let old = store.fenced(old_fence.clone());
    assert_eq!(phase_of(&old.update_prebuild(ORG, &p.id, set_phase(STARTING)).await.unwrap().unwrap()), STARTING, "the leader writes");

    expire_lease(&url).await;
    let new_fence = take_lease(&store, "new").await;
    assert_eq!(new_fence.term(), Some(2), "a takeover raises the term");
    let new = store.fenced(new_fence.clone());

    // The old leader still believes it holds term 1.
    assert_eq!(old_fence.term(), Some(1));
    assert_fenced(old.update_prebuild(ORG, &p.id, set_phase(RUNNING)).await, "a phase change");
    assert_eq!(old_fence.term(), None, "the refused write ends its leadership");
    assert_eq!(phase_of(&store.get_prebuild(ORG, &p.id).await.unwrap().unwrap()), STARTING, "nothing was written");
    // Every other kind of write is refused as well; reads still work.
    assert_fenced(old.remove_prebuild(&p.id).await, "a removal");
    assert_fenced(old.update_warm_pool(ORG, &pool.id, Box::new(|_| Ok(Change::Changed))).await, "a warm pool update");
    assert_fenced(old.remove_warm_pool(&pool.id).await, "a warm pool removal");
    assert_fenced(old.insert_scheduled_prebuild(prebuild(DEFAULT), "2026-12-02").await, "a scheduled prebuild");
    assert_fenced(old.prune_claims(Micros(i64::MAX)).await, "pruning claims");
    assert_fenced(old.insert_prebuild(prebuild(DEFAULT)).await, "an insert");
    assert!(old.get_prebuild(ORG, &p.id).await.unwrap().is_some());
    assert!(store.get_warm_pool(ORG, &pool.id).await.unwrap().is_some(), "the pool is still there");

    // The new leader writes the phase change.
    assert_eq!(phase_of(&new.update_prebuild(ORG, &p.id, set_phase(RUNNING)).await.unwrap().unwrap()), RUNNING);
    assert!(new.insert_scheduled_prebuild(prebuild(DEFAULT), "2026-12-02").await.unwrap());
    assert!(new.remove_prebuild(&p.id).await.unwrap());
    assert_eq!(new_fence.term(), Some(2));

    // The old leader coming back after its lease ran out gets a new term,
    // and writes again under it.
    expire_lease(&url).await;
    let again = store.acquire_lease("old", LONG).await.unwrap();
    assert_eq!(again, Some(3));
    old_fence.hold(again);
    assert!(old.remove_warm_pool(&pool.id).await.unwrap());
    assert_fenced(new.prune_claims(Micros(0)).await, "the replaced leader");
}

#[tokio::test]
async fn a_fence_without_a_term_writes_nothing() {
    let url = super::postgres::fresh_database().await;
    let store = open(&url).await;
    let follower = store.fenced(LeaseFence::new("follower"));
    assert_fenced(follower.insert_prebuild(prebuild(DEFAULT)).await, "a follower's insert");
    // Even when the lease row happens to name it, a fence must hold the term.
    assert_eq!(store.acquire_lease("follower", LONG).await.unwrap(), Some(1));
    assert_fenced(follower.insert_prebuild(prebuild(DEFAULT)).await, "a fence that holds no term");
}

/// The old leader's write passed the lease check and is still open when
/// the lease runs out: the takeover waits for it to commit, so the old
/// term's writes all come before the new term's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_takeover_waits_for_the_old_terms_write_in_flight() {
    let url = super::postgres::fresh_database().await;
    let store = open(&url).await;
    let p = prebuild(DEFAULT);
    store.insert_prebuild(p.clone()).await.unwrap();
    let old_fence = take_lease(&store, "old").await;
    let old = store.fenced(old_fence.clone());

    // The old leader's update stops inside its transaction (after the
    // lease check, before its UPDATE) until told to go on.
    let (inside_tx, inside) = mpsc::channel::<()>();
    let (go, go_rx) = mpsc::channel::<()>();
    let (inside_tx, go_rx) = (Mutex::new(inside_tx), Arc::new(Mutex::new(go_rx)));
    let update: PrebuildUpdate = Box::new(move |prebuild| {
        let _ = inside_tx.lock().unwrap().send(());
        let go_rx = go_rx.clone();
        // Hands this worker's other tasks to another thread while it waits.
        tokio::task::block_in_place(|| go_rx.lock().unwrap().recv_timeout(Duration::from_secs(60)).expect("told to go on"));
        prebuild.status.get_or_insert_with(Default::default).phase = STARTING;
        Ok(Change::Changed)
    });
    let write = tokio::spawn(async move { old.update_prebuild(ORG, &p.id, update).await.map(|p| p.map(|p| phase_of(&p))) });
    tokio::task::spawn_blocking(move || inside.recv_timeout(Duration::from_secs(60)).expect("the write is in its transaction"))
        .await
        .unwrap();

    expire_lease(&url).await;
    let taker = store.clone();
    let takeover = tokio::spawn(async move { taker.acquire_lease("new", LONG).await });
    // The takeover waits on the lease row's lock (as the server reports it).
    let observer = connect(&url).await;
    loop {
        let waiting: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%FROM reconciler_lease%FOR UPDATE%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == 1 {
            break;
        }
        assert!(!takeover.is_finished(), "the takeover finished while the old term's write was open: {:?}", takeover.await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    go.send(()).unwrap();
    assert_eq!(write.await.unwrap().unwrap(), Some(STARTING), "the write that passed the check commits");
    assert_eq!(takeover.await.unwrap().unwrap(), Some(2), "then the new term begins");
    let row = observer.query_one("SELECT holder, term FROM reconciler_lease", &[]).await.unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, i64>(1)), ("new".to_string(), 2));
}
