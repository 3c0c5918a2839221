//! The CLI as a user runs it: the built `prebuildd` binary against a real
//! server (the simulated runner), checking what it prints and how it exits.

#[path = "../common/mod.rs"]
mod common;

use common::*;
use serde_json::Value;
use std::process::Output;
use std::time::{Duration, Instant};

/// A configuration whose prebuilds run: backend completes (`sim://ok`),
/// frontend fails (`sim://fail`), each simulated step lasting `step`.
fn running_config(step: &str) -> String {
    test_config_toml()
        .replace("enabled = false", "enabled = true")
        .replace("step_duration = \"1h\"", &format!("step_duration = \"{step}\""))
        .replace("name = \"backend\"\nrepository = \"sim://hang\"", "name = \"backend\"\nrepository = \"sim://ok\"")
        .replace("name = \"frontend\"\nrepository = \"sim://hang\"", "name = \"frontend\"\nrepository = \"sim://fail\"")
}

/// Runs `prebuildd <args>` against `server` with `key` (none: no key).
async fn run_with(server: &TestServer, key: Option<&str>, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_prebuildd"));
    command.env("PREBUILDD_SERVER", server.base_url()).env_remove("PREBUILDD_API_KEY").args(args);
    if let Some(key) = key {
        command.args(["--api-key", key]);
    }
    tokio::time::timeout(Duration::from_secs(60), command.output()).await.expect("the CLI ends").expect("the CLI runs")
}

/// Runs a command as org A's Alice and expects it to succeed.
async fn ok(server: &TestServer, args: &[&str]) -> String {
    let output = run_with(server, Some(TOKEN_A), args).await;
    assert!(output.status.success(), "prebuildd {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8")
}

/// Runs a command with `-o json` and parses what it printed.
async fn json(server: &TestServer, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    let stdout = ok(server, &args).await;
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: not JSON: {stdout}"))
}

/// Runs a command as Alice that must fail; returns its stderr.
async fn fails(server: &TestServer, args: &[&str]) -> String {
    let output = run_with(server, Some(TOKEN_A), args).await;
    assert!(!output.status.success(), "prebuildd {args:?} succeeded: {}", String::from_utf8_lossy(&output.stdout));
    String::from_utf8(output.stderr).expect("utf-8")
}

#[tokio::test]
async fn create_prints_a_table_or_the_prebuild_as_json() {
    let server = TestServer::start().await;
    let table = ok(&server, &["prebuilds", "create", "--project", PROJECT_BACKEND]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID") && lines[0].contains("PROJECT") && lines[0].contains("PHASE"), "{table}");
    // Projects and classes by name (the catalog service), the trigger as
    // the prebuild's source records it.
    assert!(lines[1].contains("backend") && lines[1].contains("small") && lines[1].contains("PENDING"), "{table}");
    assert!(lines[1].contains("api"), "{table}");
    // The columns line up: each header starts where its cells start.
    assert_eq!(lines[0].find("PHASE"), lines[1].find("PENDING"), "{table}");

    let created =
        json(&server, &["prebuilds", "create", "--project", PROJECT_BACKEND, "--environment-class", CLASS_LARGE, "--timeout", "30m"]).await;
    assert_eq!(created["metadata"]["projectId"], PROJECT_BACKEND);
    assert_eq!(created["metadata"]["environmentClassId"], CLASS_LARGE);
    assert_eq!(created["spec"]["timeout"], "1800s");
    assert_eq!(created["status"]["phase"], "PREBUILD_PHASE_PENDING");
    let id = created["id"].as_str().expect("an id");
    let fetched = json(&server, &["prebuilds", "get", id]).await;
    assert_eq!(fetched["id"], id);
    assert!(fetched["metadata"]["createdAt"].as_str().unwrap().ends_with('Z'), "{fetched}");

    let stderr = fails(&server, &["prebuilds", "create", "--project", PROJECT_BACKEND, "--timeout", "1m"]).await;
    assert!(stderr.starts_with("invalid_argument: spec.timeout"), "{stderr}");
}

#[tokio::test]
async fn watch_follows_a_prebuild_to_completion() {
    let server = TestServer::start_with(running_config("20ms")).await;
    let output = run_with(&server, Some(TOKEN_A), &["prebuilds", "create", "--project", PROJECT_BACKEND, "--watch"]).await;
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.lines().nth(1).unwrap().contains("COMPLETED"), "{stdout}");
    // Not a terminal: one progress line per phase, on stderr.
    assert!(stderr.lines().next().unwrap().contains("PENDING"), "{stderr}");
    assert!(stderr.lines().last().unwrap().contains("COMPLETED"), "{stderr}");

    let output = run_with(&server, Some(TOKEN_A), &["prebuilds", "create", "--project", PROJECT_BACKEND, "--watch", "-o", "json"]).await;
    assert!(output.status.success());
    let done: Value = serde_json::from_slice(&output.stdout).expect("stdout is only the final prebuild's JSON");
    assert_eq!(done["status"]["phase"], "PREBUILD_PHASE_COMPLETED");
    assert_eq!(done["status"]["snapshotCompletionPercentage"], 100);
}

