//! API keys and organizations: no key, no access; another organization's
//! objects do not exist for the caller.

use crate::common::*;
use prebuildd::proto::gitpod::v1::*;
use tonic::Code;

#[tokio::test]
async fn every_rpc_requires_a_known_bearer_key() {
    let server = TestServer::start().await;
    for token in [None, Some("not-a-configured-key")] {
        let mut client = server.client(token).await;
        let id = "07e03a28-65a5-4d98-b532-8ea67b188048".to_string();
        assert_status(
            client
                .create_prebuild(CreatePrebuildRequest {
                    project_id: PROJECT_BACKEND.into(),
                    environment_class_id: None,
                    spec: Some(Default::default()),
                })
                .await,
            Code::Unauthenticated,
            "API key",
        );
        assert_status(client.list_prebuilds(ListPrebuildsRequest::default()).await, Code::Unauthenticated, "API key");
        assert_status(client.get_prebuild(GetPrebuildRequest { prebuild_id: id.clone() }).await, Code::Unauthenticated, "API key");
        assert_status(client.cancel_prebuild(CancelPrebuildRequest { prebuild_id: id.clone() }).await, Code::Unauthenticated, "API key");
        assert_status(client.delete_prebuild(DeletePrebuildRequest { prebuild_id: id.clone() }).await, Code::Unauthenticated, "API key");
        assert_status(
            client.create_prebuild_logs_token(CreatePrebuildLogsTokenRequest { prebuild_id: id.clone() }).await,
            Code::Unauthenticated,
            "API key",
        );
        assert_status(
            client
                .create_warm_pool(CreateWarmPoolRequest {
                    project_id: PROJECT_BACKEND.into(),
                    environment_class_id: CLASS_SMALL.into(),
                    ..Default::default()
                })
                .await,
            Code::Unauthenticated,
            "API key",
        );
        assert_status(client.get_warm_pool(GetWarmPoolRequest { warm_pool_id: id.clone() }).await, Code::Unauthenticated, "API key");
        assert_status(client.list_warm_pools(ListWarmPoolsRequest::default()).await, Code::Unauthenticated, "API key");
        assert_status(
            client.update_warm_pool(UpdateWarmPoolRequest { warm_pool_id: id.clone(), desired_size: Some(2), ..Default::default() }).await,
            Code::Unauthenticated,
            "API key",
        );
        assert_status(client.delete_warm_pool(DeleteWarmPoolRequest { warm_pool_id: id.clone() }).await, Code::Unauthenticated, "API key");
    }
    let mut list = server.client(Some(TOKEN_A)).await;
    assert_eq!(
        list.list_prebuilds(ListPrebuildsRequest::default()).await.unwrap().into_inner().prebuilds.len(),
        0,
        "rejected calls created nothing"
    );
}

#[tokio::test]
async fn malformed_authorization_headers_are_unauthenticated() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    for header in [TOKEN_A.to_string(), format!("Basic {TOKEN_A}"), "Bearer".to_string()] {
        let mut client = prebuildd::proto::gitpod::v1::prebuild_service_client::PrebuildServiceClient::new(channel.clone());
        let mut request = tonic::Request::new(ListPrebuildsRequest::default());
        request.metadata_mut().insert("authorization", header.parse().unwrap());
        assert_status(client.list_prebuilds(request).await, Code::Unauthenticated, "Authorization");
    }
    let mut client = prebuildd::proto::gitpod::v1::prebuild_service_client::PrebuildServiceClient::new(channel);
    let mut request = tonic::Request::new(ListPrebuildsRequest::default());
    request.metadata_mut().insert("authorization", format!("bearer {TOKEN_A}").parse().unwrap());
    client.list_prebuilds(request).await.expect("the scheme is case-insensitive");
}

