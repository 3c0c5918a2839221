//! The Connect protocol and JSON on the documented paths, through plain HTTP
//! (reqwest): codecs, compression, the GET form, the `/api/` prefix, query
//! pagination, and every error with its HTTP status.

use crate::common::*;
use base64::Engine;
use prebuildd::proto::gitpod::v1::*;
use prost::Message;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};
use std::io::{Read, Write};

/// A raw HTTP/1.1 client: no automatic decompression, so tests see the wire.
fn http() -> reqwest::Client {
    reqwest::Client::builder().http1_only().no_gzip().build().unwrap()
}

/// A Connect JSON POST to a method, over raw HTTP/1.1.
fn json_post(server: &TestServer, method: &str) -> reqwest::RequestBuilder {
    http().post(url(server, method)).header("content-type", "application/json")
}

fn url(server: &TestServer, method: &str) -> String {
    format!("{}/gitpod.v1.PrebuildService/{method}", server.base_url())
}

async fn post_json(server: &TestServer, method: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = http().post(url(server, method)).header("content-type", "application/json").body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

#[track_caller]
fn assert_error(result: (u16, Value), status: u16, code: &str, needle: &str) {
    let (actual_status, body) = result;
    assert_eq!(actual_status, status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "expected {needle:?} in {message:?}");
}

fn is_rfc3339_z(value: &Value) -> bool {
    let text = value.as_str().unwrap_or_default();
    text.len() >= 20 && text.ends_with('Z') && text.as_bytes()[10] == b'T'
}

#[tokio::test]
async fn json_uses_the_proto3_mapping() {
    let server = TestServer::start().await;
    let (status, body) =
        post_json(&server, "CreatePrebuild", Some(TOKEN_A), json!({"projectId": PROJECT_BACKEND, "spec": {"timeout": "600s"}})).await;
    assert_eq!(status, 200, "{body}");
    let prebuild = &body["prebuild"];
    assert_eq!(prebuild["spec"]["specVersion"], "1", "64-bit integers are strings");
    assert_eq!(prebuild["spec"]["timeout"], "600s", "durations as seconds");
    assert_eq!(prebuild["spec"]["desiredPhase"], "PREBUILD_PHASE_COMPLETED", "enums by name");
    assert_eq!(prebuild["status"]["phase"], "PREBUILD_PHASE_PENDING");
    assert_eq!(prebuild["metadata"]["triggeredBy"], "PREBUILD_TRIGGER_MANUAL");
    assert!(is_rfc3339_z(&prebuild["metadata"]["createdAt"]), "Z-normalized: {}", prebuild["metadata"]["createdAt"]);
    assert!(prebuild["status"].get("failureMessage").is_none(), "defaults are omitted");
    assert!(prebuild["status"].get("snapshotSizeBytes").is_none());

    let id = prebuild["id"].as_str().unwrap();
    let (status, fetched) = post_json(&server, "GetPrebuild", Some(TOKEN_A), json!({"prebuildId": id})).await;
    assert_eq!(status, 200);
    assert_eq!(&fetched["prebuild"], prebuild);
}

#[tokio::test]
async fn json_input_is_lenient_as_connect_go_is() {
    let server = TestServer::start().await;
    // Original field names, unknown fields, charset parameter.
    let response = http()
        .post(url(&server, "CreatePrebuild"))
        .header("content-type", "application/json; charset=utf-8")
        .header("connect-protocol-version", "1")
        .bearer_auth(TOKEN_A)
        .body(json!({"project_id": PROJECT_BACKEND, "environment_class_id": CLASS_LARGE, "spec": {"timeout": "900s", "someFutureField": true}, "futureTopLevel": [1, 2]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["prebuild"]["metadata"]["environmentClassId"], CLASS_LARGE);
    assert_eq!(body["prebuild"]["spec"]["timeout"], "900s");

    // Enums by number and by name; an empty body is the empty message.
    let (status, by_number) =
        post_json(&server, "ListPrebuilds", Some(TOKEN_A), json!({"filter": {"phases": [10], "triggeredBy": [1]}})).await;
    assert_eq!(status, 200, "{by_number}");
    assert_eq!(by_number["prebuilds"].as_array().unwrap().len(), 1);
    let (_, by_name) = post_json(&server, "ListPrebuilds", Some(TOKEN_A), json!({"filter": {"phases": ["PREBUILD_PHASE_PENDING"]}})).await;
    assert_eq!(by_name["prebuilds"], by_number["prebuilds"]);
    let empty = json_post(&server, "ListPrebuilds").bearer_auth(TOKEN_A).send().await.unwrap();
    assert_eq!(empty.status(), 200);

    assert_error(
        post_json(&server, "ListPrebuilds", Some(TOKEN_A), json!({"filter": {"phases": ["PREBUILD_PHASE_SOMETIMES"]}})).await,
        400,
        "invalid_argument",
        "not valid JSON for this method",
    );
    assert_error(
        post_json(&server, "GetPrebuild", Some(TOKEN_A), json!({"prebuildId": 12})).await,
        400,
        "invalid_argument",
        "not valid JSON",
    );
}

#[tokio::test]
async fn binary_protobuf_round_trips_and_errors_stay_json() {
    let server = TestServer::start().await;
    let request =
        CreatePrebuildRequest { project_id: PROJECT_BACKEND.into(), environment_class_id: None, spec: Some(PrebuildSpec::default()) };
    let response = http()
        .post(url(&server, "CreatePrebuild"))
        .header("content-type", "application/proto")
        .bearer_auth(TOKEN_A)
        .body(request.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/proto");
    let created = CreatePrebuildResponse::decode(response.bytes().await.unwrap()).unwrap().prebuild.unwrap();
    assert_eq!(created.metadata.unwrap().project_id, PROJECT_BACKEND);

    let get = GetPrebuildRequest { prebuild_id: "07e03a28-65a5-4d98-b532-8ea67b188048".into() };
    let response = http()
        .post(url(&server, "GetPrebuild"))
        .header("content-type", "application/proto")
        .bearer_auth(TOKEN_A)
        .body(get.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["content-type"], "application/json", "Connect errors are JSON even for proto requests");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "not_found");

    let truncated = &get.encode_to_vec()[..10];
    let response = http()
        .post(url(&server, "GetPrebuild"))
        .header("content-type", "application/proto")
        .bearer_auth(TOKEN_A)
        .body(truncated.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "invalid_argument");
    assert!(body["message"].as_str().unwrap().contains("not a valid protobuf message"), "{body}");
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

#[tokio::test]
async fn gzip_both_ways() {
    let server = TestServer::start().await;
    let body = json!({"projectId": PROJECT_BACKEND, "spec": {}}).to_string();
    for _ in 0..5 {
        let response = json_post(&server, "CreatePrebuild")
            .header("content-encoding", "gzip")
            .bearer_auth(TOKEN_A)
            .body(gzip(body.as_bytes()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("content-encoding").is_none(), "small responses stay uncompressed");
    }
    let response =
        json_post(&server, "ListPrebuilds").header("accept-encoding", "gzip").bearer_auth(TOKEN_A).body("{}").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let list: Value = serde_json::from_slice(&gunzip(&response.bytes().await.unwrap())).unwrap();
    assert_eq!(list["prebuilds"].as_array().unwrap().len(), 5);

    let response =
        json_post(&server, "ListPrebuilds").header("content-encoding", "br").bearer_auth(TOKEN_A).body("{}").send().await.unwrap();
    assert_eq!(response.status(), 501);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], "unimplemented");
    let response =
        json_post(&server, "ListPrebuilds").header("content-encoding", "gzip").bearer_auth(TOKEN_A).body("not gzip").send().await.unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn get_form_serves_side_effect_free_methods() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let prebuild = create_prebuild(&mut client, PROJECT_BACKEND).await;
    let base = url(&server, "GetPrebuild");
    let get = |query: String| {
        let target = format!("{base}?{query}");
        async move { http().get(target).bearer_auth(TOKEN_A).send().await.unwrap() }
    };

    let message = json!({"prebuildId": prebuild.id}).to_string();
    let encoded: String = form_urlencoded::byte_serialize(message.as_bytes()).collect();
    let response = get(format!("connect=v1&encoding=json&message={encoded}")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["prebuild"]["id"], prebuild.id.as_str());

    let proto = GetPrebuildRequest { prebuild_id: prebuild.id.clone() }.encode_to_vec();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&proto);
    let response = get(format!("connect=v1&encoding=proto&base64=1&message={b64}")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(GetPrebuildResponse::decode(response.bytes().await.unwrap()).unwrap().prebuild.unwrap(), prebuild);

    let b64_gzip = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(gzip(&proto));
    let response = get(format!("connect=v1&encoding=proto&base64=1&compression=gzip&message={b64_gzip}")).await;
    assert_eq!(response.status(), 200);

    let response = get("connect=v1&encoding=yaml&message=x".into()).await;
    assert_eq!(response.status(), 415);
    let response = get("connect=v1&encoding=proto&base64=1&message=!!!".into()).await;
    assert_eq!(response.status(), 400);

    let response = http()
        .get(format!("{}?connect=v1&encoding=json&message=%7B%7D", url(&server, "ListWarmPools")))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "ListWarmPools has no side effects");
    let response = http()
        .get(format!("{}?connect=v1&encoding=json&message=%7B%7D", url(&server, "CreatePrebuild")))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405, "GET is only for NO_SIDE_EFFECTS methods");
    assert_eq!(response.headers()["allow"], "POST");
}

#[tokio::test]
async fn api_prefix_and_query_pagination_for_the_rest_client() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(create_prebuild(&mut client, PROJECT_BACKEND).await.id);
    }
    ids.reverse();
    let api = |method: &str, query: &str| format!("{}/api/gitpod.v1.PrebuildService/{method}{query}", server.base_url());
    let page = |response: Value| -> (Vec<String>, String) {
        let ids = response["prebuilds"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_string()).collect();
        (ids, response["pagination"]["nextToken"].as_str().unwrap_or_default().to_string())
    };
    let first: Value = http()
        .post(api("ListPrebuilds", "?pageSize=2"))
        .header("content-type", "application/json")
        .bearer_auth(TOKEN_A)
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (first_ids, token) = page(first);
    assert_eq!(first_ids, ids[0..2]);
    // The body still carries the first page's (stale) pagination: the query wins.
    let stale = json!({"pagination": {"pageSize": 50, "token": ""}}).to_string();
    let second: Value = http()
        .post(api("ListPrebuilds", &format!("?token={token}&pageSize=2")))
        .header("content-type", "application/json")
        .bearer_auth(TOKEN_A)
        .body(stale)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (second_ids, token) = page(second);
    assert_eq!(second_ids, ids[2..4]);
    let third: Value = http()
        .post(api("ListPrebuilds", &format!("?token={token}&pageSize=2")))
        .header("content-type", "application/json")
        .bearer_auth(TOKEN_A)
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (third_ids, token) = page(third);
    assert_eq!(third_ids, ids[4..5]);
    assert_eq!(token, "", "the last page has no next token");

    let response = http()
        .post(api("ListPrebuilds", "?pageSize=abc"))
        .header("content-type", "application/json")
        .bearer_auth(TOKEN_A)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = http()
        .post(api("ListPrebuilds", "?pageSize=101"))
        .header("content-type", "application/json")
        .bearer_auth(TOKEN_A)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.json::<Value>().await.unwrap()["message"].as_str().unwrap(),
        "pagination.page_size: must be between 0 and 100, got 101"
    );
}

