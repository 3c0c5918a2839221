//! Bad input, table-driven, through Connect JSON, Connect proto and gRPC:
//! each case gets its documented code and a message a person can act on;
//! the server stays up and nothing already stored changes.

use crate::common::*;
use prebuildd::proto::gitpod::v1::*;
use prost::Message;
use std::io::Write;

/// One bad request in each form it can take.
struct Case {
    what: &'static str,
    method: &'static str,
    json: Option<String>,
    proto: Option<Vec<u8>>,
    token: Option<&'static str>,
    code: &'static str,
    needle: &'static str,
}

fn case(
    what: &'static str,
    method: &'static str,
    json: Option<String>,
    proto: Option<Vec<u8>>,
    code: &'static str,
    needle: &'static str,
) -> Case {
    Case { what, method, json, proto, token: Some(TOKEN_A), code, needle }
}

fn grpc_code(code: &str) -> tonic::Code {
    match code {
        "invalid_argument" => tonic::Code::InvalidArgument,
        "not_found" => tonic::Code::NotFound,
        "unauthenticated" => tonic::Code::Unauthenticated,
        "resource_exhausted" => tonic::Code::ResourceExhausted,
        other => panic!("no gRPC mapping for {other}"),
    }
}

fn http_status(code: &str) -> u16 {
    match code {
        "invalid_argument" => 400,
        "not_found" => 404,
        "unauthenticated" => 401,
        "resource_exhausted" => 429,
        other => panic!("no HTTP status for {other}"),
    }
}

/// A message a person can act on: not empty, no Rust debug dump, no panic.
fn readable(message: &str) -> bool {
    !message.trim().is_empty()
        && !message.contains("Error {")
        && !message.contains("panicked")
        && !message.contains("backtrace")
        && message.len() < 2000
}

