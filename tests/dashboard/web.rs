//! The dashboard's toolchain as the test uses it: Node.js, the packages of
//! `web/package-lock.json` (installed by `scripts/install-test-tools` with
//! `npm ci`), and Debian's chromium. Each is required: a missing one fails
//! the test with what to install, never skips it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

/// Node.js on PATH, and web/'s packages installed.
pub fn require_node() {
    let version = Command::new("node").arg("--version").output();
    match version {
        Ok(output) if output.status.success() => {}
        _ => panic!("Node.js is missing: the dashboard test needs `node` and `npm` on PATH (Debian: apt-get install nodejs npm; or bash scripts/install-test-tools)"),
    }
    for needed in ["node_modules/.bin/vite", "node_modules/.bin/buf", "node_modules/playwright-core/package.json"] {
        assert!(
            web_dir().join(needed).exists(),
            "web/{needed} is missing: install the dashboard's packages with `bash scripts/install-test-tools` (it runs `npm ci` in web/)"
        );
    }
}

/// The headless browser: `PREBUILDD_TEST_CHROMIUM`, else Debian's chromium.
pub fn chromium() -> PathBuf {
    let path = std::env::var_os("PREBUILDD_TEST_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "{} is missing: the dashboard test drives Debian's chromium (apt-get install chromium; or bash scripts/install-test-tools)",
        path.display()
    );
    path
}

/// Runs `npm run <script> -- <args>` in web/ and panics with its output unless it succeeds.
pub fn npm_run(script: &str, args: &[&str]) {
    let output = Command::new("npm")
        .current_dir(web_dir())
        .args(["run", "--silent", script, "--"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("npm run {script}: {e}"));
    assert!(
        output.status.success(),
        "npm run {script} {args:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every file under `dir`, by its path relative to `dir`, with its bytes.
pub fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, into: &mut BTreeMap<String, Vec<u8>>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(root, &path, into);
            } else {
                let name = path.strip_prefix(root).expect("under the root").to_string_lossy().into_owned();
                into.insert(name, std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())));
            }
        }
    }
    let mut all = BTreeMap::new();
    walk(dir, dir, &mut all);
    all
}

/// Panics, naming each difference, unless `fresh` holds exactly the files of `committed`.
pub fn assert_same_files(committed: &Path, fresh: &Path, how_to_fix: &str) {
    let (committed_files, fresh_files) = (files(committed), files(fresh));
    let mut differences = Vec::new();
    for (name, bytes) in &fresh_files {
        match committed_files.get(name) {
            None => differences.push(format!("{name}: built but not committed")),
            Some(old) if old != bytes => differences.push(format!("{name}: differs from the committed file")),
            Some(_) => {}
        }
    }
    for name in committed_files.keys().filter(|name| !fresh_files.contains_key(*name)) {
        differences.push(format!("{name}: committed but no longer built"));
    }
    assert!(differences.is_empty(), "{} is stale:\n  {}\n{how_to_fix}", committed.display(), differences.join("\n  "));
}
