use super::*;
use serde_json::json;

struct Clone {
    dir: tempfile::TempDir,
}

impl Clone {
    fn new() -> Clone {
        let dir = tempfile::tempdir().unwrap();
        for path in [".devcontainer/Dockerfile", "db/init.sql", "db/Dockerfile"] {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "x").unwrap();
        }
        Clone { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().canonicalize().unwrap()
    }

    fn police(&self, effective: Value, run_services: Option<Vec<String>>) -> Result<Policed, String> {
        let root = self.root();
        let request = ComposeRequest { files: vec![root.join("compose.yml")], service: "app".into(), run_services };
        police(&effective, &request, &Places { clone: &root })
    }
}

fn written(service: &Service) -> Vec<&str> {
    service.asks.iter().map(|ask| ask.written.as_str()).collect()
}

#[test]
fn a_rails_like_stack_keeps_what_runs_and_drops_what_reaches_the_host() {
    let clone = Clone::new();
    let root = clone.root();
    let effective = json!({
        "version": "3.8",
        "services": {
            "app": {
                "build": {"context": root.join(".devcontainer").display().to_string(), "dockerfile": "Dockerfile", "args": {"V": "1"}},
                "command": "sleep infinity",
                "volumes": [format!("{}:/workspaces:cached", root.parent().unwrap().display()), format!("{}/db/init.sql:/init.sql", root.display()), "cache:/cache"],
                "ports": [{"published": 3000, "target": 3000}],
                "environment": {"DATABASE_URL": "postgres://db/app"},
                "depends_on": {"db": {"condition": "service_started"}},
                "container_name": "rails_app",
            },
            "db": {
                "image": "postgres:16",
                "volumes": ["pgdata:/var/lib/postgresql/data", format!("{}/db/init.sql:/docker-entrypoint-initdb.d/init.sql:ro", root.display())],
                "networks": {"back": {"aliases": ["database"]}},
                "cap_add": ["SYS_NICE"],
                "mem_limit": "64m",
            },
            "worker": {"image": "busybox", "profiles": ["extra"]},
        },
        "volumes": {"pgdata": {}, "cache": {"name": "fixed-name"}},
        "networks": {"back": {}},
    });
    let policed = clone.police(effective, Some(vec!["app".into()])).unwrap();
    assert_eq!(policed.services.keys().collect::<Vec<_>>(), vec!["app", "db"], "worker is not started");
    assert_eq!(policed.volumes.iter().collect::<Vec<_>>(), vec!["cache", "pgdata"]);
    let app = &policed.services["app"];
    let build = app.build.as_ref().unwrap();
    assert_eq!(build["dockerfile"], json!(root.join(".devcontainer/Dockerfile").display().to_string()));
    assert_eq!(build["args"], json!({"V": "1"}));
    assert_eq!(app.definition["volumes"], json!(["cache:/cache"]), "the workspace and the repository's file are not mounted");
    assert!(app.definition.get("ports").is_none() && app.definition.get("container_name").is_none());
    assert_eq!(written(app), vec![format!("services.app.volumes[1] {}/db/init.sql:/init.sql", root.display())], "copied in by the grant");
    let db = &policed.services["db"];
    assert_eq!(db.copies, vec![(root.join("db/init.sql"), "/docker-entrypoint-initdb.d/init.sql".to_string())]);
    assert_eq!(db.definition["x-prebuildd-aliases"], json!(["database"]));
    assert_eq!(written(db), vec!["services.db.cap_add SYS_NICE", "services.db.mem_limit: \"64m\""]);
    assert!(matches!(db.asks[1].want, Want::Memory(bytes) if bytes == 64 << 20));
    let warnings = policed.warnings.join("\n");
    assert!(warnings.contains("services.app.ports was left out: no port of the runner's host is published"), "{warnings}");
    assert!(warnings.contains("services.app.container_name was left out"), "{warnings}");
    let notes = policed.notes.join("\n");
    assert!(notes.contains("holds the repository; the workspace is copied"), "{notes}");
    assert!(notes.contains("volumes.cache.name was left out"), "{notes}");
    assert!(notes.contains("what the prebuild writes there is not in the snapshot"), "{notes}");
    assert!(policed.refusals.is_empty(), "{:?}", policed.refusals);
}

