//! The server's SQLite store (`SqliteStore::open_owned`): it owns the data dir
//! (a second owner is refused, naming the dir) and answers GetPrebuild from
//! memory for rows read since the last commit, so these check that such a
//! read is never older than a write its caller was told of.

use super::*;

fn org_prebuild() -> Prebuild {
    prebuild(DEFAULT)
}

#[tokio::test]
async fn a_second_owner_of_the_data_dir_is_refused_and_the_first_one_lets_go_when_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let first = SqliteStore::open_owned(dir.path()).unwrap();
    let path = dir.path().to_path_buf();
    let second = tokio::task::spawn_blocking(move || SqliteStore::open_owned(&path)).await.unwrap();
    match second {
        Err(Error::FailedPrecondition(message)) => {
            assert!(message.contains("in use by another prebuildd") && message.contains(&dir.path().display().to_string()), "{message}")
        }
        other => panic!("expected failed_precondition, got {other:?}"),
    }
    drop(first);
    SqliteStore::open_owned(dir.path()).expect("the lock is released with the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_from_memory_follow_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_owned(dir.path()).unwrap());
    let p = org_prebuild();
    store.insert_prebuild(p.clone()).await.unwrap();
    assert_eq!(store.get_prebuild(ORG, &p.id).await.unwrap(), Some(p.clone()));
    assert_eq!(store.get_prebuild(ORG, &p.id).await.unwrap(), Some(p.clone()), "a second read, from memory");
    assert_eq!(store.get_prebuild(OTHER_ORG, &p.id).await.unwrap(), None, "not for another organization");

    // Readers keep loading the row (and offering it to the cache) while it
    // is updated: after each acknowledged update, a read sees that update.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (store, id, stop) = (store.clone(), p.id.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                store.get_prebuild(ORG, &id).await.unwrap();
                // A read from memory never waits: let the writer's side run.
                tokio::task::yield_now().await;
            }
        }));
    }
    for _ in 0..200 {
        let updated = store.update_prebuild(ORG, &p.id, Box::new(bump_status)).await.unwrap().unwrap();
        let read = store.get_prebuild(ORG, &p.id).await.unwrap().unwrap();
        assert_eq!(read.status.unwrap().status_version, updated.status.unwrap().status_version, "a read older than an acknowledged write");
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }

    store.remove_prebuild(&p.id).await.unwrap();
    assert_eq!(store.get_prebuild(ORG, &p.id).await.unwrap(), None, "a removed row is gone from memory too");
}
