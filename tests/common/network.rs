//! What the network isolation tests reach for, made by the test itself and
//! removed when dropped (also when the test fails): a listener on every
//! address of this host; a "remote" machine, a network namespace routed from
//! the host with listeners at a documentation address (198.51.100.x,
//! outside the blocked ranges) and at a private one (10.200.0.x, for
//! `allow_egress`); and a listener at the metadata service's address,
//! 169.254.169.254, on an empty bridge (the kernel may have no dummy
//! interfaces). Each answers with a token of its own, so a log shows which
//! was reached. They need root and iproute2, and fail loudly without them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

/// Runs `ip <args>`; panics with what it said if it fails.
pub fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("ip runs (install iproute2)");
    assert!(output.status.success(), "ip {args:?} failed (the network tests run as root): {}", String::from_utf8_lossy(&output.stderr));
}

/// A number no other fixture of this process has, for names and addresses.
fn next_number() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

/// Removes fixtures whose test process is gone (one killed before its
/// fixtures' drop could run): namespaces and bridges carry their process's
/// ID in their names.
fn sweep_stale() {
    let alive = |pid: &str| pid.parse::<u32>().is_ok_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
    if let Ok(output) = Command::new("ip").args(["netns", "list"]).output() {
        for name in String::from_utf8_lossy(&output.stdout).split_whitespace() {
            if let Some(pid) = name.strip_prefix("prebuildd-test-").and_then(|rest| rest.split('-').next()) {
                if !alive(pid) {
                    let _ = Command::new("ip").args(["netns", "delete", name]).output();
                }
            }
        }
    }
    if let Ok(output) = Command::new("ip").args(["-o", "link", "show", "type", "bridge"]).output() {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let Some(name) = line.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n)) else { continue };
            if let Some(pid) = name.strip_prefix("pbm").and_then(|rest| rest.get(..rest.len().saturating_sub(2))) {
                if u32::from_str_radix(pid, 16).is_ok_and(|pid| !alive(&pid.to_string())) {
                    let _ = Command::new("ip").args(["link", "delete", name]).output();
                }
            }
        }
    }
}

/// A TCP listener that answers every connection with `token` and counts
/// them. It serves from a thread of its own, so that it answers while the
/// test waits on a blocking call (`docker exec`).
pub struct Listener {
    pub address: SocketAddr,
    pub token: String,
    accepted: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Listener {
    fn serve(listener: std::net::TcpListener, token: String) -> Listener {
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (counter, answer) = (accepted.clone(), token.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                use tokio::io::AsyncWriteExt;
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let serving = async {
                    while let Ok((mut stream, _)) = listener.accept().await {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let reply = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{answer}\n", answer.len() + 1);
                        tokio::spawn(async move {
                            let _ = stream.write_all(reply.as_bytes()).await;
                            let _ = stream.shutdown().await;
                        });
                    }
                };
                tokio::select! {
                    _ = serving => {}
                    _ = stopped => {}
                }
            });
        });
        Listener { address, token, accepted, stop: Some(stop) }
    }

    /// How many connections it has taken.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A listener on every address of this host (a service bound to
/// `0.0.0.0`, like a prebuildd started with `listen = "0.0.0.0:8080"`).
pub fn host_listener() -> Listener {
    let listener = std::net::TcpListener::bind("[::]:0").or_else(|_| std::net::TcpListener::bind("0.0.0.0:0")).unwrap();
    Listener::serve(listener, format!("host-secret-{}", uuid::Uuid::new_v4().simple()))
}

/// This host's addresses as `ip` shows them (IPv4, and global IPv6),
/// loopback left out: an environment must reach none of them.
pub fn host_addresses() -> Vec<IpAddr> {
    let output = Command::new("ip").args(["-o", "addr", "show"]).output().expect("ip runs (install iproute2)");
    let mut addresses = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        for pair in words.windows(2) {
            if (pair[0] == "inet" || (pair[0] == "inet6" && line.contains("scope global"))) && !line.contains(" lo ") {
                if let Some(address) = pair[1].split('/').next().and_then(|a| a.parse::<IpAddr>().ok()) {
                    if !address.is_loopback() && !addresses.contains(&address) {
                        addresses.push(address);
                    }
                }
            }
        }
    }
    addresses
}

