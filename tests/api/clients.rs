//! The real, official clients against a live server, unchanged: the Connect
//! SDK (PyPI gitpod-sdk 1.2.0), the REST client (gitpod-sdk 0.11.0) with
//! strict response validation and auto-paging, and `buf curl` (npm
//! @bufbuild/buf) over gRPC, gRPC-Web and Connect through reflection.
//! `scripts/install-test-tools` installs them into `.tools/`.

use crate::common::*;
use std::path::PathBuf;
use std::time::Duration;

fn tool(env: &str, relative: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env) {
        return PathBuf::from(path);
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative);
    assert!(path.exists(), "{relative} is missing: run the suite with `bash scripts/test` (it installs the clients), or set {env}");
    path
}

/// Runs a client to completion (bounded), returning (success, stdout, stderr).
async fn run(program: PathBuf, args: Vec<String>) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(&program);
    command.args(&args).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the client finished in time")
        .expect("the client runs");
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

fn demo_config() -> String {
    format!("[server]\nlisten = \"127.0.0.1:0\"\n{}", include_str!("../../src/demo.toml"))
}

const PROJECT: &str = prebuildd::config::DEMO_PROJECT_ID;
const CLASS: &str = prebuildd::config::DEMO_ENVIRONMENT_CLASS_ID;
const LARGE: &str = "6c7d8e9f-0a1b-4c2d-8e3f-4a5b6c7d8e9f";
const KEY: &str = prebuildd::config::DEMO_API_KEY;

#[tokio::test]
async fn the_official_connect_sdk_calls_every_method() {
    let server = TestServer::start_with(demo_config()).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/connect_sdk.py");
    let python = tool("PREBUILDD_SDK_PYTHON", ".tools/sdk-1.2/bin/python");
    let (ok, stdout, stderr) =
        run(python, vec![script.display().to_string(), server.base_url(), KEY.into(), PROJECT.into(), CLASS.into()]).await;
    assert!(ok && stdout.contains("passed, 0 failed"), "{stdout}\n{stderr}");
}

#[tokio::test]
async fn the_official_rest_client_with_strict_validation_and_auto_paging() {
    let server = TestServer::start_with(demo_config()).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/rest_client.py");
    let python = tool("PREBUILDD_REST_PYTHON", ".tools/sdk-0.11/bin/python");
    let (ok, stdout, stderr) =
        run(python, vec![script.display().to_string(), server.base_url(), KEY.into(), PROJECT.into(), LARGE.into()]).await;
    assert!(ok && stdout.contains("passed, 0 failed"), "{stdout}\n{stderr}");
}

#[tokio::test]
async fn buf_curl_over_grpc_grpcweb_and_connect_through_reflection() {
    let server = TestServer::start_with(demo_config()).await;
    let buf = tool("PREBUILDD_BUF", ".tools/npm/node_modules/.bin/buf");
    let url = |method: &str| format!("{}/gitpod.v1.PrebuildService/{method}", server.base_url());
    for protocol in ["grpc", "grpcweb", "connect"] {
        let mut args = vec!["curl".to_string(), "--protocol".into(), protocol.into()];
        if protocol == "grpc" {
            args.push("--http2-prior-knowledge".into());
        }
        let authorized = [args.clone(), vec!["-H".into(), format!("Authorization: Bearer {KEY}")]].concat();

        let create = [
            authorized.clone(),
            vec!["-d".into(), format!(r#"{{"projectId": "{PROJECT}", "spec": {{"timeout": "900s"}}}}"#), url("CreatePrebuild")],
        ]
        .concat();
        let (ok, stdout, stderr) = run(buf.clone(), create).await;
        assert!(ok, "{protocol}: {stdout}\n{stderr}");
        let created: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{protocol}: not JSON ({e}): {stdout}"));
        assert_eq!(created["prebuild"]["spec"]["timeout"], "900s", "{protocol}");
        let id = created["prebuild"]["id"].as_str().unwrap().to_string();

        let get = [authorized.clone(), vec!["-d".into(), format!(r#"{{"prebuildId": "{id}"}}"#), url("GetPrebuild")]].concat();
        let (ok, stdout, stderr) = run(buf.clone(), get).await;
        assert!(ok, "{protocol}: {stdout}\n{stderr}");
        assert!(stdout.contains(&id), "{protocol}: {stdout}");

        let unauthenticated = [args.clone(), vec!["-d".into(), "{}".into(), url("ListPrebuilds")]].concat();
        let (ok, stdout, stderr) = run(buf.clone(), unauthenticated).await;
        assert!(!ok, "{protocol}: a call without a key must fail");
        assert!(format!("{stdout}{stderr}").contains("unauthenticated"), "{protocol}: {stdout}\n{stderr}");
    }
}