#[tokio::test]
async fn watch_exits_non_zero_with_the_failure_message() {
    let server = TestServer::start_with(running_config("20ms")).await;
    let stderr = fails(&server, &["prebuilds", "create", "--project", PROJECT_FRONTEND, "--watch"]).await;
    assert!(stderr.contains("FAILED"), "{stderr}");
    assert!(stderr.lines().last().unwrap().contains("failed: simulated failure"), "{stderr}");
}

#[tokio::test]
async fn list_reads_every_page_and_filters() {
    let server = TestServer::start().await;
    let mut client = server.client(Some(TOKEN_A)).await;
    for _ in 0..105 {
        create_prebuild(&mut client, PROJECT_BACKEND).await;
    }
    for _ in 0..3 {
        create_prebuild(&mut client, PROJECT_FRONTEND).await;
    }
    let all = json(&server, &["prebuilds", "list"]).await;
    assert_eq!(all.as_array().unwrap().len(), 108, "more than one page of 100");
    let backend = json(&server, &["prebuilds", "list", "--project", PROJECT_BACKEND]).await;
    assert_eq!(backend.as_array().unwrap().len(), 105);
    assert!(backend.as_array().unwrap().iter().all(|p| p["metadata"]["projectId"] == PROJECT_BACKEND));
    let both =
        json(&server, &["prebuilds", "list", "--project", PROJECT_BACKEND, "--project", PROJECT_FRONTEND, "--phase", "pending"]).await;
    assert_eq!(both.as_array().unwrap().len(), 108);
    let none = json(&server, &["prebuilds", "list", "--phase", "completed", "--phase", "FAILED"]).await;
    assert_eq!(none, serde_json::json!([]));
    let table = ok(&server, &["prebuilds", "list", "--project", PROJECT_FRONTEND]).await;
    assert_eq!(table.lines().count(), 4, "a header and three rows: {table}");

    let stderr = fails(&server, &["prebuilds", "list", "--phase", "done"]).await;
    assert!(stderr.contains("unknown phase \"done\""), "{stderr}");
}

#[tokio::test]
async fn cancel_delete_and_missing_prebuilds() {
    let server = TestServer::start().await;
    let created = json(&server, &["prebuilds", "create", "--project", PROJECT_BACKEND]).await;
    let id = created["id"].as_str().unwrap();
    let cancelled = json(&server, &["prebuilds", "cancel", id]).await;
    assert_eq!(cancelled["status"]["phase"], "PREBUILD_PHASE_CANCELLED");
    let stdout = ok(&server, &["prebuilds", "delete", id]).await;
    assert_eq!(stdout.trim(), format!("prebuild {id} is being deleted"));
    assert_eq!(json(&server, &["prebuilds", "delete", id]).await, serde_json::json!({}));

    let missing = "01900000-0000-7000-8000-000000000000";
    let stderr = fails(&server, &["prebuilds", "get", missing]).await;
    assert_eq!(stderr.trim(), format!("not_found: prebuild {missing} not found"));
    let stderr = fails(&server, &["prebuilds", "cancel", missing]).await;
    assert!(stderr.starts_with("not_found: "), "{stderr}");
}

#[tokio::test]
async fn a_wrong_or_missing_key_is_unauthenticated() {
    let server = TestServer::start().await;
    for key in [Some("not-a-key"), None] {
        let output = run_with(&server, key, &["prebuilds", "list"]).await;
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.starts_with("unauthenticated: "), "{stderr}");
        assert!(output.stdout.is_empty());
    }
    // The key from the environment, the server from a flag before the subcommand.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_prebuildd"))
        .args(["--server", &server.base_url(), "prebuilds", "list"])
        .env("PREBUILDD_API_KEY", TOKEN_A)
        .env_remove("PREBUILDD_SERVER")
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // No server there: unavailable, naming the URL.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_prebuildd"))
        .args(["prebuilds", "list", "--server", "http://127.0.0.1:1"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.starts_with("unavailable: cannot connect to http://127.0.0.1:1"), "{stderr}");
}