/// A network namespace standing for machines beyond this host, routed from
/// it through a veth pair: `public` (a documentation address, which an
/// environment reaches) and `private` (in 10/8, which it reaches only where
/// its class allows it) both answer on `port` and on `other_port`.
pub struct Remote {
    namespace: String,
    host_side: String,
    pub public: Ipv4Addr,
    pub private: Ipv4Addr,
    /// Listeners on every address of the namespace.
    pub main: Listener,
    pub other: Listener,
}

impl Remote {
    pub fn new() -> Remote {
        sweep_stale();
        let number = next_number();
        let pid = std::process::id();
        // Addresses differ between the fixtures of one process (tests run
        // side by side) and, most likely, between processes.
        let host_part = ((pid.wrapping_mul(7) + number * 13) % 200 + 20) as u8;
        let public = Ipv4Addr::new(198, 51, 100, host_part);
        let private = Ipv4Addr::new(10, 200, (pid % 250) as u8, host_part);
        let namespace = format!("prebuildd-test-{pid}-{number}");
        let host_side = format!("pbh{:05x}{:02x}", pid & 0xfffff, number & 0xff);
        let inner_side = format!("pbn{:05x}{:02x}", pid & 0xfffff, number & 0xff);
        ip(&["netns", "add", &namespace]);
        let mut remote = Remote {
            namespace: namespace.clone(),
            host_side: host_side.clone(),
            public,
            private,
            main: idle_listener(),
            other: idle_listener(),
        };
        ip(&["link", "add", &host_side, "type", "veth", "peer", "name", &inner_side]);
        ip(&["link", "set", &inner_side, "netns", &namespace]);
        // The host's side has an address of its own so that the namespace
        // has a gateway to answer through.
        let gateway = "198.51.100.254";
        ip(&["addr", "add", &format!("{gateway}/32"), "dev", &host_side]);
        ip(&["link", "set", &host_side, "up"]);
        ip(&["route", "add", &format!("{public}/32"), "dev", &host_side]);
        ip(&["route", "add", &format!("{private}/32"), "dev", &host_side]);
        let inside = |args: &[&str]| {
            let mut full = vec!["netns", "exec", namespace.as_str(), "ip"];
            full.extend_from_slice(args);
            ip(&full);
        };
        inside(&["link", "set", "lo", "up"]);
        inside(&["addr", "add", &format!("{public}/32"), "dev", &inner_side]);
        inside(&["addr", "add", &format!("{private}/32"), "dev", &inner_side]);
        inside(&["link", "set", &inner_side, "up"]);
        inside(&["route", "add", gateway, "dev", &inner_side]);
        inside(&["route", "add", "default", "via", gateway]);
        let [main, other] = listeners_in(&namespace);
        remote.main = Listener::serve(main, format!("remote-main-{}", uuid::Uuid::new_v4().simple()));
        remote.other = Listener::serve(other, format!("remote-other-{}", uuid::Uuid::new_v4().simple()));
        remote
    }

    /// The namespace's name (`ip netns exec <name> ...`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

/// A listener that answers nothing, until the real one replaces it (so
/// that a fixture being built is dropped, and cleaned up, like a whole one).
fn idle_listener() -> Listener {
    Listener::serve(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), String::new())
}

/// Two listeners on every address of a namespace: sockets made by a thread
/// that entered it (a socket stays in the namespace it was made in).
fn listeners_in(namespace: &str) -> [std::net::TcpListener; 2] {
    let path = format!("/var/run/netns/{namespace}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: setns(2) changes this short-lived thread's namespace only.
        assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "enter {path}");
        [std::net::TcpListener::bind("0.0.0.0:0").unwrap(), std::net::TcpListener::bind("0.0.0.0:0").unwrap()]
    })
    .join()
    .unwrap()
}

impl Drop for Remote {
    fn drop(&mut self) {
        // The namespace takes its end of the pair with it, and the pair
        // goes whole.
        let _ = Command::new("ip").args(["netns", "delete", &self.namespace]).output();
        let _ = Command::new("ip").args(["link", "delete", &self.host_side]).output();
    }
}

