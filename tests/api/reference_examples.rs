//! The API reference's curl examples, each with its JSON body as printed,
//! against the embedded demo configuration (whose project and environment
//! class carry the reference's IDs), and the responses checked against the
//! documented response shapes.

use crate::common::*;
use serde_json::{json, Value};

fn demo_config() -> String {
    format!("[server]\nlisten = \"127.0.0.1:0\"\n{}", include_str!("../../src/config/demo.toml"))
}

const KEY: &str = prebuildd::config::DEMO_API_KEY;

/// The documented keys of each object in a response, by path.
fn documented_keys(path: &str) -> Option<&'static [&'static str]> {
    Some(match path {
        "prebuild" => &["metadata", "spec", "status", "id"],
        "prebuild.metadata" => {
            &["createdAt", "creator", "updatedAt", "environmentClassId", "executor", "organizationId", "projectId", "triggeredBy"]
        }
        "prebuild.metadata.creator" | "prebuild.metadata.executor" => &["id", "principal"],
        "prebuild.spec" => &["desiredPhase", "specVersion", "timeout"],
        "prebuild.status" => &[
            "phase",
            "completionTime",
            "environmentId",
            "failureMessage",
            "logUrl",
            "snapshotCompletionPercentage",
            "snapshotSizeBytes",
            "statusVersion",
            "warningMessage",
        ],
        "warmPool" => &["metadata", "spec", "status", "id"],
        "warmPool.metadata" => &["createdAt", "updatedAt", "environmentClassId", "organizationId", "projectId", "runnerId"],
        "warmPool.spec" => &["desiredPhase", "desiredSize", "maxSize", "minSize", "snapshotId", "specVersion"],
        "warmPool.status" => &["phase", "desiredSize", "failureMessage", "runningInstances", "statusVersion", "stoppedInstances"],
        "pagination" => &["nextToken"],
        _ => return None,
    })
}

/// Every key of `value` is documented at its path, and the documented
/// types hold (strings for 64-bit integers, RFC 3339 `Z` times).
fn check_shape(path: &str, value: &Value) {
    let Some(object) = value.as_object() else { return };
    let allowed = documented_keys(path).unwrap_or_else(|| panic!("no documented shape for {path}"));
    for (key, child) in object {
        assert!(allowed.contains(&key.as_str()), "{path}.{key} is not in the documented response");
        let child_path = format!("{path}.{key}");
        match key.as_str() {
            "createdAt" | "updatedAt" | "completionTime" => {
                let text = child.as_str().unwrap();
                assert!(text.ends_with('Z') && text.len() >= 20, "{child_path} = {text}");
            }
            "specVersion" | "statusVersion" | "snapshotSizeBytes" => assert!(child.is_string(), "{child_path} must be a string"),
            "minSize" | "maxSize" | "desiredSize" | "runningInstances" | "stoppedInstances" | "snapshotCompletionPercentage" => {
                assert!(child.is_number(), "{child_path} must be a number")
            }
            "id" | "organizationId" | "projectId" | "environmentClassId" | "runnerId" | "snapshotId" | "environmentId" => {
                assert!(prebuildd::validate::is_uuid(child.as_str().unwrap()), "{child_path}")
            }
            _ => {}
        }
        if child.is_object() {
            check_shape(&child_path, child);
        }
    }
    for required in ["metadata", "spec", "status"] {
        if path == "prebuild" || path == "warmPool" {
            assert!(object.contains_key(required), "{path}.{required} is required");
        }
    }
}