#[tokio::test]
async fn logs_print_the_log_and_follow_until_the_prebuild_ends() {
    let server = TestServer::start_with(running_config("300ms")).await;
    // Follow from the start: the command ends when the prebuild does.
    let created = json(&server, &["prebuilds", "create", "--project", PROJECT_BACKEND]).await;
    let id = created["id"].as_str().unwrap();
    let started = Instant::now();
    let followed = ok(&server, &["prebuilds", "logs", id, "--follow"]).await;
    assert!(followed.trim_end().ends_with("[simulated] completed"), "{followed}");
    assert!(started.elapsed() > Duration::from_millis(600), "it waited for the prebuild");
    let done = json(&server, &["prebuilds", "get", id]).await;
    assert_eq!(done["status"]["phase"], "PREBUILD_PHASE_COMPLETED");
    // Afterwards: the archived log, the same text.
    assert_eq!(ok(&server, &["prebuilds", "logs", id]).await, followed);

    // Without --follow on a running prebuild (org B's project hangs in
    // RUNNING): what is there now, then exit.
    let mut client = server.client(Some(TOKEN_B)).await;
    let id = create_prebuild(&mut client, PROJECT_B).await.id;
    wait_for_phase(&mut client, &id, &[prebuildd::proto::gitpod::v1::PrebuildPhase::Running], Duration::from_secs(20)).await;
    let output = run_with(&server, Some(TOKEN_B), &["prebuilds", "logs", &id]).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let now = String::from_utf8_lossy(&output.stdout);
    assert!(now.contains("[simulated]") && !now.contains("completed"), "{now}");
    let stderr = fails(&server, &["prebuilds", "logs", "01900000-0000-7000-8000-000000000000"]).await;
    assert!(stderr.starts_with("not_found: "), "{stderr}");
}

