//! Running the Dev Containers CLI (`devcontainer`, npm `@devcontainers/cli`):
//! the spec's reference implementation drives `build`, `up` and
//! `run-user-commands`. It runs in its own process group (a stop kills it
//! and what it started), with a clean environment (a devcontainer.json's
//! `${localEnv:...}` must not read the server's secrets): `PATH`, a `HOME`
//! and `TMPDIR` of the runner's, the Docker endpoint, and only what the
//! runner's settings pass on purpose: the Docker config with the registry
//! credentials (`DOCKER_CONFIG`), a private CA for registries
//! (`NODE_EXTRA_CA_CERTS`) and the `pass_env` variables. Its JSON log
//! (`--log-format json`, on stderr) goes into the prebuild's log line by
//! line as it comes. Its result is the JSON object it prints last on stdout.

use crate::runner::process::{describe_exit, spawn_in_group, wait_in_group, JobProcesses};
use crate::runner::LogSink;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// How to run the CLI.
#[derive(Debug, Clone)]
pub struct Cli {
    pub program: PathBuf,
    /// The Docker CLI it runs.
    pub docker_cli: PathBuf,
    pub docker_host: Option<String>,
    /// HOME of the CLI: a directory of the runner's root.
    pub home: PathBuf,
    /// The Docker config directory with registry credentials, if any.
    pub docker_config: Option<PathBuf>,
    /// Extra CA certificates (PEM) for registries.
    pub ca_file: Option<PathBuf>,
    /// Variables of the runner's environment passed on by name.
    pub pass_env: Vec<String>,
}

/// How one run of the CLI differs from another.
#[derive(Debug, Clone)]
pub struct RunOptions<'a> {
    /// `DOCKER_BUILDKIT`, as the runner's check of the Docker CLI found.
    pub buildkit: bool,
    /// The run's temporary directory (one per prebuild: the CLI names its
    /// temporary folders by the millisecond).
    pub tmpdir: &'a std::path::Path,
    /// More of the environment, for this run only (a Compose project's name).
    pub env: &'a [(String, String)],
}

impl Cli {
    /// The Docker config directory the CLIs use: the runner's setting, else
    /// `DOCKER_CONFIG` or `~/.docker` of the user the runner runs as, when
    /// it exists.
    pub fn docker_config_dir(setting: Option<&std::path::Path>) -> Option<PathBuf> {
        if let Some(path) = setting {
            return Some(path.to_path_buf());
        }
        let from_env = std::env::var_os("DOCKER_CONFIG").map(PathBuf::from);
        let from_home = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker"));
        from_env.or(from_home).filter(|path| path.is_dir())
    }

    /// The `pass_env` variables that are set in the runner's environment.
    pub fn passed_env(&self) -> std::collections::BTreeMap<String, String> {
        self.pass_env.iter().filter_map(|name| std::env::var(name).ok().map(|value| (name.clone(), value))).collect()
    }
}

/// Why a CLI run failed, as the CLI said it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliFailure {
    /// The CLI's own words (its outcome's description and message), or why
    /// it could not run.
    pub reason: String,
    /// The exit code of the lifecycle command that failed, if one did.
    pub command_exit_code: Option<i32>,
}

/// Removes terminal escape sequences (colours, bold) and carriage returns.
pub fn plain_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for next in chars.by_ref() {
                        if next.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            other => out.push(other),
        }
    }
    out
}

/// The exit code in the CLI's "... failed with exit code N." line.
fn exit_code_in(text: &str) -> Option<i32> {
    let rest = &text[text.find("failed with exit code ")? + "failed with exit code ".len()..];
    rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
}

/// The lines of one CLI log record worth a person's reading: command output
/// and the CLI's messages at info level and above (its debug and trace
/// records stay out).
pub fn log_lines(record: &str) -> Vec<String> {
    let Ok(Value::Object(record)) = serde_json::from_str::<Value>(record) else {
        let line = plain_text(record);
        return if line.trim().is_empty() || line.trim_start().starts_with("at ") { Vec::new() } else { vec![line] };
    };
    let kind = record.get("type").and_then(Value::as_str).unwrap_or_default();
    let level = record.get("level").and_then(Value::as_i64).unwrap_or(3);
    let text = record.get("text").and_then(Value::as_str).unwrap_or_default();
    let shown = match kind {
        "raw" => true,
        "text" | "start" => level >= 3,
        _ => false,
    };
    if !shown {
        return Vec::new();
    }
    let prefix = if kind == "start" { "$ " } else { "" };
    // Node's stack frames ("    at ...") say nothing to a project's owner.
    plain_text(text)
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with("at "))
        .map(|line| format!("{prefix}{line}"))
        .collect()
}

