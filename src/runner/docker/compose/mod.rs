//! Docker Compose configurations on the docker runner (`dockerComposeFile`
//! in devcontainer.json): the dev container is one service of a Compose
//! project, beside a database, a cache or a queue.
//!
//! Files: `police/` (the effective Compose configuration, key by key and
//! service by service, under the class's policy), `stack.rs` (the Compose
//! file the runner writes for a stack, and the template a snapshot keeps),
//! `prebuild.rs` (the prebuild's part: its stack up around the dev
//! container), `instances.rs` (warm instances as whole stacks, their
//! claim and removal).
//!
//! **Which Compose.** The runner drives Compose configurations with the
//! Dev Containers CLI (`devcontainer up` creates the stack) and runs Docker
//! Compose itself to read the configuration, build the other services and
//! start instances: the v2 plugin where the Docker CLI has it (`docker
//! compose`), else `docker-compose` (Debian's 1.29). It is chosen once, when
//! the runner starts, and the log says which; without either, Compose
//! prebuilds fail with that reason.
//!
//! **Isolation.** Every prebuild and every warm instance is a Compose
//! project of its own, with a network of its own that the runner makes
//! (the same rules as its other networks, with traffic between the stack's
//! containers let through), so two stacks never share a container, a
//! network or a volume.

pub(super) mod instances;
pub(super) mod police;
pub(super) mod prebuild;
pub(super) mod stack;

use crate::runner::process::{spawn_in_group, wait_in_group, JobProcesses};
use crate::runner::LogSink;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// How long one Compose command may take (a build of a service included).
pub(super) const COMPOSE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How long the check at start waits for `docker compose version`.
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);

/// The Docker Compose this runner uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ComposeTool {
    /// The program: the Docker CLI (v2 plugin) or `docker-compose`.
    pub program: PathBuf,
    /// Its leading arguments (`compose` for the plugin).
    pub leading: Vec<String>,
    /// The version it reports.
    pub version: String,
    /// The path the Dev Containers CLI gets as `--docker-compose-path`
    /// (it finds the plugin by itself).
    pub standalone: Option<PathBuf>,
}

/// What a Compose command sees of the runner's environment.
#[derive(Debug, Clone, Default)]
pub(super) struct ComposeEnv {
    pub docker_host: Option<String>,
    pub docker_config: Option<PathBuf>,
    pub home: PathBuf,
    /// The runner's `pass_env` variables (a Compose file's `${NAME}` reads
    /// these and no other variable of the runner).
    pub passed: Vec<(String, String)>,
}

