//! `[[environment_classes]]` entries: the runner they belong to, their
//! limits, and the operator's allowances (what a dev container of the class
//! may be granted beyond an unprivileged container).

use super::{err, parse_memory, uuid_key, ConfigError};
use crate::catalog::{ClassPolicy, EgressAllowance, EnvironmentClass, HostBindMounts, Resources};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEnvironmentClass {
    id: String,
    runner_id: String,
    name: String,
    cpus: Option<f64>,
    memory: Option<String>,
    #[serde(default)]
    allow_capabilities: Vec<String>,
    #[serde(default)]
    allow_security_opt: Vec<String>,
    #[serde(default)]
    allow_privileged: bool,
    #[serde(default)]
    allow_devices: Vec<String>,
    #[serde(default)]
    allow_host_network: bool,
    #[serde(default)]
    allow_gpus: bool,
    #[serde(default)]
    allow_new_privileges: bool,
    host_bind_mounts: Option<String>,
    #[serde(default)]
    allow_egress: Vec<String>,
}

/// The Linux capabilities Docker knows (without `CAP_`), and `ALL`.
pub const KNOWN_CAPABILITIES: &[&str] = &[
    "ALL",
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// The capabilities Docker gives every container: asking for one of them
/// asks for nothing new, so no allowance is needed.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// A capability name as Docker's flags take it (`sys_ptrace`,
/// `CAP_SYS_PTRACE`), upper case without `CAP_`; `None` if Docker does not
/// know it.
pub fn capability_name(text: &str) -> Option<String> {
    let upper = text.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("CAP_").unwrap_or(&upper).to_string();
    KNOWN_CAPABILITIES.contains(&name.as_str()).then_some(name)
}

/// The security options a class may allow, by their key.
const SECURITY_OPT_KEYS: &[&str] = &["seccomp", "apparmor", "label", "systempaths", "no-new-privileges"];

/// A `--security-opt` value in one spelling: `key=value` (Docker also takes
/// the older `key:value`), `no-new-privileges` alone as
/// `no-new-privileges=true`. `None` if the key is not one Docker knows.
pub fn security_opt(text: &str) -> Option<String> {
    let text = text.trim();
    if text == "no-new-privileges" {
        return Some("no-new-privileges=true".into());
    }
    let (key, value) = text.split_once(['=', ':'])?;
    (SECURITY_OPT_KEYS.contains(&key) && !value.is_empty()).then(|| format!("{key}={value}"))
}

/// One class's validated settings.
pub(super) fn class_config(key: &str, class: RawEnvironmentClass) -> Result<EnvironmentClass, ConfigError> {
    let id = uuid_key(&format!("{key}.id"), &class.id)?;
    let runner_id = uuid_key(&format!("{key}.runner_id"), &class.runner_id)?;
    if let Some(cpus) = class.cpus {
        if !(cpus.is_finite() && cpus > 0.0 && cpus <= 1024.0) {
            return Err(err(format!("{key}.cpus"), format!("must be more than 0 and at most 1024, got {cpus}")));
        }
    }
    let memory_bytes = class.memory.as_deref().map(|text| parse_memory(&format!("{key}.memory"), text)).transpose()?;
    let resources = Resources { nano_cpus: class.cpus.map(|cpus| (cpus * 1e9).round() as i64), memory_bytes };

    let mut allow_capabilities = Vec::new();
    for (i, capability) in class.allow_capabilities.iter().enumerate() {
        let name = capability_name(capability).ok_or_else(|| {
            err(
                format!("{key}.allow_capabilities[{i}]"),
                format!("{capability:?} is not a Linux capability Docker knows (for example \"SYS_PTRACE\" or \"NET_ADMIN\")"),
            )
        })?;
        if !allow_capabilities.contains(&name) {
            allow_capabilities.push(name);
        }
    }
    let mut allow_security_opt = Vec::new();
    for (i, option) in class.allow_security_opt.iter().enumerate() {
        let normalized = security_opt(option).ok_or_else(|| {
            err(
                format!("{key}.allow_security_opt[{i}]"),
                format!(
                    "{option:?} is not a security option (key=value with key seccomp, apparmor, label, systempaths or no-new-privileges)"
                ),
            )
        })?;
        allow_security_opt.push(normalized);
    }
    for (i, device) in class.allow_devices.iter().enumerate() {
        if !device.starts_with("/dev/") || device.contains("..") || device.contains(':') {
            return Err(err(
                format!("{key}.allow_devices[{i}]"),
                format!("{device:?} must be a device path under /dev/ (like \"/dev/fuse\")"),
            ));
        }
    }
    let host_bind_mounts = match class.host_bind_mounts.as_deref() {
        None | Some("warn") => HostBindMounts::Warn,
        Some("refuse") => HostBindMounts::Refuse,
        Some(other) => return Err(err(format!("{key}.host_bind_mounts"), format!("{other:?} must be \"warn\" or \"refuse\""))),
    };
    let mut allow_egress = Vec::new();
    for (i, text) in class.allow_egress.iter().enumerate() {
        let allowance = EgressAllowance::parse(text).map_err(|reason| err(format!("{key}.allow_egress[{i}]"), reason))?;
        if !allow_egress.contains(&allowance) {
            allow_egress.push(allowance);
        }
    }
    let policy = ClassPolicy {
        class_name: class.name.clone(),
        allow_capabilities,
        allow_security_opt,
        allow_privileged: class.allow_privileged,
        allow_devices: class.allow_devices,
        allow_host_network: class.allow_host_network,
        allow_gpus: class.allow_gpus,
        allow_new_privileges: class.allow_new_privileges,
        host_bind_mounts,
        allow_egress,
    };
    Ok(EnvironmentClass { id, runner_id, name: class.name, resources, policy })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_take_docker_spellings() {
        assert_eq!(capability_name("sys_ptrace").as_deref(), Some("SYS_PTRACE"));
        assert_eq!(capability_name("CAP_NET_ADMIN").as_deref(), Some("NET_ADMIN"));
        assert_eq!(capability_name("all").as_deref(), Some("ALL"));
        assert_eq!(capability_name("SYS_PTRAC"), None);
        assert_eq!(capability_name(""), None);
    }

    #[test]
    fn security_options_have_one_spelling() {
        assert_eq!(security_opt("seccomp:unconfined").as_deref(), Some("seccomp=unconfined"));
        assert_eq!(security_opt("seccomp=unconfined").as_deref(), Some("seccomp=unconfined"));
        assert_eq!(security_opt("no-new-privileges").as_deref(), Some("no-new-privileges=true"));
        assert_eq!(security_opt("apparmor=unconfined").as_deref(), Some("apparmor=unconfined"));
        assert_eq!(security_opt("unconfined"), None);
        assert_eq!(security_opt("bogus=1"), None);
        assert_eq!(security_opt("seccomp="), None);
    }
}
