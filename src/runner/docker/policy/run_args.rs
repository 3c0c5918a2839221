//! `runArgs`: `docker run` options, parsed one by one rather than passed
//! through, so that each is honoured, put before the policy, ignored with a
//! reason, or refused naming it. Docker's own spellings are understood:
//! `--flag value`, `--flag=value`, short flags with their value attached
//! (`-eNAME=value`) and grouped boolean short flags (`-it`).

use super::mounts::{parse_mount_string, parse_volume_flag, MountSpec};
use super::variables::Variables;
use super::{Ask, Repository, Ulimit, Want};
use crate::config::{capability_name, security_opt};

/// How a flag takes its value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arity {
    /// `--init`, `--init=true`, `--init=false`.
    Boolean,
    /// `--env NAME=value` or `--env=NAME=value`.
    Value,
}

/// The long name and arity of a flag Docker knows (short names mapped).
fn flag_of(name: &str) -> Option<(&'static str, Arity)> {
    use Arity::*;
    let long = match name {
        "-e" => "--env",
        "-v" => "--volume",
        "-u" => "--user",
        "-w" => "--workdir",
        "-h" => "--hostname",
        "-l" => "--label",
        "-m" => "--memory",
        "-p" => "--publish",
        "-P" => "--publish-all",
        "-i" => "--interactive",
        "-t" => "--tty",
        "-d" => "--detach",
        "--net" => "--network",
        "--dns-opt" => "--dns-option",
        other => other,
    };
    const BOOLEANS: &[&str] = &[
        "--init",
        "--privileged",
        "--rm",
        "--interactive",
        "--tty",
        "--detach",
        "--publish-all",
        "--read-only",
        "--no-healthcheck",
        "--oom-kill-disable",
    ];
    const VALUES: &[&str] = &[
        "--env",
        "--env-file",
        "--add-host",
        "--hostname",
        "--shm-size",
        "--ulimit",
        "--label",
        "--name",
        "--user",
        "--cpus",
        "--memory",
        "--memory-swap",
        "--memory-reservation",
        "--memory-swappiness",
        "--cpu-shares",
        "--cpuset-cpus",
        "--cpuset-mems",
        "--cpu-period",
        "--cpu-quota",
        "--cap-add",
        "--cap-drop",
        "--security-opt",
        "--device",
        "--gpus",
        "--network",
        "--pid",
        "--ipc",
        "--uts",
        "--userns",
        "--cgroupns",
        "--volume",
        "--mount",
        "--tmpfs",
        "--publish",
        "--expose",
        "--restart",
        "--platform",
        "--entrypoint",
        "--log-driver",
        "--log-opt",
        "--workdir",
        "--dns",
        "--dns-search",
        "--dns-option",
        "--group-add",
        "--pids-limit",
        "--sysctl",
        "--stop-signal",
        "--stop-timeout",
        "--health-cmd",
        "--health-interval",
        "--health-retries",
        "--health-timeout",
        "--health-start-period",
        "--runtime",
        "--volumes-from",
        "--link",
        "--cgroup-parent",
        "--device-cgroup-rule",
        "--oom-score-adj",
        "--storage-opt",
        "--isolation",
        "--cidfile",
        "--label-file",
        "--mac-address",
        "--ip",
        "--ip6",
        "--network-alias",
    ];
    if let Some(name) = BOOLEANS.iter().find(|n| **n == long) {
        return Some((name, Boolean));
    }
    VALUES.iter().find(|n| **n == long).map(|name| (*name, Value))
}

/// What `runArgs` ask for, in order.
pub fn asks(run_args: &[String], variables: &Variables, repository: &Repository) -> Vec<Ask> {
    let mut asks = Vec::new();
    let mut i = 0;
    while i < run_args.len() {
        let token = run_args[i].as_str();
        i += 1;
        let refused = |reason: &str| Ask { written: format!("runArgs {token}"), want: Want::Refused(reason.to_string()) };
        if !token.starts_with('-') || token == "-" || token == "--" {
            asks.push(refused("is not a docker run option (runArgs hold options only; the image and command come from the configuration)"));
            continue;
        }
        // Grouped boolean short flags: `-it`.
        if !token.starts_with("--") && token.len() > 2 && token[1..].chars().all(|c| "itdP".contains(c)) {
            for c in token[1..].chars() {
                let short = format!("-{c}");
                if let Some((name, _)) = flag_of(&short) {
                    asks.extend(flag_asks(name, &format!("runArgs {short}"), "true", variables, repository));
                }
            }
            continue;
        }
        let (name, attached) = if let Some(rest) = token.strip_prefix("--") {
            match rest.split_once('=') {
                Some((name, value)) => (format!("--{name}"), Some(value.to_string())),
                None => (token.to_string(), None),
            }
        } else if token.len() > 2 {
            (token[..2].to_string(), Some(token[2..].trim_start_matches('=').to_string()))
        } else {
            (token.to_string(), None)
        };
        let Some((long, arity)) = flag_of(&name) else {
            asks.push(refused("is not a docker run option the runner knows; remove it from runArgs"));
            continue;
        };
        let (value, written) = match (arity, attached) {
            (_, Some(value)) => (value, format!("runArgs {token}")),
            (Arity::Boolean, None) => ("true".to_string(), format!("runArgs {token}")),
            (Arity::Value, None) => match run_args.get(i) {
                Some(value) => {
                    i += 1;
                    (value.clone(), format!("runArgs {token} {value}"))
                }
                None => {
                    asks.push(refused("needs a value"));
                    continue;
                }
            },
        };
        if arity == Arity::Boolean && !matches!(value.as_str(), "true" | "false") {
            asks.push(Ask { written, want: Want::Refused("takes true or false".into()) });
            continue;
        }
        asks.extend(flag_asks(long, &written, &variables.resolve(&value), variables, repository));
    }
    asks
}

