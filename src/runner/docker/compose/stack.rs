//! The Compose file the runner writes for a stack: the services as the
//! policy read them (`police.rs`), with what each was granted, every
//! container and volume labelled, one network for the whole stack, and no
//! host port, host mount, fixed name or build left in it.
//!
//! A prebuild's stack and a warm instance's are the same [`StackTemplate`]
//! rendered for another project: the template travels with the snapshot
//! (a label of its image), so an instance needs nothing but the image.

use super::super::policy::Grant;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The Compose file format the runner writes: 2.4 has every key a single
/// host needs (`cpus`, `mem_limit`, `init`, named external networks,
/// labelled volumes) and both Docker Compose v1 and v2 read it.
const FILE_VERSION: &str = "2.4";

/// A stack as its snapshot keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StackTemplate {
    /// The dev container's service.
    pub service: String,
    /// Every service that runs, its definition with its grant applied and
    /// its image final (but the dev container's, which is the snapshot).
    pub services: BTreeMap<String, Map<String, Value>>,
    /// The named volumes (each project gets its own).
    pub volumes: Vec<String>,
    /// What each service was granted, for the check of its container.
    pub grants: BTreeMap<String, Grant>,
}

/// What differs between two stacks made from one template.
pub struct Project<'a> {
    /// The network the runner made for it (`None` with isolation off:
    /// Compose makes one, labelled as the runner's).
    pub network: Option<&'a str>,
    /// The dev container's image.
    pub dev_image: &'a str,
    /// The dev container's name, where the runner needs to know it.
    pub dev_container_name: Option<&'a str>,
    /// The labels of a service's container, by whether it is the dev
    /// container.
    pub labels: &'a (dyn Fn(bool) -> Vec<(String, String)> + Sync),
    /// The labels of the project's volumes (and network, with isolation
    /// off), besides their role.
    pub resource_labels: Vec<(String, String)>,
}

/// Writes what a grant says into a service's definition. The keys the
/// policy decides are replaced whole: nothing of the project's file
/// reaches the container but through the grant.
pub fn apply_grant(definition: &mut Map<String, Value>, grant: &Grant) {
    let strings = |list: &[String]| Value::Array(list.iter().cloned().map(Value::String).collect());
    let mut security_opt = grant.security_opt.clone();
    if !grant.new_privileges {
        security_opt.insert(0, "no-new-privileges:true".into());
    }
    definition.insert("privileged".into(), Value::Bool(grant.privileged));
    for (key, list) in
        [("cap_add", &grant.cap_add), ("cap_drop", &grant.cap_drop), ("security_opt", &security_opt), ("devices", &grant.devices)]
    {
        match list.is_empty() {
            true => definition.remove(key),
            false => definition.insert(key.into(), strings(list)),
        };
    }
    match grant.nano_cpus {
        Some(nano) => definition.insert("cpus".into(), json!(nano as f64 / 1e9)),
        None => definition.remove("cpus"),
    };
    match grant.memory_bytes {
        Some(bytes) => definition.insert("mem_limit".into(), json!(bytes)),
        None => definition.remove("mem_limit"),
    };
    if grant.init {
        definition.insert("init".into(), Value::Bool(true));
    }
    if grant.host_network {
        definition.insert("network_mode".into(), Value::String("host".into()));
    }
    if grant.gpus.is_some() {
        definition.insert("deploy".into(), json!({"resources": {"reservations": {"devices": [{"capabilities": ["gpu"]}]}}}));
    }
    let mut volumes = definition.get("volumes").and_then(Value::as_array).cloned().unwrap_or_default();
    for target in &grant.volumes {
        if !volumes.iter().any(|volume| volume_target(volume) == Some(target.as_str())) {
            volumes.push(Value::String(target.clone()));
        }
    }
    if !volumes.is_empty() {
        definition.insert("volumes".into(), Value::Array(volumes));
    }
    let mut tmpfs: Vec<Value> = match definition.get("tmpfs") {
        Some(Value::String(one)) => vec![Value::String(one.clone())],
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    };
    for (target, options) in &grant.tmpfs {
        let entry = if options.is_empty() { target.clone() } else { format!("{target}:{options}") };
        if !tmpfs.iter().any(|t| t.as_str().is_some_and(|t| t.split(':').next() == Some(target.as_str()))) {
            tmpfs.push(Value::String(entry));
        }
    }
    if !tmpfs.is_empty() {
        definition.insert("tmpfs".into(), Value::Array(tmpfs));
    }
}

