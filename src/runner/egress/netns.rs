//! What the isolation checks need from the host: its own addresses (every
//! one of them must be out of an environment's reach), its resolvers (DNS
//! must stay in reach), and connections made from inside another network
//! namespace (a probe container's, a sandbox's), to see what it reaches.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

/// The addresses of this host's interfaces (in the namespace the runner
/// runs in), loopback and IPv6 link-local ones left out: the first are an
/// environment's own, the second need an interface to be named.
pub(crate) fn host_addresses() -> Vec<IpAddr> {
    let mut found = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we free below; we
    // read each entry's address according to its family.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return found;
        }
        let mut entry = list;
        while let Some(current) = entry.as_ref() {
            entry = current.ifa_next;
            let Some(address) = current.ifa_addr.as_ref() else { continue };
            let ip = match i32::from(address.sa_family) {
                libc::AF_INET => {
                    let v4 = &*(current.ifa_addr as *const libc::sockaddr_in);
                    // In network byte order in memory.
                    IpAddr::from(v4.sin_addr.s_addr.to_ne_bytes())
                }
                libc::AF_INET6 => {
                    let v6 = &*(current.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::from(v6.sin6_addr.s6_addr)
                }
                _ => continue,
            };
            let link_local_v6 = matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
            if !ip.is_loopback() && !link_local_v6 && !found.contains(&ip) {
                found.push(ip);
            }
        }
        libc::freeifaddrs(list);
    }
    found
}

/// The `nameserver` addresses of a resolv.conf.
pub(crate) fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next())
        // A scoped IPv6 address (`fe80::1%eth0`) names an interface.
        .filter_map(|address| address.split('%').next()?.parse().ok())
        .collect()
}

/// The resolvers this host's containers and sandboxes end up asking: those
/// of `/etc/resolv.conf` that are not on loopback (a loopback resolver is
/// asked from the host's own namespace, which no rule here touches), and,
/// where it names only loopback ones (systemd-resolved's stub), the
/// upstream ones systemd-resolved lists, as Docker does.
pub(crate) async fn host_resolvers() -> Vec<IpAddr> {
    let read = |path: &'static str| async move { tokio::fs::read_to_string(path).await.map(|text| nameservers(&text)).unwrap_or_default() };
    let mut resolvers = read("/etc/resolv.conf").await;
    if resolvers.iter().all(IpAddr::is_loopback) {
        resolvers.extend(read("/run/systemd/resolve/resolv.conf").await);
    }
    resolvers.retain(|address| !address.is_loopback());
    resolvers.dedup();
    resolvers
}

/// The lines of a resolv.conf that are not `nameserver` lines (`search`,
/// `options`), for a sandbox's own resolv.conf.
pub(crate) fn resolver_options(resolv_conf: &str) -> Vec<&str> {
    resolv_conf.lines().map(str::trim).filter(|line| line.starts_with("search") || line.starts_with("options")).collect()
}

/// One connection attempt from inside a namespace, and how it ended.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub target: SocketAddr,
    /// `Ok` means the target answered: it is in reach.
    pub outcome: Result<(), String>,
}

/// TCP sockets made inside the network namespace at `netns` (a
/// `/proc/<pid>/ns/net`), one per target. A socket belongs to the namespace
/// it was made in, so they are made on a thread of their own that enters
/// the namespace and then ends (a thread of the runtime's pools must never
/// change namespace).
async fn sockets_in(netns: PathBuf, targets: Vec<SocketAddr>) -> Result<Vec<OwnedFd>, String> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("netns-probe".into()).spawn(move || {
        let made = (|| -> Result<Vec<OwnedFd>, String> {
            let namespace = std::fs::File::open(&netns).map_err(|e| format!("cannot open {}: {e}", netns.display()))?;
            use std::os::fd::AsRawFd;
            // SAFETY: setns(2) on a file descriptor we own; it changes only
            // this thread's network namespace, and the thread ends below.
            if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!("cannot enter the network namespace {}: {}", netns.display(), std::io::Error::last_os_error()));
            }
            targets
                .iter()
                .map(|target| {
                    let domain = if target.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
                    // SAFETY: socket(2) returns a new descriptor (or -1),
                    // which OwnedFd then owns.
                    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
                    match fd {
                        -1 => Err(format!("cannot make a socket: {}", std::io::Error::last_os_error())),
                        // SAFETY: fd is a fresh descriptor nothing else owns.
                        fd => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
                    }
                })
                .collect()
        })();
        let _ = sender.send(made);
    });
    spawned.map_err(|e| format!("cannot start a thread: {e}"))?;
    receiver.await.map_err(|_| "the namespace's thread ended without an answer".to_string())?
}

