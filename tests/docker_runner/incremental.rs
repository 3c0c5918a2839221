//! An incremental prebuild in a real dev container: after a one-file
//! commit, the prebuild starts from the full one's snapshot image, the
//! workspace holds the new file and sits at the new commit,
//! `onCreateCommand` did not run again (a counter file in the snapshot)
//! and `updateContentCommand` did (a feature's first, then the file's), as
//! the dev container's user; a change to devcontainer.json builds in full
//! again.

use super::harness::*;
use super::registry::write_feature;
use crate::common::*;
use prebuildd::proto::gitpod::v1::*;

const PROJECT: &str = "d0c0e000-0000-4000-8000-0000000000c1";

fn devcontainer(update: &str) -> String {
    format!(
        r#"{{ "image": "{BASE_IMAGE}", "remoteUser": "dev", "features": {{ "./counter": {{}} }},
              "onCreateCommand": "echo created >> on-create-count",
              "updateContentCommand": "{update}" }}"#
    )
}

/// `sh -c script` in a container of the prebuild's snapshot image.
fn in_snapshot(prebuild_id: &str, script: &str) -> String {
    docker(&["run", "--rm", "--entrypoint", "sh", &format!("prebuildd-snapshot:{prebuild_id}"), "-c", script])
}

#[tokio::test]
async fn a_small_commit_starts_from_the_full_snapshot_and_runs_update_content_only() {
    let world = World::new();
    let repo = world.dir.path().join("incremental-repo");
    let update = "echo updated >> update-count && id -un > update-user";
    // A feature whose updateContentCommand counts too (the CLI runs a
    // feature's before the file's).
    write_feature(&repo.join(".devcontainer/counter"), "counter", "counter", r#", "updateContentCommand": "echo feature >> update-count""#);
    repository(&repo, &[(".devcontainer/devcontainer.json", &devcontainer(update)), ("gone.txt", "removed by the next commit\n")]);
    let config = world.config(&[(PROJECT, &repo)]) + "[projects.prebuilds.git]\nincremental = true\n";
    let server = TestServer::start_with(config).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let folder = "/workspaces/incremental-repo";

    let full = create_prebuild(&mut client, PROJECT).await;
    completed(&server, &mut client, &full.id).await;
    assert!(!source(&server, &full.id).await.incremental);

    std::fs::remove_file(repo.join("gone.txt")).expect("remove");
    let added = commit(&repo, "src/new-file.txt", "one new file\n");
    let incremental = create_prebuild(&mut client, PROJECT).await;
    completed(&server, &mut client, &incremental.id).await;
    let recorded = source(&server, &incremental.id).await;
    assert!(recorded.incremental && recorded.base_prebuild_id == full.id, "{recorded:?}");
    let shown = in_snapshot(
        &incremental.id,
        &format!("cd {folder} && wc -l < on-create-count && wc -l < update-count && cat update-user src/new-file.txt .git/HEAD && ls"),
    );
    let lines: Vec<&str> = shown.lines().map(str::trim).collect();
    assert_eq!(
        &lines[..5],
        ["1", "4", "dev", "one new file", added.as_str()],
        "onCreate once, both updates twice, at the new commit:\n{shown}"
    );
    let order = in_snapshot(&incremental.id, &format!("cat {folder}/update-count"));
    assert_eq!(order.lines().collect::<Vec<_>>(), ["feature", "updated", "feature", "updated"], "the feature's first, each time");
    assert!(!lines.contains(&"gone.txt"), "the removed file is gone:\n{shown}");
    let log = log_of(&server, &mut client, &incremental.id).await;
    assert!(log.contains("skipping onCreateCommand") && log.contains("1 file(s) changed and 1 removed"), "{log}");
    assert!(log.contains("running updateContentCommand of ") && log.contains("counter"), "the feature's update, named:\n{log}");

    commit(&repo, ".devcontainer/devcontainer.json", &devcontainer("echo updated again >> update-count"));
    let reconfigured = create_prebuild(&mut client, PROJECT).await;
    completed(&server, &mut client, &reconfigured.id).await;
    assert!(!source(&server, &reconfigured.id).await.incremental, "a new configuration builds in full");
    let shown = in_snapshot(&reconfigured.id, &format!("cd {folder} && wc -l < on-create-count && wc -l < update-count"));
    assert_eq!(shown.lines().map(str::trim).collect::<Vec<_>>(), ["1", "2"], "the feature's and the file's, once each: {shown}");

    for prebuild in [&full, &incremental, &reconfigured] {
        client.delete_prebuild(DeletePrebuildRequest { prebuild_id: prebuild.id.clone() }).await.expect("delete");
    }
    eventually("the snapshots are removed", || {
        [&full, &incremental, &reconfigured].iter().all(|p| {
            !std::process::Command::new("docker")
                .args(["image", "inspect", &format!("prebuildd-snapshot:{}", p.id)])
                .output()
                .expect("docker")
                .status
                .success()
        })
    })
    .await;
}
