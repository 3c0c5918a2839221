//! What a prebuild can reach: a project whose commands look for the
//! server's secrets (`token-secret`, `prebuildd.db*`, snapshot archives,
//! the runner's root) and for the server's environment finds none of them,
//! and what it writes to `/tmp` stays in its container.

use super::harness::*;
use crate::common::*;

const PROJECT: &str = "d0c0e000-0000-4000-8000-000000000031";

#[tokio::test]
async fn a_prebuild_sees_nothing_of_the_server() {
    let world = World::new();
    let marker = format!("prebuildd-isolation-{}", uuid::Uuid::new_v4());
    let repo = world.dir.path().join("nosy");
    // `${localEnv:...}` is how a devcontainer.json reads the host's
    // environment; the runner gives the CLI none of the server's.
    std::env::set_var("PREBUILDD_TEST_SECRET", "server-secret-value");
    repository(
        &repo,
        &[(
            ".devcontainer/devcontainer.json",
            &format!(
                r#"{{
              "image": "{BASE_IMAGE}",
              "containerEnv": {{ "LEAKED": "${{localEnv:PREBUILDD_TEST_SECRET}}" }},
              "onCreateCommand": "for name in token-secret 'prebuildd.db*' '*.tar.zst' '{data}' runner-root; do echo \"search $name: $(find / -xdev -name \"$name\" 2>/dev/null | tr '\\n' ' ')\"; done; echo \"leaked: [$LEAKED]\"; echo \"mounts: $(grep -c ' /workspaces' /proc/mounts)\"; touch /tmp/{marker}"
            }}"#,
                data = world.dir.path().file_name().unwrap().to_string_lossy(),
            ),
        )],
    );
    let server = TestServer::start_with(world.config(&[(PROJECT, &repo)])).await;
    std::fs::write(server.data_dir().join("decoy.tar.zst"), b"not for prebuilds").unwrap();
    let mut client = server.client(Some(TOKEN_A)).await;
    let prebuild = create_prebuild(&mut client, PROJECT).await;
    completed(&server, &mut client, &prebuild.id).await;
    let log = log_of(&server, &mut client, &prebuild.id).await;

    let searches: Vec<&str> = log.lines().filter(|line| line.starts_with("search ")).collect();
    assert_eq!(searches.len(), 5, "{log}");
    for line in searches {
        let found = line.split_once(": ").map(|(_, found)| found.trim()).unwrap_or_default();
        assert!(found.is_empty(), "the prebuild found {found:?} ({line})");
    }
    assert!(log.contains("leaked: []"), "the server's environment reached the container:\n{log}");
    assert!(log.contains("mounts: 0"), "the workspace is no mount:\n{log}");
    assert!(!std::path::Path::new("/tmp").join(&marker).exists(), "the container wrote to the host's /tmp");
}
