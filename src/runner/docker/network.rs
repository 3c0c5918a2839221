//! The docker runner's networks: where its prebuild containers and warm
//! instances live, so that they reach the internet but not the runner's
//! host, its link-local addresses or the private ranges (see
//! `runner::egress`).
//!
//! **Networks.** Each runner has a bridge network of its own,
//! `prebuildd-<runner id>`, with traffic between its containers off (Docker's
//! `enable_icc=false`), so instances do not see each other. A class with
//! `allow_egress` gets a network per distinct set of allowances,
//! `prebuildd-<runner id>-<digest>`, so that what it allows reaches its
//! containers alone. The bridge interface is named by the runner
//! (`pbd<digest>`), which is what the rules match on, and every network is
//! labelled with the runner and its allowances, which is all its rules
//! need: after a restart they are made again from the labels.
//!
//! **Rules.** One nftables table per network, `inet prebuildd_<bridge>`,
//! replaced whole in one transaction: for traffic that comes in from its
//! bridge, the forward hook (to other machines) rejects the blocked ranges,
//! and the input hook (to this host: any of its addresses, the gateway
//! included; such traffic never passes Docker's `FORWARD` chain) rejects
//! everything; both first let through replies, DNS to the host's resolvers
//! (Docker's embedded DNS forwards queries from the container's namespace)
//! and the class's allowances. A table stays while its network exists, so
//! containers that outlive the process (warm instances, claimed ones) stay
//! confined.
//!
//! **The check.** Before a network's first container, the runner starts a
//! probe container on it (an image it builds, one tiny static program that
//! waits) and, from inside that container's network namespace, tries a
//! port it listens on at every address of this host and the gateway.
//! Reaching any is a refusal; so is a table that cannot be installed. A
//! refused network fails the prebuilds (and degrades the pools) that need
//! it, with the reason and the fix, until the runner is restarted.
//!
//! `network_isolation = false` on the runner skips all of this: containers
//! use Docker's default bridge, and every prebuild's log says so.

use super::engine::{Engine, ListedNetwork};
use super::labels;
use crate::catalog::EgressAllowance;
use crate::runner::egress::{self, netns, Exceptions};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt::Write;
use std::net::IpAddr;
use std::time::Duration;

/// The image of probe containers, made by the runner (no registry needed).
pub const PROBE_IMAGE: &str = "prebuildd-network-probe:1";

/// How long a probe's connection may wait for an answer. The rules reject
/// at once; a silent drop (another firewall) waits this long.
const PROBE_PATIENCE: Duration = Duration::from_secs(3);

/// How many times the probe container is started before the check gives up
/// on Docker (and tries again at the next prebuild).
const PROBE_STARTS: usize = 3;

/// What ends every refusal: the way out, and its price.
const OPT_OUT: &str = "or set network_isolation = false on this runner for trusted repositories only";

/// The warning every prebuild of a runner without isolation logs.
pub const NOT_ISOLATED: &str = "warning: network isolation is off on this runner (network_isolation = false): this prebuild's \
     container can reach this host's services, the cloud metadata service and private networks";

/// The log line of a prebuild whose container joins `network`.
pub fn joins(network: &str, allowances: &[EgressAllowance]) -> String {
    let allowed = match allowances.is_empty() {
        true => String::new(),
        false => format!(" (its class allows {})", allowance_label(allowances).replace(',', ", ")),
    };
    format!("the container joins the runner's network {network}: it reaches the internet, not this host, link-local addresses or private networks{allowed}")
}

/// The runner's networks and what it found when it set them up.
#[derive(Debug)]
pub(super) struct Networks {
    runner_id: String,
    pub enabled: bool,
    /// The outcome per network name: `Ok` once set up and checked. Setups
    /// take turns, so a network is checked once.
    checked: tokio::sync::Mutex<HashMap<String, Result<(), String>>>,
}

/// Why a network cannot be used.
enum SetUpError {
    /// Docker failed: worth another try at the next prebuild.
    Transient(String),
    /// Isolation is not in effect: refused until the runner restarts.
    Refused(String),
}

/// A short, stable digest of `text` in hex.
fn digest(text: &str, hex_digits: usize) -> String {
    let full = hex::encode(Sha256::digest(text.as_bytes()));
    full[..hex_digits].to_string()
}

