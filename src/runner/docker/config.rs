//! The devcontainer.json the docker runner hands to the Dev Containers CLI:
//! the project's own file, cut down to what is safe to run next to the
//! server.
//!
//! A devcontainer.json can ask for far more than a prebuild should get:
//! `initializeCommand` runs on the host, `runArgs`, `privileged`, `capAdd`,
//! `securityOpt`, `mounts` and `workspaceMount` reach the host's files and
//! kernel, `${localEnv:...}` reads the server's environment. So the runner
//! keeps an allowlist of keys (see [`KEPT_KEYS`]), drops everything else with
//! a note in the log, resolves the build's paths (which must stay inside the
//! workspace) and adds its own container settings: no host mounts at all
//! (the workspace is copied into the container), `no-new-privileges`, the
//! environment class's limits and the runner's labels. Pure functions; the
//! runner writes the result to a file outside the workspace.

use crate::catalog::Resources;
use crate::runner::devcontainer::{self, jsonc_to_json, PrebuildLifecycle};
use serde_json::{Map, Value};
use std::path::{Component, Path};

/// Keys passed to the CLI as written. Anything else is dropped.
const KEPT_KEYS: &[&str] = &[
    "name",
    "image",
    "build",
    "containerEnv",
    "remoteEnv",
    "containerUser",
    "remoteUser",
    "userEnvProbe",
    "overrideCommand",
    "onCreateCommand",
    "updateContentCommand",
    "postCreateCommand",
    "postStartCommand",
    "postAttachCommand",
    "waitFor",
    "customizations",
    "forwardPorts",
    "portsAttributes",
    "otherPortsAttributes",
    "shutdownAction",
    "hostRequirements",
    "workspaceFolder",
    "init",
];

/// Why a key is dropped, for the ones a user is likely to have set.
fn drop_reason(key: &str) -> &'static str {
    match key {
        "initializeCommand" => "it runs on the host in the spec, and a prebuild never runs on the server's host",
        "runArgs" | "privileged" | "capAdd" | "securityOpt" | "mounts" | "workspaceMount" | "appPort" => {
            "the runner decides how containers reach the host (no mounts, no extra privileges)"
        }
        "features" | "overrideFeatureInstallOrder" => "features are not installed by this runner (they can ask for privileges and mounts)",
        "updateRemoteUserUID" => "the workspace is owned by the container's user instead",
        _ => "the docker runner does not use it",
    }
}

/// What the runner prepared from a project's devcontainer.json.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The configuration for `devcontainer build` (image or build, paths
    /// absolute).
    pub config: Map<String, Value>,
    /// The lifecycle commands, for failure messages.
    pub lifecycle: PrebuildLifecycle,
    /// Where the workspace lives inside the container.
    pub workspace_folder: String,
    /// Lines for the prebuild's log (skipped keys, defaults taken).
    pub notes: Vec<String>,
    /// A warning for the prebuild's status (no devcontainer.json).
    pub warning: Option<String>,
}

/// The runner's settings that shape the container.
#[derive(Debug, Clone)]
pub struct ContainerSettings<'a> {
    pub labels: &'a [(String, String)],
    pub resources: Resources,
}