/// The metadata service's address on an empty bridge of the test's own,
/// with a listener there.
pub struct Metadata {
    bridge: String,
    pub listener: Listener,
}

/// The address cloud machines serve their credentials at.
pub const METADATA_ADDRESS: &str = "169.254.169.254";

impl Metadata {
    pub fn new() -> Metadata {
        sweep_stale();
        let bridge = format!("pbm{:05x}{:02x}", std::process::id() & 0xfffff, next_number() & 0xff);
        ip(&["link", "add", &bridge, "type", "bridge"]);
        let mut metadata = Metadata { bridge: bridge.clone(), listener: idle_listener() };
        ip(&["addr", "add", &format!("{METADATA_ADDRESS}/32"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        let listener = std::net::TcpListener::bind((METADATA_ADDRESS, 0)).expect("listen at the metadata address");
        metadata.listener = Listener::serve(listener, format!("metadata-credentials-{}", uuid::Uuid::new_v4().simple()));
        metadata
    }
}

impl Drop for Metadata {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "delete", &self.bridge]).output();
    }
}

/// A shell script that tries each `(label, host, port)` at once with
/// `nc` (the program, such as `nc` or `busybox nc`) and prints `reach
/// <label>: <what answered>` for each; the targets' tokens in the output
/// show which were reached. `$GATEWAY` in a host is the environment's
/// default gateway.
pub fn reach_script(nc: &str, targets: &[(String, String, u16)]) -> String {
    let mut script = String::from("GATEWAY=$(ip route | awk '/^default/ {print $3}'); ");
    for (label, host, port) in targets {
        // One echo per target: whole lines, however the runs interleave.
        script += &format!(
            "(answer=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | {nc} -w 3 {host} {port} 2>&1 | tr '\\r\\n' '  '); echo \"reach {label}: $answer\") & "
        );
    }
    script + "wait; echo reach-done"
}

/// A name no resolver knows: one that is reached answers NXDOMAIN, one out
/// of reach times out.
pub const UNKNOWN_NAME: &str = "prebuildd-dns-check.invalid";

/// A shell line that asks the resolver the environment is given for
/// [`UNKNOWN_NAME`] with `nslookup` (busybox's, as `nslookup`) and prints
/// its answer on one line.
pub fn resolve_script(nslookup: &str) -> String {
    format!("echo \"resolved: $({nslookup} {UNKNOWN_NAME} 2>&1 | tr '\\n' ' ')\"; ")
}

/// Asserts that the resolver answered inside (DNS keeps working behind the
/// isolation), after checking that this host's own resolver answers at
/// all: a host without one fails here, saying so, not as isolation.
pub fn assert_resolver_answered(log: &str) {
    let host = Command::new("busybox").args(["nslookup", UNKNOWN_NAME]).output().expect("busybox runs (install busybox-static)");
    let host = String::from_utf8_lossy(&host.stdout).to_string() + &String::from_utf8_lossy(&host.stderr);
    assert!(host.contains("NXDOMAIN"), "this host's resolver must answer (NXDOMAIN for {UNKNOWN_NAME}) for the DNS check: {host}");
    let inside =
        log.lines().find_map(|line| line.trim_start().strip_prefix("resolved:")).unwrap_or_else(|| panic!("no resolved: in:\n{log}"));
    assert!(inside.contains("NXDOMAIN"), "the resolver answers from inside: {inside}\n{log}");
}

/// What a reach script printed for `label` (the command as written may
/// show in a log too; its output starts lines).
pub fn reached<'a>(log: &'a str, label: &str) -> &'a str {
    let prefix = format!("reach {label}:");
    log.lines().find_map(|line| line.trim_start().strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {prefix} in:\n{log}"))
}

/// The targets every isolation test tries: `listener` at the gateway and at
/// every address of this host, and the metadata service.
pub fn host_targets(listener: &Listener, metadata: &Metadata) -> Vec<(String, String, u16)> {
    let port = listener.address.port();
    let mut targets = vec![("gateway".to_string(), "$GATEWAY".to_string(), port)];
    for address in host_addresses() {
        targets.push((format!("host-{address}"), address.to_string(), port));
    }
    targets.push(("metadata".into(), METADATA_ADDRESS.into(), metadata.listener.address.port()));
    targets
}