/// Allowances in their canonical, sorted spelling (a network's label).
fn allowance_label(allowances: &[EgressAllowance]) -> String {
    let mut sorted: Vec<String> = allowances.iter().map(ToString::to_string).collect();
    sorted.sort();
    sorted.dedup();
    sorted.join(",")
}

/// The network of a runner's containers with these allowances.
pub fn network_name(runner_id: &str, allowances: &[EgressAllowance]) -> String {
    match allowances.is_empty() {
        true => format!("prebuildd-{runner_id}"),
        false => format!("prebuildd-{runner_id}-{}", digest(&allowance_label(allowances), 10)),
    }
}

/// A network's bridge interface: at most 15 characters, as Linux wants.
fn bridge_name(network: &str) -> String {
    format!("pbd{}", digest(network, 12))
}

/// The nftables table of the network whose bridge this is.
pub fn table_name(bridge: &str) -> String {
    format!("prebuildd_{bridge}")
}

/// The table's body for one network: for traffic that comes in from its
/// bridge, the forward hook rejects the blocked ranges and the input hook
/// everything, after the exceptions. A rejected connection fails at once
/// (TCP with a reset: ICMP errors are rate-limited, and a client left
/// without an answer waits for its timeout).
///
/// `within` (a Compose stack's network) lets traffic between the
/// network's own containers through, which bridged traffic needs since
/// Docker's bridges pass it to the `forward` hook too.
fn render(bridge: &str, allowances: &[EgressAllowance], resolvers: &[IpAddr], within: bool) -> String {
    let mut accepts = egress::accept_rules(&Exceptions { allowances: allowances.to_vec(), resolvers: resolvers.to_vec() });
    if within {
        accepts.insert(0, format!("oifname \"{bridge}\" accept"));
    }
    let mut body = egress::blocked_sets(&[]);
    for (hook, last) in [
        (
            "forward",
            &[
                "ip daddr @blocked_ipv4 meta l4proto tcp reject with tcp reset",
                "ip daddr @blocked_ipv4 reject with icmpx admin-prohibited",
                "ip6 daddr @blocked_ipv6 meta l4proto tcp reject with tcp reset",
                "ip6 daddr @blocked_ipv6 reject with icmpx admin-prohibited",
            ][..],
        ),
        ("input", &["meta l4proto tcp reject with tcp reset", "reject with icmpx admin-prohibited"][..]),
    ] {
        let _ = writeln!(body, "\tchain {hook} {{\n\t\ttype filter hook {hook} priority filter; policy accept;");
        let accepts = accepts.iter().filter(|rule| hook == "forward" || !rule.starts_with("oifname"));
        for rule in accepts.map(String::as_str).chain(last.iter().copied()) {
            let _ = writeln!(body, "\t\tiifname \"{bridge}\" {rule}");
        }
        let _ = writeln!(body, "\t}}");
    }
    body
}