/// Runs one example as the reference prints it: POST to
/// `<base>/api/gitpod.v1.PrebuildService/<Method>` with its JSON body.
async fn example(server: &TestServer, method: &str, body: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/api/gitpod.v1.PrebuildService/{method}", server.base_url()))
        .header("Content-Type", "application/json")
        .header("Authorization", format!("Bearer {KEY}"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn every_reference_example_works_as_printed() {
    let server = TestServer::start_with(demo_config()).await;

    // Examples whose IDs exist in the demo: they succeed as printed.
    let (status, created) =
        example(&server, "CreatePrebuild", r#"{ "projectId": "b0e12f6c-4c67-429d-a4a6-d9838b5da047", "spec": { "timeout": "3600s" } }"#)
            .await;
    assert_eq!(status, 200, "{created}");
    check_shape("prebuild", &created["prebuild"]);
    let prebuild_id = created["prebuild"]["id"].as_str().unwrap().to_string();

    let (status, pool) = example(
        &server,
        "CreateWarmPool",
        r#"{ "environmentClassId": "d2c94c27-3b76-4a42-b88c-95a85e392c68", "projectId": "b0e12f6c-4c67-429d-a4a6-d9838b5da047" }"#,
    )
    .await;
    assert_eq!(status, 200, "{pool}");
    check_shape("warmPool", &pool["warmPool"]);
    let warm_pool_id = pool["warmPool"]["id"].as_str().unwrap().to_string();

    let (status, list) = example(&server, "ListPrebuilds", "{}").await;
    assert_eq!(status, 200);
    assert_eq!(list["prebuilds"].as_array().unwrap().len(), 1);
    check_shape("prebuild", &list["prebuilds"][0]);
    let (status, list) = example(&server, "ListWarmPools", "{}").await;
    assert_eq!(status, 200);
    check_shape("warmPool", &list["warmPools"][0]);
    let (status, list) =
        example(&server, "ListWarmPools", r#"{ "filter": { "projectIds": ["b0e12f6c-4c67-429d-a4a6-d9838b5da047"] } }"#).await;
    assert_eq!((status, list["warmPools"].as_array().unwrap().len()), (200, 1));

    // Examples naming a specific prebuild or pool: as printed they address
    // objects this server never made (not_found, with the documented error
    // shape); with our IDs substituted they succeed.
    let by_prebuild = ["GetPrebuild", "CreatePrebuildLogsToken", "CancelPrebuild", "DeletePrebuild"];
    for method in by_prebuild {
        let (status, error) = example(&server, method, r#"{ "prebuildId": "07e03a28-65a5-4d98-b532-8ea67b188048" }"#).await;
        assert_eq!((status, error["code"].as_str().unwrap()), (404, "not_found"), "{method}");
        let (status, body) = example(&server, method, &json!({ "prebuildId": prebuild_id }).to_string()).await;
        assert_eq!(status, 200, "{method}: {body}");
        match method {
            "GetPrebuild" | "CancelPrebuild" => check_shape("prebuild", &body["prebuild"]),
            "CreatePrebuildLogsToken" => assert!(!body["accessToken"].as_str().unwrap().is_empty()),
            _ => assert_eq!(body, json!({})),
        }
    }
    for method in ["GetWarmPool", "UpdateWarmPool", "DeleteWarmPool"] {
        let (status, error) = example(&server, method, r#"{ "warmPoolId": "a1b2c3d4-5678-9abc-def0-1234567890ab" }"#).await;
        assert_eq!((status, error["code"].as_str().unwrap()), (404, "not_found"), "{method}");
    }
    let (status, body) = example(&server, "GetWarmPool", &json!({ "warmPoolId": warm_pool_id }).to_string()).await;
    assert_eq!(status, 200);
    check_shape("warmPool", &body["warmPool"]);
    // The reference's "Update pool size" example: desiredSize 5.
    let (status, body) = example(&server, "UpdateWarmPool", &json!({ "warmPoolId": warm_pool_id, "desiredSize": 5 }).to_string()).await;
    assert_eq!(status, 200, "{body}");
    check_shape("warmPool", &body["warmPool"]);
    assert_eq!((body["warmPool"]["spec"]["minSize"].as_i64(), body["warmPool"]["spec"]["maxSize"].as_i64()), (Some(5), Some(5)));
    let (status, body) = example(&server, "DeleteWarmPool", &json!({ "warmPoolId": warm_pool_id }).to_string()).await;
    assert_eq!((status, body), (200, json!({})));
}

#[tokio::test]
async fn the_reference_create_warm_pool_with_desired_size_two() {
    let server = TestServer::start_with(demo_config()).await;
    let body = r#"{ "projectId": "b0e12f6c-4c67-429d-a4a6-d9838b5da047", "environmentClassId": "d2c94c27-3b76-4a42-b88c-95a85e392c68", "desiredSize": 2 }"#;
    let (status, pool) = example(&server, "CreateWarmPool", body).await;
    assert_eq!(status, 200, "{pool}");
    let spec = &pool["warmPool"]["spec"];
    assert_eq!((spec["desiredSize"].as_i64(), spec["minSize"].as_i64(), spec["maxSize"].as_i64()), (Some(2), Some(2), Some(2)));
}
