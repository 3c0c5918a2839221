//! CreateWarmPool, GetWarmPool, ListWarmPools, UpdateWarmPool, DeleteWarmPool.

use super::common::*;
use prebuildd::proto::gitpod::v1::*;
use tonic::Code;

fn create(project_id: &str, class: &str, desired: i32, min: Option<i32>, max: Option<i32>) -> CreateWarmPoolRequest {
    CreateWarmPoolRequest {
        project_id: project_id.into(),
        environment_class_id: class.into(),
        desired_size: desired,
        min_size: min,
        max_size: max,
    }
}

fn update(id: &str, desired: Option<i32>, min: Option<i32>, max: Option<i32>) -> UpdateWarmPoolRequest {
    UpdateWarmPoolRequest { warm_pool_id: id.into(), desired_size: desired, min_size: min, max_size: max }
}

#[tokio::test]
async fn create_with_no_sizes_is_one_instance() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let pool = client.create_warm_pool(create(PROJECT_BACKEND, CLASS_SMALL, 0, None, None)).await.unwrap().into_inner().warm_pool.unwrap();
    assert!(prebuildd::validate::is_uuid(&pool.id));
    let metadata = pool.metadata.as_ref().unwrap();
    assert_eq!(
        (metadata.organization_id.as_str(), metadata.project_id.as_str(), metadata.environment_class_id.as_str()),
        (ORG_A, PROJECT_BACKEND, CLASS_SMALL)
    );
    assert_eq!(metadata.runner_id, RUNNER, "derived from the environment class");
    assert!(metadata.created_at.is_some() && metadata.created_at == metadata.updated_at);
    let spec = pool.spec.as_ref().unwrap();
    assert_eq!((spec.min_size, spec.max_size, spec.desired_size), (Some(1), Some(1), 0));
    assert_eq!(spec.spec_version, 1);
    assert_eq!(spec.snapshot_id, None, "no completed prebuild yet");
    assert_eq!(spec.desired_phase, WarmPoolPhase::Ready as i32);
    let status = pool.status.as_ref().unwrap();
    assert_eq!(status.phase, WarmPoolPhase::Pending as i32);
    assert_eq!(status.status_version, 1);
    assert_eq!((status.running_instances, status.stopped_instances), (0, 0));

    let fetched = client.get_warm_pool(GetWarmPoolRequest { warm_pool_id: pool.id.clone() }).await.unwrap().into_inner().warm_pool.unwrap();
    assert_eq!(fetched, pool);
}

#[tokio::test]
async fn deprecated_desired_size_sets_min_and_max() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let pool = client.create_warm_pool(create(PROJECT_BACKEND, CLASS_SMALL, 2, None, None)).await.unwrap().into_inner().warm_pool.unwrap();
    let spec = pool.spec.unwrap();
    assert_eq!((spec.desired_size, spec.min_size, spec.max_size), (2, Some(2), Some(2)));

    let pool =
        client.create_warm_pool(create(PROJECT_BACKEND, CLASS_LARGE, 0, Some(0), Some(20))).await.unwrap().into_inner().warm_pool.unwrap();
    let spec = pool.spec.unwrap();
    assert_eq!((spec.desired_size, spec.min_size, spec.max_size), (0, Some(0), Some(20)), "min 0 allows scale to zero");
}

#[tokio::test]
async fn one_pool_per_project_and_class() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    client.create_warm_pool(create(PROJECT_BACKEND, CLASS_SMALL, 0, None, None)).await.unwrap();
    assert_status(
        client.create_warm_pool(create(PROJECT_BACKEND, CLASS_SMALL, 3, None, None)).await,
        Code::AlreadyExists,
        "already exists",
    );
    client.create_warm_pool(create(PROJECT_BACKEND, CLASS_LARGE, 0, None, None)).await.expect("another class is another pair");
    client.create_warm_pool(create(PROJECT_FRONTEND, CLASS_SMALL, 0, None, None)).await.expect("another project is another pair");
}

#[tokio::test]
async fn create_rejects_bad_sizes_ids_and_projects() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let invalid = [
        (create("", CLASS_SMALL, 0, None, None), "project_id: "),
        (create(PROJECT_BACKEND, "", 0, None, None), "environment_class_id: "),
        (create(PROJECT_BACKEND, "small", 0, None, None), "environment_class_id: must be a UUID"),
        (create(PROJECT_BACKEND, CLASS_SMALL, 21, None, None), "desired_size: must be between 1 and 20"),
        (create(PROJECT_BACKEND, CLASS_SMALL, -1, None, None), "desired_size: "),
        (create(PROJECT_BACKEND, CLASS_SMALL, 0, Some(-1), None), "min_size: must be between 0 and 20"),
        (create(PROJECT_BACKEND, CLASS_SMALL, 0, Some(21), None), "min_size: "),
        (create(PROJECT_BACKEND, CLASS_SMALL, 0, None, Some(0)), "max_size: must be between 1 and 20"),
        (create(PROJECT_BACKEND, CLASS_SMALL, 0, None, Some(21)), "max_size: "),
        (create(PROJECT_BACKEND, CLASS_SMALL, 0, Some(5), Some(3)), "min_size: min_size (5) must be less than or equal to max_size (3)"),
        (create(PROJECT_BACKEND, CLASS_SMALL, 2, Some(1), Some(3)), "desired_size: "),
    ];
    for (req, needle) in invalid {
        assert_status(client.create_warm_pool(req).await, Code::InvalidArgument, needle);
    }
    assert_status(
        client.create_warm_pool(create("00000000-0000-4000-8000-000000000000", CLASS_SMALL, 0, None, None)).await,
        Code::NotFound,
        "project",
    );
    assert_status(
        client.create_warm_pool(create(PROJECT_DISABLED, CLASS_SMALL, 0, None, None)).await,
        Code::FailedPrecondition,
        "prebuilds are not enabled",
    );
    assert_status(
        client.create_warm_pool(create(PROJECT_BACKEND, CLASS_UNLISTED, 0, None, None)).await,
        Code::FailedPrecondition,
        "not listed",
    );
}