/// Reads a workspace's devcontainer.json (or takes the default image) and
/// prepares it. `Err` says what is wrong in terms of the file.
pub fn prepare(workspace: &Path, repository: &str, default_image: Option<&str>) -> Result<Prepared, String> {
    let repository_name = repository_name(repository);
    let Some(path) = devcontainer::locate(workspace) else {
        let Some(image) = default_image else {
            return Err("the repository has no .devcontainer/devcontainer.json and this runner has no default_image to use instead".into());
        };
        let warning = format!("no .devcontainer/devcontainer.json found; the prebuild used the runner's default image {image}");
        let mut config = Map::new();
        config.insert("image".into(), Value::String(image.to_string()));
        let workspace_folder = format!("/workspaces/{repository_name}");
        return Ok(Prepared {
            config,
            lifecycle: PrebuildLifecycle::default(),
            workspace_folder,
            notes: vec![format!("warning: {warning}")],
            warning: Some(warning),
        });
    };
    let name = path.strip_prefix(workspace).unwrap_or(&path).display().to_string();
    let workspace = workspace.canonicalize().map_err(|e| format!("cannot resolve the workspace: {e}"))?;
    let real = path.canonicalize().map_err(|e| format!("cannot read {name}: {e}"))?;
    if !real.starts_with(&workspace) {
        return Err(format!("{name} points outside the repository"));
    }
    let text = std::fs::read_to_string(&real).map_err(|e| format!("cannot read {name}: {e}"))?;
    let lifecycle = devcontainer::parse(&text).map_err(|e| format!("{name}: {e}"))?;
    let value: Value = serde_json::from_str(&jsonc_to_json(text.strip_prefix('\u{feff}').unwrap_or(&text)))
        .map_err(|e| format!("{name}: devcontainer.json is not valid JSON with comments: {e}"))?;
    let Value::Object(mut original) = value else { return Err(format!("{name}: devcontainer.json must hold a JSON object")) };
    let config_dir = real.parent().unwrap_or(&workspace).to_path_buf();
    let mut notes = vec![format!("read {name}")];

    if original.contains_key("dockerComposeFile") {
        return Err(format!("{name}: dockerComposeFile is not supported by the docker runner (use image or build.dockerfile)"));
    }
    // The spec's older spelling of build.dockerfile and build.context.
    let legacy_dockerfile = original.remove("dockerFile");
    let legacy_context = original.remove("context");
    if legacy_dockerfile.is_some() || legacy_context.is_some() {
        let build = original.entry("build").or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(build) = build {
            if let Some(dockerfile) = legacy_dockerfile {
                build.entry("dockerfile").or_insert(dockerfile);
            }
            if let Some(context) = legacy_context {
                build.entry("context").or_insert(context);
            }
        }
    }

    let mut config = Map::new();
    let mut dropped = Vec::new();
    for (key, value) in original {
        if KEPT_KEYS.contains(&key.as_str()) {
            config.insert(key, value);
        } else {
            dropped.push(key);
        }
    }
    for key in &dropped {
        notes.push(format!("skipped {key}: {}", drop_reason(key)));
    }

    if let Some(build) = config.remove("build") {
        let build = resolve_build(&name, build, &config_dir, &workspace, &mut notes)?;
        config.insert("build".into(), build);
    }
    match (config.contains_key("image"), config.contains_key("build")) {
        (false, false) => return Err(format!("{name}: set image or build.dockerfile (the docker runner needs one of them)")),
        (true, true) => {
            config.remove("image");
            notes.push("both image and build are set; building, as the CLI does".into());
        }
        _ => {}
    }

    let workspace_folder = workspace_folder(config.remove("workspaceFolder"), &repository_name, &mut notes);
    Ok(Prepared { config, lifecycle, workspace_folder, notes, warning: None })
}

/// `build` with `dockerfile` and `context` made absolute and checked to be
/// inside the workspace (a build context is sent to the Docker daemon
/// whole: `"context": "../../.."` would send the host's files). Build
/// options (extra `docker build` flags) are dropped.
fn resolve_build(name: &str, build: Value, config_dir: &Path, workspace: &Path, notes: &mut Vec<String>) -> Result<Value, String> {
    let Value::Object(build) = build else { return Err(format!("{name}: build must be an object")) };
    let mut resolved = Map::new();
    let dockerfile = build.get("dockerfile").and_then(Value::as_str).ok_or(format!("{name}: build.dockerfile must be a string"))?;
    let dockerfile_path = inside(name, "build.dockerfile", config_dir, dockerfile, workspace)?;
    if !dockerfile_path.is_file() {
        return Err(format!("{name}: build.dockerfile {dockerfile:?} is not a file in the repository"));
    }
    let context = build.get("context").and_then(Value::as_str).unwrap_or(".");
    let context_path = inside(name, "build.context", config_dir, context, workspace)?;
    resolved.insert("dockerfile".into(), Value::String(dockerfile_path.display().to_string()));
    resolved.insert("context".into(), Value::String(context_path.display().to_string()));
    for (key, value) in build {
        match key.as_str() {
            "dockerfile" | "context" => {}
            "args" | "target" | "cacheFrom" => {
                resolved.insert(key, value);
            }
            other => notes.push(format!("skipped build.{other}: the docker runner does not pass extra build options")),
        }
    }
    Ok(Value::Object(resolved))
}

/// A path of the file, relative to its directory, resolved through
/// symlinks and required to stay inside the workspace.
fn inside(name: &str, key: &str, config_dir: &Path, relative: &str, workspace: &Path) -> Result<std::path::PathBuf, String> {
    let joined = config_dir.join(relative);
    let real = joined.canonicalize().map_err(|_| format!("{name}: {key} {relative:?} does not exist in the repository"))?;
    if real.starts_with(workspace) {
        Ok(real)
    } else {
        Err(format!("{name}: {key} {relative:?} points outside the repository"))
    }
}

