//! Incremental prebuilds on the local runner, through the API: after a
//! one-file commit the next prebuild starts from the full one's snapshot,
//! runs `updateContentCommand` only (a counter file in the snapshot says
//! `onCreateCommand` did not run again), and holds the new file; a change
//! to devcontainer.json makes the next one full.

use crate::common::repos::Origin;
use crate::common::*;
use prebuildd::proto::gitpod::v1::*;
use prebuildd::proto::prebuildd::v1::prebuild_source_service_client::PrebuildSourceServiceClient;
use prebuildd::proto::prebuildd::v1::{ListPrebuildSourcesRequest, PrebuildSource};
use std::path::Path;
use std::time::Duration;

const PROJECT: &str = "12c00000-0000-4000-8000-000000000001";
const PATIENCE: Duration = Duration::from_secs(60);
const DEVCONTAINER: &str = r#"{
  "onCreateCommand": "echo created >> on-create-count",
  "updateContentCommand": "echo updated >> update-count && ls > listing"
}"#;

fn config(repository: &str) -> String {
    format!(
        r#"{header}[[runners]]
id = "{RUNNER}"
kind = "local"
[[environment_classes]]
id = "{CLASS_SMALL}"
runner_id = "{RUNNER}"
name = "local"
[[projects]]
id = "{PROJECT}"
organization_id = "{ORG_A}"
name = "app"
repository = "{repository}"
default_environment_class_id = "{CLASS_SMALL}"
[projects.prebuilds]
enabled = true
environment_class_ids = ["{CLASS_SMALL}"]
[projects.prebuilds.git]
incremental = true
"#,
        header = org_a_header()
    )
}

async fn source(server: &TestServer, id: &str) -> PrebuildSource {
    let mut client = PrebuildSourceServiceClient::with_interceptor(server.channel().await, bearer(TOKEN_A));
    let response = client.list_prebuild_sources(ListPrebuildSourcesRequest { prebuild_ids: vec![id.into()] }).await.expect("sources");
    response.into_inner().sources.pop().expect("a source")
}

/// Builds a prebuild of the project and returns its ID and its unpacked snapshot.
async fn prebuild(server: &TestServer, client: &mut Client) -> (String, tempfile::TempDir) {
    let created = create_prebuild(client, PROJECT).await;
    let done = wait_for_phase(client, &created.id, &[PrebuildPhase::Completed, PrebuildPhase::Failed], PATIENCE).await;
    let status = done.status.expect("status");
    assert_eq!(status.phase, PrebuildPhase::Completed as i32, "{}", status.failure_message);
    let archive = server.data_dir().join("local").join(RUNNER).join("snapshots").join(format!("{}.tar.zst", created.id));
    let unpacked = tempfile::tempdir().expect("temp dir");
    tar::Archive::new(zstd::Decoder::new(std::fs::File::open(&archive).expect("the snapshot")).expect("zstd"))
        .unpack(unpacked.path())
        .expect("unpack");
    (created.id, unpacked)
}

fn lines(dir: &Path, file: &str) -> usize {
    std::fs::read_to_string(dir.join(file)).unwrap_or_default().lines().count()
}

#[tokio::test]
async fn a_small_commit_updates_the_last_full_snapshot_and_a_new_configuration_builds_in_full() {
    let origin = Origin::new(Some(DEVCONTAINER));
    let server = TestServer::start_with(config(&origin.url())).await;
    let mut client = server.client(Some(TOKEN_A)).await;

    let (full_id, full) = prebuild(&server, &mut client).await;
    assert_eq!((lines(full.path(), "on-create-count"), lines(full.path(), "update-count")), (1, 1));
    assert!(!source(&server, &full_id).await.incremental);

    let (_, added) = origin.push_change("main", "src/new-file.txt", "one new file\n");
    let (incremental_id, incremental) = prebuild(&server, &mut client).await;
    let recorded = source(&server, &incremental_id).await;
    assert!(recorded.incremental, "{recorded:?}");
    assert_eq!((recorded.base_prebuild_id.as_str(), recorded.commit_sha.as_str()), (full_id.as_str(), added.as_str()));
    assert_eq!(lines(incremental.path(), "on-create-count"), 1, "onCreateCommand did not run again");
    assert_eq!(lines(incremental.path(), "update-count"), 2, "updateContentCommand ran on the base's output");
    assert_eq!(std::fs::read_to_string(incremental.path().join("src/new-file.txt")).expect("the new file"), "one new file\n");
    assert!(std::fs::read_to_string(incremental.path().join("listing")).unwrap_or_default().contains("src"), "it ran after the update");
    let head = std::process::Command::new("git").args(["rev-parse", "HEAD"]).current_dir(incremental.path()).output().expect("git");
    assert_eq!(String::from_utf8_lossy(&head.stdout).trim(), added, "the workspace is at the new commit");

    origin.push_change("main", ".devcontainer/devcontainer.json", &DEVCONTAINER.replace("ls > listing", "ls -a > listing"));
    let (reconfigured_id, reconfigured) = prebuild(&server, &mut client).await;
    assert!(!source(&server, &reconfigured_id).await.incremental, "a new configuration builds in full");
    assert_eq!((lines(reconfigured.path(), "on-create-count"), lines(reconfigured.path(), "update-count")), (1, 1));
}
