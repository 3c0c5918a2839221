//! Warm pools made from snapshots: convergence, claims, rotation, removal.

use super::*;

/// Syncs until the observation is `wanted`, checking `each` on every one.
async fn converge(runner: &LocalRunner, target: &PoolTarget, wanted: PoolObservation, mut each: impl FnMut(&PoolObservation)) {
    let started = Instant::now();
    loop {
        let observed = runner.sync_pool(target.clone()).await.unwrap();
        each(&observed);
        if observed == wanted {
            return;
        }
        assert!(started.elapsed() < PATIENCE, "the pool never converged to {wanted:?}: {observed:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pool's directory: instance directories and stopped markers.
fn pool_contents(root: &Path, warm_pool_id: &str) -> (usize, usize) {
    let entries: Vec<String> = std::fs::read_dir(root.join("pools").join(warm_pool_id))
        .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let markers = entries.iter().filter(|n| n.ends_with(".stopped")).count();
    let dirs = entries.iter().filter(|n| !n.contains('.')).count();
    (dirs, markers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pool_converges_hands_out_rotates_and_empties() {
    within(async {
        let fixture = Fixture::new();
        let repo = fixture.path("repo");
        repository(&repo, Some(DEVCONTAINER), &[], true);
        let first = fixture.completed_prebuild(&repo).await;
        let runner = &fixture.runner;
        let pool_id = uuid::Uuid::now_v7().to_string();
        let target = |snapshot: &str| PoolTarget {
            warm_pool_id: pool_id.clone(),
            snapshot_id: Some(snapshot.into()),
            snapshot_image: None,
            running: 2,
            stopped: 1,
            resources: Default::default(),
            policy: Default::default(),
        };
        let ready = PoolObservation { running: 2, stopped: 1, outdated: 0, failure: None };

        // Converges: two extracted workspaces and one marker.
        let started = Instant::now();
        let observed = runner.sync_pool(target(&first)).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(1), "sync does not wait for extractions");
        assert_eq!(observed.stopped, 1, "a stopped instance is only a marker: there at once");
        converge(runner, &target(&first), ready.clone(), |_| {}).await;
        assert_eq!(pool_contents(&fixture.root(), &pool_id), (2, 1));

        // A claim hands out a workspace with the repository and the prebuild's output.
        let claimed = runner.claim_instance(&pool_id).await.unwrap().expect("a ready instance");
        assert_eq!(claimed.snapshot_id, first);
        let workspace = Path::new(&claimed.workspace_path);
        assert_eq!(workspace, fixture.root().join("claimed").join(&claimed.instance_id));
        assert_eq!(std::fs::read_to_string(workspace.join("README.md")).unwrap(), "a test repository\n");
        assert_eq!(std::fs::read_to_string(workspace.join("out/result.txt")).unwrap(), "built\n");

        // The next syncs backfill (the stopped one is promoted, a new slot
        // reserved). The promoted one's extraction runs in the background and
        // may already be done when the sync answers, so it counts as running
        // or not yet; the reserved slot is there at once either way.
        let observed = runner.sync_pool(target(&first)).await.unwrap();
        assert_eq!(observed.stopped, 1, "a new slot is reserved at once: {observed:?}");
        assert!((1..=2).contains(&observed.running), "the unclaimed one stays, the promoted one may be ready: {observed:?}");
        converge(runner, &target(&first), ready.clone(), |_| {}).await;

        // Rotation: a new snapshot; a claimable instance exists throughout.
        std::fs::write(repo.join("NEW.md"), "second version\n").unwrap();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", "second"]);
        let second = fixture.completed_prebuild(&repo).await;
        let observed = runner.sync_pool(target(&second)).await.unwrap();
        assert!(observed.running + observed.outdated >= 2, "old instances stay until new ones are ready: {observed:?}");
        let during = runner.claim_instance(&pool_id).await.unwrap().expect("a claim finds an instance mid-rotation");
        assert!(during.snapshot_id == first || during.snapshot_id == second);
        converge(runner, &target(&second), ready.clone(), |observed| {
            assert!(observed.running + observed.outdated >= 1, "nothing claimable mid-rotation: {observed:?}");
        })
        .await;
        // Their files are deleted in the background.
        eventually("the old instances' files are gone", PATIENCE, || pool_contents(&fixture.root(), &pool_id) == (2, 1)).await;
        let after = runner.claim_instance(&pool_id).await.unwrap().expect("a ready instance");
        assert_eq!(after.snapshot_id, second);
        assert!(Path::new(&after.workspace_path).join("NEW.md").is_file());

        // Removal empties it.
        let started = Instant::now();
        while !runner.remove_pool(&pool_id).await.unwrap() {
            assert!(started.elapsed() < PATIENCE, "the pool never emptied");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!fixture.root().join("pools").join(&pool_id).exists());
        assert!(runner.remove_pool(&pool_id).await.unwrap(), "removing again is harmless");
        assert_eq!(runner.claim_instance(&pool_id).await.unwrap(), None);
        assert!(Path::new(&claimed.workspace_path).is_dir(), "claimed instances belong to their claimants");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_without_a_snapshot_provisions_nothing_and_a_missing_archive_says_why() {
    within(async {
        let fixture = Fixture::new();
        let runner = &fixture.runner;
        let pool_id = uuid::Uuid::now_v7().to_string();
        let none = PoolTarget {
            warm_pool_id: pool_id.clone(),
            snapshot_id: None,
            snapshot_image: None,
            running: 2,
            stopped: 3,
            resources: Default::default(),
            policy: Default::default(),
        };
        assert_eq!(runner.sync_pool(none).await.unwrap(), PoolObservation::default());
        assert_eq!(pool_contents(&fixture.root(), &pool_id), (0, 0));
        assert_eq!(runner.claim_instance(&pool_id).await.unwrap(), None);

        let missing = "0190bbbb-0000-7000-8000-000000000000";
        let target = PoolTarget {
            warm_pool_id: pool_id.clone(),
            snapshot_id: Some(missing.into()),
            snapshot_image: None,
            running: 1,
            stopped: 1,
            resources: Default::default(),
            policy: Default::default(),
        };
        let observed = runner.sync_pool(target).await.unwrap();
        let failure = observed.failure.expect("a failure");
        assert!(failure.contains(missing) && failure.contains("missing"), "{failure}");
        assert_eq!((observed.running, observed.stopped), (0, 0));
        assert!(runner.remove_pool(&pool_id).await.unwrap());
    })
    .await;
}
