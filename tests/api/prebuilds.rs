//! CreatePrebuild, GetPrebuild, CancelPrebuild, DeletePrebuild and
//! CreatePrebuildLogsToken: each rule of the reference and its error codes.

use super::common::*;
use prebuildd::proto::gitpod::v1::prebuild_metadata::PrebuildTrigger;
use prebuildd::proto::gitpod::v1::*;
use tonic::Code;

fn request(project_id: &str, class: Option<&str>, timeout_seconds: Option<i64>) -> CreatePrebuildRequest {
    CreatePrebuildRequest {
        project_id: project_id.into(),
        environment_class_id: class.map(Into::into),
        spec: Some(PrebuildSpec {
            timeout: timeout_seconds.map(|seconds| pbjson_types::Duration { seconds, nanos: 0 }),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn create_fills_metadata_spec_and_status() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let prebuild = client.create_prebuild(request(PROJECT_BACKEND, None, None)).await.unwrap().into_inner().prebuild.unwrap();

    assert!(prebuildd::validate::is_uuid(&prebuild.id));
    let metadata = prebuild.metadata.as_ref().unwrap();
    assert_eq!(metadata.organization_id, ORG_A);
    assert_eq!(metadata.project_id, PROJECT_BACKEND);
    assert_eq!(metadata.environment_class_id, CLASS_SMALL, "defaults to the project's class");
    assert_eq!(metadata.creator, Some(Subject { id: ALICE.into(), principal: Principal::User as i32 }));
    assert_eq!(
        metadata.executor,
        Some(Subject { id: EXECUTOR.into(), principal: Principal::ServiceAccount as i32 }),
        "the project's executor"
    );
    assert_eq!(metadata.triggered_by, PrebuildTrigger::Manual as i32);
    assert!(metadata.created_at.is_some());
    assert_eq!(metadata.created_at, metadata.updated_at);

    let spec = prebuild.spec.as_ref().unwrap();
    assert_eq!(spec.spec_version, 1);
    assert_eq!(spec.desired_phase, PrebuildPhase::Completed as i32);
    assert_eq!(spec.timeout, Some(pbjson_types::Duration { seconds: 3600, nanos: 0 }), "60 minutes by default");

    let status = prebuild.status.as_ref().unwrap();
    assert_eq!(status.phase, PrebuildPhase::Pending as i32);
    assert_eq!(status.status_version, 1);
    assert_eq!(status.log_url, format!("http://prebuildd.test/logs/prebuilds/{}", prebuild.id));

    let fetched =
        client.get_prebuild(GetPrebuildRequest { prebuild_id: prebuild.id.clone() }).await.unwrap().into_inner().prebuild.unwrap();
    assert_eq!(fetched, prebuild);
}

#[tokio::test]
async fn create_uses_project_timeout_creator_as_executor_and_explicit_values() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A2)).await;
    let prebuild = client.create_prebuild(request(PROJECT_FRONTEND, None, None)).await.unwrap().into_inner().prebuild.unwrap();
    assert_eq!(prebuild.spec.as_ref().unwrap().timeout.as_ref().unwrap().seconds, 1800, "the project's timeout");
    let metadata = prebuild.metadata.unwrap();
    assert_eq!(metadata.executor, metadata.creator, "no executor configured: the creator runs it");
    assert_eq!(metadata.creator.unwrap().principal, Principal::ServiceAccount as i32);

    let prebuild =
        client.create_prebuild(request(PROJECT_BACKEND, Some(CLASS_LARGE), Some(7200))).await.unwrap().into_inner().prebuild.unwrap();
    assert_eq!(prebuild.metadata.unwrap().environment_class_id, CLASS_LARGE);
    assert_eq!(prebuild.spec.unwrap().timeout.unwrap().seconds, 7200);

    let upper = CLASS_LARGE.to_uppercase();
    let prebuild = client
        .create_prebuild(request(&PROJECT_BACKEND.to_uppercase(), Some(&upper), Some(300)))
        .await
        .unwrap()
        .into_inner()
        .prebuild
        .unwrap();
    assert_eq!(prebuild.metadata.unwrap().environment_class_id, CLASS_LARGE, "IDs are canonicalised to lowercase");
}

#[tokio::test]
async fn create_ignores_client_desired_phase_and_versions() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let mut req = request(PROJECT_BACKEND, None, None);
    req.spec.as_mut().unwrap().desired_phase = PrebuildPhase::Cancelled as i32;
    req.spec.as_mut().unwrap().spec_version = 99;
    let spec = client.create_prebuild(req).await.unwrap().into_inner().prebuild.unwrap().spec.unwrap();
    assert_eq!(spec.desired_phase, PrebuildPhase::Completed as i32);
    assert_eq!(spec.spec_version, 1);
}

