//! What a devcontainer.json, and the `devcontainer.metadata` label of the
//! image built from it (its base image's and its features' contributions),
//! ask of the container, as [`Ask`]s for the policy. The keys read here are
//! never passed to the Dev Containers CLI as written: the policy's grant
//! says what the container gets (see `grant.rs`).

use super::mounts::parse_mount_value;
use super::run_args;
use super::variables::Variables;
use super::{Ask, Repository, Want};
use crate::config::{capability_name, security_opt};
use serde_json::{Map, Value};

/// The keys the policy decides, in a devcontainer.json and in image
/// metadata alike (besides `runArgs`, which only a devcontainer.json has).
pub const PRIVILEGE_KEYS: [&str; 5] = ["privileged", "capAdd", "securityOpt", "mounts", "init"];

/// The asks of the project's own devcontainer.json.
pub fn of_config(config: &Map<String, Value>, variables: &Variables, repository: &Repository) -> Vec<Ask> {
    let mut asks = of_entry("", config, variables);
    match config.get("runArgs") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            let strings: Option<Vec<String>> = items.iter().map(|item| item.as_str().map(str::to_string)).collect();
            match strings {
                Some(args) => asks.extend(run_args::asks(&args, variables, repository)),
                None => asks.push(refused("runArgs", "must be an array of strings")),
            }
        }
        Some(_) => asks.push(refused("runArgs", "must be an array of strings")),
    }
    asks
}

/// The asks of the image's metadata entries (the label is an array, one
/// entry per base image, feature and configuration). `prefix` names where
/// an entry came from: `feature <id>` for a feature, else the image.
pub fn of_metadata(entries: &[Value], variables: &Variables) -> Vec<Ask> {
    let mut asks = Vec::new();
    for entry in entries {
        let Some(object) = entry.as_object() else { continue };
        let prefix = match object.get("id").and_then(Value::as_str) {
            Some(id) => format!("feature {id}: "),
            None => "the image's devcontainer metadata: ".to_string(),
        };
        asks.extend(of_entry(&prefix, object, variables));
    }
    asks
}

/// Whether an entry asks for anything the policy decides.
pub fn has_privilege_keys(entry: &Value) -> bool {
    entry.as_object().is_some_and(|object| PRIVILEGE_KEYS.iter().any(|key| object.contains_key(*key)))
}

/// The privilege keys of one entry (a devcontainer.json or a metadata
/// entry), each ask written with `prefix`.
fn of_entry(prefix: &str, entry: &Map<String, Value>, variables: &Variables) -> Vec<Ask> {
    let mut asks = Vec::new();
    let ask = |written: String, want: Want| Ask { written, want };
    match entry.get("privileged") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => asks.push(ask(format!("{prefix}privileged: true"), Want::Privileged)),
        Some(_) => asks.push(refused(&format!("{prefix}privileged"), "must be true or false")),
    }
    match entry.get("init") {
        Some(Value::Bool(true)) => asks.push(ask(format!("{prefix}init: true"), Want::Init)),
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(_) => asks.push(refused(&format!("{prefix}init"), "must be true or false")),
    }
    for (key, value) in strings_of(entry, "capAdd", prefix, &mut asks) {
        let written = format!("{prefix}{key} {value}");
        match capability_name(&value) {
            Some(name) => asks.push(ask(written, Want::Capability(name))),
            None => asks.push(ask(written, Want::Refused("is not a Linux capability Docker knows".into()))),
        }
    }
    for (key, value) in strings_of(entry, "securityOpt", prefix, &mut asks) {
        let written = format!("{prefix}{key} {value}");
        match security_opt(&value) {
            Some(option) => asks.push(ask(written, Want::SecurityOpt(option))),
            None => asks.push(ask(written, Want::Refused("is not a security option Docker knows".into()))),
        }
    }
    match entry.get("mounts") {
        None | Some(Value::Null) => {}
        Some(Value::Array(mounts)) => {
            for (i, mount) in mounts.iter().enumerate() {
                let resolved = resolve_value(mount, variables);
                let shown = match &resolved {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                let written = format!("{prefix}mounts[{i}] {shown}");
                match parse_mount_value(&resolved) {
                    Ok(spec) => asks.push(ask(written, Want::Mount(spec))),
                    Err(reason) => asks.push(ask(written, Want::Refused(reason))),
                }
            }
        }
        Some(_) => asks.push(refused(&format!("{prefix}mounts"), "must be an array")),
    }
    asks
}

/// The strings of an array key (`capAdd`, `securityOpt`); a value of
/// another shape is refused.
fn strings_of(entry: &Map<String, Value>, key: &str, prefix: &str, asks: &mut Vec<Ask>) -> Vec<(String, String)> {
    match entry.get(key) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).map(|item| (key.to_string(), item.to_string())).collect()
        }
        Some(_) => {
            asks.push(refused(&format!("{prefix}{key}"), "must be an array of strings"));
            Vec::new()
        }
    }
}

/// A JSON value with the variables in its strings resolved.
pub fn resolve_value(value: &Value, variables: &Variables) -> Value {
    match value {
        Value::String(text) => Value::String(variables.resolve(text)),
        Value::Array(items) => Value::Array(items.iter().map(|item| resolve_value(item, variables)).collect()),
        Value::Object(object) => Value::Object(object.iter().map(|(k, v)| (k.clone(), resolve_value(v, variables))).collect()),
        other => other.clone(),
    }
}

fn refused(written: &str, reason: &str) -> Ask {
    Ask { written: written.to_string(), want: Want::Refused(reason.to_string()) }
}