#[tokio::test]
async fn snapshot_is_the_newest_completed_prebuild_of_the_pair() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let older = create_prebuild(&mut client, PROJECT_BACKEND).await;
    let newer = create_prebuild(&mut client, PROJECT_BACKEND).await;
    let newest_but_failed = create_prebuild(&mut client, PROJECT_BACKEND).await;
    server.force_phase(ORG_A, &older.id, PrebuildPhase::Completed).await;
    server.force_phase(ORG_A, &newer.id, PrebuildPhase::Completed).await;
    server.force_phase(ORG_A, &newest_but_failed.id, PrebuildPhase::Failed).await;
    let pool = client.create_warm_pool(create(PROJECT_BACKEND, CLASS_SMALL, 0, None, None)).await.unwrap().into_inner().warm_pool.unwrap();
    assert_eq!(pool.spec.unwrap().snapshot_id, Some(newer.id), "the snapshot ID is the ID of the prebuild that made it");

    let other_class =
        client.create_warm_pool(create(PROJECT_BACKEND, CLASS_LARGE, 0, None, None)).await.unwrap().into_inner().warm_pool.unwrap();
    assert_eq!(other_class.spec.unwrap().snapshot_id, None);
}

#[tokio::test]
async fn update_changes_sizes_and_bumps_spec_version_only_on_change() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let pool =
        client.create_warm_pool(create(PROJECT_BACKEND, CLASS_SMALL, 0, Some(1), Some(4))).await.unwrap().into_inner().warm_pool.unwrap();

    let updated = client.update_warm_pool(update(&pool.id, None, Some(2), None)).await.unwrap().into_inner().warm_pool.unwrap();
    let spec = updated.spec.as_ref().unwrap();
    assert_eq!((spec.min_size, spec.max_size, spec.spec_version), (Some(2), Some(4), 2));
    assert!(instant(&updated.metadata.as_ref().unwrap().updated_at) >= instant(&pool.metadata.as_ref().unwrap().updated_at));

    let same = client.update_warm_pool(update(&pool.id, None, Some(2), Some(4))).await.unwrap().into_inner().warm_pool.unwrap();
    assert_eq!(same, updated, "no change, no new version");
    let nothing = client.update_warm_pool(update(&pool.id, None, None, None)).await.unwrap().into_inner().warm_pool.unwrap();
    assert_eq!(nothing, updated);

    let desired = client.update_warm_pool(update(&pool.id, Some(5), None, None)).await.unwrap().into_inner().warm_pool.unwrap();
    let spec = desired.spec.as_ref().unwrap();
    assert_eq!(
        (spec.desired_size, spec.min_size, spec.max_size, spec.spec_version),
        (5, Some(5), Some(5), 3),
        "the reference's example: desiredSize 5"
    );

    assert_status(
        client.update_warm_pool(update(&pool.id, None, None, Some(3))).await,
        Code::InvalidArgument,
        "max_size: min_size (5) must be less than or equal to max_size (3)",
    );
    assert_status(
        client.update_warm_pool(update(&pool.id, Some(0), None, None)).await,
        Code::InvalidArgument,
        "desired_size: must be between 1 and 20",
    );
    assert_status(client.update_warm_pool(update(&pool.id, None, None, Some(25))).await, Code::InvalidArgument, "max_size: ");
    assert_status(
        client.update_warm_pool(update("a1b2c3d4-5678-9abc-def0-1234567890ab", Some(5), None, None)).await,
        Code::NotFound,
        "warm pool a1b2c3d4-5678-9abc-def0-1234567890ab not found",
    );
    assert_status(client.update_warm_pool(update("", Some(5), None, None)).await, Code::InvalidArgument, "warm_pool_id: ");
    let unchanged =
        client.get_warm_pool(GetWarmPoolRequest { warm_pool_id: pool.id.clone() }).await.unwrap().into_inner().warm_pool.unwrap();
    assert_eq!(unchanged, desired, "rejected updates change nothing");
}

