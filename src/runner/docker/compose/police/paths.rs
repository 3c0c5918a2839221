//! What a service reads from the runner's host: its volumes and its build.
//! Only the repository's own files are ever read (a bind mount of one is
//! copied in, a build context is sent whole), never another host path.

use super::super::super::policy::mounts::MountSpec;
use super::super::super::policy::Want;
use super::{ask, Places, Policed, Service};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// One entry of a service's `volumes`: kept (a volume or tmpfs), copied (a
/// path of the repository) or left out (the folder holding the workspace,
/// which the runner copies anyway); a host path is refused.
pub(super) fn volume_entry(
    at: &str,
    volume: &Value,
    is_dev: bool,
    top_volumes: &Map<String, Value>,
    places: &Places<'_>,
    read: &mut Service,
    policed: &mut Policed,
) -> Option<Value> {
    let spec = match parse_volume(volume) {
        Ok(spec) => spec,
        Err(reason) => {
            policed.refusals.push(format!("{at} {}: {reason}", shown(volume)));
            return None;
        }
    };
    match spec {
        MountSpec::Volume { target } => {
            let source = match volume {
                Value::String(text) => text.split(':').next().filter(|s| !s.starts_with('/')).map(str::to_string),
                Value::Object(object) => object.get("source").and_then(Value::as_str).map(str::to_string),
                _ => None,
            };
            if let Some(source) = source.filter(|s| !s.is_empty() && *s != target) {
                if !top_volumes.contains_key(&source) {
                    policed.refusals.push(format!("{at} {}: the volume {source} is not declared under volumes", shown(volume)));
                    return None;
                }
                policed.volumes.insert(source);
            }
            policed.notes.push(format!(
                "{at} {}: a volume of this stack alone at {target}; what the prebuild writes there is not in the snapshot (every warm stack starts with it empty)",
                shown(volume)
            ));
            read.volume_targets.push(target);
            Some(volume.clone())
        }
        MountSpec::Tmpfs { target, options } => {
            read.tmpfs_targets.insert(target, options);
            Some(volume.clone())
        }
        MountSpec::Bind { source, target } => {
            let path = Path::new(&source);
            if is_dev && places.clone.starts_with(path) {
                policed.notes.push(format!(
                    "{at} {}: it holds the repository; the workspace is copied into the container at the workspace folder instead",
                    shown(volume)
                ));
                return None;
            }
            match inside(places.clone, &source) {
                // The dev container's are copied in as a devcontainer.json's
                // are (the policy's grant says so); the other services' go
                // into their images.
                Some(real) if is_dev => read.asks.push(ask(
                    format!("{at} {}", shown(volume)),
                    Want::Mount(MountSpec::Bind { source: real.display().to_string(), target }),
                )),
                Some(real) => {
                    policed.notes.push(format!("{at} {}: {source} is in the repository; it is copied in at {target}", shown(volume)));
                    read.copies.push((real, target));
                }
                None => policed.refusals.push(format!(
                    "{at} {}: a bind mount of a host path ({source}) is never granted to a Compose service (only paths inside the repository, which are copied in)",
                    shown(volume)
                )),
            }
            None
        }
    }
}

fn shown(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A service's volume in the short (`source:target[:mode]`) or long form.
fn parse_volume(value: &Value) -> Result<MountSpec, String> {
    match value {
        Value::String(text) => {
            let parts: Vec<&str> = text.split(':').collect();
            match parts.as_slice() {
                [target] if target.starts_with('/') => Ok(MountSpec::Volume { target: target.to_string() }),
                [source, target] | [source, target, _] if target.starts_with('/') => {
                    if source.starts_with('/') || source.starts_with('.') || source.starts_with('~') {
                        Ok(MountSpec::Bind { source: source.to_string(), target: target.to_string() })
                    } else {
                        Ok(MountSpec::Volume { target: target.to_string() })
                    }
                }
                _ => Err("not source:target[:mode] with an absolute target".into()),
            }
        }
        Value::Object(object) => {
            let field = |key: &str| object.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
            let target = field("target");
            if !target.starts_with('/') {
                return Err("its target is not an absolute path".into());
            }
            match field("type").as_str() {
                "" | "volume" => Ok(MountSpec::Volume { target }),
                "bind" => Ok(MountSpec::Bind { source: field("source"), target }),
                "tmpfs" => Ok(MountSpec::Tmpfs { target, options: String::new() }),
                other => Err(format!("its type {other:?} is not volume, bind or tmpfs")),
            }
        }
        _ => Err("a volume must be a string or a mapping".into()),
    }
}

/// A path inside the clone, resolved through symlinks; `None` otherwise.
pub(super) fn inside(clone: &Path, path: &str) -> Option<PathBuf> {
    let path = Path::new(path);
    if !path.is_absolute() || !path.starts_with(clone) {
        return None;
    }
    path.canonicalize().ok().filter(|real| real.starts_with(clone))
}

/// `build`: the context and Dockerfile inside the repository (a build
/// context is sent to the daemon whole), the rest that only shapes the
/// image kept; what reaches the host is refused.
pub(super) fn build(at: &str, value: &Value, places: &Places<'_>) -> Result<Map<String, Value>, String> {
    let object = match value {
        Value::String(context) => Map::from_iter([("context".to_string(), Value::String(context.clone()))]),
        Value::Object(object) => object.clone(),
        _ => return Err(format!("{at} must be a path or a mapping")),
    };
    let context = object.get("context").and_then(Value::as_str).unwrap_or(".");
    let context = inside(places.clone, context).ok_or(format!("{at}.context {context:?} is not a folder in the repository"))?;
    let dockerfile = object.get("dockerfile").and_then(Value::as_str).unwrap_or("Dockerfile");
    let dockerfile_path = inside(places.clone, &context.join(dockerfile).display().to_string())
        .filter(|path| path.is_file())
        .ok_or(format!("{at}.dockerfile {dockerfile:?} is not a file in the repository"))?;
    let mut build = Map::new();
    build.insert("context".into(), Value::String(context.display().to_string()));
    build.insert("dockerfile".into(), Value::String(dockerfile_path.display().to_string()));
    for (key, value) in object {
        match key.as_str() {
            "context" | "dockerfile" => {}
            "args" | "target" | "labels" | "cache_from" | "shm_size" | "extra_hosts" => {
                build.insert(key, value);
            }
            "network" if value.as_str() == Some("host") => {
                return Err(format!("{at}.network: host: a build on the host's network is never granted"));
            }
            "network" => {}
            other => return Err(format!("{at}.{other}: not a build key the docker runner knows")),
        }
    }
    Ok(build)
}
