//! What the policy granted one dev container, in the three forms the runner
//! needs: Docker flags for the prebuild's container (the Dev Containers CLI
//! passes `runArgs` to `docker run`), the Engine API's host config for warm
//! instances (created from the snapshot image, which carries the grant as a
//! label), and the check of a created container against it.
//!
//! Settings that live in the image's config (environment, user, working
//! directory, labels) reach instances through the snapshot, which is a
//! commit of the prebuild's container; the rest (host config) is kept in the
//! grant.

use super::super::labels;
use crate::catalog::{ClassPolicy, Resources};
use crate::config::DEFAULT_CAPABILITIES;
use bollard::models::{ContainerInspectResponse, DeviceMapping, DeviceRequest, HostConfig, Mount, MountType, ResourcesUlimits};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// A `--ulimit`: `name=soft[:hard]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// A bind mount of a path inside the repository, copied into the container
/// instead (so the snapshot holds it and nothing of the host is mounted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryCopy {
    pub source: PathBuf,
    pub target: String,
}

/// The settings a container of one prebuild gets. Serialized (the host
/// config part) into the snapshot image's `dev.prebuildd.grant` label.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Grant {
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// Security options beyond `no-new-privileges`.
    pub security_opt: Vec<String>,
    /// `--device` values (`/dev/fuse`, `/dev/fuse:/dev/fuse:rwm`).
    pub devices: Vec<String>,
    pub gpus: Option<String>,
    pub host_network: bool,
    /// True: no `no-new-privileges` (the class allows new privileges).
    pub new_privileges: bool,
    pub init: bool,
    pub extra_hosts: Vec<String>,
    pub hostname: Option<String>,
    pub shm_size: Option<i64>,
    pub ulimits: Vec<Ulimit>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    pub tmpfs: BTreeMap<String, String>,
    pub group_add: Vec<String>,
    pub pids_limit: Option<i64>,
    pub sysctls: BTreeMap<String, String>,
    pub nano_cpus: Option<i64>,
    pub memory_bytes: Option<u64>,
    /// Targets of volumes of the container's own.
    pub volumes: Vec<String>,
    // In the image's config once committed: only the prebuild's container
    // takes them as flags.
    #[serde(skip)]
    pub env: Vec<(String, String)>,
    #[serde(skip)]
    pub labels: Vec<(String, String)>,
    #[serde(skip)]
    pub user: Option<String>,
    #[serde(skip)]
    pub workdir: Option<String>,
    /// Paths of the repository copied in (done once, before the lifecycle).
    #[serde(skip)]
    pub copies: Vec<RepositoryCopy>,
    /// The runner's network the container joins (`None`: Docker's default
    /// bridge, where network isolation is off). Decided per container, by
    /// the runner and the class's `allow_egress`, so not part of a snapshot.
    #[serde(skip)]
    pub network: Option<String>,
}

/// A `--device` value's host path.
pub fn device_host_path(spec: &str) -> &str {
    spec.split(':').next().unwrap_or(spec)
}

impl Grant {
    /// The grant as `docker run` flags, after the runner's own labels.
    pub fn run_args(&self, runner_labels: &[(String, String)]) -> Vec<String> {
        let mut args = Vec::new();
        let mut flag = |name: &str, value: String| {
            args.push(name.to_string());
            args.push(value);
        };
        if !self.new_privileges {
            flag("--security-opt", "no-new-privileges".into());
        }
        if let Some(nano_cpus) = self.nano_cpus {
            flag("--cpus", format!("{}", nano_cpus as f64 / 1e9));
        }
        if let Some(memory) = self.memory_bytes {
            flag("--memory", format!("{memory}b"));
        }
        for (key, value) in runner_labels.iter().chain(&self.labels) {
            flag("--label", format!("{key}={value}"));
        }
        for capability in &self.cap_add {
            flag("--cap-add", capability.clone());
        }
        for capability in &self.cap_drop {
            flag("--cap-drop", capability.clone());
        }
        for option in &self.security_opt {
            flag("--security-opt", option.clone());
        }
        for device in &self.devices {
            flag("--device", device.clone());
        }
        if let Some(gpus) = &self.gpus {
            flag("--gpus", gpus.clone());
        }
        if self.host_network {
            flag("--network", "host".into());
        } else if let Some(network) = &self.network {
            flag("--network", network.clone());
        }
        for (name, value) in &self.env {
            flag("--env", format!("{name}={value}"));
        }
        for host in &self.extra_hosts {
            flag("--add-host", host.clone());
        }
        if let Some(hostname) = &self.hostname {
            flag("--hostname", hostname.clone());
        }
        if let Some(bytes) = self.shm_size {
            flag("--shm-size", format!("{bytes}b"));
        }
        for limit in &self.ulimits {
            flag("--ulimit", format!("{}={}:{}", limit.name, limit.soft, limit.hard));
        }
        if let Some(user) = &self.user {
            flag("--user", user.clone());
        }
        if let Some(dir) = &self.workdir {
            flag("--workdir", dir.clone());
        }
        for server in &self.dns {
            flag("--dns", server.clone());
        }
        for domain in &self.dns_search {
            flag("--dns-search", domain.clone());
        }
        for option in &self.dns_options {
            flag("--dns-option", option.clone());
        }
        for (target, options) in &self.tmpfs {
            flag("--tmpfs", if options.is_empty() { target.clone() } else { format!("{target}:{options}") });
        }
        for group in &self.group_add {
            flag("--group-add", group.clone());
        }
        if let Some(limit) = self.pids_limit {
            flag("--pids-limit", limit.to_string());
        }
        for (key, value) in &self.sysctls {
            flag("--sysctl", format!("{key}={value}"));
        }
        for target in &self.volumes {
            flag("--mount", format!("type=volume,target={target}"));
        }
        if self.privileged {
            args.push("--privileged".into());
        }
        if self.init {
            args.push("--init".into());
        }
        args
    }

