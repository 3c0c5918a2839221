//! The web dashboard (`/ui/`): its committed build is what its sources
//! build to, prebuildd serves it, and it works in a real browser (Debian's
//! chromium, headless, driven by playwright-core from `web/e2e/`) against a
//! real `prebuildd serve` whose simulated runner is slow enough to watch.

#[path = "../common/child.rs"]
mod child;
mod server;
mod web;

use serde_json::json;
use server::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The build and the browser run one at a time: on two shared cores, a build
/// beside the browser would slow the page down for no benefit.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The one browser run may take this long in all (each of its steps has its
/// own, shorter, limit).
const E2E_LIMIT: Duration = Duration::from_secs(240);

/// `src/gen/` is what buf and protoc-gen-es make of `proto/` today, and
/// `dist/` is byte for byte what `npm run build` makes of the sources, so a
/// change to the protos or the page that was not rebuilt and committed fails
/// here (the binary embeds `dist/` as committed).
#[test]
fn committed_assets_are_what_the_sources_build_to() {
    web::require_node();
    let _one_at_a_time = HEAVY.blocking_lock();
    let scratch = tempfile::tempdir().expect("temp dir");
    let generated = scratch.path().join("generated");
    web::npm_run("generate", &["--output", generated.to_str().unwrap()]);
    web::assert_same_files(
        &web::web_dir().join("src/gen"),
        &generated.join("src/gen"),
        "run `npm run generate` in web/ and commit src/gen/",
    );
    let built = scratch.path().join("dist");
    web::npm_run("build", &["--outDir", built.to_str().unwrap(), "--emptyOutDir"]);
    web::assert_same_files(&web::web_dir().join("dist"), &built, "run `npm ci && npm run build` in web/ and commit dist/");
}

#[tokio::test]
async fn the_server_serves_the_page_without_a_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path()).await;

    let redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = redirect.get(format!("{}/ui", server.base_url)).send().await.unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(response.headers()["location"], "/ui/");

    let index = server.get("/ui/").await;
    assert_eq!(index.status(), 200);
    assert_eq!(index.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(index.headers()["cache-control"], "no-cache");
    let etag = index.headers()["etag"].clone();
    let html = index.text().await.unwrap();
    assert!(html.contains("<div id=\"root\">"), "{html}");
    // Every script and style sheet the page names is served, with its type.
    let assets: Vec<&str> = html.split('"').filter(|part| part.starts_with("/ui/assets/")).collect();
    assert!(assets.iter().any(|a| a.ends_with(".js")) && assets.iter().any(|a| a.ends_with(".css")), "{html}");
    for asset in &assets {
        let response = server.get(asset).await;
        assert_eq!(response.status(), 200, "{asset}");
        let expected = if asset.ends_with(".js") { "text/javascript" } else { "text/css" };
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with(expected), "{asset}: {:?}", response.headers());
        assert!(response.headers()["cache-control"].to_str().unwrap().contains("immutable"), "{asset}");
    }
    // The page's own routes get the page; a missing asset does not.
    let deep = server.get("/ui/prebuilds/01a23737-e858-75fe-ada6-74652e736fab").await;
    assert_eq!(deep.status(), 200);
    assert_eq!(deep.text().await.unwrap(), html);
    assert_eq!(server.get("/ui/assets/missing.js").await.status(), 404);
    // Compressed for clients that ask.
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let gzipped = raw.get(format!("{}{}", server.base_url, assets[0])).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    // Revalidation by ETag.
    let again = redirect.get(format!("{}/ui/", server.base_url)).header("if-none-match", etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
    // The API next door still wants its key.
    let unauthenticated =
        redirect.post(format!("{}/gitpod.v1.PrebuildService/ListPrebuilds", server.base_url)).json(&json!({})).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
}