/// Tries to connect to each target from inside the network namespace at
/// `netns`, all at once, each for at most `patience`.
pub(crate) async fn connect_from(netns: PathBuf, targets: &[SocketAddr], patience: Duration) -> Result<Vec<Attempt>, String> {
    let sockets = sockets_in(netns, targets.to_vec()).await?;
    let attempts = sockets.into_iter().zip(targets).map(|(socket, target)| async move {
        let socket = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
        let outcome = match tokio::time::timeout(patience, socket.connect(*target)).await {
            Ok(Ok(_stream)) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {patience:?}")),
        };
        Attempt { target: *target, outcome }
    });
    Ok(futures::future::join_all(attempts).await)
}

/// A listener on every address of this host (IPv6 and IPv4, or IPv4 where
/// the host has no IPv6), for a probe to try to reach.
pub(crate) async fn probe_listener() -> Result<tokio::net::TcpListener, String> {
    match tokio::net::TcpListener::bind("[::]:0").await {
        Ok(listener) => Ok(listener),
        Err(_) => tokio::net::TcpListener::bind("0.0.0.0:0").await.map_err(|e| format!("cannot listen: {e}")),
    }
}

/// The targets a probe tries: a port listening on every address of this
/// host, at each of those addresses and at `gateways` (which are this host
/// too, seen from the environment).
pub(crate) fn probe_targets(port: u16, gateways: &[IpAddr]) -> Vec<SocketAddr> {
    let mut addresses: Vec<IpAddr> = gateways.to_vec();
    for address in host_addresses() {
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    addresses.into_iter().map(|address| SocketAddr::new(address, port)).collect()
}

/// What a probe found, as the reason isolation is not in effect; `None`
/// when nothing answered.
pub(crate) fn reached(attempts: &[Attempt]) -> Option<String> {
    let reached: Vec<String> = attempts.iter().filter(|a| a.outcome.is_ok()).map(|a| a.target.to_string()).collect();
    (!reached.is_empty()).then(|| format!("a probe reached a port listening on this host at {}", reached.join(", ")))
}

/// The network namespace of a running process, `/proc/<pid>/ns/net`.
pub(crate) fn netns_of(pid: i64) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_and_options_are_read_from_a_resolv_conf() {
        let text =
            "# generated\nnameserver 10.255.255.53\nnameserver  fe80::1%eth0\nsearch corp.example\noptions ndots:2\nnameserver bogus\n";
        assert_eq!(nameservers(text), vec!["10.255.255.53".parse::<IpAddr>().unwrap(), "fe80::1".parse().unwrap()]);
        assert_eq!(resolver_options(text), vec!["search corp.example", "options ndots:2"]);
    }

    #[test]
    fn the_host_has_addresses_and_none_is_loopback() {
        let addresses = host_addresses();
        assert!(!addresses.is_empty(), "a host with a network has an address");
        assert!(addresses.iter().all(|a| !a.is_loopback()), "{addresses:?}");
    }

    #[tokio::test]
    async fn connections_from_this_namespace_reach_a_listener_here() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let targets = [SocketAddr::from(([127, 0, 0, 1], port)), SocketAddr::from(([127, 0, 0, 1], closed_port))];
        let attempts = connect_from(netns_of(i64::from(std::process::id())), &targets, Duration::from_secs(2)).await.unwrap();
        assert!(attempts[0].outcome.is_ok(), "{attempts:?}");
        assert!(attempts[1].outcome.is_err(), "{attempts:?}");
        assert_eq!(reached(&attempts), Some(format!("a probe reached a port listening on this host at 127.0.0.1:{port}")));
        let missing = connect_from(PathBuf::from("/nonexistent/ns"), &targets, Duration::from_secs(1)).await.unwrap_err();
        assert!(missing.starts_with("cannot open /nonexistent/ns"), "{missing}");
    }
}
