//! How the Docker CLI the runner uses builds images, checked once when the
//! runner first reaches Docker, because the Dev Containers CLI builds with
//! whatever it is given:
//!
//! - with the **buildx** plugin: BuildKit (`DOCKER_BUILDKIT=1`); feature
//!   builds pass their files as build contexts and may run side by side;
//! - without buildx, a CLI whose built-in BuildKit still works (Debian's and
//!   Ubuntu's `docker.io` before Docker 23): BuildKit too;
//! - without either (a Docker 23+ CLI without the plugin, such as a static
//!   Docker CLI from a tarball, answers `DOCKER_BUILDKIT=1` with "BuildKit
//!   is enabled but the buildx component is missing"): the classic builder
//!   (`DOCKER_BUILDKIT=0`), which builds the same images, more slowly.
//!
//! Without buildx the Dev Containers CLI stages every feature build through
//! one image tag of the daemon (`dev_container_feature_content_temp`), so
//! two feature builds at once on one daemon break each other: the runner
//! takes [`FeatureBuildLock`] around them, a file lock that every runner
//! process on the machine shares for that daemon.

use crate::runner::process::{spawn_in_group, wait_in_group, JobProcesses};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// The Docker CLI's way of building, as checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Builder {
    /// The value of `DOCKER_BUILDKIT` the CLIs run with.
    pub buildkit: bool,
    /// Whether the buildx plugin is there (feature builds may then run at
    /// once).
    pub buildx: bool,
    /// What the log of every prebuild says about it.
    pub description: String,
}

/// What the check runs the Docker CLI with.
#[derive(Debug, Clone)]
pub struct Probe<'a> {
    pub docker_cli: &'a Path,
    pub docker_host: Option<&'a str>,
    pub docker_config: Option<&'a Path>,
    /// A directory of the runner's own for the probe's build context.
    pub scratch: &'a Path,
    pub image_tag: String,
}

impl Probe<'_> {
    fn command(&self, args: &[&str], buildkit: Option<&str>) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(self.docker_cli);
        command.args(args).env_clear().stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        command.env("HOME", self.scratch);
        if let Some(host) = self.docker_host {
            command.env("DOCKER_HOST", host);
        }
        if let Some(config) = self.docker_config {
            command.env("DOCKER_CONFIG", config);
        }
        if let Some(value) = buildkit {
            command.env("DOCKER_BUILDKIT", value);
        }
        command
    }

    /// Runs the CLI; `Ok` with its output, or `Err` with what it said.
    async fn run(&self, args: &[&str], buildkit: Option<&str>) -> Result<String, String> {
        let processes = JobProcesses::default();
        let mut child = spawn_in_group(&processes, self.command(args, buildkit))
            .map_err(|e| format!("cannot run the Docker CLI {}: {e}", self.docker_cli.display()))?;
        let (out, err) = tokio::join!(read_all(child.stdout.take()), read_all(child.stderr.take()));
        let waited = tokio::time::timeout(Duration::from_secs(120), wait_in_group(&processes, &mut child)).await;
        match waited {
            Ok(Ok(status)) if status.success() => Ok(out),
            Ok(Ok(_)) => Err(err.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => {
                processes.kill_all();
                Err("the Docker CLI did not answer within two minutes".into())
            }
        }
    }

    /// Builds a one-file image from scratch (no registry needed) with
    /// `DOCKER_BUILDKIT` set as given, then removes it.
    async fn builds(&self, buildkit: &str) -> Result<(), String> {
        let context = self.scratch.join(format!("probe-{buildkit}"));
        let files = context.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&files)?;
            std::fs::write(files.join("Dockerfile"), "FROM scratch\nCOPY probe /probe\n")?;
            std::fs::write(files.join("probe"), "prebuildd\n")
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot write the probe's build context: {e}"))?;
        let context_arg = context.display().to_string();
        let built = self.run(&["build", "-q", "-t", &self.image_tag, &context_arg], Some(buildkit)).await;
        let _ = self.run(&["image", "rm", "-f", &self.image_tag], None).await;
        let _ = tokio::fs::remove_dir_all(&context).await;
        built.map(|_| ())
    }

    /// Finds how this Docker CLI builds, or says what to change.
    pub async fn check(&self) -> Result<Builder, String> {
        let cli = self.docker_cli.display();
        if let Ok(version) = self.run(&["buildx", "version"], None).await {
            let version = version.trim();
            return Ok(Builder {
                buildkit: true,
                buildx: true,
                description: format!("the Docker CLI {cli} builds with BuildKit ({version})"),
            });
        }
        let buildkit = self.builds("1").await;
        if buildkit.is_ok() {
            return Ok(Builder {
                buildkit: true,
                buildx: false,
                description: format!(
                    "the Docker CLI {cli} builds with its built-in BuildKit (no buildx plugin: feature builds on this daemon take turns)"
                ),
            });
        }
        match self.builds("0").await {
            Ok(()) => Ok(Builder {
                buildkit: false,
                buildx: false,
                description: format!(
                    "the Docker CLI {cli} has no buildx plugin and cannot build with BuildKit ({}), so images are built with the classic builder (slower; feature builds on this daemon take turns); install the buildx plugin (Debian and Ubuntu: docker-buildx, or Docker's docker-buildx-plugin), or set docker_cli on the runner to a Docker CLI that has it",
                    buildkit.err().unwrap_or_default()
                ),
            }),
            Err(classic) => Err(format!(
                "the Docker CLI {cli} cannot build images (with BuildKit: {}; with the classic builder: {classic}); set docker_cli on the runner to a working Docker CLI (Docker 23 or later with the buildx plugin, or Debian's docker.io)",
                buildkit.err().unwrap_or_default()
            )),
        }
    }
}