/// The asks of one flag with its value (variables resolved).
fn flag_asks(name: &str, written: &str, value: &str, variables: &Variables, repository: &Repository) -> Vec<Ask> {
    let one = |want: Want| vec![Ask { written: written.to_string(), want }];
    let ignored = |reason: &str, warn: bool| one(Want::Ignored { reason: reason.to_string(), warn });
    let refused = |reason: &str| one(Want::Refused(reason.to_string()));
    let on = value == "true";
    match name {
        "--env" => match value.split_once('=') {
            Some((key, val)) => one(Want::Env(key.to_string(), val.to_string())),
            None => match variables.local_env.get(value) {
                Some(val) => one(Want::Env(value.to_string(), val.clone())),
                None => one(Want::EnvFromRunner(value.to_string())),
            },
        },
        "--env-file" => env_file(written, value, repository),
        "--init" if on => one(Want::Init),
        "--privileged" if on => one(Want::Privileged),
        "--init" | "--privileged" => Vec::new(),
        "--add-host" => one(Want::ExtraHost(value.to_string())),
        "--hostname" => one(Want::Hostname(value.to_string())),
        "--shm-size" => match bytes_of(value) {
            Some(bytes) => one(Want::ShmSize(bytes as i64)),
            None => refused("is not a size (like 1g or 512m)"),
        },
        "--ulimit" => match ulimit_of(value) {
            Some(limit) => one(Want::Ulimit(limit)),
            None => refused("is not name=soft[:hard]"),
        },
        "--label" => {
            let (key, val) = value.split_once('=').unwrap_or((value, ""));
            one(Want::Label(key.to_string(), val.to_string()))
        }
        "--name" => ignored("the runner names its containers", false),
        "--user" => one(Want::User(value.to_string())),
        "--workdir" => one(Want::Workdir(value.to_string())),
        "--cpus" => match value.parse::<f64>() {
            Ok(cpus) if cpus.is_finite() && cpus > 0.0 => one(Want::Cpus((cpus * 1e9).round() as i64)),
            _ => refused("is not a number of CPUs"),
        },
        "--memory" => match bytes_of(value) {
            Some(bytes) if bytes >= 6 << 20 => one(Want::Memory(bytes)),
            _ => refused("is not a memory size of at least 6m"),
        },
        "--memory-swap"
        | "--memory-reservation"
        | "--memory-swappiness"
        | "--cpu-shares"
        | "--cpuset-cpus"
        | "--cpuset-mems"
        | "--cpu-period"
        | "--cpu-quota" => ignored("the environment class sets the limits (cpus and memory)", true),
        "--cap-add" => match capability_name(value) {
            Some(capability) => one(Want::Capability(capability)),
            None => refused("is not a Linux capability Docker knows"),
        },
        "--cap-drop" => match capability_name(value) {
            Some(capability) => one(Want::CapDrop(capability)),
            None => refused("is not a Linux capability Docker knows"),
        },
        "--security-opt" => match security_opt(value) {
            Some(option) => one(Want::SecurityOpt(option)),
            None => refused("is not a security option Docker knows"),
        },
        "--device" => {
            let host_path = value.split(':').next().unwrap_or(value).to_string();
            one(Want::Device { host_path, spec: value.to_string() })
        }
        "--gpus" => one(Want::Gpus(value.to_string())),
        "--network" => match value {
            "host" => one(Want::HostNetwork),
            "bridge" | "default" => ignored("the runner decides the container's network", false),
            _ => refused("the runner decides the container's network (only host can be asked for, with allow_host_network)"),
        },
        "--pid" | "--ipc" | "--uts" | "--userns" | "--cgroupns" if value == "host" => {
            let which = match name {
                "--pid" => "PID",
                "--ipc" => "IPC",
                "--uts" => "UTS",
                "--userns" => "user",
                _ => "cgroup",
            };
            one(Want::HostNamespace(which))
        }
        "--ipc" if matches!(value, "private" | "shareable" | "none") => ignored("the container has an IPC namespace of its own", false),
        "--cgroupns" if value == "private" => ignored("the container has a cgroup namespace of its own", false),
        "--pid" | "--ipc" | "--uts" | "--userns" | "--cgroupns" => refused("shares another container's namespace, which no setting allows"),
        "--volume" => match parse_volume_flag(value) {
            Ok(mount) => one(Want::Mount(mount)),
            Err(reason) => refused(&reason),
        },
        "--mount" => match parse_mount_string(value) {
            Ok(mount) => one(Want::Mount(mount)),
            Err(reason) => refused(&reason),
        },
        "--tmpfs" => {
            let (target, options) = value.split_once(':').unwrap_or((value, ""));
            one(Want::Mount(MountSpec::Tmpfs { target: target.to_string(), options: options.to_string() }))
        }
        "--publish" | "--expose" | "--publish-all" if on || name != "--publish-all" => {
            ignored("no port of the runner's host is published; forwarding ports is the client's business", true)
        }
        "--rm" | "--interactive" | "--tty" | "--detach" | "--publish-all" => ignored("the runner manages the container's lifetime", false),
        "--restart" | "--stop-signal" | "--stop-timeout" => ignored("the runner manages the container's lifetime", false),
        "--health-cmd" | "--health-interval" | "--health-retries" | "--health-timeout" | "--health-start-period" | "--no-healthcheck" => {
            ignored("health checks do not decide anything in a prebuild", false)
        }
        "--platform" => ignored("the image's own platform is used", true),
        "--entrypoint" => {
            ignored("the Dev Containers CLI sets the container's entrypoint (use the image's, or a feature's entrypoint)", true)
        }
        "--log-driver" | "--log-opt" => ignored("the runner's Docker daemon decides how containers log", true),
        "--dns" => one(Want::Dns(value.to_string())),
        "--dns-search" => one(Want::DnsSearch(value.to_string())),
        "--dns-option" => one(Want::DnsOption(value.to_string())),
        "--group-add" => one(Want::GroupAdd(value.to_string())),
        "--pids-limit" => match value.parse::<i64>() {
            Ok(limit) => one(Want::PidsLimit(limit)),
            Err(_) => refused("is not a number"),
        },
        "--sysctl" => match value.split_once('=') {
            Some((key, val)) => one(Want::Sysctl(key.to_string(), val.to_string())),
            None => refused("is not name=value"),
        },
        "--read-only" if !on => Vec::new(),
        "--read-only" => refused("a read-only root file system cannot take the workspace, which is copied into the container"),
        "--oom-kill-disable" if !on => Vec::new(),
        "--runtime" | "--isolation" => refused("the runner decides the container runtime"),
        "--volumes-from" | "--link" => refused("a prebuild's container reaches no other container"),
        "--cgroup-parent" | "--device-cgroup-rule" | "--oom-kill-disable" | "--oom-score-adj" | "--storage-opt" => {
            refused("changes the runner's host settings, which no setting allows")
        }
        "--cidfile" | "--label-file" => refused("reads or writes a file of the runner's host"),
        "--mac-address" | "--ip" | "--ip6" | "--network-alias" => refused("the runner decides the container's network"),
        _ => refused("is not a docker run option the runner knows; remove it from runArgs"),
    }
}

