//! prebuildd-bench's command line: the benchmark's flags, `seed` (a real
//! data dir the server then opens), and usage errors.

use prebuildd::store::Store;
use std::process::Command;

const BENCH: &str = env!("CARGO_BIN_EXE_prebuildd-bench");

#[test]
fn the_benchmark_keeps_its_flags_and_seed_loads_a_data_dir() {
    let output = Command::new(BENCH).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in ["--duration", "--concurrency", "--rows", "--active", "--only", "--server-binary"] {
        assert!(help.contains(flag), "{flag}: {help}");
    }

    let data = tempfile::tempdir().unwrap();
    let output = Command::new(BENCH).args(["seed", "--count=20", "--data-dir"]).arg(data.path()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("seeded 20 prebuilds"));
    let store = prebuildd::store::sqlite::SqliteStore::open(data.path()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let filter = prebuildd::store::PrebuildFilter { organization_id: "8d9e8f4a-1b2c-4d3e-9f00-0a1b2c3d4e5f".into(), ..Default::default() };
    let page = runtime.block_on(store.list_prebuilds(filter, prebuildd::store::PageRequest { after_seq: None, limit: 100 })).unwrap();
    assert_eq!(page.items.len(), 20, "the seeded rows are the demo organization's prebuilds");

    for bad in [&["--duration", "soon"][..], &["seed", "--count", "3"], &["frobnicate"]] {
        let output = Command::new(BENCH).args(bad).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{bad:?} is a usage error");
    }
}

#[test]
fn without_the_server_binary_it_says_how_to_build_it() {
    let output = Command::new(BENCH).args(["--server-binary", "/nonexistent/prebuildd", "--only", "GetPrebuild"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/prebuildd") && stderr.contains("cargo build --release"), "{stderr}");
}
