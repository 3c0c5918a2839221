//! The privilege policy: one place that turns what a dev container asks for
//! (its devcontainer.json's `runArgs`, `mounts`, `privileged`, `capAdd`,
//! `securityOpt`, `init`, and the same keys from its features and base
//! image) into the container's settings, or a refusal that names the key,
//! the value, the environment class and the setting that would allow it.
//!
//! Files: `asks.rs` (the keys of devcontainer.json and of the image's
//! metadata, read into [`Ask`]s), `run_args.rs` (`runArgs`, parsed flag by
//! flag), `mounts.rs` (mount syntaxes), `variables.rs` (`${...}` as a runner
//! resolves them), `grant.rs` (the decided settings: Docker flags for the
//! CLI, the Engine API's host config for warm instances, and the check of a
//! created container).
//!
//! The rules: what changes only the container itself is honoured; what
//! adds privileges (capabilities, security options, `privileged`, devices,
//! GPUs) needs the class's allowance; what reaches the host (its network,
//! PID, IPC or user namespace) is refused unless a setting allows it; a
//! bind mount of a path inside the repository is copied in, a bind mount of
//! a host path is never granted (the prebuild goes on without it and says
//! so, or fails where the class says `host_bind_mounts = "refuse"`);
//! volumes become volumes of that one container.

pub mod asks;
mod grant;
pub mod mounts;
pub mod run_args;
pub mod variables;

pub use grant::{Grant, RepositoryCopy, Ulimit};

use crate::catalog::{ClassPolicy, HostBindMounts, Resources};
use crate::config::DEFAULT_CAPABILITIES;
use mounts::MountSpec;
use std::path::{Path, PathBuf};

/// One thing a dev container asks for, with how it was written (for
/// messages: `runArgs --cap-add=SYS_PTRACE`, `feature ./hello: capAdd
/// SYS_PTRACE`).
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub written: String,
    pub want: Want,
}

/// What is asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Want {
    Privileged,
    /// A capability, upper case without `CAP_`.
    Capability(String),
    /// A security option in its one spelling (`seccomp=unconfined`).
    SecurityOpt(String),
    /// A host device: its path on the host and the flag's whole value.
    Device {
        host_path: String,
        spec: String,
    },
    Gpus(String),
    HostNetwork,
    /// Sharing another host namespace (`PID`, `IPC`, `UTS`, `user`,
    /// `cgroup`): no setting allows it.
    HostNamespace(&'static str),
    Mount(MountSpec),
    Init,
    CapDrop(String),
    Env(String, String),
    /// `-e NAME` without a value: the runner's variable, if `pass_env`
    /// lists it.
    EnvFromRunner(String),
    ExtraHost(String),
    Hostname(String),
    ShmSize(i64),
    Ulimit(Ulimit),
    Label(String, String),
    User(String),
    Workdir(String),
    Dns(String),
    DnsSearch(String),
    DnsOption(String),
    GroupAdd(String),
    PidsLimit(i64),
    Sysctl(String, String),
    /// A CPU limit, in billionths of a CPU.
    Cpus(i64),
    Memory(u64),
    /// Not done, on purpose; `warn` puts the reason into the prebuild's
    /// warning, otherwise only the log says it.
    Ignored {
        reason: String,
        warn: bool,
    },
    /// Refused whatever the class allows (an unknown flag, say).
    Refused(String),
}

/// The policy's answer for one dev container: its settings, what the
/// prebuild's warning must say, and what only the log says; or why not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    pub grant: Grant,
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
    pub refusals: Vec<String>,
}

impl Decision {
    /// The refusals as one failure message, if there are any.
    pub fn refused(&self) -> Option<String> {
        (!self.refusals.is_empty()).then(|| format!("refused to run the prebuild: {}", self.refusals.join("; ")))
    }
}

/// Where the repository is, for judging bind mounts.
#[derive(Debug, Clone)]
pub struct Repository {
    /// The runner's clone, resolved (no symlinks).
    pub clone: PathBuf,
}

impl Repository {
    /// The path inside the clone a bind source names, resolved through
    /// symlinks; `Ok(None)` for a host path, `Err` for a path in the
    /// repository that does not exist.
    fn inside(&self, source: &str) -> Result<Option<PathBuf>, String> {
        let path = Path::new(source);
        if !path.is_absolute() || !path.starts_with(&self.clone) {
            return Ok(None);
        }
        match path.canonicalize() {
            Ok(real) if real.starts_with(&self.clone) => Ok(Some(real)),
            Ok(_) => Ok(None),
            Err(_) => Err("it does not exist in the repository".into()),
        }
    }
}

