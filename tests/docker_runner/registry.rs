//! A real OCI registry for the tests: Debian's `docker-registry` (the CNCF
//! distribution server) on a free loopback port, with its storage in a temp
//! dir, and Dev Container Features published to it with the Dev Containers
//! CLI (`devcontainer features publish`). Nothing comes from the internet.
//! The registry is named `localhost:<port>`: the Dev Containers CLI speaks
//! plain HTTP only to a registry of that name.

use super::harness::devcontainer_cli;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// The registry program that `scripts/install-test-tools` installs.
fn registry_program() -> PathBuf {
    let path = PathBuf::from("/usr/bin/docker-registry");
    assert!(path.exists(), "/usr/bin/docker-registry is missing: install Debian's docker-registry (scripts/install-test-tools does)");
    path
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(registry_program())
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry starts");
        let registry = Registry { child, port, _dir: dir };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "the registry did not listen on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// `localhost:<port>`, as image and feature references name it.
    pub fn host(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// Publishes every feature under `src` (`src/<id>/devcontainer-feature.json`
    /// and `install.sh`) to `<registry>/<namespace>/<id>`.
    pub fn publish_features(&self, src: &Path, namespace: &str) {
        let home = tempfile::tempdir().unwrap();
        let output = Command::new(devcontainer_cli())
            .args(["features", "publish"])
            .arg(src)
            .args(["--registry", &self.host(), "--namespace", namespace, "--log-level", "info"])
            .env("HOME", home.path())
            .env("TMPDIR", home.path())
            .output()
            .expect("the Dev Containers CLI runs");
        assert!(
            output.status.success(),
            "devcontainer features publish failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a feature's folder: `devcontainer-feature.json` and an
/// `install.sh` that installs `/usr/local/bin/<command>` printing its
/// `GREETING` option.
pub fn write_feature(dir: &Path, id: &str, command: &str, extra_metadata: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("devcontainer-feature.json"),
        format!(
            r#"{{ "id": "{id}", "version": "1.0.0", "name": "{id}",
                 "options": {{ "greeting": {{ "type": "string", "default": "hello from {id}" }} }}
                 {extra_metadata} }}"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("install.sh"),
        format!("#!/bin/sh\nset -e\nmkdir -p /usr/local/bin\nprintf '#!/bin/sh\\necho %s\\n' \"$GREETING\" > /usr/local/bin/{command}\nchmod +x /usr/local/bin/{command}\n"),
    )
    .unwrap();
}