#[tokio::test]
async fn every_bad_input_gets_its_code_over_every_protocol() {
    let server = TestServer::start().await;
    let mut a = server.client(Some(TOKEN_A)).await;
    let mut b = server.client(Some(TOKEN_B)).await;
    let mine = create_prebuild(&mut a, PROJECT_BACKEND).await;
    let pool = create_warm_pool(
        &mut a,
        CreateWarmPoolRequest { project_id: PROJECT_BACKEND.into(), environment_class_id: CLASS_SMALL.into(), ..Default::default() },
    )
    .await;
    let theirs = create_prebuild(&mut b, PROJECT_B).await;
    let before = a.list_prebuilds(ListPrebuildsRequest::default()).await.unwrap().into_inner();
    let pools_before = a.list_warm_pools(ListWarmPoolsRequest::default()).await.unwrap().into_inner();

    let huge = "x".repeat(1024 * 1024);
    let five_mib = "y".repeat(5 * 1024 * 1024);
    let get = |id: &str| GetPrebuildRequest { prebuild_id: id.into() }.encode_to_vec();
    let list = |page_size: i32, token: &str, phases: Vec<i32>| {
        ListPrebuildsRequest {
            pagination: Some(PaginationRequest { page_size, token: token.into() }),
            filter: Some(list_prebuilds_request::Filter { phases, ..Default::default() }),
        }
        .encode_to_vec()
    };
    let forged_token = "AQAAAAAAAAAqAAAAAAAAACoAAAAAZ2ZuAAAAAAAAAAAAAAAA";
    let mut cases = vec![
        case("malformed JSON", "GetPrebuild", Some("{\"prebuildId\": ".into()), None, "invalid_argument", "not valid JSON"),
        case("a wrong JSON type", "GetPrebuild", Some(r#"{"prebuildId": 5}"#.into()), None, "invalid_argument", "not valid JSON"),
        case(
            "a huge string",
            "GetPrebuild",
            Some(format!(r#"{{"prebuildId": "{huge}"}}"#)),
            Some(get(&huge)),
            "invalid_argument",
            "prebuild_id: must be a UUID",
        ),
        case(
            "an invalid UUID",
            "GetPrebuild",
            Some(r#"{"prebuildId": "07e03a28"}"#.into()),
            Some(get("07e03a28")),
            "invalid_argument",
            "prebuild_id: must be a UUID",
        ),
        case(
            "a 1 MiB unknown enum name",
            "ListPrebuilds",
            Some(format!(r#"{{"filter": {{"phases": ["{huge}"]}}}}"#)),
            None,
            "invalid_argument",
            "not valid JSON",
        ),
        case(
            "an unknown enum name",
            "ListPrebuilds",
            Some(r#"{"filter": {"phases": ["PREBUILD_PHASE_DONE"]}}"#.into()),
            None,
            "invalid_argument",
            "not valid JSON",
        ),
        case(
            "an undefined enum number",
            "ListPrebuilds",
            Some(r#"{"filter": {"phases": [999]}}"#.into()),
            Some(list(0, "", vec![999])),
            "invalid_argument",
            "999",
        ),
        case(
            "a negative page size",
            "ListPrebuilds",
            Some(r#"{"pagination": {"pageSize": -1}}"#.into()),
            Some(list(-1, "", vec![])),
            "invalid_argument",
            "pagination.page_size",
        ),
        case(
            "an oversized page size",
            "ListPrebuilds",
            Some(r#"{"pagination": {"pageSize": 101}}"#.into()),
            Some(list(101, "", vec![])),
            "invalid_argument",
            "pagination.page_size",
        ),
        case(
            "a number past int32",
            "ListPrebuilds",
            Some(r#"{"pagination": {"pageSize": 1099511627776}}"#.into()),
            None,
            "invalid_argument",
            "not valid JSON",
        ),
        case(
            "a pool size over 20",
            "CreateWarmPool",
            Some(format!(r#"{{"projectId": "{PROJECT_BACKEND}", "environmentClassId": "{CLASS_LARGE}", "minSize": 21}}"#)),
            Some(
                CreateWarmPoolRequest {
                    project_id: PROJECT_BACKEND.into(),
                    environment_class_id: CLASS_LARGE.into(),
                    min_size: Some(21),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            "invalid_argument",
            "min_size",
        ),
        case(
            "a 5 MiB body",
            "GetPrebuild",
            Some(format!(r#"{{"prebuildId": "{five_mib}"}}"#)),
            Some(get(&five_mib)),
            "resource_exhausted",
            "",
        ),
        case("truncated protobuf", "GetPrebuild", None, Some(get(&mine.id)[..12].to_vec()), "invalid_argument", "protobuf"),
        case(
            "a garbage page token",
            "ListPrebuilds",
            Some(r#"{"pagination": {"token": "garbage"}}"#.into()),
            Some(list(0, "garbage", vec![])),
            "invalid_argument",
            "pagination.token",
        ),
        case(
            "a forged page token",
            "ListPrebuilds",
            Some(format!(r#"{{"pagination": {{"token": "{forged_token}"}}}}"#)),
            Some(list(0, forged_token, vec![])),
            "invalid_argument",
            "pagination.token",
        ),
        case(
            "another organization's prebuild",
            "GetPrebuild",
            Some(format!(r#"{{"prebuildId": "{}"}}"#, theirs.id)),
            Some(get(&theirs.id)),
            "not_found",
            "not found",
        ),
        case(
            "another organization's pool",
            "DeleteWarmPool",
            Some(format!(r#"{{"warmPoolId": "{}"}}"#, pool.id)),
            Some(DeleteWarmPoolRequest { warm_pool_id: pool.id.clone() }.encode_to_vec()),
            "not_found",
            "",
        ),
    ];
    // That last one is "another organization's" for org B: send it as B.
    cases.last_mut().unwrap().token = Some(TOKEN_B);
    for token in [None, Some("wrong-key")] {
        cases.push(Case {
            what: "a missing or wrong key",
            method: "ListPrebuilds",
            json: Some("{}".into()),
            proto: Some(vec![]),
            token,
            code: "unauthenticated",
            needle: "API key",
        });
    }

    let http = reqwest::Client::builder().http1_only().build().unwrap();
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    for case in &cases {
        let url = format!("{}/gitpod.v1.PrebuildService/{}", server.base_url(), case.method);
        let mut bodies = Vec::new();
        if let Some(json) = &case.json {
            bodies.push(("application/json", json.clone().into_bytes()));
        }
        if let Some(proto) = &case.proto {
            bodies.push(("application/proto", proto.clone()));
        }
        for (content_type, body) in bodies {
            let mut request = http.post(&url).header("content-type", content_type).body(body);
            if let Some(token) = case.token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let error: serde_json::Value =
                response.json().await.unwrap_or_else(|e| panic!("{} ({content_type}): error body is not JSON: {e}", case.what));
            assert_eq!(
                (status, error["code"].as_str().unwrap_or_default()),
                (http_status(case.code), case.code),
                "{} over Connect {content_type}: {error}",
                case.what
            );
            let message = error["message"].as_str().unwrap_or_default();
            assert!(readable(message) && message.contains(case.needle), "{} over Connect {content_type}: {message:?}", case.what);
        }
        if let Some(proto) = &case.proto {
            grpc.ready().await.unwrap();
            let mut request = tonic::Request::new(bytes::Bytes::from(proto.clone()));
            if let Some(token) = case.token {
                request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
            }
            let path = http::uri::PathAndQuery::try_from(format!("/gitpod.v1.PrebuildService/{}", case.method)).unwrap();
            let status = grpc.unary(request, path, prebuildd::transport::raw_codec::RawCodec).await.expect_err(case.what);
            assert_eq!(status.code(), grpc_code(case.code), "{} over gRPC: {}", case.what, status.message());
            assert!(
                readable(status.message()) && status.message().contains(case.needle),
                "{} over gRPC: {:?}",
                case.what,
                status.message()
            );
        }
    }

    // Connect-only cases: a wrong content type and a gzip bomb.
    let response = http
        .post(format!("{}/gitpod.v1.PrebuildService/GetPrebuild", server.base_url()))
        .header("content-type", "text/xml")
        .bearer_auth(TOKEN_A)
        .body("<x/>")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(&vec![b'0'; 16 * 1024 * 1024]).unwrap();
    let response = http
        .post(format!("{}/gitpod.v1.PrebuildService/GetPrebuild", server.base_url()))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .bearer_auth(TOKEN_A)
        .body(bomb.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);

    // Still up, and nothing stored changed.
    assert_eq!(a.list_prebuilds(ListPrebuildsRequest::default()).await.unwrap().into_inner(), before);
    assert_eq!(a.list_warm_pools(ListWarmPoolsRequest::default()).await.unwrap().into_inner(), pools_before);
}