impl ComposeTool {
    /// Finds Docker Compose: the Docker CLI's plugin, else `docker-compose`
    /// on `PATH`. `Err` says what to install.
    pub async fn detect(docker_cli: &Path, standalone: &Path, env: &ComposeEnv) -> Result<ComposeTool, String> {
        let plugin =
            ComposeTool { program: docker_cli.to_path_buf(), leading: vec!["compose".into()], version: String::new(), standalone: None };
        let scratch = JobProcesses::default();
        if let Ok(version) = plugin.run(&scratch, None, env, &env.home, &["version", "--short"], VERSION_TIMEOUT).await {
            return Ok(ComposeTool { version: version.trim().to_string(), ..plugin });
        }
        // A look at the file system: off the runtime.
        let wanted = standalone.to_path_buf();
        let found = crate::runner::process::blocking(move || match wanted.is_absolute() {
            true => Some(wanted).filter(|path| path.is_file()),
            false => std::env::var_os("PATH")
                .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join(&wanted)).find(|path| path.is_file())),
        })
        .await
        .map_err(|e| e.to_string())?;
        if let Some(program) = found {
            let tool = ComposeTool { program: program.clone(), leading: Vec::new(), version: String::new(), standalone: Some(program) };
            match tool.run(&scratch, None, env, &env.home, &["version", "--short"], VERSION_TIMEOUT).await {
                Ok(version) => return Ok(ComposeTool { version: version.trim().to_string(), ..tool }),
                Err(error) => return Err(format!("Docker Compose ({}) does not work: {error}", tool.program.display())),
            }
        }
        Err(format!(
            "Docker Compose is not installed: the Docker CLI ({}) has no compose plugin and {} is not on PATH; install the \
             Docker Compose plugin (docker-compose-plugin) or docker-compose (Debian and Ubuntu) and restart prebuildd",
            docker_cli.display(),
            standalone.display()
        ))
    }

    /// What the log says about it.
    pub fn description(&self) -> String {
        match &self.standalone {
            None => format!("Docker Compose {} (the Docker CLI's compose plugin)", self.version),
            Some(program) => format!("Docker Compose {} ({})", self.version, program.display()),
        }
    }

    /// Runs Compose with `args` in `dir`, in a process group of `processes`
    /// that is killed when it takes longer than `timeout`; stderr goes to
    /// `log` line by line. Returns stdout, or why it failed (with the end
    /// of what it said).
    pub async fn run(
        &self,
        processes: &JobProcesses,
        log: Option<&LogSink>,
        env: &ComposeEnv,
        dir: &Path,
        args: &[&str],
        timeout: Duration,
    ) -> Result<String, String> {
        let mut command = tokio::process::Command::new(&self.program);
        command.args(&self.leading).args(args).env_clear().current_dir(dir);
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        command.env("HOME", &env.home).env("LANG", "C.UTF-8");
        // Docker Compose v1 builds through the Engine API, whatever Docker
        // CLI is on PATH; neither version may ask for a terminal.
        command.env("COMPOSE_DOCKER_CLI_BUILD", "0").env("COMPOSE_INTERACTIVE_NO_CLI", "1").env("COMPOSE_ANSI", "never");
        if let Some(host) = &env.docker_host {
            command.env("DOCKER_HOST", host);
        }
        if let Some(config) = &env.docker_config {
            command.env("DOCKER_CONFIG", config);
        }
        command.envs(env.passed.iter().map(|(k, v)| (k, v)));
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let shown = format!(
            "{} {}",
            self.program.display(),
            self.leading.iter().map(String::as_str).chain(args.iter().copied()).collect::<Vec<_>>().join(" ")
        );
        let mut child = spawn_in_group(processes, command).map_err(|e| format!("cannot run {shown}: {e}"))?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let work = async {
            let read_out = async {
                let mut text = String::new();
                if let Some(mut stdout) = stdout {
                    let _ = stdout.read_to_string(&mut text).await;
                }
                text
            };
            let read_err = async {
                let mut tail: Vec<String> = Vec::new();
                if let Some(stderr) = stderr {
                    let mut lines = BufReader::new(stderr).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let line = super::cli::plain_text(&line);
                        if line.trim().is_empty() {
                            continue;
                        }
                        if let Some(log) = log {
                            log.line(&line).await;
                        }
                        tail.push(line);
                        if tail.len() > 5 {
                            tail.remove(0);
                        }
                    }
                }
                tail
            };
            let (out, tail) = tokio::join!(read_out, read_err);
            let status = wait_in_group(processes, &mut child).await;
            (out, tail, status)
        };
        match tokio::time::timeout(timeout, work).await {
            Ok((out, _, Ok(status))) if status.success() => Ok(out),
            Ok((_, tail, Ok(status))) => Err(format!("{shown} {}: {}", crate::runner::process::describe_exit(status), tail.join(" / "))),
            Ok((_, _, Err(error))) => Err(format!("waiting for {shown}: {error}")),
            Err(_) => {
                processes.kill_all();
                Err(format!("{shown} took longer than {} s and was stopped", timeout.as_secs()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_host_without_compose_is_told_what_to_install() {
        let home = tempfile::tempdir().unwrap();
        let env = ComposeEnv { home: home.path().to_path_buf(), ..Default::default() };
        let missing = ComposeTool::detect(Path::new("/bin/false"), Path::new("/nonexistent/docker-compose"), &env).await.unwrap_err();
        assert!(missing.contains("Docker Compose is not installed"), "{missing}");
        assert!(missing.contains("docker-compose-plugin"), "{missing}");
    }
}
