//! The project's devcontainer.json as the docker runner takes it: which
//! keys go to the Dev Containers CLI as written (`keys.rs` lists every one
//! and what happens to it), which the privilege policy decides
//! (`super::policy`), where the workspace lands, and what the prebuild's
//! warning must say. Pure functions over the clone; the runner writes the
//! results and runs the CLI.
//!
//! The build's configuration is written beside the project's file, inside
//! the clone (local features are found relative to it, and the CLI wants
//! them inside `.devcontainer/`); it is removed before the workspace is
//! copied into the container.

mod keys;
#[cfg(test)]
mod tests;

#[cfg(test)]
use keys::KEYS;
pub use keys::{treatment, Treatment};

use super::compose::police::ComposeRequest;
use super::policy::asks;
use super::policy::variables::Variables;
use super::policy::{Ask, Grant, Repository};
use crate::catalog::{ClassPolicy, Resources};
use crate::runner::devcontainer::{self, jsonc_to_json, PrebuildLifecycle};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// What the runner prepared from a project's devcontainer.json.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The configuration for `devcontainer build` (image or build with
    /// absolute paths, features, and the keys passed as written).
    pub config: Map<String, Value>,
    /// What the file asks of the container, for the policy.
    pub asks: Vec<Ask>,
    /// The lifecycle commands, for failure messages.
    pub lifecycle: PrebuildLifecycle,
    /// Where the workspace lives inside the container (the commands' folder).
    pub workspace_folder: String,
    /// What of the clone is copied into the container, and where.
    pub workspace_source: PathBuf,
    pub workspace_target: String,
    /// The directory (inside the clone) the build's configuration is
    /// written to.
    pub config_dir: PathBuf,
    /// The file's `hostRequirements`, to compare with the class.
    pub host_requirements: Option<Value>,
    /// Whether the file names features (their build is serialized on a
    /// daemon without buildx).
    pub has_features: bool,
    /// The variables as they resolve for this prebuild.
    pub variables: Variables,
    /// The Compose project the dev container is a service of, if any.
    pub compose: Option<ComposeRequest>,
    /// Lines for the prebuild's log.
    pub notes: Vec<String>,
    /// What the prebuild's warning must say.
    pub warnings: Vec<String>,
}

/// Where the project's repository and choices are.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    /// The runner's clone.
    pub workspace: &'a Path,
    /// The project's repository URL or path (its name names the folder).
    pub repository: &'a str,
    /// The runner's image for repositories without a devcontainer.json.
    pub default_image: Option<&'a str>,
    /// The project's choice of devcontainer.json.
    pub devcontainer_path: Option<&'a str>,
    /// The runner's `pass_env` variables with their values.
    pub local_env: BTreeMap<String, String>,
}