/// The probe program for this machine: a static ELF executable that waits
/// for a signal forever, so that its container holds a network namespace
/// for the runner to connect from. No image can be assumed to exist (or be
/// pulled) on the runner's daemon, so the runner makes the smallest one.
fn probe_program() -> Option<Vec<u8>> {
    // The code: pause(2) in a loop on x86-64, ppoll(2) with no descriptors
    // and no timeout in a loop on aarch64 (which has no pause).
    let (machine, code): (u16, &[u8]) = if cfg!(target_arch = "x86_64") {
        // mov eax, 34; syscall; jmp back to the mov
        (0x3e, &[0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7])
    } else if cfg!(target_arch = "aarch64") {
        // mov x0..x4, #0; mov x8, #73; svc #0; b back to the first mov
        #[rustfmt::skip]
        let code: &[u8] = &[
            0x00, 0x00, 0x80, 0xd2, 0x01, 0x00, 0x80, 0xd2, 0x02, 0x00, 0x80, 0xd2, 0x03, 0x00, 0x80, 0xd2,
            0x04, 0x00, 0x80, 0xd2, 0x28, 0x09, 0x80, 0xd2, 0x01, 0x00, 0x00, 0xd4, 0xf9, 0xff, 0xff, 0x17,
        ];
        (0xb7, code)
    } else {
        return None;
    };
    // One ELF header and one loadable segment (the whole file, read and
    // execute), the code right after them.
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56;
    let size = HEADERS + code.len() as u64;
    let mut file = Vec::with_capacity(size as usize);
    file.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    file.extend_from_slice(&2u16.to_le_bytes()); // an executable
    file.extend_from_slice(&machine.to_le_bytes());
    file.extend_from_slice(&1u32.to_le_bytes()); // version
    file.extend_from_slice(&(BASE + HEADERS).to_le_bytes()); // entry
    file.extend_from_slice(&64u64.to_le_bytes()); // program headers' offset
    file.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    file.extend_from_slice(&0u32.to_le_bytes()); // flags
    for half in [64u16, 56, 1, 0, 0, 0] {
        // header size, program header size and count, section header size,
        // count and name index
        file.extend_from_slice(&half.to_le_bytes());
    }
    file.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    file.extend_from_slice(&5u32.to_le_bytes()); // read and execute
    for word in [0, BASE, BASE, size, size, 0x1000] {
        // offset, virtual and physical address, sizes in file and memory,
        // alignment
        file.extend_from_slice(&word.to_le_bytes());
    }
    file.extend_from_slice(code);
    Some(file)
}

impl Networks {
    pub fn new(runner_id: &str, enabled: bool) -> Networks {
        Networks { runner_id: runner_id.to_string(), enabled, checked: tokio::sync::Mutex::default() }
    }

    /// The network containers with these allowances join, set up and
    /// checked on first use; `None` when isolation is off (Docker's default
    /// bridge). `Err` says why the runner refuses.
    pub async fn for_allowances(&self, engine: &Engine, allowances: &[EgressAllowance]) -> Result<Option<String>, String> {
        if !self.enabled {
            return Ok(None);
        }
        let name = network_name(&self.runner_id, allowances);
        let mut checked = self.checked.lock().await;
        if let Some(outcome) = checked.get(&name) {
            return outcome.clone().map(|()| Some(name));
        }
        match self.set_up(engine, &name, allowances).await {
            Ok(()) => {
                tracing::info!(runner = %self.runner_id, network = %name, "docker runner: network isolation is in effect");
                checked.insert(name.clone(), Ok(()));
                Ok(Some(name))
            }
            Err(SetUpError::Transient(error)) => Err(format!("cannot set up the runner's network {name}: {error}")),
            Err(SetUpError::Refused(error)) => {
                tracing::error!(runner = %self.runner_id, network = %name, "docker runner: {error}");
                checked.insert(name, Err(error.clone()));
                Err(error)
            }
        }
    }

    async fn set_up(&self, engine: &Engine, name: &str, allowances: &[EgressAllowance]) -> Result<(), SetUpError> {
        let bridge = bridge_name(name);
        let network_labels = HashMap::from([
            (labels::RUNNER_ID.to_string(), self.runner_id.clone()),
            (labels::ROLE.to_string(), labels::ROLE_NETWORK.to_string()),
            (labels::ALLOW_EGRESS.to_string(), allowance_label(allowances)),
        ]);
        // Created only when missing: Docker (before API 1.44) does not keep
        // names unique, so a second creation would fail on the bridge's name.
        // One made meanwhile by another process of the runner is as good.
        let network = match engine.network(name).await.map_err(SetUpError::Transient)? {
            Some(network) => network,
            None => {
                let created = engine.create_network(name, &bridge, network_labels).await;
                match engine.network(name).await.map_err(SetUpError::Transient)? {
                    Some(network) => network,
                    None => return Err(SetUpError::Transient(created.err().unwrap_or_else(|| "it was removed while being set up".into()))),
                }
            }
        };
        if network.bridge.as_deref() != Some(bridge.as_str()) {
            return Err(SetUpError::Refused(format!(
                "network isolation: the network {name} exists with another bridge interface than the runner's {bridge} \
                 (remove it with docker network rm {name} and restart prebuildd), {OPT_OUT}"
            )));
        }
        install_rules(&bridge, allowances, false).await?;
        self.probe(engine, &network, &bridge).await
    }