/// The workspace's folder in the container: the file's `workspaceFolder`
/// if it is a plain absolute path, else `/workspaces/<repository name>`.
fn workspace_folder(value: Option<Value>, repository_name: &str, notes: &mut Vec<String>) -> String {
    let default = format!("/workspaces/{repository_name}");
    let Some(value) = value else { return default };
    let text = value.as_str().unwrap_or_default().replace("${localWorkspaceFolderBasename}", repository_name);
    let path = Path::new(&text);
    let plain = path.is_absolute() && path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_))) && text != "/";
    if plain && !text.contains("${") {
        text.trim_end_matches('/').to_string()
    } else {
        notes.push(format!("workspaceFolder {value} is not a plain absolute path; using {default}"));
        default
    }
}

/// A folder name for the repository: the last part of its URL or path,
/// without `.git`, in characters every tool accepts.
pub fn repository_name(repository: &str) -> String {
    let last = repository.trim_end_matches(['/', '\\']).rsplit(['/', '\\', ':']).next().unwrap_or_default();
    let last = last.strip_suffix(".git").unwrap_or(last);
    let name: String = last.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' }).collect();
    let name = name.trim_matches(['.', '-']);
    if name.is_empty() {
        "workspace".into()
    } else {
        name.to_string()
    }
}

/// The configuration for `devcontainer up`: the image the build produced
/// and the runner's own container settings. The rest of the project's
/// configuration (commands, containerEnv, remoteUser) is in the image's
/// `devcontainer.metadata` label, which `devcontainer build` wrote; said
/// again here, the CLI would run every lifecycle command twice.
pub fn up_config(prepared: &Prepared, image: &str, settings: &ContainerSettings<'_>) -> Value {
    let mut config = Map::new();
    config.insert("image".into(), Value::String(image.to_string()));
    // No host mount at all: the workspace is copied into the container, so
    // that the snapshot (a commit) holds it and nothing of the host shows.
    config.insert("workspaceMount".into(), Value::String(String::new()));
    config.insert("workspaceFolder".into(), Value::String(prepared.workspace_folder.clone()));
    config.insert("updateRemoteUserUID".into(), Value::Bool(false));
    config.insert("runArgs".into(), Value::Array(run_args(settings).into_iter().map(Value::String).collect()));
    Value::Object(config)
}