/// Reads a workspace's devcontainer.json (or takes the default image) and
/// prepares it. `Err` says what is wrong in terms of the file.
pub fn prepare(source: &Source<'_>) -> Result<Prepared, String> {
    let repository_name = repository_name(source.repository);
    let workspace = source.workspace.canonicalize().map_err(|e| format!("cannot resolve the workspace: {e}"))?;
    let variables = |folder: &str| Variables {
        local_workspace_folder: workspace.display().to_string(),
        local_workspace_folder_basename: repository_name.clone(),
        container_workspace_folder: folder.to_string(),
        local_env: source.local_env.clone(),
    };
    let Some(located) = devcontainer::locate(&workspace, source.devcontainer_path)? else {
        let Some(image) = source.default_image else {
            return Err("the repository has no .devcontainer/devcontainer.json and this runner has no default_image to use instead".into());
        };
        let warning = format!("no .devcontainer/devcontainer.json found; the prebuild used the runner's default image {image}");
        let folder = format!("/workspaces/{repository_name}");
        return Ok(Prepared {
            config: Map::from_iter([("image".to_string(), Value::String(image.to_string()))]),
            asks: Vec::new(),
            lifecycle: PrebuildLifecycle::default(),
            workspace_source: workspace.clone(),
            workspace_target: folder.clone(),
            variables: variables(&folder),
            workspace_folder: folder,
            config_dir: workspace.clone(),
            host_requirements: None,
            has_features: false,
            compose: None,
            notes: Vec::new(),
            warnings: vec![warning],
        });
    };
    let path = located.path;
    let name = path.strip_prefix(&workspace).unwrap_or(&path).display().to_string();
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
    let mut warnings: Vec<String> = located.warning.into_iter().collect();
    legacy_build_keys(&mut original);

    let mut config = Map::new();
    for (key, value) in &original {
        match treatment(key) {
            Some(Treatment::Honoured | Treatment::Session) => {
                config.insert(key.clone(), value.clone());
            }
            Some(Treatment::Policy | Treatment::Runner(_)) => {}
            Some(Treatment::Warned(reason)) => warnings.push(format!("{key} in {name} was ignored: {reason}")),
            Some(Treatment::Noted(reason)) => notes.push(format!("skipped {key}: {reason}")),
            None => notes.push(format!("skipped {key}: not a devcontainer.json property the runner knows")),
        }
    }
    let compose = compose_request(&name, &mut original, &mut config, &config_dir, &workspace, &mut notes, &mut warnings)?;
    if let Some(build) = config.remove("build") {
        let build = resolve_build(&name, build, &config_dir, &workspace, &mut warnings)?;
        config.insert("build".into(), build);
    }
    match (config.contains_key("image") || compose.is_some(), config.contains_key("build")) {
        (false, false) => return Err(format!("{name}: set image or build.dockerfile (the docker runner needs one of them)")),
        (true, true) => {
            config.remove("image");
            notes.push("both image and build are set; building, as the CLI does".into());
        }
        _ => {}
    }
    let has_features = match config.get("features") {
        None | Some(Value::Null) => false,
        Some(Value::Object(features)) => !features.is_empty(),
        Some(_) => return Err(format!("{name}: features must be an object of feature IDs and their options")),
    };

    let mut folder = workspace_folder(original.get("workspaceFolder"), &repository_name, &mut notes);
    let mut workspace_source = workspace.clone();
    let mut workspace_target = folder.clone();
    if let Some(mount) = original.get("workspaceMount") {
        let resolved = asks::resolve_value(mount, &variables(&folder));
        match workspace_mount(&resolved, &workspace) {
            Ok(Some((source, target))) => {
                notes.push(format!("workspaceMount: {} is copied into the container at {target}", source.display()));
                if !original.contains_key("workspaceFolder") {
                    folder = target.clone();
                }
                (workspace_source, workspace_target) = (source, target);
            }
            Ok(None) => {}
            Err(reason) => {
                warnings.push(format!("workspaceMount {mount} was not followed ({reason}); the repository is copied to {folder}"))
            }
        }
    }
    let variables = variables(&folder);
    // The CLI would resolve `${localWorkspaceFolderBasename}` to the clone's
    // folder name (the environment's ID) and `${localEnv:...}` from its own
    // environment: resolved here instead, as the policy sees them.
    for value in config.values_mut() {
        *value = asks::resolve_value(value, &variables);
    }
    let asks = asks::of_config(&original, &variables, &Repository { clone: workspace.clone() });
    Ok(Prepared {
        config,
        asks,
        lifecycle,
        workspace_folder: folder,
        workspace_source,
        workspace_target,
        config_dir,
        host_requirements: original.get("hostRequirements").cloned(),
        has_features,
        variables,
        compose,
        notes,
        warnings,
    })
}