/// Decides every ask against the class's policy and limits. The grant
/// starts from what every container of the class gets (its limits, and
/// `no-new-privileges` unless the class allows new privileges).
pub fn decide(asks: &[Ask], policy: &ClassPolicy, resources: Resources, repository: &Repository) -> Decision {
    let mut decision = Decision {
        grant: Grant {
            nano_cpus: resources.nano_cpus,
            memory_bytes: resources.memory_bytes,
            new_privileges: policy.allow_new_privileges,
            ..Grant::default()
        },
        ..Decision::default()
    };
    let class = &policy.class_name;
    let needs = |written: &str, setting: String| format!("{written} needs {setting} on environment class {class:?}");
    for ask in asks {
        let written = ask.written.as_str();
        let grant = &mut decision.grant;
        match &ask.want {
            Want::Privileged if policy.allow_privileged => grant.privileged = true,
            Want::Privileged => decision.refusals.push(needs(written, "allow_privileged = true".into())),
            Want::Capability(name) if DEFAULT_CAPABILITIES.contains(&name.as_str()) => {
                decision.notes.push(format!("{written}: Docker gives every container {name} already"))
            }
            Want::Capability(name) => {
                if policy.allow_capabilities.iter().any(|allowed| allowed == name || allowed == "ALL") {
                    push_once(&mut grant.cap_add, name);
                } else {
                    decision.refusals.push(needs(written, format!("allow_capabilities = [{name:?}]")));
                }
            }
            Want::SecurityOpt(option) if option == "no-new-privileges=true" => {}
            Want::SecurityOpt(option) => {
                if policy.allow_security_opt.contains(option) {
                    push_once(&mut grant.security_opt, option);
                } else {
                    decision.refusals.push(needs(written, format!("allow_security_opt = [{option:?}]")));
                }
            }
            Want::Device { host_path, spec } => {
                if policy.allow_devices.contains(host_path) {
                    push_once(&mut grant.devices, spec);
                } else {
                    decision.refusals.push(needs(written, format!("allow_devices = [{host_path:?}]")));
                }
            }
            Want::Gpus(value) if policy.allow_gpus => grant.gpus = Some(value.clone()),
            Want::Gpus(_) => decision.refusals.push(needs(written, "allow_gpus = true".into())),
            Want::HostNetwork if policy.allow_host_network => grant.host_network = true,
            Want::HostNetwork => decision.refusals.push(needs(written, "allow_host_network = true".into())),
            Want::HostNamespace(which) => decision.refusals.push(format!(
                "{written} shares the host's {which} namespace, which no setting allows (a prebuild runs code from the repository)"
            )),
            Want::Mount(mount) => mount_decision(written, mount, policy, repository, &mut decision),
            Want::Init => grant.init = true,
            Want::CapDrop(name) => push_once(&mut grant.cap_drop, name),
            Want::Env(name, value) => grant.env.push((name.clone(), value.clone())),
            Want::EnvFromRunner(name) => {
                decision.warnings.push(format!("{written}: {name} is not in the runner's pass_env, so the container does not get it"))
            }
            Want::ExtraHost(host) => grant.extra_hosts.push(host.clone()),
            Want::Hostname(name) => grant.hostname = Some(name.clone()),
            Want::ShmSize(bytes) => grant.shm_size = Some(*bytes),
            Want::Ulimit(limit) => grant.ulimits.push(limit.clone()),
            Want::Label(key, value) => grant.labels.push((key.clone(), value.clone())),
            Want::User(user) => grant.user = Some(user.clone()),
            Want::Workdir(dir) => grant.workdir = Some(dir.clone()),
            Want::Dns(server) => grant.dns.push(server.clone()),
            Want::DnsSearch(domain) => grant.dns_search.push(domain.clone()),
            Want::DnsOption(option) => grant.dns_options.push(option.clone()),
            Want::GroupAdd(group) => grant.group_add.push(group.clone()),
            Want::PidsLimit(limit) => grant.pids_limit = Some(*limit),
            Want::Sysctl(key, value) => {
                grant.sysctls.insert(key.clone(), value.clone());
            }
            Want::Cpus(nano) => match resources.nano_cpus {
                Some(limit) if *nano > limit => decision.warnings.push(format!(
                    "{written} asks for more CPUs than environment class {class:?} gives ({}); the class's limit applies",
                    limit as f64 / 1e9
                )),
                _ => grant.nano_cpus = Some(*nano),
            },
            Want::Memory(bytes) => match resources.memory_bytes {
                Some(limit) if *bytes > limit => decision.warnings.push(format!(
                    "{written} asks for more memory than environment class {class:?} gives ({limit} bytes); the class's limit applies"
                )),
                _ => grant.memory_bytes = Some(*bytes),
            },
            Want::Ignored { reason, warn: true } => decision.warnings.push(format!("{written} was ignored: {reason}")),
            Want::Ignored { reason, warn: false } => decision.notes.push(format!("{written} was ignored: {reason}")),
            Want::Refused(reason) => decision.refusals.push(format!("{written}: {reason}")),
        }
    }
    decision
}

fn mount_decision(written: &str, mount: &MountSpec, policy: &ClassPolicy, repository: &Repository, decision: &mut Decision) {
    match mount {
        MountSpec::Volume { target } => {
            push_once(&mut decision.grant.volumes, target);
            decision.notes.push(format!(
                "{written}: a volume of this container alone at {target} (not shared with other instances, not in the snapshot)"
            ));
        }
        MountSpec::Tmpfs { target, options } => {
            decision.grant.tmpfs.insert(target.clone(), options.clone());
        }
        MountSpec::Bind { source, target } => match repository.inside(source) {
            Ok(Some(path)) => {
                decision.notes.push(format!("{written}: {source} is in the repository; it is copied into the container at {target}"));
                decision.grant.copies.push(RepositoryCopy { source: path, target: target.clone() });
            }
            Ok(None) => match policy.host_bind_mounts {
                HostBindMounts::Warn => decision.warnings.push(format!(
                    "{written} was left out: a bind mount of a host path ({source}) is never granted to a prebuild"
                )),
                HostBindMounts::Refuse => decision.refusals.push(format!(
                    "{written} is a bind mount of a host path ({source}), which is never granted; environment class {:?} has host_bind_mounts = \"refuse\" (with \"warn\" the prebuild goes on without it)",
                    policy.class_name
                )),
            },
            Err(reason) => decision.warnings.push(format!("{written} was left out: {source}: {reason}")),
        },
    }
}

fn push_once(list: &mut Vec<String>, value: &str) {
    if !list.iter().any(|v| v == value) {
        list.push(value.to_string());
    }
}

#[cfg(test)]
mod tests;