#[tokio::test]
async fn delete_marks_deleting_and_blocks_updates() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let pool = client.create_warm_pool(create(PROJECT_BACKEND, CLASS_SMALL, 0, None, None)).await.unwrap().into_inner().warm_pool.unwrap();
    assert_eq!(
        client.delete_warm_pool(DeleteWarmPoolRequest { warm_pool_id: pool.id.clone() }).await.unwrap().into_inner(),
        DeleteWarmPoolResponse {}
    );
    let deleting =
        client.get_warm_pool(GetWarmPoolRequest { warm_pool_id: pool.id.clone() }).await.unwrap().into_inner().warm_pool.unwrap();
    assert_eq!(deleting.status.as_ref().unwrap().phase, WarmPoolPhase::Deleting as i32);
    assert_eq!(deleting.spec.as_ref().unwrap().desired_phase, WarmPoolPhase::Deleted as i32);
    client.delete_warm_pool(DeleteWarmPoolRequest { warm_pool_id: pool.id.clone() }).await.expect("deleting again is harmless");
    assert_status(client.update_warm_pool(update(&pool.id, Some(2), None, None)).await, Code::FailedPrecondition, "being deleted");
    assert_status(
        client.delete_warm_pool(DeleteWarmPoolRequest { warm_pool_id: "a1b2c3d4-5678-9abc-def0-1234567890ab".into() }).await,
        Code::NotFound,
        "not found",
    );
    assert_status(
        client.get_warm_pool(GetWarmPoolRequest { warm_pool_id: "nope".into() }).await,
        Code::InvalidArgument,
        "warm_pool_id: must be a UUID",
    );
}

#[tokio::test]
async fn list_filters_by_project_and_class() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let backend_small =
        client.create_warm_pool(create(PROJECT_BACKEND, CLASS_SMALL, 0, None, None)).await.unwrap().into_inner().warm_pool.unwrap();
    let backend_large =
        client.create_warm_pool(create(PROJECT_BACKEND, CLASS_LARGE, 0, None, None)).await.unwrap().into_inner().warm_pool.unwrap();
    let frontend_small =
        client.create_warm_pool(create(PROJECT_FRONTEND, CLASS_SMALL, 0, None, None)).await.unwrap().into_inner().warm_pool.unwrap();

    let list = |project_ids: Vec<&str>, class_ids: Vec<&str>| ListWarmPoolsRequest {
        pagination: None,
        filter: Some(list_warm_pools_request::Filter {
            project_ids: project_ids.into_iter().map(Into::into).collect(),
            environment_class_ids: class_ids.into_iter().map(Into::into).collect(),
        }),
    };
    let ids = |response: ListWarmPoolsResponse| response.warm_pools.into_iter().map(|p| p.id).collect::<Vec<_>>();

    let all = client.list_warm_pools(ListWarmPoolsRequest::default()).await.unwrap().into_inner();
    assert_eq!(all.pagination.as_ref().unwrap().next_token, "");
    assert_eq!(ids(all), vec![frontend_small.id.clone(), backend_large.id.clone(), backend_small.id.clone()], "newest first");
    assert_eq!(
        ids(client.list_warm_pools(list(vec![PROJECT_BACKEND], vec![])).await.unwrap().into_inner()),
        vec![backend_large.id.clone(), backend_small.id.clone()]
    );
    assert_eq!(
        ids(client.list_warm_pools(list(vec![], vec![CLASS_SMALL])).await.unwrap().into_inner()),
        vec![frontend_small.id.clone(), backend_small.id.clone()]
    );
    assert_eq!(
        ids(client.list_warm_pools(list(vec![PROJECT_BACKEND], vec![CLASS_SMALL])).await.unwrap().into_inner()),
        vec![backend_small.id.clone()],
        "AND across fields"
    );
    assert_eq!(
        ids(client.list_warm_pools(list(vec![PROJECT_BACKEND, PROJECT_FRONTEND], vec![CLASS_SMALL])).await.unwrap().into_inner()).len(),
        2,
        "OR within a field"
    );

    let page = client
        .list_warm_pools(ListWarmPoolsRequest { pagination: Some(PaginationRequest { page_size: 2, token: String::new() }), filter: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.warm_pools.len(), 2);
    let token = page.pagination.unwrap().next_token;
    assert!(!token.is_empty());
    let rest = client
        .list_warm_pools(ListWarmPoolsRequest { pagination: Some(PaginationRequest { page_size: 2, token }), filter: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(rest), vec![backend_small.id.clone()]);

    let too_many: Vec<String> = (0..26).map(|i| format!("00000000-0000-4000-8000-{i:012}")).collect();
    let req = ListWarmPoolsRequest {
        pagination: None,
        filter: Some(list_warm_pools_request::Filter { project_ids: too_many, environment_class_ids: vec![] }),
    };
    assert_status(client.list_warm_pools(req).await, Code::InvalidArgument, "filter.project_ids: must have at most 25 items");
    assert_status(
        client.list_warm_pools(list(vec![], vec!["bad"])).await,
        Code::InvalidArgument,
        "filter.environment_class_ids[0]: must be a UUID",
    );
}