/// `dockerComposeFile`, `service` and `runServices`: the Compose project
/// the dev container is a service of. The keys that describe a single
/// container (`image`, `build`, `runArgs`, `workspaceMount`) are not used
/// with it, and the warning says so.
fn compose_request(
    name: &str,
    original: &mut Map<String, Value>,
    config: &mut Map<String, Value>,
    config_dir: &Path,
    workspace: &Path,
    notes: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<Option<ComposeRequest>, String> {
    let Some(files) = original.get("dockerComposeFile") else {
        for key in ["service", "runServices"] {
            if original.contains_key(key) {
                notes.push(format!("skipped {key}: it is used with dockerComposeFile only"));
            }
        }
        return Ok(None);
    };
    let listed: Vec<&str> = match files {
        Value::String(one) => vec![one.as_str()],
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_string) => items.iter().filter_map(Value::as_str).collect(),
        _ => return Err(format!("{name}: dockerComposeFile must be a path or a list of paths")),
    };
    let mut resolved = Vec::new();
    for file in listed {
        let path = inside(name, "dockerComposeFile", config_dir, file, workspace)?;
        if !path.is_file() {
            return Err(format!("{name}: dockerComposeFile {file:?} is not a file in the repository"));
        }
        resolved.push(path);
    }
    let service = match original.get("service") {
        Some(Value::String(service)) if !service.is_empty() => service.clone(),
        _ => return Err(format!("{name}: service must name the Compose service that is the dev container (with dockerComposeFile)")),
    };
    let run_services = match original.get("runServices") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            Some(items.iter().filter_map(Value::as_str).map(str::to_string).collect())
        }
        Some(_) => return Err(format!("{name}: runServices must be a list of service names")),
    };
    for key in ["image", "build"] {
        if config.remove(key).is_some() {
            warnings.push(format!(
                "{key} in {name} was ignored: with dockerComposeFile, the Compose service {service:?} says how the dev container is built"
            ));
        }
    }
    for key in ["runArgs", "workspaceMount"] {
        if original.remove(key).is_some() {
            warnings.push(format!("{key} in {name} was ignored: with dockerComposeFile, the Compose file says how the dev container runs"));
        }
    }
    notes.push(format!("the dev container is service {service:?} of a Docker Compose configuration"));
    Ok(Some(ComposeRequest { files: resolved, service, run_services }))
}

/// The spec's older spelling of build.dockerfile and build.context.
fn legacy_build_keys(original: &mut Map<String, Value>) {
    let legacy_dockerfile = original.remove("dockerFile");
    let legacy_context = original.remove("context");
    if legacy_dockerfile.is_none() && legacy_context.is_none() {
        return;
    }
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

/// `build` with `dockerfile` and `context` made absolute and checked to be
/// inside the workspace (a build context is sent to the Docker daemon
/// whole: `"context": "../../.."` would send the host's files). A
/// Dockerfile named in another letter case than the file's (written on a
/// case-insensitive file system) is found. Build options (extra `docker
/// build` flags) are not passed.
fn resolve_build(name: &str, build: Value, config_dir: &Path, workspace: &Path, warnings: &mut Vec<String>) -> Result<Value, String> {
    let Value::Object(build) = build else { return Err(format!("{name}: build must be an object")) };
    let mut resolved = Map::new();
    let dockerfile = build.get("dockerfile").and_then(Value::as_str).ok_or(format!("{name}: build.dockerfile must be a string"))?;
    let dockerfile_path = inside(name, "build.dockerfile", config_dir, dockerfile, workspace)
        .or_else(|error| any_case(config_dir, dockerfile, workspace).ok_or(error))?;
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
            other => {
                warnings.push(format!("build.{other} in {name} was ignored: the docker runner does not pass extra docker build flags"))
            }
        }
    }
    Ok(Value::Object(resolved))
}

/// A path of the file, relative to its directory, resolved through
/// symlinks and required to stay inside the workspace.
fn inside(name: &str, key: &str, config_dir: &Path, relative: &str, workspace: &Path) -> Result<PathBuf, String> {
    let joined = config_dir.join(relative);
    let real = joined.canonicalize().map_err(|_| format!("{name}: {key} {relative:?} does not exist in the repository"))?;
    if real.starts_with(workspace) {
        Ok(real)
    } else {
        Err(format!("{name}: {key} {relative:?} points outside the repository"))
    }
}

/// The one file in the Dockerfile's directory whose name matches in any
/// letter case.
fn any_case(config_dir: &Path, relative: &str, workspace: &Path) -> Option<PathBuf> {
    let joined = config_dir.join(relative);
    let wanted = joined.file_name()?.to_str()?.to_ascii_lowercase();
    let dir = joined.parent()?.canonicalize().ok()?;
    let matches: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .filter(|entry| entry.file_name().to_str().is_some_and(|n| n.to_ascii_lowercase() == wanted))
        .map(|entry| entry.path())
        .collect();
    match matches.as_slice() {
        [one] => one.canonicalize().ok().filter(|real| real.starts_with(workspace) && real.is_file()),
        _ => None,
    }
}