#[tokio::test]
async fn create_rejects_bad_input_naming_the_field() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let cases: Vec<(CreatePrebuildRequest, &str)> = vec![
        (request("", None, None), "project_id: "),
        (request("not-a-uuid", None, None), "project_id: must be a UUID"),
        (request(PROJECT_BACKEND, Some("small"), None), "environment_class_id: must be a UUID"),
        (request(PROJECT_BACKEND, Some(""), None), "environment_class_id: "),
        (CreatePrebuildRequest { project_id: PROJECT_BACKEND.into(), environment_class_id: None, spec: None }, "spec: value is required"),
        (request(PROJECT_BACKEND, None, Some(299)), "spec.timeout: must be between 300s and 7200s"),
        (request(PROJECT_BACKEND, None, Some(7201)), "spec.timeout: must be between 300s and 7200s"),
        (request(PROJECT_BACKEND, None, Some(-5)), "spec.timeout"),
        (
            CreatePrebuildRequest {
                project_id: PROJECT_BACKEND.into(),
                environment_class_id: None,
                spec: Some(PrebuildSpec { desired_phase: 33, ..Default::default() }),
            },
            "spec.desired_phase",
        ),
    ];
    for (req, needle) in cases {
        assert_status(client.create_prebuild(req).await, Code::InvalidArgument, needle);
    }
}

#[tokio::test]
async fn create_checks_project_and_class() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    assert_status(
        client.create_prebuild(request("00000000-0000-4000-8000-000000000000", None, None)).await,
        Code::NotFound,
        "project 00000000-0000-4000-8000-000000000000 not found",
    );
    assert_status(
        client.create_prebuild(request(PROJECT_DISABLED, None, None)).await,
        Code::FailedPrecondition,
        "prebuilds are not enabled",
    );
    assert_status(
        client.create_prebuild(request(PROJECT_BACKEND, Some(CLASS_UNLISTED), None)).await,
        Code::FailedPrecondition,
        "is not listed in the prebuild configuration",
    );
    assert_status(
        client.create_prebuild(request(PROJECT_FRONTEND, Some(CLASS_LARGE), None)).await,
        Code::FailedPrecondition,
        "is not listed",
    );
    assert_status(
        client.create_prebuild(request(PROJECT_BACKEND, Some("00000000-0000-4000-8000-00000000ffff"), None)).await,
        Code::FailedPrecondition,
        "is not listed",
    );
}

#[tokio::test]
async fn get_validates_and_reports_missing() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    assert_status(client.get_prebuild(GetPrebuildRequest { prebuild_id: "".into() }).await, Code::InvalidArgument, "prebuild_id: ");
    assert_status(
        client.get_prebuild(GetPrebuildRequest { prebuild_id: "123".into() }).await,
        Code::InvalidArgument,
        "prebuild_id: must be a UUID",
    );
    assert_status(
        client.get_prebuild(GetPrebuildRequest { prebuild_id: "07e03a28-65a5-4d98-b532-8ea67b188048".into() }).await,
        Code::NotFound,
        "prebuild 07e03a28-65a5-4d98-b532-8ea67b188048 not found",
    );
}

#[tokio::test]
async fn cancel_pending_goes_straight_to_cancelled_and_repeats_harmlessly() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let created = create_prebuild(&mut client, PROJECT_BACKEND).await;
    let cancelled =
        client.cancel_prebuild(CancelPrebuildRequest { prebuild_id: created.id.clone() }).await.unwrap().into_inner().prebuild.unwrap();
    let status = cancelled.status.as_ref().unwrap();
    assert_eq!(status.phase, PrebuildPhase::Cancelled as i32);
    assert!(status.completion_time.is_some());
    assert_eq!(status.status_version, 2);
    let spec = cancelled.spec.as_ref().unwrap();
    assert_eq!(spec.desired_phase, PrebuildPhase::Cancelled as i32);
    assert_eq!(spec.spec_version, 2);
    assert!(instant(&cancelled.metadata.as_ref().unwrap().updated_at) >= instant(&created.metadata.as_ref().unwrap().updated_at));

    let again =
        client.cancel_prebuild(CancelPrebuildRequest { prebuild_id: created.id.clone() }).await.unwrap().into_inner().prebuild.unwrap();
    assert_eq!(again, cancelled, "cancelling twice changes nothing");
}

