//! Network isolation shared by the docker and local runners: what a
//! prebuild or warm instance may reach, as nftables rules.
//!
//! A prebuild runs code from a repository, and so does every warm instance
//! made from it. They reach the internet (package managers, git) but not the
//! runner's host (any of its addresses, and so none of its services, the
//! server's own port included), not link-local addresses (the cloud metadata
//! service at 169.254.169.254 hands out the machine's credentials) and not
//! the private ranges (the operator's other machines), unless the
//! environment class names a destination in `allow_egress`. DNS keeps
//! working: the resolvers the environment is given are let through on port
//! 53.
//!
//! The rules are nftables rules, in a table of their own, which the runner
//! replaces whole in one transaction (`nft -f`): nothing of the host's other
//! rules (Docker's, a firewall's) is read or changed, and since a packet
//! dropped by any table is dropped, they hold whatever those say. The
//! docker runner keys them on its networks' bridge interfaces in the host's
//! namespace (`runner::docker::network`); the local runner puts them in the
//! output hook of each sandbox's own network namespace
//! (`runner::local::network`).
//!
//! Files: `netns.rs` (the host's addresses and resolvers, and connections
//! made from inside another network namespace, which is how both runners
//! check that the rules hold).

pub(crate) mod netns;

use crate::catalog::EgressAllowance;
use std::fmt::Write;
use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

/// IPv4 destinations no environment reaches unless allowed: "this network",
/// the private ranges, shared address space (carrier NAT, and some clouds'
/// internal services), loopback, link-local (the metadata service), and
/// multicast, reserved and broadcast (other machines on the local network).
pub(crate) const BLOCKED_IPV4: &[&str] =
    &["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/3"];

/// IPv6 destinations no environment reaches unless allowed: unspecified,
/// loopback, unique local (`fc00::/7`, the private range), link-local and
/// multicast.
pub(crate) const BLOCKED_IPV6: &[&str] = &["::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8"];

/// How long an `nft` run may take: it applies a few dozen rules.
const NFT_LIMIT: Duration = Duration::from_secs(30);

/// What one environment's network lets through besides the internet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Exceptions {
    /// The class's `allow_egress`.
    pub allowances: Vec<EgressAllowance>,
    /// Resolvers the environment's DNS queries go to (port 53, TCP and UDP).
    pub resolvers: Vec<IpAddr>,
}

/// The name of a rule's address family match (`ip` or `ip6`).
fn family(address: &IpAddr) -> &'static str {
    if address.is_ipv4() {
        "ip"
    } else {
        "ip6"
    }
}

/// An allowance as an nftables match: `ip daddr 10.1.2.0/24`, with the port
/// for both TCP and UDP when it names one.
fn allowance_match(allowance: &EgressAllowance) -> String {
    let full = if allowance.is_ipv4() { 32 } else { 128 };
    let mut text = match allowance.prefix_len == full {
        true => format!("{} daddr {}", family(&allowance.network), allowance.network),
        false => format!("{} daddr {}/{}", family(&allowance.network), allowance.network, allowance.prefix_len),
    };
    if let Some(port) = allowance.port {
        let _ = write!(text, " meta l4proto {{ tcp, udp }} th dport {port}");
    }
    text
}

/// The rules that let the exceptions through, one per line, each ending in
/// `accept`: replies to connections made from outside (a claimant on the
/// host reaching its instance), DNS to the resolvers, the allowances.
pub(crate) fn accept_rules(exceptions: &Exceptions) -> Vec<String> {
    let mut rules = vec!["ct state established,related accept".to_string()];
    for resolver in &exceptions.resolvers {
        rules.push(format!("{} daddr {resolver} meta l4proto {{ tcp, udp }} th dport 53 accept", family(resolver)));
    }
    for allowance in &exceptions.allowances {
        rules.push(format!("{} accept", allowance_match(allowance)));
    }
    rules
}

/// The two sets of blocked destinations, with `extra` addresses added
/// (overlaps are merged).
pub(crate) fn blocked_sets(extra: &[IpAddr]) -> String {
    let mut text = String::new();
    for (name, kind, ranges, is_v4) in
        [("blocked_ipv4", "ipv4_addr", BLOCKED_IPV4, true), ("blocked_ipv6", "ipv6_addr", BLOCKED_IPV6, false)]
    {
        let mut elements: Vec<String> = ranges.iter().map(|range| range.to_string()).collect();
        elements.extend(extra.iter().filter(|address| address.is_ipv4() == is_v4).map(ToString::to_string));
        let _ = writeln!(
            text,
            "\tset {name} {{\n\t\ttype {kind}\n\t\tflags interval\n\t\tauto-merge\n\t\telements = {{ {} }}\n\t}}",
            elements.join(", ")
        );
    }
    text
}