#[tokio::test]
async fn warm_pools_from_create_to_claim_and_delete() {
    let server = TestServer::start_with(running_config("20ms")).await;
    ok(&server, &["prebuilds", "create", "--project", PROJECT_BACKEND, "--watch"]).await;
    let pool = json(
        &server,
        &["warm-pools", "create", "--project", PROJECT_BACKEND, "--environment-class", CLASS_SMALL, "--min", "1", "--max", "2"],
    )
    .await;
    let id = pool["id"].as_str().unwrap().to_string();
    assert_eq!((pool["spec"]["minSize"].clone(), pool["spec"]["maxSize"].clone()), (1.into(), 2.into()));
    let stderr = fails(&server, &["warm-pools", "create", "--project", PROJECT_BACKEND, "--environment-class", CLASS_SMALL]).await;
    assert!(stderr.starts_with("already_exists: "), "{stderr}");

    let listed = json(&server, &["warm-pools", "list"]).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    let table = ok(&server, &["warm-pools", "list", "--project", PROJECT_BACKEND]).await;
    assert!(table.lines().next().unwrap().contains("MIN/MAX/DESIRED"), "{table}");
    assert!(table.lines().nth(1).unwrap().contains(&id), "{table}");

    let started = Instant::now();
    loop {
        let pool = json(&server, &["warm-pools", "get", &id]).await;
        if pool["status"]["phase"] == "WARM_POOL_PHASE_READY" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "pool never ready: {pool}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let updated = json(&server, &["warm-pools", "update", &id, "--max", "3"]).await;
    assert_eq!((updated["spec"]["minSize"].clone(), updated["spec"]["maxSize"].clone()), (1.into(), 3.into()));

    let instance = json(&server, &["warm-pools", "claim", &id]).await;
    assert_eq!(instance["warmPoolId"], id.as_str());
    assert!(instance["claimedAt"].is_string(), "{instance}");

    let stdout = ok(&server, &["warm-pools", "delete", &id]).await;
    assert_eq!(stdout.trim(), format!("warm pool {id} is being deleted"));
    let missing = "01900000-0000-7000-8000-000000000000";
    let stderr = fails(&server, &["warm-pools", "get", missing]).await;
    assert!(stderr.starts_with("not_found: "), "{stderr}");
    let stderr = fails(&server, &["warm-pools", "claim", missing]).await;
    assert!(stderr.starts_with("not_found: "), "{stderr}");
}

/// The server's own commands keep their flags; the benchmark's commands
/// are not the server's (they are `prebuildd-bench`'s, in bench/).
#[tokio::test]
async fn serve_and_runner_keep_their_flags_and_the_server_has_no_benchmark() {
    let binary = env!("CARGO_BIN_EXE_prebuildd");
    let help = |args: &'static [&'static str]| async move {
        let output = tokio::process::Command::new(binary).args(args).output().await.unwrap();
        assert!(output.status.success(), "{args:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let serve = help(&["serve", "--help"]).await;
    assert!(["--config", "--listen", "--data-dir"].iter().all(|flag| serve.contains(flag)), "{serve}");
    let runner = help(&["runner", "--help"]).await;
    assert!(runner.contains("--config"), "{runner}");
    let top = help(&["--help"]).await;
    assert!(!top.contains("bench") && !top.contains("seed"), "{top}");

    for bad in [&["serve", "--nope"][..], &["bench"], &["seed", "--count", "3"], &["bench-plain-server"], &["frobnicate"]] {
        let output = tokio::process::Command::new(binary).args(bad).output().await.unwrap();
        assert_eq!(output.status.code(), Some(2), "{bad:?} is a usage error");
    }
}

#[tokio::test]
async fn watch_rides_out_a_server_restart() {
    // A fixed port, so the restarted server is where the watch looks.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = running_config("500ms").replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""));
    let mut server = TestServer::start_with(config).await;
    let watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_prebuildd"))
        .args(["prebuilds", "create", "--project", PROJECT_BACKEND, "--watch", "--server", &server.base_url(), "--api-key", TOKEN_A])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    server.restart().await;
    let output = tokio::time::timeout(Duration::from_secs(60), watch.wait_with_output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("server unreachable, retrying"), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("COMPLETED"));
}

#[tokio::test]
async fn watch_on_a_terminal_redraws_one_spinner_line() {
    let server = TestServer::start_with(running_config("100ms")).await;
    // script(1) (util-linux) runs the command on a pseudo-terminal.
    let command = format!("{} prebuilds create --project {PROJECT_BACKEND} --watch", env!("CARGO_BIN_EXE_prebuildd"));
    let output = tokio::process::Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .env("PREBUILDD_SERVER", server.base_url())
        .env("PREBUILDD_API_KEY", TOKEN_A)
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("script runs");
    let screen = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{screen}");
    // The spinner line is rewritten in place (carriage return, erase line)...
    let redraws = screen.matches("\r\x1b[2K").count();
    assert!(redraws > 3, "{screen:?}");
    assert!(screen.contains(" PENDING  0s"), "{screen:?}");
    // ...and cleared before the final prebuild is printed.
    let table = screen.rsplit("\r\x1b[2K").next().unwrap();
    assert!(table.starts_with("ID ") && table.contains("COMPLETED"), "{screen:?}");
}

#[tokio::test]
async fn projects_and_classes_by_name_and_prebuilds_with_their_commit() {
    let origin = common::repos::Origin::new(Some(r#"{ "onCreateCommand": "true" }"#));
    let text = running_config("20ms")
        .replace("name = \"backend\"\nrepository = \"sim://ok\"", &format!("name = \"backend\"\nrepository = \"{}\"", origin.url()));
    let server = TestServer::start_with(text).await;
    let created = json(&server, &["prebuilds", "create", "--project", PROJECT_BACKEND, "--watch"]).await;
    let id = created["id"].as_str().expect("an ID").to_string();
    let head = origin.head();
    let shown = ok(&server, &["prebuilds", "get", &id]).await;
    assert!(shown.contains(&format!("commit: {head} (branch main)")), "{shown}");
    assert!(shown.contains("triggered by: an API call"), "{shown}");
    let row = shown.lines().nth(1).expect("a row");
    assert!(row.contains("main") && row.contains(&head[..12]) && row.contains("COMPLETED"), "{shown}");
    assert_eq!(json(&server, &["prebuilds", "get", &id]).await["id"], id.as_str(), "-o json is exactly the resource");

    let projects = ok(&server, &["projects", "list"]).await;
    let lines: Vec<&str> = projects.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].contains("LAST BUILT"), "{projects}");
    let backend = lines.iter().find(|l| l.starts_with("backend")).expect("backend is listed");
    assert!(backend.contains(PROJECT_BACKEND) && backend.contains(&format!("main {}", &head[..12])), "{projects}");
    assert!(!projects.contains("other"), "another organization's project is not listed: {projects}");
    let listed = json(&server, &["projects", "list"]).await;
    assert!(listed.as_array().expect("an array").iter().any(|p| p["id"] == PROJECT_BACKEND && p["name"] == "backend"));

    let classes = ok(&server, &["classes", "list"]).await;
    assert!(classes.lines().any(|l| l.starts_with("small") && l.contains(CLASS_SMALL) && l.contains("simulated")), "{classes}");
    assert!(!classes.contains("gpu"), "a class no project of the organization uses is not listed: {classes}");
}