/// All a pipe says, as text.
async fn read_all<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>) -> String {
    let mut text = String::new();
    if let Some(mut pipe) = pipe {
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut pipe, &mut text).await;
    }
    text
}

/// The lock that makes feature builds on one daemon take turns, held while
/// it lives.
pub struct FeatureBuildLock {
    _file: std::fs::File,
}

impl FeatureBuildLock {
    /// The lock file of a daemon: one per Docker endpoint on this machine.
    pub fn path_for(docker_host: Option<&str>) -> PathBuf {
        use sha2::{Digest, Sha256};
        let endpoint = docker_host.map(str::to_string).or_else(|| std::env::var("DOCKER_HOST").ok()).unwrap_or_else(|| "default".into());
        let digest = hex::encode(&Sha256::digest(endpoint.as_bytes())[..8]);
        std::env::temp_dir().join(format!("prebuildd-feature-build-{digest}.lock"))
    }

    /// Waits for the lock, polling, until `stopped` says to give up
    /// (`Ok(None)`).
    pub async fn acquire(path: &Path, stopped: impl Fn() -> bool) -> Result<Option<FeatureBuildLock>, String> {
        loop {
            let attempt_path = path.to_path_buf();
            let attempt = tokio::task::spawn_blocking(move || -> std::io::Result<Option<std::fs::File>> {
                let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&attempt_path)?;
                match file.try_lock() {
                    Ok(()) => Ok(Some(file)),
                    Err(std::fs::TryLockError::WouldBlock) => Ok(None),
                    Err(std::fs::TryLockError::Error(error)) => Err(error),
                }
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
            if let Some(file) = attempt {
                return Ok(Some(FeatureBuildLock { _file: file }));
            }
            if stopped() {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_lock_is_held_by_one_at_a_time_and_waiting_can_be_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.lock");
        let first = FeatureBuildLock::acquire(&path, || false).await.unwrap().unwrap();
        assert!(FeatureBuildLock::acquire(&path, || true).await.unwrap().is_none(), "held: the second gives up");
        drop(first);
        assert!(FeatureBuildLock::acquire(&path, || true).await.unwrap().is_some(), "released: taken at once");
        assert_ne!(FeatureBuildLock::path_for(Some("unix:///a.sock")), FeatureBuildLock::path_for(Some("unix:///b.sock")));
    }
}
