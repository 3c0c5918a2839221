//! Real git repositories the tests make: a bare "origin" and a work tree
//! that commits and pushes to it, served over `file://` or by a real `git
//! daemon` on an ephemeral port; and webhook deliveries posted as the git
//! servers post them.

use super::git;
use std::path::{Path, PathBuf};

/// A bare repository with a work tree that pushes to it.
pub struct Origin {
    dir: tempfile::TempDir,
}

impl Origin {
    /// An origin whose `main` has one commit: a README and, if given, a
    /// devcontainer.json.
    pub fn new(devcontainer: Option<&str>) -> Origin {
        let dir = tempfile::tempdir_in(super::outside_tmp()).expect("temp dir");
        git(dir.path(), &["init", "-q", "--bare", "-b", "main", "origin.git"]);
        git(dir.path(), &["init", "-q", "-b", "main", "work"]);
        git(&dir.path().join("work"), &["remote", "add", "origin", "../origin.git"]);
        let origin = Origin { dir };
        origin.write("README.md", "a test repository\n");
        if let Some(text) = devcontainer {
            origin.write(".devcontainer/devcontainer.json", text);
        }
        origin.commit("initial");
        git(&origin.work(), &["push", "-q", "origin", "HEAD:main"]);
        origin
    }

    pub fn bare(&self) -> PathBuf {
        self.dir.path().join("origin.git")
    }