#[tokio::test]
async fn another_organizations_objects_are_not_found_and_never_listed() {
    let server = TestServer::start().await;
    let mut a = server.client(Some(TOKEN_A)).await;
    let mut b = server.client(Some(TOKEN_B)).await;
    let prebuild = create_prebuild(&mut a, PROJECT_BACKEND).await;
    let pool = create_warm_pool(
        &mut a,
        CreateWarmPoolRequest { project_id: PROJECT_BACKEND.into(), environment_class_id: CLASS_SMALL.into(), ..Default::default() },
    )
    .await;
    let b_prebuild = create_prebuild(&mut b, PROJECT_B).await;

    let pid = prebuild.id.clone();
    assert_status(b.get_prebuild(GetPrebuildRequest { prebuild_id: pid.clone() }).await, Code::NotFound, "not found");
    assert_status(b.cancel_prebuild(CancelPrebuildRequest { prebuild_id: pid.clone() }).await, Code::NotFound, "not found");
    assert_status(b.delete_prebuild(DeletePrebuildRequest { prebuild_id: pid.clone() }).await, Code::NotFound, "not found");
    assert_status(
        b.create_prebuild_logs_token(CreatePrebuildLogsTokenRequest { prebuild_id: pid.clone() }).await,
        Code::NotFound,
        "not found",
    );
    assert_status(b.get_warm_pool(GetWarmPoolRequest { warm_pool_id: pool.id.clone() }).await, Code::NotFound, "not found");
    assert_status(
        b.update_warm_pool(UpdateWarmPoolRequest { warm_pool_id: pool.id.clone(), desired_size: Some(3), ..Default::default() }).await,
        Code::NotFound,
        "not found",
    );
    assert_status(b.delete_warm_pool(DeleteWarmPoolRequest { warm_pool_id: pool.id.clone() }).await, Code::NotFound, "not found");
    assert_status(
        b.create_prebuild(CreatePrebuildRequest {
            project_id: PROJECT_BACKEND.into(),
            environment_class_id: None,
            spec: Some(Default::default()),
        })
        .await,
        Code::NotFound,
        "project",
    );
    assert_status(
        b.create_warm_pool(CreateWarmPoolRequest {
            project_id: PROJECT_BACKEND.into(),
            environment_class_id: CLASS_SMALL.into(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "project",
    );

    let b_list = b.list_prebuilds(ListPrebuildsRequest::default()).await.unwrap().into_inner().prebuilds;
    assert_eq!(b_list.iter().map(|p| p.id.clone()).collect::<Vec<_>>(), vec![b_prebuild.id.clone()]);
    let filtered = ListPrebuildsRequest {
        pagination: None,
        filter: Some(list_prebuilds_request::Filter { project_ids: vec![PROJECT_BACKEND.into()], ..Default::default() }),
    };
    assert!(
        b.list_prebuilds(filtered).await.unwrap().into_inner().prebuilds.is_empty(),
        "filtering by another org's project finds nothing"
    );
    assert!(b.list_warm_pools(ListWarmPoolsRequest::default()).await.unwrap().into_inner().warm_pools.is_empty());

    let a_list = a.list_prebuilds(ListPrebuildsRequest::default()).await.unwrap().into_inner().prebuilds;
    assert_eq!(a_list, vec![prebuild.clone()], "org A sees its own, unchanged by B's attempts");
    assert_status(a.get_prebuild(GetPrebuildRequest { prebuild_id: b_prebuild.id }).await, Code::NotFound, "not found");

    // A page token is no passport either: B cannot page through A's query.
    for _ in 0..2 {
        create_prebuild(&mut a, PROJECT_BACKEND).await;
    }
    let page = a
        .list_prebuilds(ListPrebuildsRequest { pagination: Some(PaginationRequest { page_size: 1, token: String::new() }), filter: None })
        .await
        .unwrap()
        .into_inner();
    let token = page.pagination.unwrap().next_token;
    let b_page = b
        .list_prebuilds(ListPrebuildsRequest { pagination: Some(PaginationRequest { page_size: 10, token }), filter: None })
        .await
        .unwrap()
        .into_inner();
    assert!(b_page.prebuilds.iter().all(|p| p.metadata.as_ref().unwrap().organization_id == ORG_B));
}
