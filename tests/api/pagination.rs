//! ListPrebuilds: filters (AND across fields, OR within one), newest first,
//! keyset pages with opaque tokens.

use super::common::*;
use prebuildd::proto::gitpod::v1::prebuild_metadata::PrebuildTrigger;
use prebuildd::proto::gitpod::v1::*;
use std::collections::HashSet;
use tonic::Code;

#[derive(Default, Clone)]
struct Query {
    projects: Vec<&'static str>,
    phases: Vec<i32>,
    triggers: Vec<i32>,
    creators: Vec<&'static str>,
    executors: Vec<&'static str>,
}

fn list_request(query: &Query, page_size: i32, token: &str) -> ListPrebuildsRequest {
    ListPrebuildsRequest {
        pagination: Some(PaginationRequest { page_size, token: token.into() }),
        filter: Some(list_prebuilds_request::Filter {
            project_ids: query.projects.iter().map(|s| s.to_string()).collect(),
            phases: query.phases.clone(),
            triggered_by: query.triggers.clone(),
            creator_ids: query.creators.iter().map(|s| s.to_string()).collect(),
            executor_ids: query.executors.iter().map(|s| s.to_string()).collect(),
        }),
    }
}

/// Every page of a query: (ids in order, page sizes).
async fn all_pages(client: &mut Client, query: &Query, page_size: i32) -> (Vec<String>, Vec<usize>) {
    let (mut ids, mut sizes, mut token) = (Vec::new(), Vec::new(), String::new());
    loop {
        let response = client.list_prebuilds(list_request(query, page_size, &token)).await.unwrap().into_inner();
        sizes.push(response.prebuilds.len());
        ids.extend(response.prebuilds.into_iter().map(|p| p.id));
        token = response.pagination.unwrap().next_token;
        if token.is_empty() {
            return (ids, sizes);
        }
        assert!(sizes.len() < 100, "paging does not end");
    }
}

#[tokio::test]
async fn pages_cover_every_match_once_newest_first() {
    let server = TestServer::start().await;
    let mut alice = server.client(Some(TOKEN_A)).await;
    let mut bob = server.client(Some(TOKEN_A2)).await;
    let mut created = Vec::new();
    for i in 0..60 {
        let (client, project) = match i % 3 {
            0 => (&mut alice, PROJECT_BACKEND),
            1 => (&mut bob, PROJECT_FRONTEND),
            _ => (&mut bob, PROJECT_BACKEND),
        };
        created.push((create_prebuild(client, project).await, project));
    }
    let newest_first = |pred: &dyn Fn(&Prebuild, &str) -> bool| {
        created.iter().rev().filter(|(p, project)| pred(p, project)).map(|(p, _)| p.id.clone()).collect::<Vec<_>>()
    };

    let (ids, sizes) = all_pages(&mut alice, &Query::default(), 0).await;
    assert_eq!(sizes, vec![25, 25, 10], "default page size 25");
    assert_eq!(ids, newest_first(&|_, _| true));
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 60, "no item twice");

    let backend = Query { projects: vec![PROJECT_BACKEND], ..Default::default() };
    let (ids, sizes) = all_pages(&mut alice, &backend, 25).await;
    assert_eq!(sizes, vec![25, 15]);
    assert_eq!(ids, newest_first(&|_, project| project == PROJECT_BACKEND));

    let bob_backend = Query { projects: vec![PROJECT_BACKEND], creators: vec![BOB], ..Default::default() };
    let (ids, _) = all_pages(&mut alice, &bob_backend, 7).await;
    assert_eq!(ids.len(), 20, "AND across fields");
    assert_eq!(
        ids,
        newest_first(&|p, project| project == PROJECT_BACKEND && p.metadata.as_ref().unwrap().creator.as_ref().unwrap().id == BOB)
    );

    let both_projects = Query { projects: vec![PROJECT_BACKEND, PROJECT_FRONTEND], ..Default::default() };
    assert_eq!(all_pages(&mut alice, &both_projects, 100).await.0.len(), 60, "OR within a field");

    let executor = Query { executors: vec![EXECUTOR], ..Default::default() };
    assert_eq!(all_pages(&mut alice, &executor, 100).await.0.len(), 40, "backend prebuilds run as the configured executor");
    let bob_executes = Query { executors: vec![BOB], ..Default::default() };
    assert_eq!(all_pages(&mut alice, &bob_executes, 100).await.0.len(), 20);

    let pending =
        Query { phases: vec![PrebuildPhase::Pending as i32], triggers: vec![PrebuildTrigger::Manual as i32], ..Default::default() };
    assert_eq!(all_pages(&mut alice, &pending, 100).await.0.len(), 60);
    let completed = Query { phases: vec![PrebuildPhase::Completed as i32], ..Default::default() };
    assert_eq!(all_pages(&mut alice, &completed, 100).await.0.len(), 0);
    let scheduled = Query { triggers: vec![PrebuildTrigger::Scheduled as i32], ..Default::default() };
    assert_eq!(all_pages(&mut alice, &scheduled, 100).await.0.len(), 0);

    let cancelled_id = created[5].0.id.clone();
    alice.cancel_prebuild(CancelPrebuildRequest { prebuild_id: cancelled_id.clone() }).await.unwrap();
    let cancelled = Query { phases: vec![PrebuildPhase::Cancelled as i32, PrebuildPhase::Failed as i32], ..Default::default() };
    assert_eq!(all_pages(&mut alice, &cancelled, 10).await.0, vec![cancelled_id], "phase filter follows the stored phase");
}