/// The container flags the runner sets (and the CLI passes to `docker run`).
fn run_args(settings: &ContainerSettings<'_>) -> Vec<String> {
    let mut args = vec!["--security-opt".to_string(), "no-new-privileges".to_string()];
    if let Some(nano_cpus) = settings.resources.nano_cpus {
        args.push("--cpus".into());
        args.push(format!("{}", nano_cpus as f64 / 1e9));
    }
    if let Some(memory) = settings.resources.memory_bytes {
        args.push("--memory".into());
        args.push(format!("{memory}b"));
    }
    for (key, value) in settings.labels {
        args.push("--label".into());
        args.push(format!("{key}={value}"));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace_with(config: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".devcontainer")).unwrap();
        std::fs::write(dir.path().join(".devcontainer/devcontainer.json"), config).unwrap();
        std::fs::write(dir.path().join(".devcontainer/Dockerfile"), "FROM scratch\n").unwrap();
        dir
    }

    #[test]
    fn host_reaching_keys_are_dropped_with_a_note() {
        let dir = workspace_with(
            r#"{
              // comments are fine
              "image": "base:1",
              "initializeCommand": "cat /etc/shadow",
              "runArgs": ["--privileged", "-v", "/:/host"],
              "privileged": true,
              "mounts": ["source=/,target=/host,type=bind"],
              "capAdd": ["SYS_ADMIN"],
              "features": {"ghcr.io/x/y:1": {}},
              "containerEnv": {"A": "b"},
              "onCreateCommand": "echo hi",
            }"#,
        );
        let prepared = prepare(dir.path(), "https://example.com/acme/backend.git", None).unwrap();
        let keys: Vec<&str> = prepared.config.keys().map(String::as_str).collect();
        assert_eq!(keys, vec!["containerEnv", "image", "onCreateCommand"]);
        for key in ["initializeCommand", "runArgs", "privileged", "mounts", "capAdd", "features"] {
            assert!(prepared.notes.iter().any(|n| n.starts_with(&format!("skipped {key}:"))), "{key}: {:?}", prepared.notes);
        }
        assert!(prepared.notes.iter().any(|n| n.contains("runs on the host")));
        assert_eq!(prepared.workspace_folder, "/workspaces/backend");
        assert_eq!(prepared.lifecycle.commands.len(), 1);
    }

    #[test]
    fn build_paths_are_made_absolute_and_must_stay_in_the_repository() {
        let dir = workspace_with(r#"{"build": {"dockerfile": "Dockerfile", "options": ["--network=host"], "args": {"X": "1"}}}"#);
        let prepared = prepare(dir.path(), "/src/app", None).unwrap();
        let build = prepared.config["build"].as_object().unwrap();
        let real = dir.path().canonicalize().unwrap();
        assert_eq!(build["dockerfile"], real.join(".devcontainer/Dockerfile").display().to_string());
        assert_eq!(build["context"], real.join(".devcontainer").display().to_string());
        assert_eq!(build["args"]["X"], "1");
        assert!(!build.contains_key("options"));

        for config in [
            r#"{"build": {"dockerfile": "Dockerfile", "context": "../.."}}"#,
            r#"{"build": {"dockerfile": "../../../../etc/passwd"}}"#,
            r#"{"dockerFile": "Dockerfile", "context": "/"}"#,
        ] {
            let dir = workspace_with(config);
            let error = prepare(dir.path(), "/src/app", None).unwrap_err();
            assert!(error.contains("outside the repository"), "{config}: {error}");
        }
        let dir = workspace_with(r#"{"build": {"dockerfile": "Missing"}}"#);
        assert!(prepare(dir.path(), "/src/app", None).unwrap_err().contains("does not exist"));
    }

    #[test]
    fn a_config_symlinked_out_of_the_repository_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("devcontainer.json"), r#"{"image": "x"}"#).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".devcontainer")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("devcontainer.json"), dir.path().join(".devcontainer/devcontainer.json")).unwrap();
        assert!(prepare(dir.path(), "/src/app", None).unwrap_err().contains("outside the repository"));
    }

    #[test]
    fn no_devcontainer_uses_the_default_image_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let prepared = prepare(dir.path(), "git@example.com:acme/tools.git", Some("debian:12")).unwrap();
        assert_eq!(prepared.config["image"], "debian:12");
        assert!(prepared.warning.as_deref().unwrap().contains("default image debian:12"));
        assert_eq!(prepared.workspace_folder, "/workspaces/tools");
        assert!(prepare(dir.path(), "x", None).unwrap_err().contains("no default_image"));
    }

    #[test]
    fn compose_and_configs_without_an_image_are_refused() {
        let dir = workspace_with(r#"{"dockerComposeFile": "compose.yml", "service": "app"}"#);
        assert!(prepare(dir.path(), "x", None).unwrap_err().contains("dockerComposeFile is not supported"));
        let dir = workspace_with(r#"{"onCreateCommand": "true"}"#);
        assert!(prepare(dir.path(), "x", None).unwrap_err().contains("set image or build.dockerfile"));
    }

    #[test]
    fn workspace_folders_are_plain_absolute_paths() {
        let mut notes = Vec::new();
        assert_eq!(workspace_folder(Some("/work/${localWorkspaceFolderBasename}".into()), "app", &mut notes), "/work/app");
        assert_eq!(workspace_folder(Some("/srv/app/".into()), "app", &mut notes), "/srv/app");
        assert!(notes.is_empty());
        for bad in ["relative", "/a/../../etc", "/", "${localEnv:HOME}"] {
            assert_eq!(workspace_folder(Some(bad.into()), "app", &mut notes), "/workspaces/app", "{bad}");
        }
    }

    #[test]
    fn repository_names_are_folder_names() {
        assert_eq!(repository_name("https://example.com/acme/backend.git"), "backend");
        assert_eq!(repository_name("git@example.com:acme/tools.git/"), "tools");
        assert_eq!(repository_name("/srv/repos/my app"), "my-app");
        assert_eq!(repository_name("/"), "workspace");
    }

    #[test]
    fn the_up_config_has_no_mounts_and_the_runners_settings() {
        let dir = workspace_with(r#"{"image": "base:1", "remoteUser": "dev"}"#);
        let prepared = prepare(dir.path(), "/src/app", None).unwrap();
        let labels = vec![("dev.prebuildd.prebuild-id".to_string(), "p1".to_string())];
        let settings =
            ContainerSettings { labels: &labels, resources: Resources { nano_cpus: Some(1_500_000_000), memory_bytes: Some(256 << 20) } };
        let config = up_config(&prepared, "prebuildd-build:p1", &settings);
        assert_eq!(config["image"], "prebuildd-build:p1");
        assert_eq!(config["workspaceMount"], "");
        assert_eq!(config["workspaceFolder"], "/workspaces/app");
        assert!(config.get("remoteUser").is_none(), "the image's metadata has it");
        let args: Vec<&str> = config["runArgs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(
            args,
            vec![
                "--security-opt",
                "no-new-privileges",
                "--cpus",
                "1.5",
                "--memory",
                "268435456b",
                "--label",
                "dev.prebuildd.prebuild-id=p1"
            ]
        );
    }
}