#[tokio::test]
async fn every_error_has_its_connect_code_and_http_status() {
    let server = TestServer::start().await;
    assert_error(post_json(&server, "ListPrebuilds", None, json!({})).await, 401, "unauthenticated", "missing API key");
    assert_error(post_json(&server, "ListPrebuilds", Some("wrong-key"), json!({})).await, 401, "unauthenticated", "unknown API key");
    assert_error(
        post_json(&server, "GetPrebuild", Some(TOKEN_A), json!({"prebuildId": "nope"})).await,
        400,
        "invalid_argument",
        "prebuild_id: must be a UUID",
    );
    assert_error(
        post_json(&server, "GetPrebuild", Some(TOKEN_A), json!({"prebuildId": "07e03a28-65a5-4d98-b532-8ea67b188048"})).await,
        404,
        "not_found",
        "not found",
    );
    assert_error(
        post_json(&server, "CreatePrebuild", Some(TOKEN_A), json!({"projectId": PROJECT_DISABLED, "spec": {}})).await,
        400,
        "failed_precondition",
        "not enabled",
    );
    post_json(&server, "CreateWarmPool", Some(TOKEN_A), json!({"projectId": PROJECT_BACKEND, "environmentClassId": CLASS_SMALL})).await;
    assert_error(
        post_json(&server, "CreateWarmPool", Some(TOKEN_A), json!({"projectId": PROJECT_BACKEND, "environmentClassId": CLASS_SMALL})).await,
        409,
        "already_exists",
        "already exists",
    );
    assert_error(post_json(&server, "NoSuchMethod", Some(TOKEN_A), json!({})).await, 404, "unimplemented", "no such method");

    let malformed = json_post(&server, "GetPrebuild").bearer_auth(TOKEN_A).body("{\"prebuildId\": ").send().await.unwrap();
    assert_eq!(malformed.status(), 400);
    let message = malformed.json::<Value>().await.unwrap()["message"].as_str().unwrap().to_string();
    assert!(message.contains("EOF") || message.contains("line 1"), "the parser's reason: {message}");

    let deadline =
        json_post(&server, "ListPrebuilds").header("connect-timeout-ms", "0").bearer_auth(TOKEN_A).body("{}").send().await.unwrap();
    assert_eq!(deadline.status(), 504);
    assert_eq!(deadline.json::<Value>().await.unwrap()["code"], "deadline_exceeded");
    let ample =
        json_post(&server, "ListPrebuilds").header("connect-timeout-ms", "10000").bearer_auth(TOKEN_A).body("{}").send().await.unwrap();
    assert_eq!(ample.status(), 200);
    let bad_timeout =
        json_post(&server, "ListPrebuilds").header("connect-timeout-ms", "soon").bearer_auth(TOKEN_A).body("{}").send().await.unwrap();
    assert_eq!(bad_timeout.status(), 400);
    let bad_version =
        json_post(&server, "ListPrebuilds").header("connect-protocol-version", "2").bearer_auth(TOKEN_A).body("{}").send().await.unwrap();
    assert_eq!(bad_version.status(), 400);

    for content_type in ["text/plain", "application/xml", "application/connect+json", "application/json; charset=latin1"] {
        let response = http()
            .post(url(&server, "ListPrebuilds"))
            .header("content-type", content_type)
            .bearer_auth(TOKEN_A)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 415, "{content_type}");
    }
    let response = http().post(url(&server, "ListPrebuilds")).bearer_auth(TOKEN_A).body("{}").send().await.unwrap();
    assert_eq!(response.status(), 415, "no content type");
    let response = http()
        .put(url(&server, "ListPrebuilds"))
        .header("content-type", "application/json")
        .bearer_auth(TOKEN_A)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
}

