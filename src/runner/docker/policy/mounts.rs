//! Mounts as a devcontainer.json writes them, parsed into what they ask
//! for: the `mounts` key (Docker's `--mount` string, `type=bind,source=...`,
//! or the spec's object `{"type", "source", "target"}`), `workspaceMount`,
//! `runArgs -v/--volume` (`source:target[:options]`) and `--mount`.
//!
//! Variables are resolved first (see [`super::variables`]), so a source
//! written `${localWorkspaceFolder}/.cache` is a path in the runner's clone.

use serde_json::Value;

/// What a mount asks for, before the policy decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSpec {
    /// A named or anonymous volume at `target` (the name is dropped: every
    /// container gets a fresh volume of its own).
    Volume { target: String },
    /// A bind mount of `source` (a path on the runner's machine).
    Bind { source: String, target: String },
    /// A tmpfs at `target`, with its options (`size=64m`).
    Tmpfs { target: String, options: String },
}

/// A `--mount`-style string: comma-separated `key=value` pairs.
pub fn parse_mount_string(text: &str) -> Result<MountSpec, String> {
    let mut kind = None;
    let mut source = None;
    let mut target = None;
    let mut tmpfs_options = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        match key.to_ascii_lowercase().as_str() {
            "type" => kind = Some(value.to_ascii_lowercase()),
            "source" | "src" => source = Some(value.to_string()),
            "target" | "destination" | "dst" => target = Some(value.to_string()),
            "tmpfs-size" => tmpfs_options.push(format!("size={value}")),
            "tmpfs-mode" => tmpfs_options.push(format!("mode={value}")),
            // Options that change how, not what: consistency, readonly,
            // bind-propagation, volume options, `external` (the spec's flag
            // for a volume that must exist).
            _ => {}
        }
    }
    let target = target.filter(|t| !t.is_empty()).ok_or("it has no target")?;
    build(kind.as_deref().unwrap_or("volume"), source.unwrap_or_default(), target, tmpfs_options.join(","))
}

/// The spec's object form (`{"type": "bind", "source": "...", "target": "..."}`)
/// or the string form.
pub fn parse_mount_value(value: &Value) -> Result<MountSpec, String> {
    match value {
        Value::String(text) => parse_mount_string(text),
        Value::Object(object) => {
            let field = |key: &str| object.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
            let target = field("target");
            if target.is_empty() {
                return Err("it has no target".into());
            }
            let kind = match field("type") {
                kind if kind.is_empty() => "volume".to_string(),
                kind => kind.to_ascii_lowercase(),
            };
            build(&kind, field("source"), target, String::new())
        }
        _ => Err("a mount must be a string or an object".into()),
    }
}

/// `-v`/`--volume`: `target` (an anonymous volume), `name:target[:opts]`
/// (a named volume) or `/path:target[:opts]` (a bind mount).
pub fn parse_volume_flag(text: &str) -> Result<MountSpec, String> {
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
        _ => Err("it is not source:target[:options] with an absolute target".into()),
    }
}

fn build(kind: &str, source: String, target: String, tmpfs_options: String) -> Result<MountSpec, String> {
    if !target.starts_with('/') {
        return Err(format!("its target {target:?} is not an absolute path"));
    }
    match kind {
        "volume" => Ok(MountSpec::Volume { target }),
        "bind" if source.is_empty() => Err("a bind mount needs a source".into()),
        "bind" => Ok(MountSpec::Bind { source, target }),
        "tmpfs" => Ok(MountSpec::Tmpfs { target, options: tmpfs_options }),
        other => Err(format!("its type {other:?} is not volume, bind or tmpfs")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mount_strings() {
        assert_eq!(
            parse_mount_string("source=/var/run/docker.sock,target=/var/run/docker-host.sock,type=bind").unwrap(),
            MountSpec::Bind { source: "/var/run/docker.sock".into(), target: "/var/run/docker-host.sock".into() }
        );
        assert_eq!(
            parse_mount_string("source=node_modules,target=/workspaces/app/node_modules,type=volume").unwrap(),
            MountSpec::Volume { target: "/workspaces/app/node_modules".into() }
        );
        assert_eq!(
            parse_mount_string("type=tmpfs,destination=/scratch,tmpfs-size=64m").unwrap(),
            MountSpec::Tmpfs { target: "/scratch".into(), options: "size=64m".into() }
        );
        assert_eq!(parse_mount_string("src=cache,dst=/cache").unwrap(), MountSpec::Volume { target: "/cache".into() });
        assert!(parse_mount_string("source=x").unwrap_err().contains("no target"));
        assert!(parse_mount_string("type=npipe,source=x,target=/y").unwrap_err().contains("\"npipe\""));
        assert!(parse_mount_string("type=bind,target=/y").unwrap_err().contains("needs a source"));
        assert!(parse_mount_string("type=volume,target=relative").unwrap_err().contains("not an absolute path"));
    }

    #[test]
    fn mount_objects() {
        let value = json!({"source": "dind-var-lib-docker", "target": "/var/lib/docker", "type": "volume"});
        assert_eq!(parse_mount_value(&value).unwrap(), MountSpec::Volume { target: "/var/lib/docker".into() });
        let value = json!({"source": "/etc", "target": "/host-etc", "type": "bind"});
        assert_eq!(parse_mount_value(&value).unwrap(), MountSpec::Bind { source: "/etc".into(), target: "/host-etc".into() });
        assert!(parse_mount_value(&json!(5)).is_err());
        assert!(parse_mount_value(&json!({"source": "x"})).is_err());
    }

    #[test]
    fn volume_flags() {
        assert_eq!(parse_volume_flag("/data").unwrap(), MountSpec::Volume { target: "/data".into() });
        assert_eq!(parse_volume_flag("cache:/cache:rw").unwrap(), MountSpec::Volume { target: "/cache".into() });
        assert_eq!(parse_volume_flag("/etc:/host:ro").unwrap(), MountSpec::Bind { source: "/etc".into(), target: "/host".into() });
        assert!(parse_volume_flag("relative").is_err());
    }
}
