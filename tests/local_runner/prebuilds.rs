//! Prebuilds: the lifecycle and its snapshot, failures, the sources a
//! workspace is made from, stops, and snapshot progress.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prebuild_runs_the_lifecycle_and_snapshots_the_workspace() {
    within(async {
        let fixture = Fixture::new();
        let repo = fixture.path("repo");
        repository(&repo, Some(DEVCONTAINER), &[], true);

        let (prebuild_id, environment_id) = fixture.start(&repo.display().to_string()).await;
        let (state, seen) = fixture.finish(&prebuild_id).await;
        let log = fixture.log(&prebuild_id);
        let JobState::Completed { snapshot_size_bytes, warning, .. } = state else { panic!("{state:?}\n{log}") };
        let not_used = "the local runner runs the lifecycle commands on its host, not in a dev container: image in .devcontainer/devcontainer.json is not used";
        assert_eq!(warning.as_deref(), Some(not_used), "what of the file was not used is the prebuild's warning");
        assert_eq!(seen.first(), Some(&JobState::Starting), "{seen:?}");

        // The snapshot: at the deterministic path, of the real size, holding
        // the repository and what the commands wrote (and nothing a
        // prebuild does not run).
        let archive = fixture.runner.snapshot_path(&prebuild_id);
        assert_eq!(archive, fixture.root().join("snapshots").join(format!("{prebuild_id}.tar.zst")));
        assert_eq!(snapshot_size_bytes as u64, std::fs::metadata(&archive).unwrap().len());
        let unpacked = unpack(&archive);
        let read = |name: &str| std::fs::read_to_string(unpacked.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(read("out/result.txt"), "built\n");
        assert_eq!(read("out/a.txt"), "parallel-a\n");
        assert_eq!(read("out/b.txt"), "parallel-b\n");
        assert_eq!(read("README.md"), "a test repository\n");
        assert!(unpacked.path().join(".git").is_dir(), "the snapshot is the whole workspace");
        assert!(!unpacked.path().join("out/post.txt").exists(), "postCreateCommand is not part of a prebuild");

        // The log: what happened, and the commands' own output.
        for line in ["cloning", "creating-the-environment", "log-from-a", "log-from-b", "image in .devcontainer/devcontainer.json is not used", "snapshot written"] {
            assert!(log.contains(line), "{line:?} missing from the log:\n{log}");
        }
        assert!(!fixture.workspace(&environment_id).exists(), "the workspace goes once the snapshot is written");

        // Final states stay final.
        fixture.runner.stop(&prebuild_id).await.unwrap();
        assert!(matches!(fixture.runner.observe(&prebuild_id).await, Some(JobState::Completed { .. })));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_survive_a_new_runner_and_remove_deletes_them() {
    within(async {
        let fixture = Fixture::new();
        let repo = fixture.path("repo");
        repository(&repo, None, &[], true);
        let prebuild_id = fixture.completed_prebuild(&repo).await;
        let Fixture { dir, runner } = fixture;
        let archive = runner.snapshot_path(&prebuild_id);
        drop(runner);

        let again = runner_in(dir.path(), true);
        assert_eq!(again.snapshot_path(&prebuild_id), archive);
        assert!(archive.is_file(), "a snapshot outlives its runner");
        assert_eq!(again.observe(&prebuild_id).await, None, "jobs do not");

        again.remove(&prebuild_id).await.unwrap();
        assert!(!archive.exists());
        again.remove(&prebuild_id).await.unwrap();
        again.remove("0190aaaa-0000-7000-8000-000000000000").await.unwrap();
        again.stop("0190aaaa-0000-7000-8000-000000000000").await.unwrap();
        assert_eq!(again.observe("0190aaaa-0000-7000-8000-000000000000").await, None);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_names_itself_its_exit_code_and_the_last_lines() {
    within(async {
        let fixture = Fixture::new();
        let repo = fixture.path("repo");
        let devcontainer = r#"{
          "onCreateCommand": "echo line-1; echo line-2; echo about-to-fail >&2; exit 3",
          "updateContentCommand": "echo never > never.txt", // not reached
        }"#;
        repository(&repo, Some(devcontainer), &[], true);
        let (prebuild_id, environment_id) = fixture.start(&repo.display().to_string()).await;
        let (state, _) = fixture.finish(&prebuild_id).await;
        let JobState::Failed { message } = state else { panic!("{state:?}") };
        for part in
            ["onCreateCommand", "echo line-1; echo line-2; echo about-to-fail >&2; exit 3", "exited with code 3", "line-2\nabout-to-fail"]
        {
            assert!(message.contains(part), "{part:?} missing from {message:?}");
        }
        assert!(message.lines().count() <= 7, "a few lines, not the whole log: {message:?}");
        assert!(!fixture.runner.snapshot_path(&prebuild_id).exists());
        assert!(!fixture.workspace(&environment_id).exists());
        assert!(fixture.log(&prebuild_id).contains("failed: onCreateCommand"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_devcontainer_the_snapshot_holds_the_repository_with_a_warning() {
    within(async {
        let fixture = Fixture::new();
        let repo = fixture.path("repo");
        repository(&repo, None, &[("main.c", "int main;\n")], true);
        let (prebuild_id, _) = fixture.start(&repo.display().to_string()).await;
        let (state, _) = fixture.finish(&prebuild_id).await;
        let JobState::Completed { warning: Some(warning), .. } = state else { panic!("{state:?}") };
        assert!(warning.contains("no .devcontainer/devcontainer.json found"), "{warning}");
        let unpacked = unpack(&fixture.runner.snapshot_path(&prebuild_id));
        assert_eq!(std::fs::read_to_string(unpacked.path().join("main.c")).unwrap(), "int main;\n");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_devcontainer_json_is_the_fallback() {
    within(async {
        let fixture = Fixture::new();
        let repo = fixture.path("repo");
        repository(&repo, None, &[(".devcontainer.json", r#"{"onCreateCommand": ["touch", "from-root-file"],}"#)], true);
        let prebuild_id = fixture.completed_prebuild(&repo).await;
        assert!(unpack(&fixture.runner.snapshot_path(&prebuild_id)).path().join("from-root-file").exists());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_directory_is_copied() {
    within(async {
        let fixture = Fixture::new();
        let plain = fixture.path("plain");
        repository(&plain, Some(r#"{"onCreateCommand": "echo made > made.txt"}"#), &[("notes.txt", "not in git\n")], false);
        std::fs::create_dir_all(plain.join("deep/er")).unwrap();
        std::fs::write(plain.join("deep/er/file"), "deep\n").unwrap();
        let prebuild_id = fixture.completed_prebuild(&plain).await;
        let unpacked = unpack(&fixture.runner.snapshot_path(&prebuild_id));
        assert_eq!(std::fs::read_to_string(unpacked.path().join("notes.txt")).unwrap(), "not in git\n");
        assert_eq!(std::fs::read_to_string(unpacked.path().join("deep/er/file")).unwrap(), "deep\n");
        assert_eq!(std::fs::read_to_string(unpacked.path().join("made.txt")).unwrap(), "made\n");
        assert!(!unpacked.path().join(".git").exists());
        assert!(fixture.log(&prebuild_id).contains("copying"));
        assert!(!plain.join("made.txt").exists(), "the source is left alone");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_clone_fails_with_gits_reason() {
    within(async {
        let fixture = Fixture::new();
        let missing = fixture.path("no-such-repository");
        let (prebuild_id, _) = fixture.start(&missing.display().to_string()).await;
        let (state, _) = fixture.finish(&prebuild_id).await;
        let JobState::Failed { message } = state else { panic!("{state:?}") };
        assert!(message.starts_with("git clone of"), "{message}");
        assert!(message.contains("does not exist"), "git's own reason: {message}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_every_process_of_the_environment_quickly() {
    within(async {
        let fixture = Fixture::new();
        let repo = fixture.path("repo");
        // A shell with a background child and a foreground one, beside an
        // array command whose shell spawns its own children. The durations
        // are unique, so that only this run's processes are counted.
        let base = 10_000_000 + (uuid::Uuid::new_v4().as_u128() % 80_000_000) as u64;
        let sleepers: Vec<String> = (0..4).map(|n| format!("sleep {}", base + n)).collect();
        let devcontainer = format!(
            r#"{{
              "onCreateCommand": {{
                "shell": "{} & {}; echo never",
                "exec": ["sh", "-c", "{} & {} & wait"],
              }},
            }}"#,
            sleepers[0], sleepers[1], sleepers[2], sleepers[3]
        );
        repository(&repo, Some(&devcontainer), &[], true);
        let (prebuild_id, environment_id) = fixture.start(&repo.display().to_string()).await;
        eventually("all four sleeps run", PATIENCE, || sleepers.iter().all(|s| !processes_with(s).is_empty())).await;
        assert_eq!(fixture.runner.observe(&prebuild_id).await, Some(JobState::Running));

        let started = Instant::now();
        fixture.runner.stop(&prebuild_id).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(1), "stop is quick: {:?}", started.elapsed());
        assert_eq!(fixture.runner.observe(&prebuild_id).await, Some(JobState::Stopped));
        eventually("every sleep is gone", Duration::from_secs(5), || sleepers.iter().all(|s| processes_with(s).is_empty())).await;

        // That nothing the job's task reports afterwards undoes the stop is
        // the job state's own rule (runner::job's tests).
        fixture.runner.stop(&prebuild_id).await.unwrap();
        assert_eq!(fixture.runner.observe(&prebuild_id).await, Some(JobState::Stopped), "stop is idempotent");
        assert!(!fixture.log(&prebuild_id).lines().any(|line| line == "never"), "the rest of the command never ran");
        assert!(fixture.log(&prebuild_id).contains("in a bubblewrap sandbox"), "the commands ran in the sandbox");

        fixture.runner.remove(&prebuild_id).await.unwrap();
        assert_eq!(fixture.runner.observe(&prebuild_id).await, None);
        assert!(!fixture.workspace(&environment_id).exists());
        assert!(!fixture.root().join("workspaces").join(format!("{environment_id}.home")).exists(), "nor its commands' home");
        assert!(!fixture.runner.snapshot_path(&prebuild_id).exists());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_progress_is_reported_as_it_goes() {
    within(async {
        let fixture = Fixture::new();
        let repo = fixture.path("repo");
        // Incompressible bytes, so that archiving takes a while.
        repository(&repo, Some(r#"{"onCreateCommand": "head -c 40000000 /dev/urandom > blob"}"#), &[], true);
        let (prebuild_id, _) = fixture.start(&repo.display().to_string()).await;
        let started = Instant::now();
        let mut percents = Vec::new();
        let end = loop {
            match fixture.runner.observe(&prebuild_id).await.expect("known") {
                JobState::Snapshotting { percent } => percents.push(percent),
                state @ (JobState::Completed { .. } | JobState::Failed { .. }) => break state,
                _ => {}
            }
            assert!(started.elapsed() < PATIENCE, "never ended");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        assert!(matches!(end, JobState::Completed { snapshot_size_bytes, .. } if snapshot_size_bytes > 40_000_000), "{end:?}");
        assert!(!percents.is_empty(), "the snapshot phase was observed");
        assert!(percents.windows(2).all(|w| w[0] <= w[1]), "progress never goes back: {percents:?}");
        assert!(percents.iter().all(|p| (0..=99).contains(p)), "100 only once completed: {percents:?}");
        // 40 MB take far longer to archive than the 2 ms between observations.
        assert!(percents.iter().any(|p| (1..99).contains(p)), "progress between the ends was seen: {percents:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_snapshotting_leaves_no_archive() {
    within(async {
        let fixture = Fixture::new();
        let repo = fixture.path("repo");
        repository(&repo, Some(r#"{"onCreateCommand": "head -c 40000000 /dev/urandom > blob"}"#), &[], true);
        let (prebuild_id, _) = fixture.start(&repo.display().to_string()).await;
        let started = Instant::now();
        while !matches!(fixture.runner.observe(&prebuild_id).await, Some(JobState::Snapshotting { .. })) {
            assert!(started.elapsed() < PATIENCE, "never snapshotted: {:?}", fixture.runner.observe(&prebuild_id).await);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        fixture.runner.stop(&prebuild_id).await.unwrap();
        assert_eq!(fixture.runner.observe(&prebuild_id).await, Some(JobState::Stopped));
        let snapshots = fixture.root().join("snapshots");
        // The archiving thread notices the stop and deletes its partial file.
        // (That the archive is not written again after it noticed the stop
        // is the archiver's own rule: runner::local::snapshot's tests.)
        eventually("the snapshots directory is empty", PATIENCE, || std::fs::read_dir(&snapshots).unwrap().next().is_none()).await;
        assert_eq!(fixture.runner.observe(&prebuild_id).await, Some(JobState::Stopped));
        fixture.runner.remove(&prebuild_id).await.unwrap();
    })
    .await;
}