/// Where a service's volume is mounted (short or long form).
fn volume_target(volume: &Value) -> Option<&str> {
    match volume {
        Value::String(text) => {
            let mut parts = text.split(':');
            let first = parts.next();
            parts.next().or(first)
        }
        Value::Object(object) => object.get("target").and_then(Value::as_str),
        _ => None,
    }
}

/// `$` is Compose's interpolation character: the runner's own values are
/// written with it escaped.
fn escaped(text: &str) -> String {
    text.replace('$', "$$")
}

impl StackTemplate {
    /// The template as the snapshot image's label.
    pub fn to_label(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The template a snapshot image's label holds.
    pub fn from_label(text: &str) -> Result<StackTemplate, String> {
        serde_json::from_str(text).map_err(|e| format!("the snapshot's Compose stack label cannot be read: {e}"))
    }

    /// The services whose containers share another service's network (the
    /// check of their containers does not look for the stack's network).
    pub fn shares_network(&self, service: &str) -> bool {
        self.services
            .get(service)
            .and_then(|definition| definition.get("network_mode"))
            .and_then(Value::as_str)
            .is_some_and(|mode| mode.starts_with("service:") || mode == "none" || mode == "host")
    }

    /// The Compose file of one project made from this template.
    pub fn render(&self, project: &Project<'_>) -> Value {
        let mut services = Map::new();
        for (name, definition) in &self.services {
            let is_dev = *name == self.service;
            let mut definition = definition.clone();
            let aliases = definition.remove("x-prebuildd-aliases");
            // The grant as the class allows it now (its limits may be lower).
            if let Some(grant) = self.grants.get(name) {
                apply_grant(&mut definition, grant);
            }
            if is_dev {
                definition.insert("image".into(), Value::String(project.dev_image.to_string()));
                if let Some(container_name) = project.dev_container_name {
                    definition.insert("container_name".into(), Value::String(container_name.to_string()));
                }
            }
            let mut labels = match definition.remove("labels") {
                Some(Value::Object(labels)) => labels,
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|item| {
                        let (key, value) = item.split_once('=').unwrap_or((item, ""));
                        (key.to_string(), Value::String(value.to_string()))
                    })
                    .collect(),
                _ => Map::new(),
            };
            for (key, value) in (project.labels)(is_dev) {
                labels.insert(key, Value::String(escaped(&value)));
            }
            definition.insert("labels".into(), Value::Object(labels));
            let joins_network = definition.get("network_mode").is_none_or(|mode| mode.as_str().is_none_or(|m| m == "bridge"));
            if joins_network {
                let settings = match aliases {
                    Some(aliases) => json!({ "default": { "aliases": aliases } }),
                    None => json!({ "default": null }),
                };
                definition.insert("networks".into(), settings);
            }
            services.insert(name.clone(), Value::Object(definition));
        }
        let resource_labels: Map<String, Value> =
            project.resource_labels.iter().map(|(key, value)| (key.clone(), Value::String(escaped(value)))).collect();
        let labelled = |role: &str| {
            let mut labels = resource_labels.clone();
            labels.insert(super::super::labels::ROLE.to_string(), Value::String(role.to_string()));
            json!({ "labels": labels })
        };
        let volumes: Map<String, Value> =
            self.volumes.iter().map(|name| (name.clone(), labelled(super::super::labels::ROLE_VOLUME))).collect();
        let network = match project.network {
            Some(name) => json!({ "external": true, "name": name }),
            None => labelled(super::super::labels::ROLE_NETWORK),
        };
        let mut file = Map::new();
        file.insert("version".into(), Value::String(FILE_VERSION.into()));
        file.insert("services".into(), Value::Object(services));
        if !volumes.is_empty() {
            file.insert("volumes".into(), Value::Object(volumes));
        }
        file.insert("networks".into(), json!({ "default": network }));
        Value::Object(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> StackTemplate {
        let app = json!({"command": "sleep infinity", "x-prebuildd-aliases": ["web"], "labels": ["keep=1"]});
        let db = json!({"image": "postgres:16", "volumes": ["data:/var/lib/postgresql/data"]});
        let sidecar = json!({"image": "busybox", "network_mode": "service:db"});
        StackTemplate {
            service: "app".into(),
            services: BTreeMap::from([
                ("app".to_string(), app.as_object().unwrap().clone()),
                ("db".to_string(), db.as_object().unwrap().clone()),
                ("sidecar".to_string(), sidecar.as_object().unwrap().clone()),
            ]),
            volumes: vec!["data".into()],
            grants: BTreeMap::new(),
        }
    }

    #[test]
    fn a_rendered_stack_is_one_labelled_project_on_its_own_network() {
        let labels = |dev: bool| vec![("dev.prebuildd.role".to_string(), if dev { "instance" } else { "service" }.to_string())];
        let project = Project {
            network: Some("prebuildd-stack-1"),
            dev_image: "prebuildd-snapshot:p1",
            dev_container_name: Some("prebuildd-instance-1"),
            labels: &labels,
            resource_labels: vec![("dev.prebuildd.compose-project".into(), "prebuildd-stack-1".into())],
        };
        let file = template().render(&project);
        assert_eq!(file["version"], "2.4");
        assert_eq!(file["networks"], json!({"default": {"external": true, "name": "prebuildd-stack-1"}}));
        let app = &file["services"]["app"];
        assert_eq!(app["image"], "prebuildd-snapshot:p1");
        assert_eq!(app["container_name"], "prebuildd-instance-1");
        assert_eq!(app["labels"], json!({"keep": "1", "dev.prebuildd.role": "instance"}));
        assert_eq!(app["networks"], json!({"default": {"aliases": ["web"]}}));
        assert!(app.get("x-prebuildd-aliases").is_none());
        assert_eq!(file["services"]["db"]["labels"]["dev.prebuildd.role"], "service");
        assert_eq!(file["services"]["db"]["networks"], json!({"default": null}));
        assert!(file["services"]["sidecar"].get("networks").is_none(), "it shares db's network");
        assert_eq!(file["volumes"]["data"]["labels"]["dev.prebuildd.compose-project"], "prebuildd-stack-1");
        let unisolated = Project { network: None, ..project };
        assert_eq!(template().render(&unisolated)["networks"]["default"]["labels"]["dev.prebuildd.compose-project"], "prebuildd-stack-1");
    }

    #[test]
    fn a_grant_replaces_the_privilege_keys_whole() {
        let mut definition =
            json!({"cap_add": ["SYS_ADMIN"], "privileged": true, "volumes": ["data:/data:rw"]}).as_object().unwrap().clone();
        let grant = Grant {
            cap_add: vec!["SYS_PTRACE".into()],
            nano_cpus: Some(500_000_000),
            memory_bytes: Some(128 << 20),
            volumes: vec!["/cache".into(), "/data".into()],
            ..Grant::default()
        };
        apply_grant(&mut definition, &grant);
        assert_eq!(
            Value::Object(definition),
            json!({
                "cap_add": ["SYS_PTRACE"], "privileged": false, "security_opt": ["no-new-privileges:true"],
                "cpus": 0.5, "mem_limit": 134217728, "volumes": ["data:/data:rw", "/cache"]
            })
        );
    }

    #[test]
    fn the_template_survives_its_label() {
        let template = template();
        assert_eq!(StackTemplate::from_label(&template.to_label()).unwrap(), template);
        assert!(template.shares_network("sidecar") && !template.shares_network("db"));
        assert!(StackTemplate::from_label("{").is_err());
    }
}
