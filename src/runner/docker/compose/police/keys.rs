//! Every key of a Compose service the runner knows, and what it does with
//! each: the one place that says so (the README's table lists the same
//! keys, and a test checks that it does).

/// What the runner does with a key of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Kept as written.
    Honoured,
    /// Read by the runner (policy, limits, mounts, networks, build).
    Runner,
    /// Left out; the prebuild's warning says why.
    Warned(&'static str),
    /// Left out; the log says why.
    Noted(&'static str),
    /// The prebuild fails, saying why.
    Refused(&'static str),
}

/// Every key of a Compose service the runner knows, and what it does with it.
pub const SERVICE_KEYS: &[(&str, Keep)] = &[
    ("image", Keep::Runner),
    ("build", Keep::Runner),
    ("command", Keep::Honoured),
    ("entrypoint", Keep::Honoured),
    ("environment", Keep::Honoured),
    ("env_file", Keep::Runner),
    ("labels", Keep::Honoured),
    ("depends_on", Keep::Honoured),
    ("healthcheck", Keep::Honoured),
    ("working_dir", Keep::Honoured),
    ("user", Keep::Honoured),
    ("hostname", Keep::Honoured),
    ("domainname", Keep::Honoured),
    ("extra_hosts", Keep::Honoured),
    ("dns", Keep::Honoured),
    ("dns_search", Keep::Honoured),
    ("dns_opt", Keep::Honoured),
    ("expose", Keep::Honoured),
    ("links", Keep::Honoured),
    ("init", Keep::Honoured),
    ("read_only", Keep::Honoured),
    ("restart", Keep::Honoured),
    ("shm_size", Keep::Honoured),
    ("stdin_open", Keep::Honoured),
    ("tty", Keep::Honoured),
    ("stop_signal", Keep::Honoured),
    ("stop_grace_period", Keep::Honoured),
    ("sysctls", Keep::Honoured),
    ("ulimits", Keep::Honoured),
    ("pids_limit", Keep::Honoured),
    ("tmpfs", Keep::Runner),
    ("group_add", Keep::Honoured),
    ("cpu_shares", Keep::Honoured),
    ("cpuset", Keep::Honoured),
    ("mem_reservation", Keep::Honoured),
    ("oom_score_adj", Keep::Honoured),
    ("platform", Keep::Honoured),
    ("profiles", Keep::Honoured),
    ("pull_policy", Keep::Honoured),
    ("volumes", Keep::Runner),
    ("volumes_from", Keep::Runner),
    ("networks", Keep::Runner),
    ("network_mode", Keep::Runner),
    ("privileged", Keep::Runner),
    ("cap_add", Keep::Runner),
    ("cap_drop", Keep::Runner),
    ("security_opt", Keep::Runner),
    ("devices", Keep::Runner),
    ("pid", Keep::Runner),
    ("ipc", Keep::Runner),
    ("uts", Keep::Runner),
    ("userns_mode", Keep::Runner),
    ("cgroup", Keep::Runner),
    ("cpus", Keep::Runner),
    ("mem_limit", Keep::Runner),
    ("deploy", Keep::Runner),
    ("ports", Keep::Warned("no port of the runner's host is published; forwarding ports is the client's business")),
    ("container_name", Keep::Warned("every stack names its containers after its own project, so that two stacks never collide")),
    ("logging", Keep::Warned("containers log to Docker's default driver, which the runner reads")),
    ("memswap_limit", Keep::Warned("the class's limits apply as cpus and mem_limit")),
    ("cpu_quota", Keep::Warned("the class's limits apply as cpus and mem_limit")),
    ("cpu_period", Keep::Warned("the class's limits apply as cpus and mem_limit")),
    ("cpu_count", Keep::Warned("the class's limits apply as cpus and mem_limit")),
    ("cpu_percent", Keep::Warned("the class's limits apply as cpus and mem_limit")),
    ("oom_kill_disable", Keep::Warned("the kernel may end a service that goes past its memory limit")),
    ("mac_address", Keep::Noted("Docker chooses the address on the stack's network")),
    ("scale", Keep::Noted("every service runs one container in a stack")),
    ("isolation", Keep::Noted("it applies to Windows containers only")),
    ("external_links", Keep::Refused("it links to containers outside the stack, which a stack never reaches")),
    ("cgroup_parent", Keep::Refused("a stack's containers stay in Docker's own cgroups")),
    ("device_cgroup_rules", Keep::Refused("it grants access to host devices by number; use devices under the class's allow_devices")),
    ("runtime", Keep::Refused("a stack runs on the daemon's default runtime")),
    ("storage_opt", Keep::Refused("a stack's containers get the daemon's default storage")),
    ("secrets", Keep::Refused("Compose makes secrets bind mounts of host files, which are never granted")),
    ("configs", Keep::Refused("Compose makes configs bind mounts of host files, which are never granted")),
    ("credential_spec", Keep::Refused("it applies to Windows containers only")),
];

/// What the runner does with a service key; `None` for one it does not know.
pub fn keep(key: &str) -> Option<Keep> {
    SERVICE_KEYS.iter().find(|(name, _)| *name == key).map(|(_, keep)| *keep)
}