    /// The network of one Compose stack (`project`), made for it with the
    /// rules of its class's allowances and traffic within the stack let
    /// through; `None` when isolation is off (Compose makes one). The
    /// runner's network for the same allowances is set up and checked first:
    /// its probe is what shows that the rules hold on this host.
    pub async fn for_stack(&self, engine: &Engine, project: &str, allowances: &[EgressAllowance]) -> Result<Option<String>, String> {
        if self.for_allowances(engine, allowances).await?.is_none() {
            return Ok(None);
        }
        let bridge = bridge_name(project);
        let network_labels = HashMap::from([
            (labels::RUNNER_ID.to_string(), self.runner_id.clone()),
            (labels::ROLE.to_string(), labels::ROLE_NETWORK.to_string()),
            (labels::ALLOW_EGRESS.to_string(), allowance_label(allowances)),
            (labels::COMPOSE_PROJECT.to_string(), project.to_string()),
        ]);
        // Sweeps wait, so that a network is never removed while it is made.
        let _setups = self.checked.lock().await;
        if engine.network(project).await?.is_none() {
            engine.create_bridge(project, &bridge, network_labels, true).await?;
        }
        let installed = install_rules(&bridge, allowances, true).await;
        if let Err(SetUpError::Refused(error) | SetUpError::Transient(error)) = installed {
            let _ = engine.remove_network(project).await;
            return Err(error);
        }
        Ok(Some(project.to_string()))
    }

    /// Removes the networks of a Compose stack with their rules.
    pub async fn remove_stack(&self, engine: &Engine, project: &str) -> Result<(), String> {
        for network in engine.networks(&[(labels::RUNNER_ID, self.runner_id.as_str()), (labels::COMPOSE_PROJECT, project)]).await? {
            engine.remove_network(&network.name).await?;
            if let Some(bridge) = &network.bridge {
                remove_rules(bridge).await?;
            }
        }
        Ok(())
    }

    /// After a restart: probe containers a previous run left are removed,
    /// and so are the runner's networks that no container uses any more
    /// (but the one every class without allowances shares) with their
    /// rules; the rules of the rest are installed again (a reboot empties
    /// the tables, and containers that outlived the process, warm and
    /// claimed instances, must stay confined).
    pub async fn sweep(&self, engine: &Engine) -> Result<(), String> {
        // Setups wait: a network is never set up while it could be swept.
        let _setups = self.checked.lock().await;
        let probes = [(labels::RUNNER_ID, self.runner_id.as_str()), (labels::ROLE, labels::ROLE_PROBE)];
        for container in engine.containers(&probes).await? {
            engine.remove_container(&container.id).await?;
        }
        let ours = [(labels::RUNNER_ID, self.runner_id.as_str()), (labels::ROLE, labels::ROLE_NETWORK)];
        let shared = network_name(&self.runner_id, &[]);
        for network in engine.networks(&ours).await? {
            let Some(bridge) = network.bridge.clone() else { continue };
            // A stack's created (stopped) containers are not attached yet,
            // and still need their network.
            let stack = network.labels.get(labels::COMPOSE_PROJECT);
            let stack_in_use = match stack {
                Some(project) => !engine.containers(&[(labels::COMPOSE_PROJECT, project.as_str())]).await?.is_empty(),
                None => false,
            };
            if network.containers == 0 && network.name != shared && !stack_in_use {
                tracing::info!(network = %network.name, "docker runner: removing a network no container uses");
                engine.remove_network(&network.name).await?;
                if let Err(error) = remove_rules(&bridge).await {
                    tracing::warn!(network = %network.name, %error, "docker runner: cannot remove a network's rules");
                }
                continue;
            }
            let label = network.labels.get(labels::ALLOW_EGRESS).map(String::as_str).unwrap_or_default();
            // A label this runner cannot read allows nothing.
            let allowances: Vec<EgressAllowance> =
                label.split(',').filter(|t| !t.is_empty()).filter_map(|t| EgressAllowance::parse(t).ok()).collect();
            // A refusal is logged here and found again by the network's check.
            let within = network.labels.contains_key(labels::COMPOSE_PROJECT);
            if let Err(SetUpError::Refused(error) | SetUpError::Transient(error)) = install_rules(&bridge, &allowances, within).await {
                tracing::warn!(runner = %self.runner_id, network = %network.name, "docker runner: {error}");
            }
        }
        Ok(())
    }
}