#[tokio::test]
async fn oversized_bodies_and_gzip_bombs_are_resource_exhausted() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    create_prebuild(&mut client, PROJECT_BACKEND).await;
    let huge = format!("{{\"prebuildId\": \"{}\"}}", "x".repeat(5 * 1024 * 1024));
    let response = json_post(&server, "GetPrebuild").bearer_auth(TOKEN_A).body(huge).send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], "resource_exhausted");

    let bomb = gzip(&vec![b' '; 64 * 1024 * 1024]);
    assert!(bomb.len() < 100 * 1024, "a small body");
    let response =
        json_post(&server, "GetPrebuild").header("content-encoding", "gzip").bearer_auth(TOKEN_A).body(bomb).send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.json::<Value>().await.unwrap()["message"].as_str().unwrap().contains("inflates past"));

    let (status, list) = post_json(&server, "ListPrebuilds", Some(TOKEN_A), json!({})).await;
    assert_eq!((status, list["prebuilds"].as_array().unwrap().len()), (200, 1), "still serving, nothing changed");
}

#[tokio::test]
async fn empty_lists_stay_in_json_for_the_rest_client() {
    let server = TestServer::start().await;
    let (status, prebuilds) = post_json(&server, "ListPrebuilds", Some(TOKEN_A), json!({})).await;
    assert_eq!((status, &prebuilds), (200, &json!({"pagination": {}, "prebuilds": []})));
    let (_, pools) = post_json(&server, "ListWarmPools", Some(TOKEN_A), json!({"filter": {"projectIds": [PROJECT_FRONTEND]}})).await;
    assert_eq!(pools, json!({"pagination": {}, "warmPools": []}));
    let (_, deleted) =
        post_json(&server, "DeleteWarmPool", Some(TOKEN_A), json!({"warmPoolId": "a1b2c3d4-5678-9abc-def0-1234567890ab"})).await;
    assert_eq!(deleted["code"], "not_found", "other responses are untouched");
}

#[tokio::test]
async fn browsers_on_other_origins_may_call() {
    let server = TestServer::start().await;
    let preflight = http()
        .request(reqwest::Method::OPTIONS, url(&server, "ListPrebuilds"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type, connect-protocol-version")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "https://app.example");
    assert!(preflight.headers()["access-control-allow-headers"].to_str().unwrap().contains("authorization"));
    let response = http()
        .post(url(&server, "ListPrebuilds"))
        .header("origin", "https://app.example")
        .header("content-type", "application/json")
        .bearer_auth(TOKEN_A)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], "https://app.example");
}

#[tokio::test]
async fn connect_works_over_h2c_too() {
    let server = TestServer::start().await;
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let response = client.post(url(&server, "ListPrebuilds")).headers(headers).bearer_auth(TOKEN_A).body("{}").send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
}