#[test]
fn what_reaches_the_host_is_refused_naming_the_key() {
    let clone = Clone::new();
    let effective = json!({
        "services": {
            "app": {
                "image": "base:1",
                "volumes": ["/var/run/docker.sock:/var/run/docker.sock", "/etc:/host-etc:ro"],
                "network_mode": "host",
                "pid": "host",
                "privileged": true,
            },
            "db": {"image": "db:1", "external_links": ["other_db"], "volumes_from": ["container:x"], "secrets": ["s"], "network_mode": "container:abc"},
        },
        "volumes": {"shared": {"external": true}, "nfs": {"driver_opts": {"type": "nfs", "device": ":/export"}}},
        "secrets": {"s": {"file": "/etc/shadow"}},
        "x-custom": {"ignored": true},
    });
    let policed = clone.police(effective, None).unwrap();
    let refusals = policed.refusals.join("\n");
    for expected in [
        "services.app.volumes[0] /var/run/docker.sock:/var/run/docker.sock: a bind mount of a host path (/var/run/docker.sock) is never granted",
        "services.app.volumes[1] /etc:/host-etc:ro: a bind mount of a host path (/etc)",
        "services.db.external_links: it links to containers outside the stack",
        "services.db.volumes_from container:x",
        "services.db.secrets: Compose makes secrets bind mounts of host files",
        "services.db.network_mode: container:abc",
        "volumes.shared.external",
        "volumes.nfs.driver_opts",
        "secrets: Compose makes secrets bind mounts",
    ] {
        assert!(refusals.contains(expected), "{expected:?} missing from:\n{refusals}");
    }
    let app = &policed.services["app"];
    assert_eq!(written(app), vec!["services.app.network_mode: host", "services.app.pid: host", "services.app.privileged: true"]);
    assert!(matches!(app.asks[0].want, Want::HostNetwork));
    assert!(matches!(app.asks[1].want, Want::HostNamespace("PID")));
}

#[test]
fn services_and_keys_it_does_not_know_fail_clearly() {
    let clone = Clone::new();
    let missing = clone.police(json!({"services": {"web": {"image": "x"}}}), None).unwrap_err();
    assert!(missing.contains("service \"app\"") && missing.contains("web"), "{missing}");
    let run = clone.police(json!({"services": {"app": {"image": "x"}}}), Some(vec!["nope".into()])).unwrap_err();
    assert!(run.contains("runServices") && run.contains("nope"), "{run}");
    let policed = clone.police(json!({"services": {"app": {"image": "x", "teleport": true, "build": {"context": "/etc"}}}}), None).unwrap();
    let refusals = policed.refusals.join("\n");
    assert!(refusals.contains("services.app.teleport: not a Compose service key"), "{refusals}");
    assert!(refusals.contains("services.app.build.context \"/etc\" is not a folder in the repository"), "{refusals}");
}

#[test]
fn every_running_service_and_what_it_needs_is_policed() {
    let clone = Clone::new();
    let effective = json!({"services": {
        "app": {"image": "a", "links": ["cache:redis"]},
        "cache": {"image": "c", "network_mode": "service:proxy"},
        "proxy": {"image": "p"},
        "other": {"image": "o", "privileged": true},
    }});
    let policed = clone.police(effective, Some(Vec::new())).unwrap();
    assert_eq!(policed.services.keys().collect::<Vec<_>>(), vec!["app", "cache", "proxy"]);
    assert_eq!(policed.services["cache"].shares_network_of.as_deref(), Some("proxy"));
}

#[test]
fn the_readme_lists_every_service_key() {
    let readme = include_str!("../../../../../README.md");
    let start = readme.find("### Docker Compose configurations").expect("the README's Compose section");
    let section = &readme[start..];
    let section = &section[..section[4..].find("\n### ").map_or(section.len(), |end| end + 4)];
    for (key, _) in super::keys::SERVICE_KEYS {
        assert!(section.contains(&format!("`{key}`")), "README's Compose section does not say what happens to {key}");
    }
}