/// Replaces the table of the network on `bridge` with its rules.
async fn install_rules(bridge: &str, allowances: &[EgressAllowance], within: bool) -> Result<(), SetUpError> {
    let resolvers = netns::host_resolvers().await;
    let script = egress::replace_table(&table_name(bridge), &render(bridge, allowances, &resolvers, within));
    egress::run_nft("nft", &["-f", "-"], &script).await.map_err(|error| {
        let fix = match error.ends_with("is not installed") {
            true => "install the nftables package and restart prebuildd".to_string(),
            false => "the runner must run as root (or with CAP_NET_ADMIN) on the Docker daemon's machine; restart prebuildd when it does"
                .to_string(),
        };
        SetUpError::Refused(format!(
            "network isolation: the runner keeps its containers off this host and private networks with nftables rules, \
                 and cannot install them ({error}): {fix}, {OPT_OUT}"
        ))
    })
}

/// Removes the table of the network on `bridge`; a missing one is fine.
pub async fn remove_rules(bridge: &str) -> Result<(), String> {
    let table = table_name(bridge);
    egress::run_nft("nft", &["-f", "-"], &format!("table inet {table} {{}}\ndelete table inet {table}\n")).await
}

impl Networks {
    /// Starts a probe container on the network and, from inside it, tries a
    /// port listening on this host at each of its addresses.
    async fn probe(&self, engine: &Engine, network: &ListedNetwork, bridge: &str) -> Result<(), SetUpError> {
        let refused = |reason: String| {
            SetUpError::Refused(format!(
                "network isolation could not be checked on network {} ({reason}): the runner must run as root on the Docker \
                 daemon's machine (docker_host on this machine), {OPT_OUT}",
                network.name
            ))
        };
        let listener = netns::probe_listener().await.map_err(refused)?;
        let port = listener.local_addr().map_err(|e| refused(e.to_string()))?.port();
        if engine.image(PROBE_IMAGE).await.map_err(SetUpError::Transient)?.is_none() {
            let program = probe_program().ok_or_else(|| refused("the probe program exists for x86-64 and aarch64 only".into()))?;
            let dockerfile = b"FROM scratch\nCOPY probe /probe\nCMD [\"/probe\"]\n";
            let files = [("Dockerfile", &dockerfile[..], 0o644), ("probe", program.as_slice(), 0o755)];
            let image_labels = HashMap::from([(labels::ROLE.to_string(), labels::ROLE_PROBE.to_string())]);
            engine
                .build(PROBE_IMAGE, &files, image_labels)
                .await
                .map_err(|e| SetUpError::Transient(format!("cannot build {PROBE_IMAGE}: {e}")))?;
        }
        let container_labels = HashMap::from([
            (labels::RUNNER_ID.to_string(), self.runner_id.clone()),
            (labels::ROLE.to_string(), labels::ROLE_PROBE.to_string()),
        ]);
        // A daemon under load can fail to start a container ("cannot start
        // a stopped process"): a few tries, each a container of its own,
        // and then a failure of Docker's, not of isolation.
        let mut names = Vec::new();
        let mut started = Err(String::new());
        for _ in 0..PROBE_STARTS {
            let name = format!("prebuildd-probe-{}", uuid::Uuid::new_v4());
            started = engine.run_confined(&name, PROBE_IMAGE, &network.name, container_labels.clone()).await;
            names.push(name);
            if started.is_ok() {
                break;
            }
        }
        let attempts = match &started {
            Ok((_, pid)) => {
                let targets = netns::probe_targets(port, &network.gateways);
                Some(netns::connect_from(netns::netns_of(*pid), &targets, PROBE_PATIENCE).await)
            }
            Err(_) => None,
        };
        for name in &names {
            if let Err(error) = engine.remove_container(name).await {
                tracing::warn!(container = %name, %error, "docker runner: cannot remove a probe container");
            }
        }
        drop(listener);
        started.map_err(|error| SetUpError::Transient(format!("the probe container did not start: {error}")))?;
        let attempts = attempts.unwrap_or_else(|| Ok(Vec::new())).map_err(refused)?;
        match netns::reached(&attempts) {
            None => Ok(()),
            Some(reached) => Err(SetUpError::Refused(format!(
                "network isolation is not in effect on network {}: {reached}, although the runner's rules (nftables table {}) \
                 reject that: check what else changes this host's netfilter rules, {OPT_OUT}",
                network.name,
                table_name(bridge)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_docker_linux_and_nftables() {
        let runner = "3f1a2b3c-4d5e-4f60-8a7b-1c2d3e4f5a6b";
        assert_eq!(network_name(runner, &[]), format!("prebuildd-{runner}"));
        let allowed = [EgressAllowance::parse("192.168.7.9:5000").unwrap(), EgressAllowance::parse("10.1.2.0/24").unwrap()];
        let reordered = [allowed[1], allowed[0]];
        assert_eq!(network_name(runner, &allowed), network_name(runner, &reordered), "the same allowances share a network");
        assert_ne!(network_name(runner, &allowed), network_name(runner, &allowed[..1]));
        assert_eq!(network_name(runner, &allowed).len(), "prebuildd-".len() + runner.len() + 11);
        let bridge = bridge_name(&network_name(runner, &[]));
        assert!(bridge.len() <= 15 && bridge.starts_with("pbd"), "{bridge}");
        assert_eq!(table_name(&bridge), format!("prebuildd_{bridge}"));
        assert_eq!(allowance_label(&allowed), "10.1.2.0/24,192.168.7.9:5000");
    }

    #[test]
    fn a_networks_rules_match_its_bridge_only() {
        let allowed = vec![EgressAllowance::parse("10.1.2.0/24").unwrap()];
        let body = render("pbdaaa", &allowed, &["10.255.255.53".parse().unwrap()], false);
        let expected = [
            "\tchain forward {",
            "\t\ttype filter hook forward priority filter; policy accept;",
            "\t\tiifname \"pbdaaa\" ct state established,related accept",
            "\t\tiifname \"pbdaaa\" ip daddr 10.255.255.53 meta l4proto { tcp, udp } th dport 53 accept",
            "\t\tiifname \"pbdaaa\" ip daddr 10.1.2.0/24 accept",
            "\t\tiifname \"pbdaaa\" ip daddr @blocked_ipv4 meta l4proto tcp reject with tcp reset",
            "\t\tiifname \"pbdaaa\" ip daddr @blocked_ipv4 reject with icmpx admin-prohibited",
            "\t\tiifname \"pbdaaa\" ip6 daddr @blocked_ipv6 meta l4proto tcp reject with tcp reset",
            "\t\tiifname \"pbdaaa\" ip6 daddr @blocked_ipv6 reject with icmpx admin-prohibited",
            "\t}",
            "\tchain input {",
            "\t\ttype filter hook input priority filter; policy accept;",
            "\t\tiifname \"pbdaaa\" ct state established,related accept",
            "\t\tiifname \"pbdaaa\" ip daddr 10.255.255.53 meta l4proto { tcp, udp } th dport 53 accept",
            "\t\tiifname \"pbdaaa\" ip daddr 10.1.2.0/24 accept",
            "\t\tiifname \"pbdaaa\" meta l4proto tcp reject with tcp reset",
            "\t\tiifname \"pbdaaa\" reject with icmpx admin-prohibited",
            "\t}",
        ]
        .join("\n");
        assert!(body.ends_with(&format!("{expected}\n")), "{body}");
        assert!(body.starts_with("\tset blocked_ipv4 {"), "{body}");
    }

    #[test]
    fn the_probe_program_is_one_loadable_segment() {
        let program = probe_program().expect("a probe program for this machine");
        assert_eq!(&program[..4], b"\x7fELF");
        let entry = u64::from_le_bytes(program[24..32].try_into().unwrap());
        assert_eq!(entry, 0x40_0000 + 120, "the code follows the headers");
        let file_size = u64::from_le_bytes(program[64 + 32..64 + 40].try_into().unwrap());
        assert_eq!(file_size, program.len() as u64);
    }
}