    /// The grant as the Engine API's host config, for a warm instance.
    pub fn host_config(&self) -> HostConfig {
        let some_vec = |list: &[String]| (!list.is_empty()).then(|| list.to_vec());
        let mut security_opt = self.security_opt.clone();
        if !self.new_privileges {
            security_opt.insert(0, "no-new-privileges".into());
        }
        let devices: Vec<DeviceMapping> = self
            .devices
            .iter()
            .map(|spec| {
                let parts: Vec<&str> = spec.split(':').collect();
                let host = parts[0].to_string();
                DeviceMapping {
                    path_in_container: Some(parts.get(1).map_or(host.clone(), |p| p.to_string())),
                    cgroup_permissions: Some(parts.get(2).unwrap_or(&"rwm").to_string()),
                    path_on_host: Some(host),
                }
            })
            .collect();
        let device_requests = self.gpus.as_ref().map(|gpus| {
            let count = gpus.strip_prefix("count=").unwrap_or(gpus);
            vec![DeviceRequest {
                driver: Some(String::new()),
                count: Some(if count == "all" { -1 } else { count.parse().unwrap_or(-1) }),
                capabilities: Some(vec![vec!["gpu".to_string()]]),
                ..Default::default()
            }]
        });
        let mounts: Vec<Mount> = self
            .volumes
            .iter()
            .map(|target| Mount { target: Some(target.clone()), typ: Some(MountType::VOLUME), ..Default::default() })
            .collect();
        let map = |map: &BTreeMap<String, String>| {
            (!map.is_empty()).then(|| map.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<HashMap<_, _>>())
        };
        HostConfig {
            nano_cpus: self.nano_cpus,
            memory: self.memory_bytes.map(|bytes| bytes as i64),
            privileged: Some(self.privileged),
            cap_add: some_vec(&self.cap_add),
            cap_drop: some_vec(&self.cap_drop),
            security_opt: some_vec(&security_opt),
            devices: (!devices.is_empty()).then_some(devices),
            device_requests,
            network_mode: if self.host_network { Some("host".to_string()) } else { self.network.clone() },
            init: self.init.then_some(true),
            extra_hosts: some_vec(&self.extra_hosts),
            shm_size: self.shm_size,
            ulimits: (!self.ulimits.is_empty()).then(|| {
                self.ulimits
                    .iter()
                    .map(|l| ResourcesUlimits { name: Some(l.name.clone()), soft: Some(l.soft), hard: Some(l.hard) })
                    .collect()
            }),
            dns: some_vec(&self.dns),
            dns_search: some_vec(&self.dns_search),
            dns_options: some_vec(&self.dns_options),
            tmpfs: map(&self.tmpfs),
            group_add: some_vec(&self.group_add),
            pids_limit: self.pids_limit,
            sysctls: map(&self.sysctls),
            mounts: (!mounts.is_empty()).then_some(mounts),
            ..Default::default()
        }
    }

