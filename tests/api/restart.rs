//! Durability: a restart on the same data dir keeps everything acknowledged,
//! and page tokens stay valid (the signing secret lives in the data dir).

use super::common::*;
use prebuildd::proto::gitpod::v1::*;

#[tokio::test]
async fn restart_keeps_prebuilds_pools_and_tokens() {
    let mut server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(create_prebuild(&mut client, PROJECT_BACKEND).await.id);
    }
    client.cancel_prebuild(CancelPrebuildRequest { prebuild_id: ids[0].clone() }).await.unwrap();
    client.delete_prebuild(DeletePrebuildRequest { prebuild_id: ids[1].clone() }).await.unwrap();
    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest {
            project_id: PROJECT_BACKEND.into(),
            environment_class_id: CLASS_SMALL.into(),
            min_size: Some(0),
            max_size: Some(3),
            ..Default::default()
        },
    )
    .await;
    client
        .update_warm_pool(UpdateWarmPoolRequest { warm_pool_id: pool.id.clone(), max_size: Some(4), ..Default::default() })
        .await
        .unwrap();

    let before = client.list_prebuilds(ListPrebuildsRequest::default()).await.unwrap().into_inner().prebuilds;
    let pools_before = client.list_warm_pools(ListWarmPoolsRequest::default()).await.unwrap().into_inner().warm_pools;
    let page = client
        .list_prebuilds(ListPrebuildsRequest { pagination: Some(PaginationRequest { page_size: 2, token: String::new() }), filter: None })
        .await
        .unwrap()
        .into_inner();
    let token = page.pagination.unwrap().next_token;

    server.restart().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let after = client.list_prebuilds(ListPrebuildsRequest::default()).await.unwrap().into_inner().prebuilds;
    assert_eq!(after, before);
    let pools_after = client.list_warm_pools(ListWarmPoolsRequest::default()).await.unwrap().into_inner().warm_pools;
    assert_eq!(pools_after, pools_before);
    assert_eq!(pools_after[0].spec.as_ref().unwrap().max_size, Some(4));
    let next = client
        .list_prebuilds(ListPrebuildsRequest { pagination: Some(PaginationRequest { page_size: 2, token }), filter: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.prebuilds, before[2..4].to_vec(), "a page token from before the restart continues");
}
