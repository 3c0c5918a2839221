//! The configured world the API works in: organizations, runners,
//! environment classes and projects. Read-only at run time; a config reload
//! swaps the whole catalog.

use crate::proto::gitpod::v1::Subject;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub organizations: BTreeMap<String, Organization>,
    pub runners: BTreeMap<String, RunnerConfig>,
    pub environment_classes: BTreeMap<String, EnvironmentClass>,
    pub projects: BTreeMap<String, Project>,
    /// True for the embedded demo configuration (used for start-up hints).
    pub is_demo: bool,
}

#[derive(Debug, Clone)]
pub struct Organization {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerKind {
    Simulated,
    Local,
    Docker,
    /// On another machine: `prebuildd runner` connects to the server.
    Remote,
}

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub id: String,
    pub kind: RunnerKind,
    pub max_concurrent_prebuilds: u32,
    /// Time per phase on the simulated runner.
    pub step_duration: Duration,
    /// Local runner: run lifecycle commands in a sandbox (bubblewrap). Off
    /// only for trusted repositories.
    pub sandbox: bool,
    /// Docker and local runners: prebuilds and warm instances reach the
    /// internet but not this host, link-local addresses or private ranges
    /// (beyond what their class's `allow_egress` names). Off only for
    /// trusted repositories.
    pub network_isolation: bool,
    /// Docker runner settings (defaults for other kinds).
    pub docker: DockerSettings,
    /// Remote runner settings (defaults for other kinds).
    pub remote: RemoteSettings,
}

/// How a remote runner authenticates, and how long it may stay away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSettings {
    /// SHA-256 of the runner's token (the runner sends the token itself).
    pub token_sha256: Option<[u8; 32]>,
    /// How long the runner may be disconnected before its running prebuilds
    /// fail and its pools are DEGRADED.
    pub grace: Duration,
}

impl Default for RemoteSettings {
    fn default() -> Self {
        RemoteSettings { token_sha256: None, grace: Duration::from_secs(60) }
    }
}

/// Where and how the docker runner works.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerSettings {
    /// The Docker endpoint (`unix:///path` or `tcp://host:port`); `None`:
    /// `DOCKER_HOST`, else the default socket.
    pub docker_host: Option<String>,
    /// The Dev Containers CLI (`devcontainer`); `None`: found on `PATH`.
    pub devcontainer_cli: Option<std::path::PathBuf>,
    /// The Docker CLI the Dev Containers CLI runs (`--docker-path`); `None`:
    /// `docker` on `PATH`. It builds with BuildKit.
    pub docker_cli: Option<std::path::PathBuf>,
    /// The image of repositories without a devcontainer.json.
    pub default_image: Option<String>,
    /// The runner's own directory (workspaces, generated configs); `None`:
    /// `prebuildd-runners/<runner id>` beside the data dir, never inside it.
    pub root: Option<std::path::PathBuf>,
    /// The Docker config directory (registry credentials from `docker
    /// login`) the Dev Containers CLI and the Docker CLI use to pull
    /// features and base images; `None`: `DOCKER_CONFIG`, else `~/.docker`
    /// of the user the runner runs as, when it exists.
    pub docker_config: Option<std::path::PathBuf>,
    /// A PEM file of extra CA certificates for registries with a private CA
    /// (passed to the Dev Containers CLI as `NODE_EXTRA_CA_CERTS`).
    pub ca_file: Option<std::path::PathBuf>,
    /// Variables of the runner's environment a devcontainer.json may read
    /// with `${localEnv:NAME}` (and `runArgs -e NAME`); no other variable of
    /// the runner's environment reaches the CLI.
    pub pass_env: Vec<String>,
    /// Where completed snapshots are pushed (`registry.example.com/prebuilds`);
    /// `None`: snapshots stay in this runner's daemon.
    pub registry: Option<crate::runner::docker::registry::RegistryName>,
}

#[derive(Debug, Clone)]
pub struct EnvironmentClass {
    pub id: String,
    pub runner_id: String,
    pub name: String,
    pub resources: Resources,
    /// What a dev container of this class may ask for beyond an
    /// unprivileged container.
    pub policy: ClassPolicy,
}

