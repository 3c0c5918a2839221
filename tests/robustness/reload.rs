//! SIGHUP: the configuration file is read again; a valid one takes effect
//! (here: a project drops a class, and its warm pool is deleted), an
//! invalid one is logged and ignored while the server keeps serving.

use crate::common::*;
use crate::process::*;
use prebuildd::proto::gitpod::v1::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_and_drops_pools_it_no_longer_allows() {
    let config = test_config_toml().replacen("[reconciler]\nenabled = false", "[reconciler]\nenabled = true\ninterval = \"50ms\"", 1);
    assert!(config.contains("interval = \"50ms\""), "the config edit applied");
    let workspace = Workspace::new(&config);
    let process = workspace.start().await;
    let mut client = process.client(TOKEN_A).await;
    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest { project_id: PROJECT_BACKEND.into(), environment_class_id: CLASS_LARGE.into(), ..Default::default() },
    )
    .await;
    // The backend project drops the large class from its prebuild configuration.
    let without_large = config.replacen(
        &format!("environment_class_ids = [\"{CLASS_SMALL}\", \"{CLASS_LARGE}\"]"),
        &format!("environment_class_ids = [\"{CLASS_SMALL}\"]"),
        1,
    );
    assert_ne!(without_large, config);
    std::fs::write(workspace.config(), without_large).unwrap();
    process.signal(libc::SIGHUP);
    process.wait_for_log("configuration reloaded", 1, Duration::from_secs(10)).await;
    let started = Instant::now();
    while client.get_warm_pool(GetWarmPoolRequest { warm_pool_id: pool.id.clone() }).await.is_ok() {
        assert!(started.elapsed() < Duration::from_secs(20), "the pool was not deleted after SIGHUP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An invalid file is ignored, once the server has said so; it keeps
    // serving with the configuration it had.
    std::fs::write(workspace.config(), "not = [valid").unwrap();
    process.signal(libc::SIGHUP);
    process.wait_for_log("configuration not reloaded", 1, Duration::from_secs(10)).await;
    client.list_prebuilds(ListPrebuildsRequest::default()).await.expect("still serving after an invalid reload");
    let created = create_prebuild(&mut client, PROJECT_BACKEND).await;
    assert_eq!(created.metadata.unwrap().environment_class_id, CLASS_SMALL, "the project as the last valid file configured it");
}
