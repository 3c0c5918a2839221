//! The network of the local runner's sandbox: each command gets a network
//! namespace of its own (`bwrap --unshare-net`), connected to the internet
//! by user-mode networking (slirp4netns: the sandbox's connections become
//! ordinary sockets of a process on the host), with nftables rules in the
//! namespace's output hook that keep it off this host (every address of
//! it; the host's loopback is not mapped in), link-local addresses and the
//! private ranges, beside the class's `allow_egress` and DNS through
//! slirp4netns's forwarder. Loopback inside is the sandbox's own, and so
//! are abstract Unix sockets.
//!
//! bwrap is told to wait (`--block-fd`) until the runner has attached
//! slirp4netns to the namespace (found through `--info-fd`) and installed
//! the rules (`nsenter ... nft -f -`); only then does the command run. The
//! sandbox drops every capability, so nothing inside can change the rules.
//! slirp4netns runs in a process group of the job's own (a stop kills it)
//! and exits when the command does (`--exit-fd`).

use crate::runner::egress::{self, netns, Exceptions};
use crate::runner::process::{spawn_in_group, wait_in_group, JobProcesses};
use crate::runner::LogSink;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// slirp4netns's fixed addressing: the sandbox is 10.0.2.100, the host
/// behind it 10.0.2.2 (not mapped: `--disable-host-loopback`), and its DNS
/// forwarder 10.0.2.3, which asks the host's resolvers.
pub(crate) const SANDBOX_DNS: &str = "10.0.2.3";

/// The sandbox's interface, as slirp4netns expects it (`ip -batch`).
const INTERFACE_SETUP: &str = "link set tap0 mtu 65520 up\naddr add 10.0.2.100/24 dev tap0\nroute add default via 10.0.2.2 dev tap0\n";

/// How long the namespace's set-up may take before the command is given up.
const SETUP_LIMIT: Duration = Duration::from_secs(20);

/// How a sandbox's network is made.
#[derive(Debug)]
pub(crate) struct SandboxNetwork {
    /// The slirp4netns program, resolved.
    pub slirp4netns: PathBuf,
}

/// A command in its sandbox, held before it runs until its network is set
/// up.
pub(crate) struct Held {
    pub child: tokio::process::Child,
    /// The sandbox's first process, on the host.
    pub pid: i32,
    slirp: tokio::process::Child,
    /// Closed when the command ends: slirp4netns then exits.
    exit: OwnedFd,
    /// A byte written here lets the command run.
    release: OwnedFd,
    /// bwrap's information, kept open while it runs.
    _info: tokio::net::unix::pipe::Receiver,
}

/// A pipe's two ends (read, write), close-on-exec, at 10 or above (so that
/// placing them at 3 and 4 in a child never overwrites one with another).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2(2) fills the two descriptors, which we own from here.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((high(read)?, high(write)?))
}

fn high(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we then own.
    match unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) } {
        -1 => Err(std::io::Error::last_os_error()),
        // SAFETY: as above.
        new => Ok(unsafe { OwnedFd::from_raw_fd(new) }),
    }
}

/// Gives the child `fds` as its descriptors 3, 4, ... (without
/// close-on-exec).
fn pass_fds(command: &mut tokio::process::Command, fds: Vec<RawFd>) {
    // SAFETY: between fork and exec only dup2(2), which is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            for (index, fd) in fds.iter().enumerate() {
                if libc::dup2(*fd, 3 + index as RawFd) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Reads from a pipe until `done` says what was read is whole, or it ends.
/// The pipe stays open (the writer must never write into a closed one,
/// which would end it).
async fn read_until(pipe: &mut tokio::net::unix::pipe::Receiver, done: impl Fn(&[u8]) -> bool) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut read = Vec::new();
    let mut buffer = [0u8; 512];
    while !done(&read) {
        match pipe.read(&mut buffer).await? {
            0 => break,
            n => read.extend_from_slice(&buffer[..n]),
        }
    }
    Ok(read)
}

/// The `child-pid` of bwrap's `--info-fd` JSON.
fn child_pid(info: &[u8]) -> Option<i32> {
    let value: serde_json::Value = serde_json::from_slice(info).ok()?;
    value.get("child-pid")?.as_i64()?.try_into().ok()
}