impl Cli {
    /// Runs `devcontainer <args>`; returns its result object, or why it
    /// failed.
    pub async fn run(
        &self,
        processes: &JobProcesses,
        log: &LogSink,
        args: &[String],
        options: &RunOptions<'_>,
    ) -> Result<Map<String, Value>, CliFailure> {
        let failure = |reason: String| CliFailure { reason, command_exit_code: None };
        let mut command = tokio::process::Command::new(&self.program);
        command.args(args).arg("--log-format").arg("json").arg("--docker-path").arg(&self.docker_cli).env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        command.env("HOME", &self.home).env("TMPDIR", options.tmpdir).env("LANG", "C.UTF-8");
        command.env("DOCKER_BUILDKIT", if options.buildkit { "1" } else { "0" });
        if let Some(host) = &self.docker_host {
            command.env("DOCKER_HOST", host);
        }
        if let Some(config) = &self.docker_config {
            command.env("DOCKER_CONFIG", config);
        }
        if let Some(ca_file) = &self.ca_file {
            command.env("NODE_EXTRA_CA_CERTS", ca_file);
        }
        command.envs(self.passed_env());
        command.envs(options.env.iter().map(|(k, v)| (k, v)));
        command.current_dir(&self.home).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = spawn_in_group(processes, command).map_err(|e| {
            failure(format!(
                "cannot run the Dev Containers CLI ({}): {e}; install it (npm install -g @devcontainers/cli) or set devcontainer_cli on the runner",
                self.program.display()
            ))
        })?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let read_result = async {
            let mut text = String::new();
            if let Some(mut stdout) = stdout {
                let _ = stdout.read_to_string(&mut text).await;
            }
            text
        };
        let stream_log = async {
            let mut exit_code = None;
            if let Some(stderr) = stderr {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(record)) = lines.next_line().await {
                    for line in log_lines(&record) {
                        exit_code = exit_code.or_else(|| exit_code_in(&line));
                        log.line(&line).await;
                    }
                }
            }
            exit_code
        };
        let (result, command_exit_code) = tokio::join!(read_result, stream_log);
        let status = wait_in_group(processes, &mut child).await.map_err(|e| failure(format!("waiting for the Dev Containers CLI: {e}")))?;
        let outcome = result.lines().rev().find_map(|line| match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(object)) => Some(object),
            _ => None,
        });
        match outcome {
            Some(outcome) if outcome.get("outcome").and_then(Value::as_str) == Some("success") && status.success() => Ok(outcome),
            Some(outcome) => {
                let text = |key: &str| outcome.get(key).and_then(Value::as_str).map(plain_text).unwrap_or_default();
                let (description, message) = (text("description"), text("message"));
                let reason = match (description.is_empty(), message.is_empty()) {
                    (false, false) => format!("{} {}", description.trim_end_matches('.'), format_args!("({message})")),
                    (false, true) => description,
                    _ => message,
                };
                Err(CliFailure { reason, command_exit_code })
            }
            None => {
                Err(CliFailure { reason: format!("the Dev Containers CLI {} without a result", describe_exit(status)), command_exit_code })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_and_carriage_returns_are_removed() {
        assert_eq!(plain_text("\u{1b}[1m\u{1b}[31mfailed\u{1b}[39m\u{1b}[22m\r\n"), "failed\n");
    }

    #[test]
    fn command_output_and_info_messages_reach_the_log() {
        assert_eq!(log_lines(r#"{"type":"raw","level":3,"text":"one\r\n\r\ntwo\n","channel":"postCreate"}"#), vec!["one", "two"]);
        assert_eq!(log_lines(r#"{"type":"text","level":2,"text":"debug detail"}"#), Vec::<String>::new());
        assert_eq!(log_lines(r#"{"type":"start","level":3,"text":"Run: docker build ."}"#), vec!["$ Run: docker build ."]);
        assert_eq!(log_lines(r#"{"type":"progress","name":"x","status":"running"}"#), Vec::<String>::new());
        assert_eq!(log_lines("plain stderr"), vec!["plain stderr"]);
    }

    #[test]
    fn the_failing_commands_exit_code_is_read() {
        let line = "onCreateCommand from devcontainer.json failed with exit code 7. Skipping any further user-provided commands.";
        assert_eq!(exit_code_in(line), Some(7));
        assert_eq!(exit_code_in("all fine"), None);
    }
}