/// An environment class's allowances: what the docker runner may grant a
/// dev container that asks for it (in its devcontainer.json, `runArgs` or a
/// feature). Anything asked for and not allowed fails the prebuild with a
/// message naming the key and the setting that would allow it. The
/// defaults allow nothing beyond what Docker gives an unprivileged
/// container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassPolicy {
    /// The class's name, for messages (`on environment class "small"`).
    pub class_name: String,
    /// Linux capabilities that may be added, upper case without `CAP_`
    /// (`SYS_PTRACE`), or `ALL`.
    pub allow_capabilities: Vec<String>,
    /// `--security-opt` values that may be set (`seccomp=unconfined`).
    pub allow_security_opt: Vec<String>,
    /// Whether `privileged` may be granted.
    pub allow_privileged: bool,
    /// Host devices that may be passed in (`/dev/fuse`).
    pub allow_devices: Vec<String>,
    /// Whether the container may share the host's network namespace.
    pub allow_host_network: bool,
    /// Whether GPUs may be passed in (`--gpus`).
    pub allow_gpus: bool,
    /// Whether setuid programs (`sudo`) may gain privileges in the
    /// container: containers of the class run without `no-new-privileges`.
    pub allow_new_privileges: bool,
    /// What happens to a bind mount of a path outside the repository.
    pub host_bind_mounts: HostBindMounts,
    /// Destinations in the blocked ranges (private, link-local, this host)
    /// that the class's prebuilds and warm instances may reach anyway: a
    /// private registry or package mirror.
    pub allow_egress: Vec<EgressAllowance>,
}

/// One `allow_egress` entry: a network (an address is a network of one),
/// and optionally the one port allowed there (TCP and UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EgressAllowance {
    /// The network's first address (host bits cleared).
    pub network: std::net::IpAddr,
    pub prefix_len: u8,
    pub port: Option<u16>,
}

impl EgressAllowance {
    /// Reads `10.1.2.0/24`, `192.168.7.9`, `192.168.7.9:5000`,
    /// `10.1.2.0/24:443`, `fd00::/8`, `[fd00::1]:5000` or
    /// `[fd00::/64]:443`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<EgressAllowance, String> {
        let text = text.trim();
        let (network, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or("a [ without its ]")?;
            match after {
                "" => (inside, None),
                _ => (inside, Some(after.strip_prefix(':').ok_or("after ] only :port may follow")?)),
            }
        } else if text.matches(':').count() == 1 {
            let (network, port) = text.split_once(':').unwrap_or((text, ""));
            (network, Some(port))
        } else {
            (text, None)
        };
        let port = match port {
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port > 0 => Some(port),
                _ => return Err(format!("{port:?} is not a port (1 to 65535)")),
            },
            None => None,
        };
        let (address, prefix_len) = match network.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix.parse::<u8>().map_err(|_| format!("{prefix:?} is not a prefix length"))?)),
            None => (network, None),
        };
        let address: std::net::IpAddr = address
            .parse()
            .map_err(|_| format!("{address:?} is not an IP address (write a CIDR like 10.1.2.0/24, with an optional :port)"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix_len = prefix_len.unwrap_or(max);
        if prefix_len > max {
            return Err(format!("/{prefix_len} is longer than an address ({max} bits)"));
        }
        Ok(EgressAllowance { network: first_address(address, prefix_len), prefix_len, port })
    }

    /// Whether the allowance is for IPv4 destinations.
    pub fn is_ipv4(&self) -> bool {
        self.network.is_ipv4()
    }
}

/// An address with the bits past the prefix cleared.
fn first_address(address: std::net::IpAddr, prefix_len: u8) -> std::net::IpAddr {
    match address {
        std::net::IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0);
            std::net::IpAddr::V4((u32::from(v4) & mask).into())
        }
        std::net::IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix_len)).unwrap_or(0);
            std::net::IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

impl std::fmt::Display for EgressAllowance {
    /// The canonical spelling, which [`EgressAllowance::parse`] reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let full = if self.is_ipv4() { 32 } else { 128 };
        let network = match self.prefix_len == full {
            true => self.network.to_string(),
            false => format!("{}/{}", self.network, self.prefix_len),
        };
        match (self.port, self.network) {
            (Some(port), std::net::IpAddr::V6(_)) => write!(f, "[{network}]:{port}"),
            (Some(port), _) => write!(f, "{network}:{port}"),
            (None, _) => f.write_str(&network),
        }
    }
}

/// The fate of a bind mount of a host path (never granted either way).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HostBindMounts {
    /// The prebuild goes on without it; its warning names the mount.
    #[default]
    Warn,
    /// The prebuild fails, naming the key.
    Refuse,
}

/// What an environment of a class may use; the docker runner applies it to
/// prebuild containers and warm pool instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPUs in billionths (`cpus = 1.5` is 1_500_000_000), Docker's unit.
    pub nano_cpus: Option<i64>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Project {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub repository: String,
    pub default_environment_class_id: Option<String>,
    /// Which devcontainer.json of the repository to prebuild (a path
    /// relative to the repository root); `None`: the spec's lookup order.
    pub devcontainer_path: Option<String>,
    pub prebuilds: PrebuildSettings,
}

/// A project's prebuild configuration (the hosted API's
/// `ProjectPrebuildConfiguration`).
#[derive(Debug, Clone)]
pub struct PrebuildSettings {
    pub enabled: bool,
    pub environment_class_ids: Vec<String>,
    pub timeout: Duration,
    pub daily_schedule_hour_utc: Option<u8>,
    pub executor: Option<Subject>,
    /// `[projects.prebuilds.git]`: prebuilds that follow the repository
    /// (push webhooks, polling, incremental prebuilds); `None`: only API
    /// calls and the schedule start prebuilds, and every one is full.
    pub git: Option<GitSettings>,
}