/// The rules of a sandbox's namespace: after loopback and the exceptions,
/// the blocked ranges and every address of this host are dropped (a
/// connection to one fails at once, "operation not permitted").
pub(crate) fn sandbox_rules(exceptions: &Exceptions, host_addresses: &[IpAddr]) -> String {
    let mut body = egress::blocked_sets(host_addresses);
    body.push_str("\tchain output {\n\t\ttype filter hook output priority filter; policy accept;\n\t\toifname \"lo\" accept\n");
    for rule in egress::accept_rules(exceptions) {
        body.push_str(&format!("\t\t{rule}\n"));
    }
    body.push_str("\t\tip daddr @blocked_ipv4 drop\n\t\tip6 daddr @blocked_ipv6 drop\n\t}\n");
    egress::replace_table("prebuildd", &body)
}

impl SandboxNetwork {
    /// The bwrap arguments that give the sandbox its own network (before
    /// the command): the namespace, and the two descriptors through which
    /// bwrap says which process the sandbox is and waits to be let go.
    pub fn bwrap_args(&self) -> [&'static str; 5] {
        ["--unshare-net", "--info-fd", "3", "--block-fd", "4"]
    }

    /// Starts `command` (bwrap, with [`SandboxNetwork::bwrap_args`]) in its
    /// own process group, attaches slirp4netns to its namespace and
    /// installs the rules, leaving it held before the command.
    pub async fn start(
        &self,
        processes: &JobProcesses,
        mut command: tokio::process::Command,
        exceptions: &Exceptions,
    ) -> Result<Held, String> {
        let (info_read, info_write) = pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;
        let (block_read, block_write) = pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;
        pass_fds(&mut command, vec![info_write.as_raw_fd(), block_read.as_raw_fd()]);
        let mut info = tokio::net::unix::pipe::Receiver::from_owned_fd(info_read).map_err(|e| format!("cannot read a pipe: {e}"))?;
        let mut child = spawn_in_group(processes, command).map_err(|e| format!("the sandbox could not start: {e}"))?;
        drop((info_write, block_read));
        let set_up = async {
            let info = read_until(&mut info, |read| child_pid(read).is_some()).await.map_err(|e| e.to_string())?;
            let pid = child_pid(&info).ok_or("bwrap did not say which process the sandbox is")?;
            let (slirp, exit) = self.attach(processes, pid).await?;
            let target = pid.to_string();
            // The interface slirp4netns made, configured here rather than by
            // slirp4netns (whose set-up also touches the loopback interface,
            // which bwrap is configuring at the same time).
            egress::run_nft("nsenter", &["--target", &target, "--net", "ip", "-batch", "-"], INTERFACE_SETUP)
                .await
                .map_err(|error| format!("cannot configure the sandbox's interface ({error}): iproute2 and nsenter must be installed"))?;
            let rules = sandbox_rules(exceptions, &netns::host_addresses());
            egress::run_nft("nsenter", &["--target", &target, "--net", "nft", "-f", "-"], &rules).await.map_err(|error| {
                format!("cannot install the sandbox's network rules ({error}): nft (the nftables package) and nsenter must be installed")
            })?;
            Ok::<_, String>((pid, slirp, exit))
        };
        match tokio::time::timeout(SETUP_LIMIT, set_up).await {
            Ok(Ok((pid, slirp, exit))) => Ok(Held { child, pid, slirp, exit, release: block_write, _info: info }),
            outcome => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                Err(match outcome {
                    Ok(Err(error)) => format!("the sandbox's network could not be set up: {error}"),
                    _ => format!("the sandbox's network was not set up within {SETUP_LIMIT:?}"),
                })
            }
        }
    }

    /// Starts slirp4netns on the namespace of `pid` and waits until it is
    /// ready; returns it and the descriptor whose closing ends it.
    async fn attach(&self, processes: &JobProcesses, pid: i32) -> Result<(tokio::process::Child, OwnedFd), String> {
        let (ready_read, ready_write) = pipe().map_err(|e| e.to_string())?;
        let (exit_read, exit_write) = pipe().map_err(|e| e.to_string())?;
        let mut command = tokio::process::Command::new(&self.slirp4netns);
        command
            .args(["--mtu=65520", "--disable-host-loopback", "--ready-fd=3", "--exit-fd=4"])
            .arg(pid.to_string())
            .arg("tap0")
            .env_clear()
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // A sandbox made by an unprivileged user lives in a user namespace
        // of its own, which slirp4netns must join to reach the network one.
        if namespace(Path::new("/proc/self/ns/user")) != namespace(&PathBuf::from(format!("/proc/{pid}/ns/user"))) {
            command.arg(format!("--userns-path=/proc/{pid}/ns/user"));
        }
        pass_fds(&mut command, vec![ready_write.as_raw_fd(), exit_read.as_raw_fd()]);
        let mut slirp = spawn_in_group(processes, command).map_err(|e| format!("{} could not start: {e}", self.slirp4netns.display()))?;
        drop((ready_write, exit_read));
        let mut ready_pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(ready_read).map_err(|e| e.to_string())?;
        let ready = read_until(&mut ready_pipe, |read| !read.is_empty()).await.map_err(|e| e.to_string())?;
        if ready.first() != Some(&b'1') {
            let _ = slirp.start_kill();
            let output = slirp.wait_with_output().await.map_err(|e| e.to_string())?;
            let said = String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or("it exited").to_string();
            return Err(format!("{} did not start ({said})", self.slirp4netns.display()));
        }
        Ok((slirp, exit_write))
    }
}