#[tokio::test]
async fn the_dashboard_works_in_chromium() {
    web::require_node();
    let chromium = web::chromium();
    let _one_at_a_time = HEAVY.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path()).await;

    // The scene: a failed prebuild, one completed with a warning, a
    // completed one, and a warm pool that warms the last.
    let failed = server.create_prebuild(PROJECT_FAIL).await;
    server.wait_for_phase(&failed, "PREBUILD_PHASE_FAILED").await;
    let warned = server.create_prebuild(PROJECT_WARN).await;
    server.wait_for_phase(&warned, "PREBUILD_PHASE_COMPLETED").await;
    let completed = server.create_prebuild(PROJECT_OK).await;
    server.wait_for_phase(&completed, "PREBUILD_PHASE_COMPLETED").await;
    // A fleet of one: the remote runner's member, shown on the runners page.
    let _member = server.start_member(dir.path()).await;
    let pool = server
        .call("CreateWarmPool", json!({ "projectId": PROJECT_OK, "environmentClassId": CLASS_FAST, "minSize": 1, "maxSize": 1 }))
        .await["warmPool"]["id"]
        .as_str()
        .expect("a pool id")
        .to_string();

    let mut node = Command::new("node");
    node.current_dir(web::web_dir())
        .arg("e2e/dashboard.mjs")
        .env("DASHBOARD_URL", &server.base_url)
        .env("API_KEY", KEY)
        .env("COMPLETED_PREBUILD", &completed)
        .env("FAILED_PREBUILD", &failed)
        .env("WARNED_PREBUILD", &warned)
        .env("WARM_POOL", &pool)
        .env("OTHER_PROJECT", PROJECT_HANG)
        .env("REMOTE_RUNNER", REMOTE_RUNNER)
        .env("RUNNER_MEMBER", MEMBER)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(screenshots) = std::env::var_os("PREBUILDD_TEST_SCREENSHOTS") {
        node.env("SCREENSHOT_DIR", screenshots);
    }
    let mut child = node.spawn().expect("node runs the browser script");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    // Its progress and errors, for the failure message.
    let stderr = child.stderr.take().expect("piped stderr");
    let progress = std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>().join("\n"));
    // The script's stdout, line by line, on a thread (it blocks).
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut said = Vec::new();
    let outcome = tokio::time::timeout(E2E_LIMIT, async {
        while let Some(line) = lines.recv().await {
            said.push(line.clone());
            if line == "READY" {
                // Signed in and looking at the list: now a prebuild that runs
                // (and hangs) on the slow runner, for the page to follow.
                let running = server.create_prebuild(PROJECT_HANG).await;
                writeln!(stdin, "{running}").expect("write to the script");
                stdin.flush().expect("flush");
            }
        }
    })
    .await;
    if outcome.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().expect("reap node");
    // The browser is the script's child and ends with it (its pipe closes).
    let progress = progress.join().unwrap_or_default();
    assert!(
        outcome.is_ok(),
        "the browser script did not finish within {E2E_LIMIT:?}; it said {said:?}; its progress:\n{progress}\nserver log:\n{}",
        server.log_text()
    );
    assert!(
        status.success() && said.last().map(String::as_str) == Some("PASS"),
        "the browser script failed ({status}); it said {said:?}; its progress:\n{progress}"
    );

    // What the page did, as the API sees it.
    let (status, answer) = server.try_call("GetWarmPool", json!({ "warmPoolId": pool })).await;
    if status == 200 {
        let spec = &answer["warmPool"]["spec"];
        assert_eq!((spec["minSize"].as_i64(), spec["maxSize"].as_i64()), (Some(2), Some(3)), "{answer}");
        assert_eq!(answer["warmPool"]["status"]["phase"], "WARM_POOL_PHASE_DELETING", "{answer}");
    } else {
        assert_eq!(answer["code"], "not_found", "{answer}");
    }
    let listed = server.call("ListPrebuilds", json!({})).await;
    let ids: Vec<&str> = listed["prebuilds"].as_array().unwrap().iter().filter_map(|p| p["id"].as_str()).collect();
    for kept in [&completed, &failed, &warned] {
        assert!(ids.contains(&kept.as_str()), "{kept} is gone: {listed}");
    }
    let kept = [completed.as_str(), failed.as_str(), warned.as_str()];
    for prebuild in listed["prebuilds"].as_array().unwrap().iter().filter(|p| !kept.contains(&p["id"].as_str().unwrap_or(""))) {
        // The cancelled one was deleted from its page.
        assert_eq!(prebuild["status"]["phase"], "PREBUILD_PHASE_DELETING", "{prebuild}");
        assert_eq!(prebuild["metadata"]["projectId"], PROJECT_HANG, "{prebuild}");
    }
}