/// `--env-file`: a file of the repository is read (its `NAME=value`
/// lines); a file elsewhere on the runner's host is not.
fn env_file(written: &str, value: &str, repository: &Repository) -> Vec<Ask> {
    let ask = |want: Want| Ask { written: written.to_string(), want };
    let path = match repository.inside(value) {
        Ok(Some(path)) => path,
        Ok(None) => {
            let reason = format!("{value} is a file of the runner's host, not of the repository, and is not read");
            return vec![ask(Want::Ignored { reason, warn: true })];
        }
        Err(reason) => return vec![ask(Want::Refused(format!("{value}: {reason}")))],
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(|line| line.split_once('='))
            .map(|(key, val)| ask(Want::Env(key.trim().to_string(), val.to_string())))
            .collect(),
        Err(error) => vec![ask(Want::Refused(format!("cannot read {value}: {error}")))],
    }
}

/// A size in Docker's units (`512m`, `1g`, `1.5GB`, `1048576`; binary).
pub fn bytes_of(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier: u64 = match unit.trim_end_matches('b').trim_end_matches('i') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return None,
    };
    let bytes = number * multiplier as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// `name=soft[:hard]` (`-1` is unlimited).
fn ulimit_of(text: &str) -> Option<Ulimit> {
    let (name, limits) = text.split_once('=')?;
    let (soft, hard) = limits.split_once(':').unwrap_or((limits, limits));
    let (soft, hard) = (soft.parse().ok()?, hard.parse().ok()?);
    (!name.is_empty()).then(|| Ulimit { name: name.to_string(), soft, hard })
}