    /// The grant as the snapshot's label value.
    pub fn to_label(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The grant a snapshot image carries; an image without the label (made
    /// before grants existed) was granted nothing beyond the defaults.
    pub fn from_image_labels(image_labels: &HashMap<String, String>, resources: Resources) -> Result<Grant, String> {
        match image_labels.get(labels::GRANT) {
            Some(text) => serde_json::from_str(text).map_err(|e| format!("the snapshot's {} label is not a grant: {e}", labels::GRANT)),
            None => Ok(Grant { nano_cpus: resources.nano_cpus, memory_bytes: resources.memory_bytes, ..Grant::default() }),
        }
    }

    /// Whether the class still allows what this grant holds (the class's
    /// settings may have changed since the snapshot was made), and the
    /// class's limits applied over the grant's.
    pub fn under(mut self, policy: &ClassPolicy, resources: Resources) -> Result<Grant, String> {
        let class = &policy.class_name;
        let mut missing = Vec::new();
        if self.privileged && !policy.allow_privileged {
            missing.push("allow_privileged = true".to_string());
        }
        for capability in &self.cap_add {
            if !DEFAULT_CAPABILITIES.contains(&capability.as_str())
                && !policy.allow_capabilities.iter().any(|allowed| allowed == capability || allowed == "ALL")
            {
                missing.push(format!("allow_capabilities = [{capability:?}]"));
            }
        }
        for option in &self.security_opt {
            if !policy.allow_security_opt.contains(option) {
                missing.push(format!("allow_security_opt = [{option:?}]"));
            }
        }
        for device in &self.devices {
            let host = device_host_path(device);
            if !policy.allow_devices.iter().any(|allowed| allowed == host) {
                missing.push(format!("allow_devices = [{host:?}]"));
            }
        }
        if self.gpus.is_some() && !policy.allow_gpus {
            missing.push("allow_gpus = true".into());
        }
        if self.host_network && !policy.allow_host_network {
            missing.push("allow_host_network = true".into());
        }
        if !missing.is_empty() {
            return Err(format!(
                "its snapshot was granted what environment class {class:?} no longer allows (it needs {})",
                missing.join(", ")
            ));
        }
        self.new_privileges = policy.allow_new_privileges;
        self.nano_cpus = lower(self.nano_cpus, resources.nano_cpus);
        self.memory_bytes = lower(self.memory_bytes, resources.memory_bytes);
        Ok(self)
    }

    /// Why a created container has more than this grant, if it does (empty
    /// when it is as granted).
    pub fn excess(&self, container: &ContainerInspectResponse) -> Vec<String> {
        let host = container.host_config.clone().unwrap_or_default();
        let mut problems = Vec::new();
        if host.privileged.unwrap_or(false) && !self.privileged {
            problems.push("it is privileged".to_string());
        }
        let extra_caps: Vec<String> = host
            .cap_add
            .unwrap_or_default()
            .iter()
            .map(|cap| cap.trim_start_matches("CAP_").to_ascii_uppercase())
            .filter(|cap| !self.cap_add.contains(cap))
            .collect();
        if !extra_caps.is_empty() {
            problems.push(format!("it adds capabilities ({})", extra_caps.join(", ")));
        }
        let options = host.security_opt.unwrap_or_default();
        let extra_options: Vec<&String> = options
            .iter()
            .filter(|o| {
                !o.starts_with("no-new-privileges") && crate::config::security_opt(o).is_none_or(|o| !self.security_opt.contains(&o))
            })
            .collect();
        if !extra_options.is_empty() {
            problems.push(format!("it has security options {extra_options:?}"));
        }
        if !self.new_privileges && !options.iter().any(|o| o.starts_with("no-new-privileges") && !o.ends_with("false")) {
            problems.push("it lacks no-new-privileges".into());
        }
        for mount in container.mounts.clone().unwrap_or_default() {
            let target = mount.destination.unwrap_or_default();
            let ok = mount.typ.as_deref() == Some("volume") && self.volumes.contains(&target)
                || mount.typ.as_deref() == Some("tmpfs") && self.tmpfs.contains_key(&target);
            if !ok {
                problems.push(format!("it has a {} mount at {target}", mount.typ.unwrap_or_default()));
            }
        }
        for device in host.devices.unwrap_or_default() {
            let path = device.path_on_host.unwrap_or_default();
            if !self.devices.iter().any(|granted| device_host_path(granted) == path) {
                problems.push(format!("it has the host device {path}"));
            }
        }
        if host.device_requests.is_some_and(|requests| !requests.is_empty()) && self.gpus.is_none() {
            problems.push("it has GPUs".into());
        }
        if host.network_mode.as_deref() == Some("host") && !self.host_network {
            problems.push("it shares the host's network namespace".into());
        }
        if let Some(network) = self.network.as_deref().filter(|_| !self.host_network) {
            let mut joined: Vec<String> =
                container.network_settings.clone().and_then(|settings| settings.networks).unwrap_or_default().into_keys().collect();
            joined.sort();
            if joined != [network] {
                problems.push(format!("it is on the networks {joined:?}, not only on the runner's {network}"));
            }
        }
        for (what, mode) in [("PID", host.pid_mode), ("IPC", host.ipc_mode), ("UTS", host.uts_mode), ("user", host.userns_mode)] {
            if mode.as_deref() == Some("host") {
                problems.push(format!("it shares the host's {what} namespace"));
            }
        }
        problems
    }
}

fn lower<T: Ord + Copy>(asked: Option<T>, limit: Option<T>) -> Option<T> {
    match (asked, limit) {
        (Some(asked), Some(limit)) => Some(asked.min(limit)),
        (asked, limit) => asked.or(limit),
    }
}
