//! Prebuilds that follow the repository, through the front door: signed
//! pushes posted as GitHub, GitLab, Gitea/Forgejo and Bitbucket post them,
//! polling of a repository a real `git daemon` serves, bursts, the path
//! filter, the commit recorded and served by `prebuildd.v1`, the catalog,
//! and incremental prebuilds as the simulated runner models them. The
//! repositories are real; the runner is the simulated one (what runs is
//! not the point here; see the local and docker runners' tests for that).

use crate::common::repos::{post_delivery, post_push, push_body, GitDaemon, Origin};
use crate::common::*;
use prebuildd::proto::gitpod::v1::prebuild_metadata::PrebuildTrigger;
use prebuildd::proto::gitpod::v1::*;
use prebuildd::proto::prebuildd::v1::catalog_service_client::CatalogServiceClient;
use prebuildd::proto::prebuildd::v1::prebuild_source_service_client::PrebuildSourceServiceClient;
use prebuildd::proto::prebuildd::v1::{
    ListEnvironmentClassesRequest, ListPrebuildSourcesRequest, ListProjectsRequest, PrebuildSource, SourceTrigger,
};
use std::time::Duration;

const FOLLOWING: &str = "f0110000-0000-4000-8000-000000000001";
const FILTERED: &str = "f0110000-0000-4000-8000-000000000002";
const SECRET: &str = "a-webhook-secret-0123456789";
const PATIENCE: Duration = Duration::from_secs(30);
const DEVCONTAINER: &str = r#"{ "onCreateCommand": "make setup", "updateContentCommand": "make deps" }"#;

/// A server with a simulated runner (steps of `step`) and two projects
/// that follow `repository`: one on every push, one with a path filter.
fn config(repository: &str, step: &str, git_extra: &str) -> String {
    format!(
        r#"{header}[[runners]]
id = "{RUNNER}"
kind = "simulated"
step_duration = "{step}"
max_concurrent_prebuilds = 8
[[environment_classes]]
id = "{CLASS_SMALL}"
runner_id = "{RUNNER}"
name = "small"

[[projects]]
id = "{FOLLOWING}"
organization_id = "{ORG_A}"
name = "app"
repository = "{repository}"
default_environment_class_id = "{CLASS_SMALL}"
[projects.prebuilds]
enabled = true
environment_class_ids = ["{CLASS_SMALL}"]
executor = {{ id = "{EXECUTOR}", principal = "PRINCIPAL_SERVICE_ACCOUNT" }}
[projects.prebuilds.git]
webhook_secret = "{SECRET}"
{git_extra}

[[projects]]
id = "{FILTERED}"
organization_id = "{ORG_A}"
name = "filtered"
repository = "{repository}"
default_environment_class_id = "{CLASS_SMALL}"
[projects.prebuilds]
enabled = true
environment_class_ids = ["{CLASS_SMALL}"]
executor = {{ id = "{EXECUTOR}", principal = "PRINCIPAL_SERVICE_ACCOUNT" }}
[projects.prebuilds.git]
webhook_secret = "{SECRET}"
paths = ["package-lock.json", "deps/**"]
"#,
        header = org_a_header()
    )
}

async fn sources(server: &TestServer, ids: &[String]) -> Vec<PrebuildSource> {
    let mut client = PrebuildSourceServiceClient::with_interceptor(server.channel().await, bearer(TOKEN_A));
    client.list_prebuild_sources(ListPrebuildSourcesRequest { prebuild_ids: ids.to_vec() }).await.expect("sources").into_inner().sources
}

async fn source(server: &TestServer, id: &str) -> PrebuildSource {
    sources(server, &[id.to_string()]).await.pop().expect("a source")
}

async fn prebuilds_of(client: &mut Client, project: &str) -> Vec<Prebuild> {
    let request = ListPrebuildsRequest {
        filter: Some(list_prebuilds_request::Filter { project_ids: vec![project.into()], ..Default::default() }),
        pagination: Some(PaginationRequest { page_size: 100, token: String::new() }),
    };
    client.list_prebuilds(request).await.expect("list").into_inner().prebuilds
}

