//! Several replicas on one PostgreSQL database: any replica serves any
//! request (tokens minted by one verify on another), exactly one leads the
//! reconciler, a write on a follower wakes the leader at once, and when the
//! leader stops another takes over.

use crate::common::on_postgres;
use crate::common::*;
use prebuildd::proto::gitpod::v1::*;
use std::time::{Duration, Instant};

const OK: &str = "0c000000-0000-4000-8000-0000000000a1";

/// The reconciler on with passes every `interval` (and on wake-ups: writes
/// and runner events), a fast simulated runner and a project whose
/// prebuilds succeed.
fn reconciling_config(interval: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "http://prebuildd.test"
[reconciler]
interval = "{interval}"
[[organizations]]
id = "{ORG_A}"
name = "Org A"
[[api_keys]]
token = "{TOKEN_A}"
organization_id = "{ORG_A}"
subject_id = "{ALICE}"
[[runners]]
id = "{RUNNER}"
kind = "simulated"
step_duration = "50ms"
[[environment_classes]]
id = "{CLASS_SMALL}"
runner_id = "{RUNNER}"
name = "small"
[[projects]]
id = "{OK}"
organization_id = "{ORG_A}"
name = "ok"
repository = "sim://ok"
default_environment_class_id = "{CLASS_SMALL}"
[projects.prebuilds]
enabled = true
environment_class_ids = ["{CLASS_SMALL}"]
"#
    )
}

fn list(page_size: i32, token: &str) -> ListPrebuildsRequest {
    ListPrebuildsRequest { pagination: Some(PaginationRequest { page_size, token: token.into() }), filter: None }
}

async fn logs_token(client: &mut Client, id: &str) -> String {
    client.create_prebuild_logs_token(CreatePrebuildLogsTokenRequest { prebuild_id: id.into() }).await.unwrap().into_inner().access_token
}

fn phase(prebuild: &Prebuild) -> PrebuildPhase {
    PrebuildPhase::try_from(prebuild.status.as_ref().unwrap().phase).unwrap()
}