#[tokio::test]
async fn page_size_and_tokens_are_validated() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    for _ in 0..3 {
        create_prebuild(&mut client, PROJECT_BACKEND).await;
    }
    let query = Query::default();
    assert_status(
        client.list_prebuilds(list_request(&query, 101, "")).await,
        Code::InvalidArgument,
        "pagination.page_size: must be between 0 and 100",
    );
    assert_status(client.list_prebuilds(list_request(&query, -1, "")).await, Code::InvalidArgument, "pagination.page_size: ");
    assert_status(client.list_prebuilds(list_request(&query, 10, "nextToken")).await, Code::InvalidArgument, "pagination.token: ");

    let first = client.list_prebuilds(list_request(&query, 1, "")).await.unwrap().into_inner();
    let token = first.pagination.unwrap().next_token;
    let other = Query { projects: vec![PROJECT_BACKEND], ..Default::default() };
    assert_status(
        client.list_prebuilds(list_request(&other, 1, &token)).await,
        Code::InvalidArgument,
        "pagination.token: belongs to a different filter",
    );
    let mut edited = token.clone();
    edited.replace_range(0..1, if token.starts_with('A') { "B" } else { "A" });
    assert_status(client.list_prebuilds(list_request(&query, 1, &edited)).await, Code::InvalidArgument, "pagination.token: ");
    let second = client.list_prebuilds(list_request(&query, 2, &token)).await.unwrap().into_inner();
    assert_eq!(second.prebuilds.len(), 2, "the page size may change between pages");
    assert_eq!(second.pagination.unwrap().next_token, "", "empty on the last page");
}

#[tokio::test]
async fn filters_are_validated_naming_the_field() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let ids = |n: usize| (0..n).map(|i| format!("00000000-0000-4000-8000-{i:012}")).collect::<Vec<_>>();
    let filter = |f: list_prebuilds_request::Filter| ListPrebuildsRequest { pagination: None, filter: Some(f) };
    let cases = [
        (
            filter(list_prebuilds_request::Filter { project_ids: ids(26), ..Default::default() }),
            "filter.project_ids: must have at most 25 items",
        ),
        (filter(list_prebuilds_request::Filter { creator_ids: ids(26), ..Default::default() }), "filter.creator_ids: "),
        (filter(list_prebuilds_request::Filter { executor_ids: ids(26), ..Default::default() }), "filter.executor_ids: "),
        (
            filter(list_prebuilds_request::Filter { project_ids: vec!["x".into()], ..Default::default() }),
            "filter.project_ids[0]: must be a UUID",
        ),
        (
            filter(list_prebuilds_request::Filter { creator_ids: vec![ALICE.into(), "y".into()], ..Default::default() }),
            "filter.creator_ids[1]: ",
        ),
        (
            filter(list_prebuilds_request::Filter { phases: vec![10; 11], ..Default::default() }),
            "filter.phases: must have at most 10 items",
        ),
        (
            filter(list_prebuilds_request::Filter { phases: vec![10, 11], ..Default::default() }),
            "filter.phases[1]: 11 is not a defined value",
        ),
        (
            filter(list_prebuilds_request::Filter { triggered_by: vec![1; 6], ..Default::default() }),
            "filter.triggered_by: must have at most 5 items",
        ),
        (filter(list_prebuilds_request::Filter { triggered_by: vec![7], ..Default::default() }), "filter.triggered_by[0]: "),
    ];
    for (req, needle) in cases {
        assert_status(client.list_prebuilds(req).await, Code::InvalidArgument, needle);
    }
}
