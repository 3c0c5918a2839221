//! A real OCI registry for the tests: Debian's `docker-registry` (the CNCF
//! distribution server) on a free loopback port, with its storage in a temp
//! dir, and Dev Container Features published to it with the Dev Containers
//! CLI (`devcontainer features publish`). Nothing comes from the internet.
//! A plain registry is named `localhost:<port>`: the Dev Containers CLI
//! speaks plain HTTP only to a registry of that name. A secured one serves
//! TLS with a private CA's certificate and wants a password.

use super::harness::devcontainer_cli;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
    /// Secured: served over TLS with a private CA, behind a password.
    secured: Option<Secured>,
}

/// What a client of a secured registry needs.
pub struct Secured {
    /// The CA's certificate (PEM).
    pub ca_file: PathBuf,
    /// The server's certificate and key (for `127.0.0.1`), signed by it.
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// A Docker config directory holding the registry's credentials, as
    /// `docker login` writes it.
    pub docker_config: PathBuf,
}

/// Runs a program of the test's; panics with its stderr if it fails.
fn run(program: &str, args: &[&str], dir: &Path) -> Vec<u8> {
    let output = Command::new(program).args(args).current_dir(dir).output().unwrap_or_else(|e| panic!("{program} runs ({e}): install it"));
    assert!(output.status.success(), "{program} {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

/// The registry program that `scripts/install-test-tools` installs.
fn registry_program() -> PathBuf {
    let path = PathBuf::from("/usr/bin/docker-registry");
    assert!(path.exists(), "/usr/bin/docker-registry is missing: install Debian's docker-registry (scripts/install-test-tools does)");
    path
}

impl Registry {
    /// A plain-HTTP registry without authentication, named `localhost`.
    pub fn start() -> Registry {
        Registry::serve(tempfile::tempdir().unwrap(), "", None, true)
    }

    /// A plain-HTTP registry that refuses deletes (405), as registries do
    /// by default.
    pub fn start_without_deletes() -> Registry {
        Registry::serve(tempfile::tempdir().unwrap(), "", None, false)
    }

    /// A registry on `127.0.0.1` over TLS with a certificate of a private CA
    /// (made with openssl), that lets only `user` with `password` in
    /// (htpasswd, bcrypt).
    pub fn start_secured(user: &str, password: &str) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=prebuildd test CA",
            ],
            d,
        );
        run(
            "openssl",
            &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "registry.key", "-out", "registry.csr", "-subj", "/CN=127.0.0.1"],
            d,
        );
        std::fs::write(d.join("san.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                "registry.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "registry.pem",
                "-days",
                "2",
                "-extfile",
                "san.cnf",
            ],
            d,
        );
        std::fs::write(d.join("htpasswd"), run("htpasswd", &["-Bbn", user, password], d)).unwrap();
        let http = format!(
            "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: prebuildd-test\n    path: {}\n",
            d.join("registry.pem").display(),
            d.join("registry.key").display(),
            d.join("htpasswd").display()
        );
        let docker_config = d.join("docker-config");
        let secured = Secured {
            ca_file: d.join("ca.pem"),
            certificate: d.join("registry.pem"),
            key: d.join("registry.key"),
            docker_config: docker_config.clone(),
        };
        let registry = Registry::serve(dir, &http, Some(secured), true);
        use base64::Engine;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        std::fs::create_dir_all(&docker_config).unwrap();
        std::fs::write(docker_config.join("config.json"), format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, registry.host()))
            .unwrap();
        registry
    }

    fn serve(dir: tempfile::TempDir, http_extra: &str, secured: Option<Secured>, deletes: bool) -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: {deletes}\nhttp:\n  addr: 127.0.0.1:{port}\n{http_extra}",
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
        let registry = Registry { child, port, _dir: dir, secured };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "the registry did not listen on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// `localhost:<port>` (plain HTTP) or `127.0.0.1:<port>` (TLS), as
    /// image and feature references name it.
    pub fn host(&self) -> String {
        match self.secured {
            None => format!("localhost:{}", self.port),
            Some(_) => format!("127.0.0.1:{}", self.port),
        }
    }

    /// The CA and credentials of a secured registry.
    pub fn secured(&self) -> &Secured {
        self.secured.as_ref().expect("a secured registry")
    }

    /// Publishes every feature under `src` (`src/<id>/devcontainer-feature.json`
    /// and `install.sh`) to `<registry>/<namespace>/<id>`.
    pub fn publish_features(&self, src: &Path, namespace: &str) {
        let home = tempfile::tempdir().unwrap();
        let mut command = Command::new(devcontainer_cli());
        command
            .args(["features", "publish"])
            .arg(src)
            .args(["--registry", &self.host(), "--namespace", namespace, "--log-level", "info"])
            .env("HOME", home.path())
            .env("TMPDIR", home.path());
        if let Some(secured) = &self.secured {
            command.env("DOCKER_CONFIG", &secured.docker_config).env("NODE_EXTRA_CA_CERTS", &secured.ca_file);
        }
        let output = command.output().expect("the Dev Containers CLI runs");
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

/// Feature tarballs over HTTPS (the Dev Containers CLI fetches tarball URLs
/// over HTTPS only): `openssl s_server -WWW` serving a folder, with the
/// secured registry's certificate.
pub struct TarballServer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl TarballServer {
    /// Serves the feature in `feature` as `devcontainer-feature-<id>.tgz`.
    pub fn start(secured: &Secured, feature: &Path, id: &str) -> TarballServer {
        let dir = tempfile::tempdir().unwrap();
        let tarball = dir.path().join(format!("devcontainer-feature-{id}.tgz"));
        run("tar", &["-C", &feature.display().to_string(), "-czf", &tarball.display().to_string(), "."], dir.path());
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-WWW", "-accept", &format!("127.0.0.1:{port}"), "-cert"])
            .arg(&secured.certificate)
            .arg("-key")
            .arg(&secured.key)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl runs");
        let server = TarballServer { child, port, _dir: dir };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "openssl s_server did not listen on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn url(&self, id: &str) -> String {
        format!("https://127.0.0.1:{}/devcontainer-feature-{id}.tgz", self.port)
    }
}

impl Drop for TarballServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
