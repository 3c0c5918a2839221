//! The sandbox's network: a lifecycle command reaches a machine beyond this
//! host (a namespace of the test's own at a documentation address) but not
//! a service listening on every address of this host, not its loopback,
//! not the metadata service's address and not a private address, unless
//! the class's `allow_egress` names it (and then only its port), while DNS
//! still answers; with `network_isolation = false` the host answers. The
//! tests need root, slirp4netns, nftables, iproute2 and busybox, and fail
//! without them.

use super::fixtures::*;
use super::*;
use prebuildd::catalog::{ClassPolicy, EgressAllowance};

/// A repository whose onCreateCommand tries every target.
fn reaching(fixture: &Fixture, name: &str, targets: &[(String, String, u16)]) -> PathBuf {
    let repo = fixture.path(name);
    let devcontainer =
        serde_json::json!({ "onCreateCommand": resolve_script("busybox nslookup") + &reach_script("busybox nc", targets) }).to_string();
    repository(&repo, Some(&devcontainer), &[], true);
    repo
}

#[tokio::test]
async fn sandboxed_commands_reach_beyond_the_host_but_not_the_host_or_private_networks() {
    within(async {
        let fixture = Fixture::new();
        let (host, metadata, remote) = (host_listener(), Metadata::new(), Remote::new());
        let mut targets = host_targets(&host, &metadata);
        targets.push(("loopback".into(), "127.0.0.1".into(), host.address.port()));
        let blocked = targets.len();
        targets.push(("public".into(), remote.public.to_string(), remote.main.address.port()));
        targets.push(("private".into(), remote.private.to_string(), remote.main.address.port()));
        targets.push(("private-other-port".into(), remote.private.to_string(), remote.other.address.port()));
        let repo = reaching(&fixture, "isolated", &targets);

        let prebuild_id = fixture.completed_prebuild(&repo).await;
        let log = fixture.log(&prebuild_id);
        assert!(log.contains("a network of their own that reaches the internet, not this host"), "{log}");
        for (label, _, _) in &targets[..blocked] {
            let answer = reached(&log, label);
            assert!(!answer.contains(&host.token) && !answer.contains(&metadata.listener.token), "{label} answered: {answer}\n{log}");
        }
        assert!(reached(&log, "public").contains(&remote.main.token), "a machine beyond the host answers:\n{log}");
        assert!(!reached(&log, "private").contains(&remote.main.token), "{log}");
        assert_resolver_answered(&log);

        // A class that allows the private address's one port.
        let allowance = EgressAllowance::parse(&format!("{}:{}", remote.private, remote.main.address.port())).unwrap();
        let policy = ClassPolicy { class_name: "mirror".into(), allow_egress: vec![allowance], ..ClassPolicy::default() };
        let (allowed_id, _) = fixture.start_in_class(&repo.display().to_string(), policy).await;
        let (state, _) = fixture.finish(&allowed_id).await;
        let allowed_log = fixture.log(&allowed_id);
        assert!(matches!(state, JobState::Completed { .. }), "{state:?}\n{allowed_log}");
        assert!(reached(&allowed_log, "private").contains(&remote.main.token), "allow_egress lets it through:\n{allowed_log}");
        assert!(!reached(&allowed_log, "private-other-port").contains(&remote.other.token), "only its port:\n{allowed_log}");
        assert!(!reached(&allowed_log, "gateway").contains(&host.token), "{allowed_log}");
        assert_eq!(host.accepted() + metadata.listener.accepted(), 0, "no connection reached the host's listeners");
    })
    .await
}

#[tokio::test]
async fn without_network_isolation_the_host_answers() {
    within(async {
        let dir = tempfile::Builder::new().prefix("local-runner-").tempdir_in(outside_tmp()).unwrap();
        std::fs::create_dir_all(dir.path().join("data/logs")).unwrap();
        let settings = SandboxSettings::new(true, vec![dir.path().join("data")]).with_network_isolation(false);
        let fixture =
            Fixture { runner: LocalRunner::new(&dir.path().join(ROOT), settings, prebuildd::runner::RunnerEvents::new()).unwrap(), dir };
        let host = host_listener();
        let address = host_addresses().into_iter().find(IpAddr::is_ipv4).expect("an IPv4 address of this host");
        let repo = reaching(&fixture, "open", &[("host".into(), address.to_string(), host.address.port())]);
        let prebuild_id = fixture.completed_prebuild(&repo).await;
        let log = fixture.log(&prebuild_id);
        assert!(log.contains("the host's network (network_isolation = false on this runner"), "{log}");
        assert!(reached(&log, "host").contains(&host.token), "{log}");
    })
    .await
}

use std::net::IpAddr;