fn queued_id(answer: &serde_json::Value) -> String {
    assert_eq!(answer["result"], "queued", "{answer}");
    answer["prebuilds"][0]["prebuildId"].as_str().expect("a prebuild ID").to_string()
}

#[tokio::test]
async fn each_providers_signed_push_builds_exactly_that_commit() {
    let origin = Origin::new(Some(DEVCONTAINER));
    let server = TestServer::start_with(config(&origin.url(), "20ms", "")).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    for (n, provider) in ["github", "gitlab", "gitea", "forgejo", "bitbucket"].into_iter().enumerate() {
        let (before, after) = origin.push_change("main", "src.txt", &format!("version {n}\n"));
        let (status, answer) =
            post_push(&server.base_url(), provider, FOLLOWING, SECRET, &format!("{provider}-1"), "main", (&before, &after)).await;
        assert_eq!(status, 200, "{provider}: {answer}");
        let id = queued_id(&answer);
        let prebuild = wait_for_phase(&mut client, &id, &[PrebuildPhase::Completed], PATIENCE).await;
        let metadata = prebuild.metadata.expect("metadata");
        assert_eq!(metadata.triggered_by, PrebuildTrigger::Scheduled as i32, "a push's prebuild is the system's, in the official enum");
        assert_eq!(metadata.creator.expect("creator").id, EXECUTOR);
        let source = source(&server, &id).await;
        assert_eq!((source.branch.as_str(), source.commit_sha.as_str()), ("main", after.as_str()), "{provider}");
        assert_eq!(source.trigger, SourceTrigger::PushWebhook as i32);
        assert_eq!(source.provider, if provider == "forgejo" { "gitea" } else { provider });
        assert!(source.feeds_warm_pools, "main is the default branch");
        let log = std::fs::read_to_string(server.data_dir().join("logs").join(format!("{id}.log"))).expect("the log");
        let first = log.lines().next().unwrap_or_default();
        assert_eq!(first, format!("building branch main at commit {after}"), "{log}");
    }
}

