//! A Compose configuration under the class's policy: the effective
//! configuration (what `docker-compose config` prints for the project's
//! files, with `extends`, `.env` and variables resolved) read key by key,
//! service by service, into what each service asks for and a cut-down
//! service definition that keeps only what the runner honours.
//!
//! Pure functions over the parsed configuration and the clone; the runner
//! runs Compose, decides the asks with [`super::super::policy::decide`]
//! and writes the stack (see `stack.rs`).
//!
//! What happens to each key is in [`keys::SERVICE_KEYS`] (the
//! README's table says the same). What no key of a service may do,
//! whatever the class allows: publish a port of the runner's host,
//! bind-mount a host path (`paths.rs` judges volumes and builds), join a
//! network or container outside the stack, take a fixed container or
//! volume name (two stacks would share it).

mod keys;
mod paths;

use super::super::policy::run_args::bytes_of;
use super::super::policy::{Ask, Want};
use crate::config::{capability_name, security_opt};
use keys::{keep, Keep};
use paths::{build, inside, volume_entry};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What the project's devcontainer.json says about its Compose project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeRequest {
    /// The Compose files, resolved inside the clone, in order.
    pub files: Vec<PathBuf>,
    /// The dev container's service.
    pub service: String,
    /// The services to start (`None`: all of them).
    pub run_services: Option<Vec<String>>,
}

/// One service as the runner will run it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Service {
    /// The keys kept as written (`Keep::Honoured`), and the service's
    /// volumes and tmpfs mounts as allowed.
    pub definition: Map<String, Value>,
    /// What it asks of its container, for the policy.
    pub asks: Vec<Ask>,
    /// Paths of the repository it bind-mounts: copied instead.
    pub copies: Vec<(PathBuf, String)>,
    /// Targets of its volumes and tmpfs mounts (the check of the created
    /// container allows them).
    pub volume_targets: Vec<String>,
    pub tmpfs_targets: BTreeMap<String, String>,
    /// Its build (`context`, `dockerfile` inside the clone, the rest as
    /// written), if it has one.
    pub build: Option<Map<String, Value>>,
    pub image: Option<String>,
    /// `network_mode: service:<name>`: it shares that service's network.
    pub shares_network_of: Option<String>,
}

/// The Compose configuration under the policy's reading.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policed {
    /// The services that run, by name (the dev container's among them).
    pub services: BTreeMap<String, Service>,
    /// The named volumes the services use (each stack gets its own).
    pub volumes: BTreeSet<String>,
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
    pub refusals: Vec<String>,
}

/// Where things are, for judging paths.
#[derive(Debug, Clone)]
pub struct Places<'a> {
    /// The runner's clone, resolved.
    pub clone: &'a Path,
}

fn refused(written: String, reason: &str) -> Ask {
    Ask { written, want: Want::Refused(reason.to_string()) }
}

fn ask(written: String, want: Want) -> Ask {
    Ask { written, want }
}

/// The services that run: `runServices` and the dev container's service
/// with everything they depend on, or every service.
fn running(services: &Map<String, Value>, request: &ComposeRequest) -> BTreeSet<String> {
    let Some(run_services) = &request.run_services else { return services.keys().cloned().collect() };
    let mut wanted: Vec<String> = run_services.iter().cloned().chain(std::iter::once(request.service.clone())).collect();
    let mut found = BTreeSet::new();
    while let Some(name) = wanted.pop() {
        if !found.insert(name.clone()) {
            continue;
        }
        let Some(Value::Object(service)) = services.get(&name) else { continue };
        wanted.extend(dependencies(service));
    }
    found
}

/// The services a service needs started with it.
fn dependencies(service: &Map<String, Value>) -> Vec<String> {
    let mut names = Vec::new();
    match service.get("depends_on") {
        Some(Value::Array(items)) => names.extend(items.iter().filter_map(Value::as_str).map(str::to_string)),
        Some(Value::Object(items)) => names.extend(items.keys().cloned()),
        _ => {}
    }
    if let Some(Value::Array(links)) = service.get("links") {
        names.extend(links.iter().filter_map(Value::as_str).map(|link| link.split(':').next().unwrap_or(link).to_string()));
    }
    for key in ["network_mode", "pid", "ipc"] {
        if let Some(other) = service.get(key).and_then(Value::as_str).and_then(|mode| mode.strip_prefix("service:")) {
            names.push(other.to_string());
        }
    }
    if let Some(Value::Array(from)) = service.get("volumes_from") {
        for item in from.iter().filter_map(Value::as_str) {
            if !item.starts_with("container:") {
                names.push(item.trim_start_matches("service:").split(':').next().unwrap_or(item).to_string());
            }
        }
    }
    names
}