/// Checks that this host can give sandboxes a network of their own and
/// writes the sandboxes' resolv.conf (the forwarder, with the host's
/// `search` and `options` lines); `kept` (the files bound into the
/// sandbox where the host's resolv.conf is) then binds that one instead,
/// also at the host's resolv.conf's real place. `Err` says what is missing.
pub(crate) async fn prepare(
    slirp4netns: &Path,
    root: &Path,
    system_dirs: &[PathBuf],
    kept: &mut Vec<(PathBuf, PathBuf)>,
) -> Result<SandboxNetwork, String> {
    let found = super::sandbox::find_program(slirp4netns).await.ok_or_else(|| {
        format!(
            "its user-mode networking program ({}) is not installed: install the slirp4netns package (and restart prebuildd)",
            slirp4netns.display()
        )
    })?;
    let host = tokio::fs::read_to_string("/etc/resolv.conf").await.unwrap_or_default();
    let mut text = format!("nameserver {SANDBOX_DNS}\n");
    for line in netns::resolver_options(&host) {
        text.push_str(line);
        text.push('\n');
    }
    let resolv_conf = root.join("network").join("resolv.conf");
    let written = async {
        tokio::fs::create_dir_all(root.join("network")).await?;
        tokio::fs::write(&resolv_conf, text).await
    };
    written.await.map_err(|e| format!("cannot write {}: {e}", resolv_conf.display()))?;
    for (source, _) in kept.iter_mut() {
        *source = resolv_conf.clone();
    }
    if let Ok(real) = tokio::fs::canonicalize("/etc/resolv.conf").await {
        if !system_dirs.iter().any(|dir| real.starts_with(dir)) {
            kept.push((resolv_conf.clone(), real));
        }
    }
    Ok(SandboxNetwork { slirp4netns: found })
}

/// Runs the check's `command` (`bwrap ... -- true`) with the sandbox's
/// network and, while it is held, tries a port listening on this host at
/// each of its addresses and at the address slirp4netns would map to the
/// host's loopback, from inside: none may answer.
pub(crate) async fn check(network: &SandboxNetwork, command: tokio::process::Command) -> Result<(), String> {
    let processes = JobProcesses::default();
    let listener = netns::probe_listener().await?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let exceptions = Exceptions { allowances: Vec::new(), resolvers: vec![SANDBOX_DNS.parse().map_err(|_| "a bad address")?] };
    let mut held = network.start(&processes, command, &exceptions).await?;
    let gateway: IpAddr = [10, 0, 2, 2].into();
    let targets = netns::probe_targets(port, &[gateway]);
    let attempts = netns::connect_from(netns::netns_of(i64::from(held.pid)), &targets, Duration::from_secs(3)).await;
    let released = held.release();
    let status = held.child.wait().await;
    processes.kill_all();
    let Held { slirp, exit, .. } = held;
    Held::end(slirp, exit).await;
    drop(listener);
    let attempts = attempts.map_err(|e| format!("its check could not look inside the sandbox ({e})"))?;
    if let Some(reached) = netns::reached(&attempts) {
        return Err(format!("isolation is not in effect: {reached}"));
    }
    released.map_err(|e| format!("the sandbox could not be let go ({e})"))?;
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("the sandbox with its network {}", crate::runner::process::describe_exit(status))),
        Err(error) => Err(format!("the sandbox with its network failed: {error}")),
    }
}