/// Waits until exactly one of `servers` reports itself leader; returns its
/// index.
async fn the_leader(servers: &[&TestServer], patience: Duration) -> usize {
    let started = Instant::now();
    loop {
        let mut leaders = Vec::new();
        for (index, server) in servers.iter().enumerate() {
            if server.metric("prebuildd_reconciler_leader").await == 1.0 {
                leaders.push(index);
            }
        }
        assert!(leaders.len() <= 1, "more than one leader: replicas {leaders:?}");
        if let [leader] = leaders[..] {
            return leader;
        }
        assert!(started.elapsed() < patience, "no replica became leader within {patience:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn page_tokens_and_logs_tokens_from_one_replica_work_on_another() {
    let one = on_postgres::TestServer::start().await.into_inner();
    let two = one.start_replica().await;
    let mut on_one = one.client(Some(TOKEN_A)).await;
    let mut on_two = two.client(Some(TOKEN_A)).await;
    let mut created = Vec::new();
    for _ in 0..3 {
        created.push(create_prebuild(&mut on_one, PROJECT_BACKEND).await.id);
    }
    created.reverse(); // lists are newest first

    // Created on one, read on two.
    let read = on_two.get_prebuild(GetPrebuildRequest { prebuild_id: created[0].clone() }).await.unwrap().into_inner();
    assert_eq!(read.prebuild.unwrap().id, created[0]);

    // A page token from one continues on two, and one from two on one.
    let first = on_one.list_prebuilds(list(1, "")).await.unwrap().into_inner();
    assert_eq!(first.prebuilds[0].id, created[0]);
    let second = on_two.list_prebuilds(list(1, &first.pagination.unwrap().next_token)).await.unwrap().into_inner();
    assert_eq!(second.prebuilds[0].id, created[1]);
    let third = on_one.list_prebuilds(list(1, &second.pagination.unwrap().next_token)).await.unwrap().into_inner();
    assert_eq!(third.prebuilds[0].id, created[2]);

    // A logs token from one opens the log on two.
    let token = logs_token(&mut on_one, &created[0]).await;
    let url = format!("{}/logs/prebuilds/{}", two.base_url(), created[0]);
    let response = reqwest::Client::new().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    drop(response); // the prebuild never ends here: the log would stream forever
    let forged = reqwest::Client::new().get(&url).bearer_auth(format!("{token}x")).send().await.unwrap();
    assert_eq!(forged.status(), 401);

    // The secret is created once: a third replica, started later, agrees.
    let three = one.start_replica().await;
    let mut on_three = three.client(Some(TOKEN_A)).await;
    let first = on_two.list_prebuilds(list(2, "")).await.unwrap().into_inner();
    let rest = on_three.list_prebuilds(list(2, &first.pagination.unwrap().next_token)).await.unwrap().into_inner();
    assert_eq!(rest.prebuilds.iter().map(|p| p.id.clone()).collect::<Vec<_>>(), vec![created[2].clone()]);
}

#[tokio::test]
async fn exactly_one_replica_leads_and_a_survivor_takes_over() {
    let first = on_postgres::TestServer::start_with(reconciling_config("200ms")).await.into_inner();
    let mut replicas = vec![first.start_replica().await, first.start_replica().await];
    replicas.insert(0, first);
    let all: Vec<&TestServer> = replicas.iter().collect();
    let leader = the_leader(&all, Duration::from_secs(5)).await;
    // Stays one for a few renewals.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let all: Vec<&TestServer> = replicas.iter().collect();
        assert_eq!(the_leader(&all, Duration::ZERO).await, leader);
    }

    // The leader stops; one of the others leads within a few seconds.
    let stopped = Instant::now();
    replicas[leader].stop().await;
    let survivors: Vec<&TestServer> = replicas.iter().enumerate().filter(|(i, _)| *i != leader).map(|(_, server)| server).collect();
    let new_leader = the_leader(&survivors, Duration::from_secs(5)).await;
    eprintln!("a survivor took over {:?} after the leader stopped", stopped.elapsed());

    // A new prebuild completes there (created on the other survivor).
    let follower = survivors[1 - new_leader];
    let mut client = follower.client(Some(TOKEN_A)).await;
    let created = create_prebuild(&mut client, OK).await;
    let done = wait_for_phase(&mut client, &created.id, &[PrebuildPhase::Completed, PrebuildPhase::Failed], Duration::from_secs(20)).await;
    assert_eq!(phase(&done), PrebuildPhase::Completed, "{done:?}");

    // What each replica reports: the leader its passes and what they saw,
    // the follower only the calls it answered.
    let leading = metrics_text(survivors[new_leader]).await;
    let following = metrics_text(follower).await;
    assert!(leading.lines().any(|l| l == r#"prebuildd_prebuild_duration_seconds_count{outcome="completed"} 1"#), "{leading}");
    assert!(leading.contains(r#"prebuildd_prebuilds{phase="running"}"#), "{leading}");
    assert!(!following.contains("prebuildd_prebuilds{"), "a follower reports no pass gauges:\n{following}");
    assert!(!following.contains("prebuildd_prebuild_duration_seconds_count{"), "{following}");
    let create = r#"prebuildd_rpc_requests_total{method="gitpod.v1.PrebuildService/CreatePrebuild",protocol="grpc",code="ok"} 1"#;
    assert!(following.lines().any(|l| l == create), "{following}");
    assert!(!leading.contains("CreatePrebuild"), "the call was answered by the follower:\n{leading}");
}

async fn metrics_text(server: &TestServer) -> String {
    reqwest::get(format!("{}/metrics", server.base_url())).await.expect("GET /metrics").text().await.expect("metrics text")
}

/// A 30 s interval: only wake-ups move the prebuild, the follower's write
/// passed on to the leader, then the runner's events on the leader.
#[tokio::test]
async fn a_prebuild_created_on_a_follower_completes_in_seconds_with_a_30s_interval() {
    // Only a wake-up makes the leader pass before 30 s.
    let one = on_postgres::TestServer::start_with(reconciling_config("30s")).await.into_inner();
    let two = one.start_replica().await;
    let leader = the_leader(&[&one, &two], Duration::from_secs(5)).await;
    let (leader, follower) = if leader == 0 { (&one, &two) } else { (&two, &one) };
    // Let the leader's first pass (on taking the lease) go by: from now on
    // only a wake-up makes it pass before the 30 s interval.
    leader.reconcile_once().await;

    let mut client = follower.client(Some(TOKEN_A)).await;
    let created = create_prebuild(&mut client, OK).await;
    let started = Instant::now();
    let moved = wait_for_phase(
        &mut client,
        &created.id,
        &[PrebuildPhase::Starting, PrebuildPhase::Running, PrebuildPhase::Completed],
        Duration::from_secs(2),
    )
    .await;
    eprintln!("left PENDING after {:?} ({:?})", started.elapsed(), phase(&moved));
    // Four simulated steps of 50 ms, each seen at once.
    let done = wait_for_phase(&mut client, &created.id, &[PrebuildPhase::Completed, PrebuildPhase::Failed], Duration::from_secs(2)).await;
    assert_eq!(phase(&done), PrebuildPhase::Completed, "{done:?}");
    eprintln!("completed after {:?}", started.elapsed());
}

#[tokio::test]
async fn a_follower_streams_the_log_of_a_prebuild_the_leader_runs() {
    // Slower steps, so the prebuild runs for a while.
    let config = reconciling_config("50ms").replace("step_duration = \"50ms\"", "step_duration = \"400ms\"");
    let one = on_postgres::TestServer::start_with(config).await.into_inner();
    let two = one.start_replica().await;
    let leader = the_leader(&[&one, &two], Duration::from_secs(5)).await;
    let follower = if leader == 0 { &two } else { &one };

    let mut client = follower.client(Some(TOKEN_A)).await;
    let created = create_prebuild(&mut client, OK).await;
    let token = logs_token(&mut client, &created.id).await;
    let url = format!("{}/logs/prebuilds/{}", follower.base_url(), created.id);
    let mut response = reqwest::Client::new().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(5), response.chunk()).await.expect("a first chunk").unwrap().expect("not the end");
    let mut log = String::from_utf8_lossy(&first).into_owned();
    let now = client.get_prebuild(GetPrebuildRequest { prebuild_id: created.id.clone() }).await.unwrap().into_inner().prebuild.unwrap();
    assert_ne!(phase(&now), PrebuildPhase::Completed, "the first lines arrive while it runs: {log}");
    // Then it follows to the end, and ends.
    let rest = tokio::time::timeout(Duration::from_secs(20), response.text()).await.expect("the log ends after the prebuild").unwrap();
    log.push_str(&rest);
    assert!(log.contains("starting in environment") && log.contains("[simulated] completed"), "{log}");

    // After the run, either replica serves all of it.
    for server in [&one, &two] {
        let url = format!("{}/logs/prebuilds/{}", server.base_url(), created.id);
        let again = reqwest::Client::new().get(&url).bearer_auth(&token).send().await.unwrap().text().await.unwrap();
        assert_eq!(again, log);
    }
}

/// Another replica takes the lease behind this one's back, as after a pause
/// longer than the lease: the term in the database refuses this one's next
/// write, it stops leading, and once the lease is free again it takes a new
/// term and finishes the work.
#[tokio::test]
async fn a_replica_whose_lease_was_taken_writes_nothing_until_it_leads_again() {
    let server = on_postgres::TestServer::start_with(reconciling_config("200ms")).await.into_inner();
    the_leader(&[&server], Duration::from_secs(5)).await;
    let (db, connection) = tokio_postgres::connect(server.postgres_url().unwrap(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let stolen: i64 = db
        .query_one(
            "UPDATE reconciler_lease SET holder = 'another replica', term = term + 1, expires_at = now() + interval '1 hour' RETURNING term",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    // Passes run at once on the create and every 200 ms, while the replica
    // still believes it leads (it renews once a second).
    let mut client = server.client(Some(TOKEN_A)).await;
    let created = create_prebuild(&mut client, OK).await;
    let patience = Instant::now();
    while server.metric("prebuildd_reconciler_leader").await != 0.0 {
        assert!(patience.elapsed() < Duration::from_secs(5), "the replica still leads without the lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A whole pass of its own, now that it knows it does not lead, changes
    // nothing either.
    server.reconcile_once().await;
    let now = client.get_prebuild(GetPrebuildRequest { prebuild_id: created.id.clone() }).await.unwrap().into_inner().prebuild.unwrap();
    assert_eq!(phase(&now), PrebuildPhase::Pending, "a replica without the lease changed the prebuild: {now:?}");

    db.batch_execute("UPDATE reconciler_lease SET expires_at = now() - interval '1 second'").await.unwrap();
    let done = wait_for_phase(&mut client, &created.id, &[PrebuildPhase::Completed, PrebuildPhase::Failed], Duration::from_secs(20)).await;
    assert_eq!(phase(&done), PrebuildPhase::Completed, "{done:?}");
    let lease = db.query_one("SELECT holder, term FROM reconciler_lease", &[]).await.unwrap();
    assert_ne!(lease.get::<_, String>(0), "another replica");
    assert_eq!(lease.get::<_, i64>(1), stolen + 1, "it leads again in a new term");
}

/// Replicas given the same `[storage] token_secret` accept each other's
/// page tokens, signed with that secret and not the database's: a replica
/// left to the database's secret refuses them.
#[tokio::test]
async fn replicas_given_the_same_token_secret_verify_each_others_page_tokens() {
    let secret = "5f3a9c0e7b21d4486a0f9e3c2b7d1a65e4c3b2a1908f7e6d5c4b3a2918f7e6d5";
    let configured = test_config_toml().replace("[reconciler]", &format!("[storage]\ntoken_secret = \"{secret}\"\n\n[reconciler]"));
    let one = on_postgres::TestServer::start_with(configured.clone()).await.into_inner();
    let two = one.start_replica_with(configured).await;
    let own = one.start_replica_with(test_config_toml()).await;
    let mut on_one = one.client(Some(TOKEN_A)).await;
    let mut on_two = two.client(Some(TOKEN_A)).await;
    let mut on_own = own.client(Some(TOKEN_A)).await;
    let mut created = Vec::new();
    for _ in 0..3 {
        created.push(create_prebuild(&mut on_one, PROJECT_BACKEND).await.id);
    }
    created.reverse();

    let first = on_one.list_prebuilds(list(1, "")).await.unwrap().into_inner();
    let token = first.pagination.unwrap().next_token;
    let second = on_two.list_prebuilds(list(1, &token)).await.unwrap().into_inner();
    assert_eq!(second.prebuilds[0].id, created[1], "a token from one pages on two");
    let back = on_one.list_prebuilds(list(1, &second.pagination.unwrap().next_token)).await.unwrap().into_inner();
    assert_eq!(back.prebuilds[0].id, created[2], "and one from two on one");

    assert_status(on_own.list_prebuilds(list(1, &token)).await, tonic::Code::InvalidArgument, "token");
    let theirs = on_own.list_prebuilds(list(1, "")).await.unwrap().into_inner().pagination.unwrap().next_token;
    assert_status(on_two.list_prebuilds(list(1, &theirs)).await, tonic::Code::InvalidArgument, "token");
}

/// A store that fails while a log is followed ends the stream with an
/// error: the client must not mistake a cut-off log for the whole of it.
#[tokio::test]
async fn a_log_stream_whose_store_fails_ends_with_an_error_not_an_end_of_log() {
    let config = reconciling_config("50ms").replace("sim://ok", "sim://hang");
    let server = on_postgres::TestServer::start_with(config).await.into_inner();
    let mut client = server.client(Some(TOKEN_A)).await;
    let created = create_prebuild(&mut client, OK).await;
    wait_for_phase(&mut client, &created.id, &[PrebuildPhase::Running], Duration::from_secs(10)).await;
    let token = logs_token(&mut client, &created.id).await;
    let url = format!("{}/logs/prebuilds/{}", server.base_url(), created.id);
    let mut response = reqwest::Client::new().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    tokio::time::timeout(Duration::from_secs(5), response.chunk()).await.expect("a first chunk").unwrap().expect("not the end");

    // The store fails under the server: its prebuilds table is gone, while
    // the log's chunks can still be read. The follower, finding nothing new,
    // asks the store whether the prebuild has ended, and gets an error.
    let (db, connection) = tokio_postgres::connect(server.postgres_url().unwrap(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    db.batch_execute("DROP TABLE prebuilds CASCADE").await.unwrap();

    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match response.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) => return Ok(()),
                Err(error) => return Err(error),
            }
        }
    })
    .await
    .expect("the stream ends once the store fails");
    assert!(ended.is_err(), "the stream ended as if the log were whole");
}