/// How a project's prebuilds follow its repository.
#[derive(Clone)]
pub struct GitSettings {
    /// Branches that are prebuilt; empty: the repository's default branch.
    pub branches: Vec<crate::triggers::glob::Glob>,
    /// The webhook secret (HMAC key, or GitLab's token); `None`: webhooks
    /// are refused (401), polling may still run.
    pub webhook_secret: Option<Vec<u8>>,
    /// How often the tracked branches are polled; `None`: never.
    pub poll_interval: Option<Duration>,
    /// Only pushes that change one of these paths start a prebuild (a
    /// change to the dev container configuration always does); `None`:
    /// every push.
    pub paths: Option<Vec<crate::triggers::glob::Glob>>,
    /// Whether a newer commit cancels the running prebuild of its branch.
    pub cancel_superseded: bool,
    /// Whether a prebuild may start from an earlier full one's snapshot.
    pub incremental: bool,
    /// At most this many prebuilds in a row from one base (the base
    /// included): the next is full.
    pub full_every: u32,
    /// How many commits back a base's commit may be.
    pub max_base_distance: u32,
    /// The branch warm pools follow; `None`: the default branch.
    pub warm_pool_branch: Option<String>,
}

impl std::fmt::Debug for GitSettings {
    /// Without the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSettings")
            .field("branches", &self.branches)
            .field("webhook_secret", &self.webhook_secret.as_ref().map(|_| "<set>"))
            .field("poll_interval", &self.poll_interval)
            .field("paths", &self.paths)
            .field("cancel_superseded", &self.cancel_superseded)
            .field("incremental", &self.incremental)
            .field("full_every", &self.full_every)
            .field("max_base_distance", &self.max_base_distance)
            .field("warm_pool_branch", &self.warm_pool_branch)
            .finish()
    }
}

impl GitSettings {
    /// Whether pushes to `branch` are prebuilt (`default_branch`: the
    /// repository's, when known).
    pub fn tracks(&self, branch: &str, default_branch: Option<&str>) -> bool {
        if self.branches.is_empty() {
            return default_branch == Some(branch);
        }
        self.branches.iter().any(|glob| glob.matches(branch))
    }
}

impl Catalog {
    /// The project if it exists and belongs to the organization; another
    /// organization's project is indistinguishable from a missing one.
    pub fn project_in(&self, organization_id: &str, project_id: &str) -> Option<&Project> {
        self.projects.get(project_id).filter(|p| p.organization_id == organization_id)
    }

    /// Whether prebuilds of this class are allowed on the project.
    pub fn prebuild_class_allowed(project: &Project, environment_class_id: &str) -> bool {
        project.prebuilds.enabled && project.prebuilds.environment_class_ids.iter().any(|id| id == environment_class_id)
    }
}

#[cfg(test)]
mod tests {
    use super::EgressAllowance;

    #[test]
    fn egress_allowances_read_networks_addresses_and_ports() {
        let cases = [
            ("10.1.2.0/24", "10.1.2.0/24"),
            ("10.1.2.77/24", "10.1.2.0/24"),
            ("192.168.7.9", "192.168.7.9"),
            ("192.168.7.9:5000", "192.168.7.9:5000"),
            ("10.1.2.0/24:443", "10.1.2.0/24:443"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("fd00::/8", "fd00::/8"),
            ("fd00::1", "fd00::1"),
            ("[fd00::1]:5000", "[fd00::1]:5000"),
            ("[fd12:3456::/32]:443", "[fd12:3456::/32]:443"),
            (" 10.0.0.1 ", "10.0.0.1"),
        ];
        for (text, canonical) in cases {
            let allowance = EgressAllowance::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(allowance.to_string(), canonical, "{text}");
            assert_eq!(EgressAllowance::parse(canonical), Ok(allowance));
        }
        for (text, error) in [
            ("10.1.2.0/33", "/33 is longer than an address (32 bits)"),
            ("10.1.2.0:0", "\"0\" is not a port (1 to 65535)"),
            ("10.1.2.0:http", "\"http\" is not a port (1 to 65535)"),
            (
                "registry.internal:5000",
                "\"registry.internal\" is not an IP address (write a CIDR like 10.1.2.0/24, with an optional :port)",
            ),
            ("[fd00::1", "a [ without its ]"),
            ("10.1.2.0/x", "\"x\" is not a prefix length"),
            ("", "\"\" is not an IP address (write a CIDR like 10.1.2.0/24, with an optional :port)"),
        ] {
            assert_eq!(EgressAllowance::parse(text), Err(error.to_string()), "{text}");
        }
    }
}