/// The workspace's folder in the container: the file's `workspaceFolder`
/// if it is a plain absolute path, else `/workspaces/<repository name>`.
fn workspace_folder(value: Option<&Value>, repository_name: &str, notes: &mut Vec<String>) -> String {
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

/// `workspaceMount` (variables resolved): the part of the clone it names
/// and its target; `Ok(None)` for an empty one.
fn workspace_mount(value: &Value, workspace: &Path) -> Result<Option<(PathBuf, String)>, String> {
    let text = value.as_str().ok_or("it must be a string")?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let mut source = None;
    let mut target = None;
    for part in text.split(',') {
        match part.trim().split_once('=') {
            Some(("source" | "src", value)) => source = Some(value.to_string()),
            Some(("target" | "destination" | "dst", value)) => target = Some(value.to_string()),
            Some(("type", kind)) if kind != "bind" => return Err(format!("its type is {kind}, not bind")),
            _ => {}
        }
    }
    let (source, target) = (source.ok_or("it has no source")?, target.ok_or("it has no target")?);
    let plain =
        Path::new(&target).is_absolute() && Path::new(&target).components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !plain || target == "/" {
        return Err(format!("its target {target:?} is not a plain absolute path"));
    }
    let real = Path::new(&source).canonicalize().map_err(|_| format!("its source {source} does not exist"))?;
    if !real.starts_with(workspace) {
        return Err(format!("its source {source} is not the repository or a folder in it"));
    }
    Ok(Some((real, target.trim_end_matches('/').to_string())))
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

/// Warnings for `hostRequirements` beyond what the class gives (a class
/// without a limit gives what the host has).
pub fn host_requirement_warnings(requirements: Option<&Value>, resources: Resources, policy: &ClassPolicy) -> Vec<String> {
    let Some(Value::Object(requirements)) = requirements else { return Vec::new() };
    let class = &policy.class_name;
    let mut warnings = Vec::new();
    let cpus = requirements.get("cpus").and_then(Value::as_f64);
    if let (Some(cpus), Some(limit)) = (cpus, resources.nano_cpus) {
        if cpus * 1e9 > limit as f64 {
            warnings.push(format!("hostRequirements.cpus asks for {cpus} CPUs; environment class {class:?} gives {}", limit as f64 / 1e9));
        }
    }
    let memory = requirements.get("memory").and_then(Value::as_str);
    if let (Some(memory), Some(limit)) = (memory, resources.memory_bytes) {
        if super::policy::run_args::bytes_of(memory).is_some_and(|bytes| bytes > limit) {
            warnings.push(format!("hostRequirements.memory asks for {memory}; environment class {class:?} gives {limit} bytes"));
        }
    }
    let gpu = requirements.get("gpu").is_some_and(|gpu| gpu == &Value::Bool(true) || gpu.is_object());
    if gpu && !policy.allow_gpus {
        warnings.push(format!("hostRequirements.gpu asks for a GPU; environment class {class:?} gives none"));
    }
    warnings
}

/// The configuration for `devcontainer up`: the image the build produced
/// and the container's settings as the policy granted them. The rest of
/// the project's configuration (commands, containerEnv, remoteUser) is in
/// the image's `devcontainer.metadata` label, which `devcontainer build`
/// wrote; said again here, the CLI would run every lifecycle command twice.
pub fn up_config(prepared: &Prepared, image: &str, grant: &Grant, runner_labels: &[(String, String)]) -> Value {
    let mut config = Map::new();
    config.insert("image".into(), Value::String(image.to_string()));
    // No host mount at all: the workspace is copied into the container, so
    // that the snapshot (a commit) holds it and nothing of the host shows.
    config.insert("workspaceMount".into(), Value::String(String::new()));
    config.insert("workspaceFolder".into(), Value::String(prepared.workspace_folder.clone()));
    config.insert("updateRemoteUserUID".into(), Value::Bool(false));
    config.insert("runArgs".into(), Value::Array(grant.run_args(runner_labels).into_iter().map(Value::String).collect()));
    Value::Object(config)
}