/// Reads the effective configuration (`docker-compose config`, as JSON).
pub fn police(effective: &Value, request: &ComposeRequest, places: &Places<'_>) -> Result<Policed, String> {
    let Some(Value::Object(all)) = effective.get("services") else {
        return Err("the Compose configuration has no services".into());
    };
    if !all.contains_key(&request.service) {
        let names: Vec<&str> = all.keys().map(String::as_str).collect();
        return Err(format!(
            "service {:?} (the devcontainer.json's service) is not in the Compose configuration (its services: {})",
            request.service,
            names.join(", ")
        ));
    }
    if let Some(run_services) = &request.run_services {
        let missing: Vec<&String> = run_services.iter().filter(|name| !all.contains_key(*name)).collect();
        if !missing.is_empty() {
            return Err(format!("runServices names services the Compose configuration does not have: {missing:?}"));
        }
    }
    let mut policed = Policed::default();
    let top_volumes = effective.get("volumes").and_then(Value::as_object).cloned().unwrap_or_default();
    top_level(effective, &mut policed);
    let running = running(all, request);
    for (name, value) in all {
        if !running.contains(name) {
            policed.notes.push(format!("service {name:?} is not started (not in runServices, and nothing there depends on it)"));
            continue;
        }
        let Value::Object(service) = value else { return Err(format!("services.{name} must be a mapping")) };
        let is_dev = *name == request.service;
        let read = read_service(name, service, is_dev, &running, &top_volumes, places, &mut policed);
        policed.services.insert(name.clone(), read);
    }
    Ok(policed)
}

/// The top-level keys: volumes (each stack gets its own), networks (a
/// stack has one network of its own), and the keys no stack may use.
fn top_level(effective: &Value, policed: &mut Policed) {
    let Some(object) = effective.as_object() else { return };
    for (key, value) in object {
        match key.as_str() {
            "version" | "services" | "name" => {}
            "volumes" => {
                for (name, volume) in value.as_object().into_iter().flatten() {
                    let volume = volume.as_object().cloned().unwrap_or_default();
                    if volume.get("external").is_some_and(|v| v != &Value::Bool(false)) {
                        policed.refusals.push(format!(
                            "volumes.{name}.external: an external volume is shared with whatever else uses it; a stack's volumes are its own"
                        ));
                    }
                    if volume.get("driver").and_then(Value::as_str).is_some_and(|driver| driver != "local") {
                        policed.refusals.push(format!("volumes.{name}.driver: a stack's volumes use Docker's local driver"));
                    }
                    if volume.get("driver_opts").is_some_and(|opts| opts.as_object().is_some_and(|o| !o.is_empty())) {
                        policed.refusals.push(format!(
                            "volumes.{name}.driver_opts: driver options can mount host paths or remote shares, which are never granted"
                        ));
                    }
                    if volume.get("name").is_some() {
                        policed.notes.push(format!("volumes.{name}.name was left out: each stack's volumes are named after its project"));
                    }
                }
            }
            "networks" => {
                for (name, network) in value.as_object().into_iter().flatten() {
                    let external = network.get("external").is_some_and(|v| v != &Value::Bool(false));
                    match external {
                        true => policed.warnings.push(format!(
                            "networks.{name} was left out: an external network is outside the stack; the stack's services join one network of its own"
                        )),
                        false if name != "default" => policed.notes.push(format!(
                            "networks.{name}: the stack's services join one network of its own, where they reach each other by service name"
                        )),
                        false => {}
                    }
                }
            }
            "secrets" | "configs" => policed
                .refusals
                .push(format!("{key}: Compose makes {key} bind mounts of host files, which are never granted to a prebuild")),
            other if other.starts_with("x-") => {}
            other => policed.refusals.push(format!("{other}: not a top-level Compose key the docker runner knows")),
        }
    }
}