    /// `file://` URL of the bare repository.
    pub fn url(&self) -> String {
        format!("file://{}", self.bare().display())
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn write(&self, path: &str, text: &str) {
        let path = self.work().join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    /// Commits everything in the work tree; returns the commit's ID.
    pub fn commit(&self, message: &str) -> String {
        git(&self.work(), &["add", "-A"]);
        git(&self.work(), &["commit", "-q", "--allow-empty", "-m", message]);
        self.head()
    }

    pub fn head(&self) -> String {
        let output = std::process::Command::new("git").args(["rev-parse", "HEAD"]).current_dir(self.work()).output().expect("git");
        String::from_utf8(output.stdout).expect("utf-8").trim().to_string()
    }

    /// Writes `path`, commits and pushes to `branch`; returns (before, after).
    pub fn push_change(&self, branch: &str, path: &str, text: &str) -> (String, String) {
        let before = self.remote_head(branch).unwrap_or_else(|| "0".repeat(40));
        self.write(path, text);
        let after = self.commit(&format!("change {path}"));
        git(&self.work(), &["push", "-q", "-f", "origin", &format!("HEAD:{branch}")]);
        (before, after)
    }

    /// The commit a branch of the origin points at.
    pub fn remote_head(&self, branch: &str) -> Option<String> {
        let output = std::process::Command::new("git")
            .args(["rev-parse", "--verify", "--quiet", &format!("refs/heads/{branch}")])
            .current_dir(self.bare())
            .output()
            .expect("git");
        output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A real `git daemon` serving a directory's repositories read-only on an
/// ephemeral port of 127.0.0.1; killed on drop. The daemon program is run
/// itself (`git daemon` would run it as a child of its own, which a kill of
/// `git` leaves running).
pub struct GitDaemon {
    child: std::process::Child,
    pub port: u16,
}

impl GitDaemon {
    pub fn serve(base: &Path) -> GitDaemon {
        let exec_path = std::process::Command::new("git").arg("--exec-path").output().expect("git runs (the git package)");
        let program = Path::new(String::from_utf8_lossy(&exec_path.stdout).trim()).join("git-daemon");
        for _ in 0..20 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
            let mut child = std::process::Command::new(&program)
                .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1", &format!("--port={port}")])
                .arg(format!("--base-path={}", base.display()))
                .arg(base)
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{} runs (the git package): {e}", program.display()));
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return GitDaemon { child, port };
                }
                if child.try_wait().expect("wait").is_some() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("git daemon did not start");
    }

    /// The `git://` URL of a repository under the base path.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Posts a push delivery as `provider` would (its headers, its JSON shape,
/// signed with `secret`, or with `signature` instead when given); returns
/// the status and the JSON answer.
pub async fn post_push(
    base_url: &str,
    provider: &str,
    project_id: &str,
    secret: &str,
    delivery: &str,
    branch: &str,
    (before, after): (&str, &str),
) -> (u16, serde_json::Value) {
    let body = push_body(provider, branch, before, after);
    post_delivery(base_url, provider, project_id, secret, delivery, "push", &body, None).await
}

/// The JSON a provider sends for a push of `branch` from `before` to `after`.
pub fn push_body(provider: &str, branch: &str, before: &str, after: &str) -> Vec<u8> {
    let value = match provider {
        "github" | "gitea" | "forgejo" => serde_json::json!({
            "ref": format!("refs/heads/{branch}"), "before": before, "after": after, "created": false, "deleted": false, "forced": false,
            "repository": {"full_name": "team/app", "default_branch": "main"},
            "head_commit": {"id": after, "message": "change", "added": [], "removed": [], "modified": ["x"]},
            "commits": [{"id": after, "message": "change", "added": [], "removed": [], "modified": ["x"]}],
            "pusher": {"name": "someone"}
        }),
        "gitlab" => serde_json::json!({
            "object_kind": "push", "event_name": "push", "ref": format!("refs/heads/{branch}"), "before": before, "after": after,
            "checkout_sha": after, "user_username": "someone", "project": {"path_with_namespace": "team/app", "default_branch": "main"},
            "commits": [{"id": after, "message": "change", "added": [], "modified": ["x"], "removed": []}], "total_commits_count": 1
        }),
        "bitbucket" => serde_json::json!({
            "actor": {"display_name": "someone"}, "repository": {"full_name": "team/app", "type": "repository"},
            "push": {"changes": [{
                "new": {"type": "branch", "name": branch, "target": {"type": "commit", "hash": after}},
                "old": {"type": "branch", "name": branch, "target": {"type": "commit", "hash": before}},
                "created": false, "closed": false, "forced": false
            }]}
        }),
        other => panic!("no such provider {other}"),
    };
    serde_json::to_vec(&value).expect("json")
}

/// Posts a delivery with the provider's headers for `event` (`push` or
/// `ping`); `signature` replaces the correct one when given.
#[allow(clippy::too_many_arguments)]
pub async fn post_delivery(
    base_url: &str,
    provider: &str,
    project_id: &str,
    secret: &str,
    delivery: &str,
    event: &str,
    body: &[u8],
    signature: Option<&str>,
) -> (u16, serde_json::Value) {
    let token = signature.unwrap_or(secret).to_string();
    let signature = signature.map(str::to_string).unwrap_or_else(|| prebuildd::triggers::webhook::sign(secret.as_bytes(), body));
    let mut request = reqwest::Client::new()
        .post(format!("{base_url}/webhooks/{provider}/{project_id}"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    request = match provider {
        "github" => request
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", format!("sha256={signature}"))
            .header("user-agent", "GitHub-Hookshot/test"),
        "gitlab" => request
            .header("x-gitlab-event", if event == "push" { "Push Hook" } else { event })
            .header("x-gitlab-event-uuid", delivery)
            // GitLab sends the secret itself, not a signature.
            .header("x-gitlab-token", token),
        "gitea" => request.header("x-gitea-event", event).header("x-gitea-delivery", delivery).header("x-gitea-signature", signature),
        "forgejo" => {
            request.header("x-forgejo-event", event).header("x-forgejo-delivery", delivery).header("x-forgejo-signature", signature)
        }
        "bitbucket" => request
            .header("x-event-key", if event == "push" { "repo:push" } else { event })
            .header("x-request-uuid", delivery)
            .header("x-hub-signature", format!("sha256={signature}")),
        // A provider the server does not know: GitHub's headers.
        _ => request.header("x-github-event", event).header("x-hub-signature-256", format!("sha256={signature}")),
    };
    let response = request.send().await.expect("the webhook is answered");
    let status = response.status().as_u16();
    let value = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, value)
}