/// Runs a job's `command` (bwrap, with [`SandboxNetwork::bwrap_args`]) in
/// the sandbox's network, its output appended to the log.
pub(crate) async fn run_held(
    network: &SandboxNetwork,
    processes: &JobProcesses,
    log: &LogSink,
    mut command: tokio::process::Command,
    exceptions: &Exceptions,
) -> std::io::Result<std::process::ExitStatus> {
    let stdout = log.open_append()?;
    let stderr = stdout.try_clone()?;
    command.stdout(stdout).stderr(stderr);
    let mut held = network.start(processes, command, exceptions).await.map_err(std::io::Error::other)?;
    let status = match held.release() {
        Ok(()) => wait_in_group(processes, &mut held.child).await,
        Err(error) => {
            let _ = held.child.start_kill();
            let _ = held.child.wait().await;
            Err(error)
        }
    };
    let Held { slirp, exit, .. } = held;
    Held::end(slirp, exit).await;
    status
}

/// The identity of a namespace file (its link target, `user:[4026531837]`).
fn namespace(path: &Path) -> Option<PathBuf> {
    std::fs::read_link(path).ok()
}

impl Held {
    /// Lets the command run.
    pub fn release(&mut self) -> std::io::Result<()> {
        // SAFETY: a one-byte write(2) to a pipe we own.
        match unsafe { libc::write(self.release.as_raw_fd(), b"1".as_ptr().cast(), 1) } {
            1 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    }

    /// Ends the network's helper once the command has ended.
    async fn end(mut slirp: tokio::process::Child, exit: OwnedFd) {
        drop(exit);
        if tokio::time::timeout(Duration::from_secs(5), slirp.wait()).await.is_err() {
            let _ = slirp.start_kill();
            let _ = slirp.wait().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::EgressAllowance;

    #[test]
    fn bwraps_info_names_the_sandboxs_process() {
        assert_eq!(child_pid(b"{\n    \"child-pid\": 4242\n}\n"), Some(4242));
        assert_eq!(child_pid(b"{\n    \"child-pid\": 42"), None, "not whole yet");
    }

    #[test]
    fn a_sandbox_drops_the_blocked_ranges_and_the_hosts_addresses_after_its_exceptions() {
        let exceptions = Exceptions {
            allowances: vec![EgressAllowance::parse("192.168.7.9:5000").unwrap()],
            resolvers: vec![SANDBOX_DNS.parse().unwrap()],
        };
        let rules = sandbox_rules(&exceptions, &["203.0.113.7".parse().unwrap()]);
        assert!(rules.starts_with("table inet prebuildd {}\ndelete table inet prebuildd\n"), "{rules}");
        assert!(rules.contains("203.0.113.7 }"), "the host's own addresses are blocked: {rules}");
        let chain = &rules[rules.find("chain output").unwrap()..];
        let lines: Vec<&str> = chain.lines().map(str::trim).collect();
        assert_eq!(
            lines[1..10],
            [
                "type filter hook output priority filter; policy accept;",
                "oifname \"lo\" accept",
                "ct state established,related accept",
                "ip daddr 10.0.2.3 meta l4proto { tcp, udp } th dport 53 accept",
                "ip daddr 192.168.7.9 meta l4proto { tcp, udp } th dport 5000 accept",
                "ip daddr @blocked_ipv4 drop",
                "ip6 daddr @blocked_ipv6 drop",
                "}",
                "}",
            ]
        );
    }
}