/// One service, key by key.
fn read_service(
    name: &str,
    service: &Map<String, Value>,
    is_dev: bool,
    running: &BTreeSet<String>,
    top_volumes: &Map<String, Value>,
    places: &Places<'_>,
    policed: &mut Policed,
) -> Service {
    let mut read = Service::default();
    let at = |key: &str| format!("services.{name}.{key}");
    for (key, value) in service {
        match keep(key) {
            Some(Keep::Honoured) => {
                read.definition.insert(key.clone(), value.clone());
            }
            Some(Keep::Warned(reason)) => policed.warnings.push(format!("{} was left out: {reason}", at(key))),
            Some(Keep::Noted(reason)) => policed.notes.push(format!("{} was left out: {reason}", at(key))),
            Some(Keep::Refused(reason)) => policed.refusals.push(format!("{}: {reason}", at(key))),
            Some(Keep::Runner) => runner_key(name, key, value, is_dev, running, top_volumes, places, &mut read, policed),
            None if key.starts_with("x-") => {}
            None => policed.refusals.push(format!("{}: not a Compose service key the docker runner knows", at(key))),
        }
    }
    if read.image.is_none() && read.build.is_none() {
        policed.refusals.push(format!("services.{name}: set image or build (the docker runner needs one of them)"));
    }
    read
}