#[tokio::test]
async fn cancel_running_moves_to_cancelling_and_finished_ones_refuse() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    for phase in [PrebuildPhase::Starting, PrebuildPhase::Running, PrebuildPhase::Snapshotting] {
        let created = create_prebuild(&mut client, PROJECT_BACKEND).await;
        server.force_phase(ORG_A, &created.id, phase).await;
        let cancelled =
            client.cancel_prebuild(CancelPrebuildRequest { prebuild_id: created.id.clone() }).await.unwrap().into_inner().prebuild.unwrap();
        assert_eq!(cancelled.status.as_ref().unwrap().phase, PrebuildPhase::Cancelling as i32, "from {phase:?}");
        assert_eq!(cancelled.status.as_ref().unwrap().completion_time, None);
        assert_eq!(cancelled.spec.unwrap().desired_phase, PrebuildPhase::Cancelled as i32);
        let again =
            client.cancel_prebuild(CancelPrebuildRequest { prebuild_id: created.id.clone() }).await.unwrap().into_inner().prebuild.unwrap();
        assert_eq!(again.status.unwrap().phase, PrebuildPhase::Cancelling as i32);
    }
    for (phase, word) in [(PrebuildPhase::Completed, "already completed"), (PrebuildPhase::Failed, "already failed")] {
        let created = create_prebuild(&mut client, PROJECT_BACKEND).await;
        server.force_phase(ORG_A, &created.id, phase).await;
        assert_status(
            client.cancel_prebuild(CancelPrebuildRequest { prebuild_id: created.id.clone() }).await,
            Code::FailedPrecondition,
            word,
        );
    }
    assert_status(client.cancel_prebuild(CancelPrebuildRequest { prebuild_id: "x".into() }).await, Code::InvalidArgument, "prebuild_id: ");
    assert_status(
        client.cancel_prebuild(CancelPrebuildRequest { prebuild_id: "07e03a28-65a5-4d98-b532-8ea67b188048".into() }).await,
        Code::NotFound,
        "not found",
    );
}

#[tokio::test]
async fn delete_marks_deleting_and_is_idempotent() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let created = create_prebuild(&mut client, PROJECT_BACKEND).await;
    let response = client.delete_prebuild(DeletePrebuildRequest { prebuild_id: created.id.clone() }).await.unwrap().into_inner();
    assert_eq!(response, DeletePrebuildResponse {});

    let deleting =
        client.get_prebuild(GetPrebuildRequest { prebuild_id: created.id.clone() }).await.unwrap().into_inner().prebuild.unwrap();
    assert_eq!(deleting.status.as_ref().unwrap().phase, PrebuildPhase::Deleting as i32);
    assert_eq!(deleting.spec.as_ref().unwrap().desired_phase, PrebuildPhase::Deleted as i32);
    assert_eq!(deleting.spec.as_ref().unwrap().spec_version, 2);

    client.delete_prebuild(DeletePrebuildRequest { prebuild_id: created.id.clone() }).await.unwrap();
    let again = client.get_prebuild(GetPrebuildRequest { prebuild_id: created.id.clone() }).await.unwrap().into_inner().prebuild.unwrap();
    assert_eq!(again, deleting, "deleting twice changes nothing");
    assert_status(
        client.cancel_prebuild(CancelPrebuildRequest { prebuild_id: created.id.clone() }).await,
        Code::FailedPrecondition,
        "being deleted",
    );

    assert_status(
        client.delete_prebuild(DeletePrebuildRequest { prebuild_id: "07e03a28-65a5-4d98-b532-8ea67b188048".into() }).await,
        Code::NotFound,
        "not found",
    );
    assert_status(client.delete_prebuild(DeletePrebuildRequest { prebuild_id: "".into() }).await, Code::InvalidArgument, "prebuild_id: ");
}

#[tokio::test]
async fn logs_token_is_signed_for_that_prebuild() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let created = create_prebuild(&mut client, PROJECT_BACKEND).await;
    let token = client
        .create_prebuild_logs_token(CreatePrebuildLogsTokenRequest { prebuild_id: created.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    assert!(!token.is_empty());
    let granted = server.service().tokens().open_logs_token(&token, std::time::SystemTime::now()).unwrap();
    assert_eq!(granted.prebuild_id, created.id);
    assert_eq!(granted.organization_id, ORG_A);
    let expired = server.service().tokens().open_logs_token(&token, std::time::SystemTime::now() + std::time::Duration::from_secs(3601));
    assert!(expired.is_err(), "valid for one hour");

    assert_status(
        client
            .create_prebuild_logs_token(CreatePrebuildLogsTokenRequest { prebuild_id: "07e03a28-65a5-4d98-b532-8ea67b188048".into() })
            .await,
        Code::NotFound,
        "not found",
    );
    assert_status(
        client.create_prebuild_logs_token(CreatePrebuildLogsTokenRequest { prebuild_id: "nope".into() }).await,
        Code::InvalidArgument,
        "prebuild_id: ",
    );
}

#[tokio::test]
async fn without_a_public_url_the_log_url_names_the_port_it_listens_on() {
    let config = test_config_toml().replacen("public_url = \"http://prebuildd.test\"\n", "", 1);
    assert!(!config.contains("public_url"), "the config edit applied");
    let server = TestServer::start_with(config).await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let prebuild = create_prebuild(&mut client, PROJECT_BACKEND).await;
    let log_url = prebuild.status.unwrap().log_url;
    assert_eq!(log_url, format!("http://{}/logs/prebuilds/{}", server.addr, prebuild.id), "listen = 127.0.0.1:0 gives the real port");
}