#[tokio::test]
async fn signatures_replays_untracked_branches_pings_and_paths() {
    let origin = Origin::new(Some(DEVCONTAINER));
    let server = TestServer::start_with(config(&origin.url(), "20ms", "")).await;
    let base = server.base_url();
    let mut client = server.client(Some(TOKEN_A)).await;

    // A wrong or missing signature: 401, and nothing starts.
    let (before, after) = origin.push_change("main", "a.txt", "1\n");
    let body = push_body("github", "main", &before, &after);
    for provider in ["github", "gitlab", "gitea", "bitbucket"] {
        let (status, answer) = post_delivery(&base, provider, FOLLOWING, SECRET, "bad-1", "push", &body, Some("00ff")).await;
        assert_eq!(status, 401, "{provider}: {answer}");
        assert!(answer["error"].as_str().unwrap_or_default().contains("webhook secret"), "{answer}");
        let (status, _) = post_delivery(&base, provider, FOLLOWING, "another-secret-entirely-0", "bad-2", "push", &body, None).await;
        assert_eq!(status, 401, "{provider}");
    }
    let (status, _) = post_delivery(&base, "github", "f0110000-0000-4000-8000-0000000000ff", SECRET, "x", "push", &body, None).await;
    assert_eq!(status, 404, "an unknown project");
    let (status, _) = post_delivery(&base, "svn", FOLLOWING, SECRET, "x", "push", &body, None).await;
    assert_eq!(status, 404, "an unknown provider");
    // A body over the limit is refused before anything reads it.
    let huge = vec![b' '; prebuildd::triggers::webhook::MAX_WEBHOOK_BYTES + 1];
    let (status, _) = post_delivery(&base, "github", FOLLOWING, SECRET, "huge-1", "push", &huge, None).await;
    assert_eq!(status, 413, "bodies are size-limited");
    server.reconcile_once().await;
    assert!(prebuilds_of(&mut client, FOLLOWING).await.is_empty(), "a refused delivery starts nothing");

    // A ping, and an event that is not a push: 200, nothing starts.
    let (status, answer) = post_delivery(&base, "github", FOLLOWING, SECRET, "ping-1", "ping", b"{\"zen\":\"x\"}", None).await;
    assert_eq!((status, answer["result"].as_str()), (200, Some("ignored")), "{answer}");
    let (status, answer) = post_delivery(&base, "gitlab", FOLLOWING, SECRET, "mr-1", "Merge Request Hook", b"{}", None).await;
    assert_eq!((status, answer["result"].as_str()), (200, Some("ignored")), "{answer}");

    // The signed delivery queues one prebuild; its redelivery nothing more.
    let (status, answer) = post_delivery(&base, "github", FOLLOWING, SECRET, "good-1", "push", &body, None).await;
    assert_eq!(status, 200, "{answer}");
    let id = queued_id(&answer);
    let (_, again) = post_delivery(&base, "github", FOLLOWING, SECRET, "good-1", "push", &body, None).await;
    assert_eq!(again["result"], "replayed", "{again}");
    wait_for_phase(&mut client, &id, &[PrebuildPhase::Completed], PATIENCE).await;
    // The same commit from another delivery: built already.
    let (_, same) = post_delivery(&base, "github", FOLLOWING, SECRET, "good-2", "push", &body, None).await;
    assert_eq!(same["prebuilds"][0]["outcome"], "built already", "{same}");
    server.reconcile_once().await;
    assert_eq!(prebuilds_of(&mut client, FOLLOWING).await.len(), 1);

    // A branch that is not tracked (only the default branch is).
    let feature = origin.push_change("feature/x", "b.txt", "1\n");
    let (status, answer) = post_push(&base, "gitlab", FOLLOWING, SECRET, "feature-1", "feature/x", (&feature.0, &feature.1)).await;
    assert_eq!((status, answer["result"].as_str()), (200, Some("ignored")), "{answer}");
    assert!(answer["reason"].as_str().unwrap_or_default().contains("not tracked"), "{answer}");

    // The path filter: a README change starts nothing, a lock file change
    // and a devcontainer.json change (always counted) do.
    let readme = origin.push_change("main", "README.md", "changed\n");
    let (_, answer) = post_push(&base, "gitea", FILTERED, SECRET, "paths-1", "main", (&readme.0, &readme.1)).await;
    assert_eq!(answer["result"], "ignored", "{answer}");
    assert!(answer["reason"].as_str().unwrap_or_default().contains("tracked paths"), "{answer}");
    let lock = origin.push_change("main", "package-lock.json", "{}\n");
    let (_, answer) = post_push(&base, "gitea", FILTERED, SECRET, "paths-2", "main", (&lock.0, &lock.1)).await;
    let by_lock = queued_id(&answer);
    wait_for_phase(&mut client, &by_lock, &[PrebuildPhase::Completed], PATIENCE).await;
    let config_change = origin.push_change("main", ".devcontainer/devcontainer.json", r#"{ "updateContentCommand": "make" }"#);
    let (_, answer) = post_push(&base, "gitea", FILTERED, SECRET, "paths-3", "main", (&config_change.0, &config_change.1)).await;
    let by_config = queued_id(&answer);
    assert_eq!(source(&server, &by_config).await.commit_sha, config_change.1);
    server.reconcile_once().await;
    let filtered = prebuilds_of(&mut client, FILTERED).await;
    assert_eq!(filtered.len(), 2, "the README push started nothing");
}

#[tokio::test]
async fn a_burst_builds_the_first_and_the_newest_commit() {
    let origin = Origin::new(Some(DEVCONTAINER));
    let server = TestServer::start_with(config(&origin.url(), "300ms", "")).await;
    let base = server.base_url();
    let mut client = server.client(Some(TOKEN_A)).await;
    let first = origin.push_change("main", "n.txt", "1\n");
    let (_, answer) = post_push(&base, "github", FOLLOWING, SECRET, "burst-1", "main", (&first.0, &first.1)).await;
    let first_id = queued_id(&answer);
    wait_for_phase(&mut client, &first_id, &[PrebuildPhase::Starting, PrebuildPhase::Running], PATIENCE).await;
    let mut newest = first.1.clone();
    for n in 2..=5 {
        let (before, after) = origin.push_change("main", "n.txt", &format!("{n}\n"));
        let (status, answer) = post_push(&base, "github", FOLLOWING, SECRET, &format!("burst-{n}"), "main", (&before, &after)).await;
        assert_eq!(status, 200, "{answer}");
        newest = after;
    }
    // While the first runs, the second waits: one at a time per branch.
    server.reconcile_once().await;
    let during = prebuilds_of(&mut client, FOLLOWING).await;
    assert_eq!(during.len(), 2, "the four later commits collapsed into one queued prebuild");
    let queued = during.iter().find(|p| p.id != first_id).expect("the queued one");
    assert_eq!(queued.status.as_ref().expect("status").phase, PrebuildPhase::Pending as i32, "it waits for the first");
    let queued_id = queued.id.clone();
    wait_for_phase(&mut client, &first_id, &[PrebuildPhase::Completed], PATIENCE).await;
    wait_for_phase(&mut client, &queued_id, &[PrebuildPhase::Completed], PATIENCE).await;
    let built = sources(&server, &[first_id, queued_id]).await;
    assert_eq!(built[0].commit_sha, first.1, "the first push's commit");
    assert_eq!(built[1].commit_sha, newest, "the newest commit of the burst");
    assert_eq!(prebuilds_of(&mut client, FOLLOWING).await.len(), 2, "at most two prebuilds for five commits");
}

#[tokio::test]
async fn cancel_superseded_stops_the_running_prebuild_for_a_newer_commit() {
    let origin = Origin::new(Some(DEVCONTAINER));
    let server = TestServer::start_with(config(&origin.url(), "400ms", "cancel_superseded = true")).await;
    let base = server.base_url();
    let mut client = server.client(Some(TOKEN_A)).await;
    let first = origin.push_change("main", "n.txt", "1\n");
    let (_, answer) = post_push(&base, "github", FOLLOWING, SECRET, "c-1", "main", (&first.0, &first.1)).await;
    let first_id = queued_id(&answer);
    wait_for_phase(&mut client, &first_id, &[PrebuildPhase::Starting, PrebuildPhase::Running], PATIENCE).await;
    let second = origin.push_change("main", "n.txt", "2\n");
    let (_, answer) = post_push(&base, "github", FOLLOWING, SECRET, "c-2", "main", (&second.0, &second.1)).await;
    let second_id = queued_id(&answer);
    wait_for_phase(&mut client, &first_id, &[PrebuildPhase::Cancelled], PATIENCE).await;
    wait_for_phase(&mut client, &second_id, &[PrebuildPhase::Completed], PATIENCE).await;
    assert_eq!(source(&server, &second_id).await.commit_sha, second.1);
}

#[tokio::test]
async fn polling_a_git_daemon_picks_up_a_new_commit() {
    let origin = Origin::new(Some(DEVCONTAINER));
    let daemon = GitDaemon::serve(origin.dir());
    let text = config(&daemon.url("origin.git"), "20ms", "poll_interval = \"1s\"")
        .replace(&format!("webhook_secret = \"{SECRET}\"\npaths"), "paths");
    let server = TestServer::start_with(text).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let initial = origin.head();
    let first = wait_for_source(&server, &mut client, &initial).await;
    assert_eq!(first.trigger, SourceTrigger::Poll as i32);
    let (_, after) = origin.push_change("main", "polled.txt", "new\n");
    let second = wait_for_source(&server, &mut client, &after).await;
    assert_eq!((second.trigger, second.branch.as_str()), (SourceTrigger::Poll as i32, "main"));
    wait_for_phase(&mut client, &second.prebuild_id, &[PrebuildPhase::Completed], PATIENCE).await;
    server.reconcile_once().await;
    assert_eq!(prebuilds_of(&mut client, FOLLOWING).await.len(), 2, "a head seen again starts nothing");
}

/// Waits until a prebuild of the following project records `commit`.
async fn wait_for_source(server: &TestServer, client: &mut Client, commit: &str) -> PrebuildSource {
    let started = std::time::Instant::now();
    loop {
        let ids: Vec<String> = prebuilds_of(client, FOLLOWING).await.into_iter().map(|p| p.id).collect();
        if !ids.is_empty() {
            if let Some(found) = sources(server, &ids).await.into_iter().find(|s| s.commit_sha == commit) {
                return found;
            }
        }
        assert!(started.elapsed() < PATIENCE, "no prebuild of commit {commit}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn manual_prebuilds_record_the_head_and_incremental_ones_their_base() {
    let origin = Origin::new(Some(DEVCONTAINER));
    let server = TestServer::start_with(config(&origin.url(), "20ms", "full_every = 3")).await;
    let base = server.base_url();
    let mut client = server.client(Some(TOKEN_A)).await;

    // An API call builds the default branch's head, resolved at start.
    let manual = create_prebuild(&mut client, FOLLOWING).await;
    wait_for_phase(&mut client, &manual.id, &[PrebuildPhase::Completed], PATIENCE).await;
    let full = source(&server, &manual.id).await;
    assert_eq!((full.trigger, full.branch.as_str(), full.commit_sha.as_str()), (SourceTrigger::Api as i32, "main", origin.head().as_str()));
    assert!(!full.incremental && !full.configuration_fingerprint.is_empty());

    // A one-file commit: incremental from the full one.
    let change = origin.push_change("main", "src.txt", "one line\n");
    let (_, answer) = post_push(&base, "github", FOLLOWING, SECRET, "inc-1", "main", (&change.0, &change.1)).await;
    let incremental = queued_id(&answer);
    wait_for_phase(&mut client, &incremental, &[PrebuildPhase::Completed], PATIENCE).await;
    let recorded = source(&server, &incremental).await;
    assert!(recorded.incremental, "{recorded:?}");
    assert_eq!((recorded.base_prebuild_id.as_str(), recorded.base_commit_sha.as_str()), (manual.id.as_str(), full.commit_sha.as_str()));
    assert_eq!(recorded.configuration_fingerprint, full.configuration_fingerprint);
    let log = std::fs::read_to_string(server.data_dir().join("logs").join(format!("{incremental}.log"))).expect("log");
    assert!(log.contains(&format!("incremental prebuild from prebuild {}", manual.id)), "{log}");
    assert!(log.contains("running updateContentCommand only"), "{log}");

    // full_every = 3: the base and two incremental ones, then a full one.
    let change = origin.push_change("main", "src.txt", "two lines\n");
    let (_, answer) = post_push(&base, "github", FOLLOWING, SECRET, "inc-2", "main", (&change.0, &change.1)).await;
    let second = queued_id(&answer);
    wait_for_phase(&mut client, &second, &[PrebuildPhase::Completed], PATIENCE).await;
    assert!(source(&server, &second).await.incremental);
    let change = origin.push_change("main", "src.txt", "three lines\n");
    let (_, answer) = post_push(&base, "github", FOLLOWING, SECRET, "inc-3", "main", (&change.0, &change.1)).await;
    let third = queued_id(&answer);
    wait_for_phase(&mut client, &third, &[PrebuildPhase::Completed], PATIENCE).await;
    assert!(!source(&server, &third).await.incremental, "the full_every-th prebuild is full");

    // A change to devcontainer.json: a new fingerprint, a full prebuild.
    let change = origin.push_change("main", ".devcontainer/devcontainer.json", r#"{ "updateContentCommand": "make more" }"#);
    let (_, answer) = post_push(&base, "github", FOLLOWING, SECRET, "inc-4", "main", (&change.0, &change.1)).await;
    let reconfigured = queued_id(&answer);
    wait_for_phase(&mut client, &reconfigured, &[PrebuildPhase::Completed], PATIENCE).await;
    let recorded = source(&server, &reconfigured).await;
    assert!(!recorded.incremental && recorded.configuration_fingerprint != full.configuration_fingerprint, "{recorded:?}");
}

#[tokio::test]
async fn deliveries_are_remembered_across_a_restart_and_feature_branches_never_feed_pools() {
    let origin = Origin::new(Some(DEVCONTAINER));
    let mut server = TestServer::start_with(config(&origin.url(), "20ms", "branches = [\"main\", \"feature/*\"]")).await;
    let base = server.base_url();
    let mut client = server.client(Some(TOKEN_A)).await;
    let change = origin.push_change("main", "a.txt", "1\n");
    let (_, answer) = post_push(&base, "bitbucket", FOLLOWING, SECRET, "restart-1", "main", (&change.0, &change.1)).await;
    let main_id = queued_id(&answer);
    wait_for_phase(&mut client, &main_id, &[PrebuildPhase::Completed], PATIENCE).await;
    let feature = origin.push_change("feature/y", "b.txt", "1\n");
    let (_, answer) = post_push(&base, "bitbucket", FOLLOWING, SECRET, "restart-2", "feature/y", (&feature.0, &feature.1)).await;
    let feature_id = queued_id(&answer);
    wait_for_phase(&mut client, &feature_id, &[PrebuildPhase::Completed], PATIENCE).await;
    assert!(!source(&server, &feature_id).await.feeds_warm_pools, "a feature branch's snapshot never becomes a pool's");
    let pool = create_warm_pool(
        &mut client,
        CreateWarmPoolRequest { project_id: FOLLOWING.into(), environment_class_id: CLASS_SMALL.into(), ..Default::default() },
    )
    .await;
    server.reconcile_once().await;
    let pool =
        client.get_warm_pool(GetWarmPoolRequest { warm_pool_id: pool.id }).await.expect("pool").into_inner().warm_pool.expect("pool");
    assert_eq!(
        pool.spec.expect("spec").snapshot_id.as_deref(),
        Some(main_id.as_str()),
        "the pool follows main, not the newer feature prebuild"
    );

    server.restart().await;
    let (_, again) = post_push(&server.base_url(), "bitbucket", FOLLOWING, SECRET, "restart-1", "main", (&change.0, &change.1)).await;
    assert_eq!(again["result"], "replayed", "{again}");
}

#[tokio::test]
async fn the_catalog_names_projects_and_classes_and_sources_check_their_input() {
    let origin = Origin::new(Some(DEVCONTAINER));
    let url = origin.url().replace("file://", "file://someone:hunter2@");
    let server = TestServer::start_with(config(&url, "20ms", "branches = [\"main\", \"release/*\"]")).await;
    let mut catalog = CatalogServiceClient::with_interceptor(server.channel().await, bearer(TOKEN_A));
    let projects = catalog.list_projects(ListProjectsRequest {}).await.expect("projects").into_inner().projects;
    let names: Vec<&str> = projects.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["app", "filtered"]);
    let app = &projects[0];
    assert_eq!((app.id.as_str(), app.tracked_branches.clone()), (FOLLOWING, vec!["main".to_string(), "release/*".to_string()]));
    assert!(app.follows_repository && !app.polled && app.last_built.is_none());
    assert!(!app.repository.contains("hunter2"), "credentials are never shown: {}", app.repository);
    let classes =
        catalog.list_environment_classes(ListEnvironmentClassesRequest {}).await.expect("classes").into_inner().environment_classes;
    assert_eq!(classes.len(), 1);
    assert_eq!((classes[0].name.as_str(), classes[0].runner_kind.as_str(), classes[0].runner_id.as_str()), ("small", "simulated", RUNNER));

    let mut sources = PrebuildSourceServiceClient::with_interceptor(server.channel().await, bearer(TOKEN_A));
    assert_status(
        sources.list_prebuild_sources(ListPrebuildSourcesRequest { prebuild_ids: vec![] }).await,
        tonic::Code::InvalidArgument,
        "prebuild_ids",
    );
    assert_status(
        sources.list_prebuild_sources(ListPrebuildSourcesRequest { prebuild_ids: vec!["x".into()] }).await,
        tonic::Code::InvalidArgument,
        "prebuild_ids[0]",
    );
    let mut unauthenticated = CatalogServiceClient::new(server.channel().await);
    assert_status(unauthenticated.list_projects(ListProjectsRequest {}).await, tonic::Code::Unauthenticated, "API key");
}