#[allow(clippy::too_many_arguments)]
fn runner_key(
    name: &str,
    key: &str,
    value: &Value,
    is_dev: bool,
    running: &BTreeSet<String>,
    top_volumes: &Map<String, Value>,
    places: &Places<'_>,
    read: &mut Service,
    policed: &mut Policed,
) {
    let at = format!("services.{name}.{key}");
    let text = value.as_str().unwrap_or_default();
    match key {
        "image" => read.image = value.as_str().map(str::to_string),
        "build" => match build(&at, value, places) {
            Ok(build) => read.build = Some(build),
            Err(reason) => policed.refusals.push(reason),
        },
        "env_file" => {
            let files: Vec<&str> = match value {
                Value::String(one) => vec![one.as_str()],
                Value::Array(items) => items.iter().filter_map(|item| item.as_str().or_else(|| item.get("path")?.as_str())).collect(),
                _ => Vec::new(),
            };
            // Compose reads them on the runner's machine: only the
            // repository's own files.
            for file in files {
                match inside(places.clone, file) {
                    Some(_) => {}
                    None => policed.refusals.push(format!("{at} {file}: not a file in the repository")),
                }
            }
            read.definition.insert(key.into(), value.clone());
        }
        "tmpfs" => {
            let targets: Vec<&str> = match value {
                Value::String(one) => vec![one.as_str()],
                Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            for target in targets {
                let (path, options) = target.split_once(':').unwrap_or((target, ""));
                read.tmpfs_targets.insert(path.to_string(), options.to_string());
            }
            read.definition.insert(key.into(), value.clone());
        }
        "volumes" => {
            let mut kept = Vec::new();
            for (i, volume) in value.as_array().into_iter().flatten().enumerate() {
                if let Some(entry) = volume_entry(&format!("{at}[{i}]"), volume, is_dev, top_volumes, places, read, policed) {
                    kept.push(entry);
                }
            }
            if !kept.is_empty() {
                read.definition.insert(key.into(), Value::Array(kept));
            }
        }
        "volumes_from" => {
            for item in value.as_array().into_iter().flatten().filter_map(Value::as_str) {
                if item.starts_with("container:") {
                    policed.refusals.push(format!("{at} {item}: it takes the volumes of a container outside the stack"));
                }
            }
            read.definition.insert(key.into(), value.clone());
        }
        "networks" => {
            // One network per stack: the aliases a service has on any of
            // its networks are its aliases there.
            let mut aliases: Vec<Value> = Vec::new();
            if let Value::Object(networks) = value {
                for (network, settings) in networks {
                    for alias in settings.get("aliases").and_then(Value::as_array).into_iter().flatten() {
                        if !aliases.contains(alias) {
                            aliases.push(alias.clone());
                        }
                    }
                    for fixed in ["ipv4_address", "ipv6_address"] {
                        if settings.get(fixed).is_some() {
                            policed.warnings.push(format!(
                                "{at}.{network}.{fixed} was left out: Docker chooses the addresses on the stack's own network"
                            ));
                        }
                    }
                }
            }
            if !aliases.is_empty() {
                read.definition.insert("x-prebuildd-aliases".into(), Value::Array(aliases));
            }
        }
        "network_mode" => match text {
            "host" => read.asks.push(ask(format!("{at}: host"), Want::HostNetwork)),
            "none" => {
                read.definition.insert(key.into(), value.clone());
            }
            "bridge" | "default" => {
                policed.notes.push(format!("{at}: {text}: the service joins the stack's own network instead"));
            }
            mode => match mode.strip_prefix("service:") {
                Some(other) if running.contains(other) => {
                    read.shares_network_of = Some(other.to_string());
                    read.definition.insert(key.into(), value.clone());
                }
                _ => policed.refusals.push(format!("{at}: {mode}: a service shares the network of another service of the stack only")),
            },
        },
        "privileged" => match value {
            Value::Bool(true) => read.asks.push(ask(format!("{at}: true"), Want::Privileged)),
            Value::Bool(false) | Value::Null => {}
            _ => read.asks.push(refused(at, "must be true or false")),
        },
        "cap_add" | "cap_drop" | "security_opt" | "devices" => {
            for item in value.as_array().into_iter().flatten() {
                let Some(item) = item.as_str() else {
                    read.asks.push(refused(at.clone(), "must be a list of strings"));
                    continue;
                };
                let written = format!("{at} {item}");
                let want = match key {
                    "cap_add" => match capability_name(item) {
                        Some(name) => Want::Capability(name),
                        None => Want::Refused("is not a Linux capability Docker knows".into()),
                    },
                    "cap_drop" => match capability_name(item) {
                        Some(name) => Want::CapDrop(name),
                        None => Want::Refused("is not a Linux capability Docker knows".into()),
                    },
                    "security_opt" => match security_opt(item) {
                        Some(option) => Want::SecurityOpt(option),
                        None => Want::Refused("is not a security option Docker knows".into()),
                    },
                    _ => Want::Device { host_path: item.split(':').next().unwrap_or(item).to_string(), spec: item.to_string() },
                };
                read.asks.push(ask(written, want));
            }
        }
        "pid" | "ipc" | "uts" | "userns_mode" | "cgroup" => {
            let namespace = match key {
                "pid" => "PID",
                "ipc" => "IPC",
                "uts" => "UTS",
                "userns_mode" => "user",
                _ => "cgroup",
            };
            match text {
                "host" => read.asks.push(ask(format!("{at}: host"), Want::HostNamespace(namespace))),
                "" | "private" | "shareable" | "none" => {
                    read.definition.insert(key.into(), value.clone());
                }
                mode if mode.strip_prefix("service:").is_some_and(|other| running.contains(other)) => {
                    read.definition.insert(key.into(), value.clone());
                }
                mode => read.asks.push(refused(format!("{at}: {mode}"), "a service shares namespaces with services of its stack only")),
            }
        }
        "cpus" => match value.as_f64().or_else(|| text.parse().ok()) {
            Some(cpus) if cpus > 0.0 => read.asks.push(ask(format!("{at}: {cpus}"), Want::Cpus((cpus * 1e9) as i64))),
            _ => read.asks.push(refused(at, "must be a positive number")),
        },
        "mem_limit" => match value.as_u64().or_else(|| bytes_of(text)) {
            Some(bytes) => read.asks.push(ask(format!("{at}: {value}"), Want::Memory(bytes))),
            None => read.asks.push(refused(at, "must be a size (bytes, or with k, m or g)")),
        },
        "deploy" => {
            let gpu = value
                .pointer("/resources/reservations/devices")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|device| device.get("capabilities").and_then(Value::as_array).is_some_and(|c| c.contains(&Value::from("gpu"))));
            if gpu {
                read.asks.push(ask(format!("{at}.resources.reservations.devices (gpu)"), Want::Gpus("all".into())));
            }
            policed.warnings.push(format!(
                "{at} was left out: deploy is for Swarm; a stack's containers get their class's limits (set cpus and mem_limit to ask for less)"
            ));
        }
        _ => policed.refusals.push(format!("{at}: not a Compose service key the docker runner knows")),
    }
}

#[cfg(test)]
mod tests;
