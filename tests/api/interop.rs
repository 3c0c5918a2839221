//! Interop: the real, official clients, unchanged, against a live server
//! (the test configuration of tests/common): the Connect SDK (PyPI
//! gitpod-sdk 1.2.0) and the REST client (gitpod-sdk 0.11.0) through the
//! scripts in tests/interop/, and `buf curl` (npm @bufbuild/buf) over gRPC,
//! gRPC-Web and Connect through server reflection, with no proto files.
//! `bash scripts/test` installs the clients into `.tools/`.

use crate::common::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

/// No client run may take longer than this.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// A client program: `$env` if set, else `relative` under the crate.
fn tool(env: &str, relative: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative);
    assert!(
        path.exists(),
        "{relative} is missing: run the suite with `bash scripts/test` (it installs the official clients into .tools/), or set {env}"
    );
    path
}

fn sdk_python() -> PathBuf {
    tool("PREBUILDD_SDK_PYTHON", ".tools/sdk-1.2/bin/python")
}

fn rest_python() -> PathBuf {
    tool("PREBUILDD_REST_PYTHON", ".tools/sdk-0.11/bin/python")
}

fn buf() -> PathBuf {
    tool("PREBUILDD_BUF", ".tools/npm/node_modules/.bin/buf")
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Output {
    /// Everything the client said, for assertion messages.
    fn show(&self) -> String {
        format!("{}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.status, self.stdout, self.stderr)
    }
}

/// Runs a client to completion on the async runtime (the server under test
/// shares it), killed if it outlives `CHILD_TIMEOUT`.
async fn run(program: PathBuf, args: Vec<String>) -> Output {
    let mut command = tokio::process::Command::new(&program);
    command
        .args(&args)
        .stdin(Stdio::null())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .kill_on_drop(true);
    let output = tokio::time::timeout(CHILD_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} did not finish within {CHILD_TIMEOUT:?} (killed)", program.display()))
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    Output {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs a tests/interop script against `server` (only `sections`, if any).
async fn run_script(python: PathBuf, script: &str, server: &TestServer, sections: &[&str]) -> Output {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop").join(script);
    let mut args = vec![script.display().to_string()];
    for (flag, value) in [
        ("--base-url", server.base_url().as_str()),
        ("--api-key", TOKEN_A),
        ("--other-org-api-key", TOKEN_B),
        ("--org-id", ORG_A),
        ("--subject-id", ALICE),
        ("--project-id", PROJECT_BACKEND),
        ("--second-project-id", PROJECT_FRONTEND),
        ("--disabled-project-id", PROJECT_DISABLED),
        ("--class-id", CLASS_SMALL),
        ("--second-class-id", CLASS_LARGE),
        ("--runner-id", RUNNER),
    ] {
        args.extend([flag.to_string(), value.to_string()]);
    }
    for section in sections {
        args.extend(["--section".to_string(), section.to_string()]);
    }
    run(python, args).await
}

#[track_caller]
fn assert_all_passed(output: &Output) {
    let last = output.stdout.lines().last().unwrap_or_default();
    assert!(
        output.status.success() && last.ends_with(" passed, 0 failed") && !last.starts_with("0 passed"),
        "the script reported failures:\n{}",
        output.show()
    );
}

#[tokio::test]
async fn the_connect_sdk_calls_all_eleven_methods() {
    let server = TestServer::start().await;
    let output = run_script(sdk_python(), "sdk_connect.py", &server, &["prebuilds", "warm_pools", "pages", "errors", "protocols"]).await;
    assert_all_passed(&output);
}

#[tokio::test]
async fn the_rest_client_calls_all_eleven_methods_strictly_and_auto_pages() {
    let server = TestServer::start().await;
    let output = run_script(rest_python(), "sdk_rest.py", &server, &["prebuilds", "warm_pools", "paging", "errors"]).await;
    assert_all_passed(&output);
}

#[tokio::test]
async fn the_rest_client_accepts_an_empty_list_under_strict_validation() {
    let server = TestServer::start().await;
    let output = run_script(rest_python(), "sdk_rest.py", &server, &["empty_lists"]).await;
    // SERVER BUG (this assertion fails until src/ is fixed): ListPrebuilds and
    // ListWarmPools over Connect JSON with no match answer `{"pagination":{}}`,
    // leaving out the empty `prebuilds` / `warmPools` array (proto3 JSON omits
    // empty repeated fields by default). The REST client's page models
    // (gitpod/pagination.py: SyncPrebuildsPage.prebuilds,
    // SyncWarmPoolsPage.warm_pools) declare the list without a default, so
    // with `_strict_response_validation=True` the client raises
    // APIResponseValidationError instead of returning an empty page (without
    // strict validation it copes). Expected: `{"pagination":{},"prebuilds":[]}`
    // and `{"pagination":{},"warmPools":[]}`.
    assert_all_passed(&output);
}

/// The test configuration with the reconciler running and a fast simulated
/// runner: PROJECT_BACKEND's prebuilds complete, PROJECT_FRONTEND's fail.
fn live_config() -> String {
    let config = test_config_toml();
    let live = config
        .replacen("[reconciler]\nenabled = false", "[reconciler]\nenabled = true\ninterval = \"50ms\"", 1)
        .replacen("step_duration = \"1h\"", "step_duration = \"20ms\"", 1)
        .replacen("repository = \"sim://hang\"", "repository = \"sim://ok\"", 1)
        .replacen("repository = \"sim://hang\"", "repository = \"sim://fail\"", 1);
    assert!(
        live.contains("enabled = true\ninterval") && live.contains("\"20ms\"") && live.contains("sim://ok") && live.contains("sim://fail"),
        "tests/common's configuration changed shape; update live_config():\n{config}"
    );
    live
}

#[tokio::test]
async fn the_connect_sdk_sees_completed_failed_and_ready_objects() {
    let server = TestServer::start_with(live_config()).await;
    let output = run_script(sdk_python(), "sdk_connect.py", &server, &["lifecycle"]).await;
    assert_all_passed(&output);
}

#[tokio::test]
async fn the_rest_client_strictly_validates_completed_failed_and_ready_objects() {
    let server = TestServer::start_with(live_config()).await;
    let output = run_script(rest_python(), "sdk_rest.py", &server, &["lifecycle"]).await;
    assert_all_passed(&output);
}

// ---- buf curl through server reflection (no proto files) ----

/// `buf curl` arguments for `protocol`, with `key` as the bearer key.
fn buf_args(protocol: &str, key: Option<&str>) -> Vec<String> {
    let mut args = vec!["curl".to_string(), "--protocol".into(), protocol.into()];
    if protocol == "grpc" {
        // Cleartext HTTP/2 without an upgrade, as gRPC needs.
        args.push("--http2-prior-knowledge".into());
    }
    if let Some(key) = key {
        args.extend(["-H".into(), format!("Authorization: Bearer {key}")]);
    }
    args
}

/// Calls `method` with `body` through `buf curl`.
async fn buf_call(server: &TestServer, protocol: &str, key: Option<&str>, method: &str, body: Value) -> Output {
    let mut args = buf_args(protocol, key);
    args.extend(["-d".into(), body.to_string(), format!("{}/gitpod.v1.PrebuildService/{method}", server.base_url())]);
    run(buf(), args).await
}

/// The JSON a successful call printed.
#[track_caller]
fn success(protocol: &str, output: &Output) -> Value {
    assert!(output.status.success(), "{protocol}: the call failed:\n{}", output.show());
    serde_json::from_str(&output.stdout).unwrap_or_else(|e| panic!("{protocol}: not JSON ({e}):\n{}", output.show()))
}

/// The error a failed call printed: buf curl exits with the code's number
/// shifted left by three and writes the Connect error JSON to stderr.
#[track_caller]
fn failure(protocol: &str, output: &Output, code: &str, number: i32, needle: &str) {
    assert_eq!(output.status.code(), Some(number << 3), "{protocol}: expected {code}:\n{}", output.show());
    assert!(output.stdout.trim().is_empty(), "{protocol}: no response on stdout:\n{}", output.show());
    let error: Value =
        serde_json::from_str(output.stderr.trim()).unwrap_or_else(|e| panic!("{protocol}: stderr is not JSON ({e}):\n{}", output.show()));
    assert_eq!(error["code"], code, "{protocol}:\n{}", output.show());
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{protocol}: expected {needle:?} in the message:\n{}", output.show());
}

async fn buf_curl_scenario(protocol: &str) {
    let server = TestServer::start().await;

    // Reflection needs no key.
    let mut args = buf_args(protocol, None);
    args.extend(["--list-methods".into(), server.base_url()]);
    let output = run(buf(), args).await;
    assert!(output.status.success(), "{protocol}: --list-methods:\n{}", output.show());
    for method in [
        "CreatePrebuild",
        "ListPrebuilds",
        "GetPrebuild",
        "CancelPrebuild",
        "DeletePrebuild",
        "CreatePrebuildLogsToken",
        "CreateWarmPool",
        "GetWarmPool",
        "ListWarmPools",
        "UpdateWarmPool",
        "DeleteWarmPool",
    ] {
        let line = format!("gitpod.v1.PrebuildService/{method}");
        assert!(output.stdout.lines().any(|l| l == line), "{protocol}: {line} is not listed:\n{}", output.show());
    }

    let create = json!({"projectId": PROJECT_BACKEND, "spec": {"timeout": "900s"}});
    let created = success(protocol, &buf_call(&server, protocol, Some(TOKEN_A), "CreatePrebuild", create).await);
    let prebuild = &created["prebuild"];
    let id = prebuild["id"].as_str().unwrap_or_else(|| panic!("{protocol}: no id in {created}")).to_string();
    assert_eq!(prebuild["metadata"]["organizationId"], ORG_A, "{protocol}: {created}");
    assert_eq!(prebuild["metadata"]["projectId"], PROJECT_BACKEND, "{protocol}: {created}");
    assert_eq!(prebuild["metadata"]["environmentClassId"], CLASS_SMALL, "{protocol}: {created}");
    assert_eq!(prebuild["metadata"]["creator"], json!({"id": ALICE, "principal": "PRINCIPAL_USER"}), "{protocol}: {created}");
    assert_eq!(prebuild["metadata"]["executor"], json!({"id": EXECUTOR, "principal": "PRINCIPAL_SERVICE_ACCOUNT"}), "{protocol}");
    assert_eq!(prebuild["metadata"]["triggeredBy"], "PREBUILD_TRIGGER_MANUAL", "{protocol}: {created}");
    assert_eq!(
        prebuild["spec"],
        json!({"specVersion": "1", "desiredPhase": "PREBUILD_PHASE_COMPLETED", "timeout": "900s"}),
        "{protocol}: {created}"
    );
    assert_eq!(prebuild["status"]["phase"], "PREBUILD_PHASE_PENDING", "{protocol}: {created}");
    assert_eq!(prebuild["status"]["statusVersion"], "1", "{protocol}: {created}");
    assert!(prebuild["metadata"]["createdAt"].as_str().is_some_and(|t| t.ends_with('Z')), "{protocol}: {created}");

    let got = success(protocol, &buf_call(&server, protocol, Some(TOKEN_A), "GetPrebuild", json!({"prebuildId": id})).await);
    assert_eq!(got, created, "{protocol}: GetPrebuild returns what CreatePrebuild did");

    let listed = buf_call(&server, protocol, Some(TOKEN_A), "ListPrebuilds", json!({"filter": {"projectIds": [PROJECT_BACKEND]}}));
    let listed = success(protocol, &listed.await);
    assert_eq!(listed["prebuilds"], json!([prebuild]), "{protocol}: {listed}");

    let pool = json!({"projectId": PROJECT_BACKEND, "environmentClassId": CLASS_LARGE, "minSize": 0, "maxSize": 2});
    let pool = success(protocol, &buf_call(&server, protocol, Some(TOKEN_A), "CreateWarmPool", pool).await);
    assert_eq!(pool["warmPool"]["spec"]["minSize"], 0, "{protocol}: a present zero is written: {pool}");
    assert_eq!(pool["warmPool"]["spec"]["maxSize"], 2, "{protocol}: {pool}");

    let output = buf_call(&server, protocol, None, "ListPrebuilds", json!({})).await;
    failure(protocol, &output, "unauthenticated", 16, "API key");
    let output = buf_call(&server, protocol, Some(TOKEN_B), "GetPrebuild", json!({"prebuildId": id})).await;
    failure(protocol, &output, "not_found", 5, &id);
    let output = buf_call(&server, protocol, Some(TOKEN_A), "GetPrebuild", json!({"prebuildId": "not-a-uuid"})).await;
    failure(protocol, &output, "invalid_argument", 3, "prebuild_id");
}

#[tokio::test]
async fn buf_curl_over_grpc_through_reflection() {
    buf_curl_scenario("grpc").await;
}

#[tokio::test]
async fn buf_curl_over_grpcweb_through_reflection() {
    buf_curl_scenario("grpcweb").await;
}

#[tokio::test]
async fn buf_curl_over_connect_through_reflection() {
    buf_curl_scenario("connect").await;
}