/// The script that replaces table `inet <name>` with `body`, in one
/// transaction: the table is created if missing, so that deleting it never
/// fails, then made anew.
pub(crate) fn replace_table(name: &str, body: &str) -> String {
    format!("table inet {name} {{}}\ndelete table inet {name}\ntable inet {name} {{\n{body}}}\n")
}

/// Runs `program args` with `script` on its standard input (`nft -f -`, or
/// the same through `nsenter`); `Err` is what it said. It is killed after
/// [`NFT_LIMIT`].
pub(crate) async fn run_nft(program: &str, args: &[&str], script: &str) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut command = tokio::process::Command::new(program);
    command.args(args).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{program} is not installed"),
        _ => format!("{program} could not start: {e}"),
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A program that exits before reading says why on stderr.
        let _ = stdin.write_all(script.as_bytes()).await;
    }
    let output = match tokio::time::timeout(NFT_LIMIT, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(format!("{program} failed: {e}")),
        Err(_) => return Err(format!("{program} did not finish within {NFT_LIMIT:?}")),
    };
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let said: Vec<&str> = stderr.lines().map(str::trim).filter(|line| !line.is_empty()).take(3).collect();
    Err(match said.is_empty() {
        true => format!("{program} {}", crate::runner::process::describe_exit(output.status)),
        false => said.join(" "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowance(text: &str) -> EgressAllowance {
        EgressAllowance::parse(text).unwrap()
    }

    #[test]
    fn exceptions_become_accept_rules_before_anything_is_blocked() {
        let exceptions = Exceptions {
            allowances: vec![allowance("10.1.2.0/24"), allowance("192.168.7.9:5000"), allowance("[fd00::1]:443")],
            resolvers: vec!["10.255.255.53".parse().unwrap(), "fd00::53".parse().unwrap()],
        };
        assert_eq!(
            accept_rules(&exceptions),
            [
                "ct state established,related accept",
                "ip daddr 10.255.255.53 meta l4proto { tcp, udp } th dport 53 accept",
                "ip6 daddr fd00::53 meta l4proto { tcp, udp } th dport 53 accept",
                "ip daddr 10.1.2.0/24 accept",
                "ip daddr 192.168.7.9 meta l4proto { tcp, udp } th dport 5000 accept",
                "ip6 daddr fd00::1 meta l4proto { tcp, udp } th dport 443 accept",
            ]
        );
    }

    #[test]
    fn the_blocked_sets_hold_the_ranges_and_extra_addresses() {
        let sets = blocked_sets(&["203.0.113.7".parse().unwrap(), "10.1.1.1".parse().unwrap(), "2001:db8::7".parse().unwrap()]);
        assert!(sets.contains("set blocked_ipv4 {"), "{sets}");
        assert!(sets.contains("10.0.0.0/8, 100.64.0.0/10"), "{sets}");
        assert!(sets.contains("224.0.0.0/3, 203.0.113.7, 10.1.1.1 }"), "{sets}");
        assert!(sets.contains("ff00::/8, 2001:db8::7 }"), "{sets}");
        assert_eq!(sets.matches("auto-merge").count(), 2, "overlaps are merged: {sets}");
    }

    #[test]
    fn a_table_is_replaced_in_one_script() {
        assert_eq!(
            replace_table("prebuildd_x", "\tchain c {\n\t}\n"),
            "table inet prebuildd_x {}\ndelete table inet prebuildd_x\ntable inet prebuildd_x {\n\tchain c {\n\t}\n}\n"
        );
    }

    #[tokio::test]
    async fn a_missing_nft_says_so() {
        let error = run_nft("/nonexistent/nft", &["-f", "-"], "").await.unwrap_err();
        assert_eq!(error, "/nonexistent/nft is not installed");
        let error = run_nft("sh", &["-c", "cat >/dev/null; echo 'Error: Operation not permitted' >&2; exit 1"], "table").await.unwrap_err();
        assert_eq!(error, "Error: Operation not permitted");
    }
}
