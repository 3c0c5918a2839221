//! A prebuild of a Compose configuration: the runner reads the effective
//! configuration with Docker Compose, puts every service under the class's
//! policy, builds the dev container's image as for a single container
//! (features included), builds the other services' images itself, and has
//! `devcontainer up` start the whole stack as a Compose project of its own
//! (`prebuildd-prebuild-<prebuild id>`) on a network of its own. The
//! lifecycle commands then run in the dev container with the other
//! services up, and the dev container alone is committed.
//!
//! The stack's file is what the policy granted and nothing else; it is
//! kept on the snapshot image as a template for warm instances, with the
//! other services' images: those the runner built (or completed with the
//! repository's files their bind mounts named) are tagged
//! `prebuildd-snapshot-<service>:<prebuild id>` and go with the snapshot;
//! those named by `image` stay the operator's, like base images.

use super::super::config::Prepared;
use super::super::engine::Engine;
use super::super::labels;
use super::super::policy::{self, Ask, Grant, Repository};
use super::super::Core;
use super::police::{self, ComposeRequest, Places, Policed};
use super::stack::{apply_grant, Project, StackTemplate};
use super::{ComposeTool, COMPOSE_TIMEOUT};
use crate::catalog::Resources;
use crate::runner::job::JobShared;
use crate::runner::PrebuildJob;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Docker's smallest memory limit.
const MIN_MEMORY: u64 = 6 << 20;

/// A prebuild's Compose stack, from its configuration to its containers.
pub(in crate::runner::docker) struct PrebuildStack {
    request: ComposeRequest,
    policed: Policed,
    tool: ComposeTool,
    /// The Compose project's name.
    pub project: String,
    /// What the services other than the dev container were granted.
    others: BTreeMap<String, Grant>,
    /// The stack as its snapshot keeps it (once the up is prepared).
    template: StackTemplate,
    /// The stack's network (once made; `None` with isolation off).
    network: Option<String>,
}

/// What `devcontainer up` needs for a stack.
pub(in crate::runner::docker) struct UpPlan {
    /// The devcontainer.json for `up`.
    pub config: Value,
    /// More arguments and environment for the CLI.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// The share of its class's limits each of a stack's other services gets:
/// together they get as much again as the dev container, in equal parts
/// (never below Docker's smallest memory limit), so that a stack uses at
/// most twice its class's limits.
pub fn service_share(resources: Resources, others: usize) -> Resources {
    let parts = others.max(1);
    Resources {
        nano_cpus: resources.nano_cpus.map(|nano| (nano / parts as i64).max(10_000_000)),
        memory_bytes: resources.memory_bytes.map(|bytes| (bytes / parts as u64).max(MIN_MEMORY)),
    }
}

impl PrebuildStack {
    /// Reads and polices the Compose configuration; sets the dev
    /// container's image or build in `prepared` (built as for a single
    /// container). Returns the warnings for the prebuild's warning, or a
    /// refusal naming every key at once.
    pub async fn read(
        core: &Core,
        shared: &JobShared,
        job: &PrebuildJob,
        request: ComposeRequest,
        prepared: &mut Prepared,
        repository: &Repository,
    ) -> Result<(PrebuildStack, Vec<String>), String> {
        let log = &job.log;
        let tool = core.compose_tool().await?;
        log.line(&format!("reading the Docker Compose configuration with {}", tool.description())).await;
        let project = labels::prebuild_project(&job.prebuild_id);
        let dir = request.files.first().and_then(|file| file.parent()).unwrap_or(&repository.clone).to_path_buf();
        let mut args: Vec<String> = vec!["--project-name".into(), project.clone()];
        for file in &request.files {
            args.extend(["-f".to_string(), file.display().to_string()]);
        }
        args.push("config".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env = core.compose_env();
        let text = tool.run(&shared.processes, Some(log), &env, &dir, &args, COMPOSE_TIMEOUT).await.map_err(|e| {
            if shared.is_stopped() {
                "the prebuild was stopped".to_string()
            } else {
                format!("the Docker Compose configuration cannot be read: {e}")
            }
        })?;
        let effective: Value =
            serde_yaml_ng::from_str(&text).map_err(|e| format!("the Docker Compose configuration cannot be read: {e}"))?;
        // Paths are resolved on the file system: off the runtime.
        let (clone, asked) = (repository.clone.clone(), request.clone());
        let policed = crate::runner::process::blocking(move || police::police(&effective, &asked, &Places { clone: &clone }))
            .await
            .map_err(|e| e.to_string())??;
        for note in &policed.notes {
            log.line(note).await;
        }
        let mut refusals = policed.refusals.clone();
        let mut warnings = policed.warnings.clone();
        let others: Vec<&String> = policed.services.keys().filter(|name| **name != request.service).collect();
        let share = service_share(job.resources, others.len());
        let mut grants = BTreeMap::new();
        for name in others {
            let service = &policed.services[name];
            let decision = policy::decide(&service.asks, &job.policy, share, repository);
            refusals.extend(decision.refusals.iter().cloned());
            warnings.extend(decision.warnings.iter().cloned());
            for note in &decision.notes {
                log.line(note).await;
            }
            grants.insert(name.clone(), decision.grant);
        }
        // The dev container's own asks, before anything is built (its
        // image's and features' come after the build).
        let dev = &policed.services[&request.service];
        let mut dev_asks = prepared.asks.clone();
        dev_asks.extend(dev.asks.iter().cloned());
        refusals.extend(policy::decide(&dev_asks, &job.policy, job.resources, repository).refusals);
        if !refusals.is_empty() {
            return Err(format!("refused to run the prebuild: {}", refusals.join("; ")));
        }
        match (&dev.build, &dev.image) {
            (Some(build), _) => {
                let context = build.get("context").cloned().unwrap_or(Value::Null);
                let dockerfile = build.get("dockerfile").cloned().unwrap_or(Value::Null);
                let mut devcontainer_build = Map::from_iter([("context".to_string(), context), ("dockerfile".to_string(), dockerfile)]);
                for key in ["args", "target"] {
                    if let Some(value) = build.get(key) {
                        devcontainer_build.insert(key.into(), value.clone());
                    }
                }
                prepared.config.insert("build".into(), Value::Object(devcontainer_build));
            }
            (None, Some(image)) => {
                prepared.config.insert("image".into(), Value::String(image.clone()));
            }
            (None, None) => return Err(format!("services.{}: set image or build", request.service)),
        }
        let stack = PrebuildStack {
            request,
            policed,
            tool: tool.clone(),
            project,
            others: grants,
            template: StackTemplate::default(),
            network: None,
        };
        Ok((stack, warnings))
    }

    /// The dev container's service asks (added to its devcontainer.json's
    /// and its image's for the final decision).
    pub fn dev_asks(&self) -> Vec<Ask> {
        self.policed.services.get(&self.request.service).map(|service| service.asks.clone()).unwrap_or_default()
    }

    /// Makes what the stack needs before `devcontainer up`: its network,
    /// the other services' images, its Compose file in `dir`; returns what
    /// the CLI needs.
    #[allow(clippy::too_many_arguments)]
    pub async fn prepare_up(
        &mut self,
        core: &Core,
        shared: &JobShared,
        job: &PrebuildJob,
        engine: &Engine,
        prepared: &Prepared,
        build_image: &str,
        dev_grant: &Grant,
        dir: &Path,
    ) -> Result<UpPlan, String> {
        let log = &job.log;
        let network = core.networks.for_stack(engine, &self.project, &job.policy.allow_egress).await?;
        self.network = network.clone();
        let images = self.build_services(core, shared, job, engine, dir).await?;
        let mut services = BTreeMap::new();
        let mut grants = self.others.clone();
        grants.insert(self.request.service.clone(), Grant { copies: Vec::new(), ..dev_grant.clone() });
        for (name, service) in &self.policed.services {
            let mut definition = service.definition.clone();
            if let Some(image) = images.get(name).or(service.image.as_ref()) {
                definition.insert("image".into(), Value::String(image.clone()));
            }
            let mut grant = grants.get(name).cloned().unwrap_or_default();
            grant.volumes.extend(service.volume_targets.iter().cloned());
            grant.tmpfs.extend(service.tmpfs_targets.clone());
            apply_grant(&mut definition, &grant);
            grants.insert(name.clone(), grant);
            services.insert(name.clone(), definition);
        }
        self.template = StackTemplate {
            service: self.request.service.clone(),
            services,
            volumes: self.policed.volumes.iter().cloned().collect(),
            grants,
        };
        let container_labels = |_dev: bool| {
            vec![
                (labels::RUNNER_ID.to_string(), core.runner_id.clone()),
                (labels::PREBUILD_ID.to_string(), job.prebuild_id.clone()),
                (labels::ROLE.to_string(), labels::ROLE_PREBUILD.to_string()),
                (labels::COMPOSE_PROJECT.to_string(), self.project.clone()),
            ]
        };
        let project = Project {
            network: network.as_deref(),
            dev_image: build_image,
            dev_container_name: None,
            labels: &container_labels,
            resource_labels: resource_labels(&core.runner_id, &self.project, Some(&job.prebuild_id)),
        };
        let file = self.template.render(&project);
        write_json(&dir.join("stack.json"), &file).await?;
        // The snapshot is committed from the dev container as the Dev
        // Containers CLI started it, so its image's entrypoint and command
        // are what ran there: the CLI's keep-alive wrapper and, unless
        // overrideCommand, the service's own command. Instances take them
        // from the image: the service's command written again would run
        // where overrideCommand said not to.
        if let Some(dev) = self.template.services.get_mut(&self.request.service) {
            dev.remove("command");
            dev.remove("entrypoint");
        }
        log.line(&format!(
            "the stack is Compose project {} ({} services) on {}",
            self.project,
            self.template.services.len(),
            network.as_deref().map_or("a network of its own".to_string(), |name| format!("its own network {name}"))
        ))
        .await;
        let run_services: Vec<Value> = self.template.services.keys().cloned().map(Value::String).collect();
        let config = json!({
            "dockerComposeFile": ["stack.json"],
            "service": self.request.service,
            "runServices": run_services,
            "workspaceFolder": prepared.workspace_folder,
        });
        let mut args = Vec::new();
        if let Some(standalone) = &self.tool.standalone {
            args.extend(["--docker-compose-path".to_string(), standalone.display().to_string()]);
        }
        Ok(UpPlan { config, args, env: vec![("COMPOSE_PROJECT_NAME".into(), self.project.clone())] })
    }

    /// Builds the services other than the dev container that have a build,
    /// and completes the images of those that bind-mount the repository's
    /// files with those files; returns their images by service.
    async fn build_services(
        &self,
        core: &Core,
        shared: &JobShared,
        job: &PrebuildJob,
        engine: &Engine,
        dir: &Path,
    ) -> Result<BTreeMap<String, String>, String> {
        let image_labels = |service: &str| {
            HashMap::from([
                (labels::RUNNER_ID.to_string(), core.runner_id.clone()),
                (labels::PREBUILD_ID.to_string(), job.prebuild_id.clone()),
                (labels::ROLE.to_string(), labels::ROLE_SNAPSHOT.to_string()),
                (labels::COMPOSE_SERVICE.to_string(), service.to_string()),
            ])
        };
        let mut images = BTreeMap::new();
        let mut builds = Map::new();
        for (name, service) in &self.policed.services {
            let Some(build) = service.build.as_ref().filter(|_| *name != self.request.service) else { continue };
            let mut build = build.clone();
            let mut build_labels = build.get("labels").and_then(Value::as_object).cloned().unwrap_or_default();
            for (key, value) in image_labels(name) {
                build_labels.insert(key, Value::String(value));
            }
            build.insert("labels".into(), Value::Object(build_labels));
            let image = labels::service_image(&job.prebuild_id, name);
            builds.insert(name.clone(), json!({ "build": build, "image": image }));
            images.insert(name.clone(), image);
        }
        if !builds.is_empty() {
            job.log.line(&format!("building the stack's services {}", builds.keys().cloned().collect::<Vec<_>>().join(", "))).await;
            let path = dir.join("build.json");
            write_json(&path, &json!({ "version": "2.4", "services": builds })).await?;
            let file = path.display().to_string();
            let mut args = vec!["--project-name", &self.project, "-f", &file, "build"];
            args.extend(builds.keys().map(String::as_str));
            let env = core.compose_env();
            self.tool.run(&shared.processes, Some(&job.log), &env, dir, &args, COMPOSE_TIMEOUT).await.map_err(|e| {
                if shared.is_stopped() {
                    "the prebuild was stopped".to_string()
                } else {
                    format!("the stack's services could not be built: {e}")
                }
            })?;
        }
        for (name, service) in &self.policed.services {
            if *name == self.request.service || service.copies.is_empty() {
                continue;
            }
            let Some(base) = images.get(name).or(service.image.as_ref()).cloned() else { continue };
            let image = labels::service_image(&job.prebuild_id, name);
            job.log.line(&format!("adding the repository's files to service {name}'s image ({image})")).await;
            let copies = service.copies.clone();
            let base_for_context = base.clone();
            let context = crate::runner::process::blocking(move || files_context(&base_for_context, &copies))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cannot read the repository's files for service {name}: {e}"))?;
            // Without the cache: the image is a few files' copy, and two
            // prebuilds of one project would otherwise share its layer.
            engine.build_context(&image, context, image_labels(name), false).await.map_err(|e| format!("cannot build {image}: {e}"))?;
            images.insert(name.clone(), image);
        }
        Ok(images)
    }

    /// Checks every container of the stack against what its service was
    /// granted. Empty when all are as granted.
    pub async fn excess(&self, engine: &Engine) -> Result<Vec<String>, String> {
        check_stack(engine, &self.project, &self.template, self.network.as_deref()).await
    }

    /// The label the snapshot carries for its instances.
    pub fn template_label(&self) -> String {
        self.template.to_label()
    }
}

/// The labels of a stack's volumes (and its network, where Compose makes
/// it), besides their role.
pub(super) fn resource_labels(runner_id: &str, project: &str, prebuild_id: Option<&str>) -> Vec<(String, String)> {
    let mut labels =
        vec![(labels::RUNNER_ID.to_string(), runner_id.to_string()), (labels::COMPOSE_PROJECT.to_string(), project.to_string())];
    if let Some(prebuild_id) = prebuild_id {
        labels.push((labels::PREBUILD_ID.to_string(), prebuild_id.to_string()));
    }
    labels
}

/// Why containers of a stack have more than their services were granted.
pub(super) async fn check_stack(
    engine: &Engine,
    project: &str,
    template: &StackTemplate,
    network: Option<&str>,
) -> Result<Vec<String>, String> {
    let mut problems = Vec::new();
    for container in engine.containers(&[(labels::COMPOSE_PROJECT, project)]).await? {
        let service = container.labels.get("com.docker.compose.service").cloned().unwrap_or_default();
        let Some(grant) = template.grants.get(&service) else {
            problems.push(format!("container {} is no service of the stack", container.name));
            continue;
        };
        let network = network.filter(|_| !template.shares_network(&service)).map(str::to_string);
        let grant = Grant { network, ..grant.clone() };
        for problem in engine.excess(&container.id, &grant).await? {
            problems.push(format!("service {service}: {problem}"));
        }
    }
    Ok(problems)
}

/// A build context that adds the repository's files to an image: each
/// copy at its target, with the clone's modes.
fn files_context(base: &str, copies: &[(std::path::PathBuf, String)]) -> std::io::Result<Vec<u8>> {
    let mut context = tar::Builder::new(Vec::new());
    context.follow_symlinks(false);
    let dockerfile = format!("FROM {base}\nCOPY files/ /\n");
    let mut header = tar::Header::new_gnu();
    header.set_size(dockerfile.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    context.append_data(&mut header, "Dockerfile", dockerfile.as_bytes())?;
    for (source, target) in copies {
        let inside = Path::new("files").join(target.trim_start_matches('/'));
        if source.is_dir() {
            context.append_dir_all(&inside, source)?;
        } else {
            context.append_path_with_name(source, &inside)?;
        }
    }
    context.into_inner()
}

async fn write_json(path: &Path, value: &Value) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    tokio::fs::write(path, text).await.map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_services_share_as_much_again_as_the_class_gives() {
        let class = Resources { nano_cpus: Some(2_000_000_000), memory_bytes: Some(1 << 30) };
        assert_eq!(service_share(class, 1), class);
        assert_eq!(service_share(class, 4), Resources { nano_cpus: Some(500_000_000), memory_bytes: Some(256 << 20) });
        let small = Resources { nano_cpus: Some(100_000_000), memory_bytes: Some(8 << 20) };
        assert_eq!(service_share(small, 4).memory_bytes, Some(MIN_MEMORY), "never below Docker's smallest limit");
        assert_eq!(service_share(Resources::default(), 3), Resources::default(), "no limits, none shared");
    }

    #[test]
    fn a_files_context_puts_each_copy_at_its_target() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("init.sql"), "create table t();").unwrap();
        std::fs::create_dir(dir.path().join("conf")).unwrap();
        std::fs::write(dir.path().join("conf/a.conf"), "a").unwrap();
        let copies = vec![
            (dir.path().join("init.sql"), "/docker-entrypoint-initdb.d/init.sql".to_string()),
            (dir.path().join("conf"), "/etc/app".to_string()),
        ];
        let context = files_context("postgres:16", &copies).unwrap();
        let mut archive = tar::Archive::new(context.as_slice());
        let names: Vec<String> = archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
        assert!(names.contains(&"Dockerfile".to_string()));
        assert!(names.contains(&"files/docker-entrypoint-initdb.d/init.sql".to_string()), "{names:?}");
        assert!(names.contains(&"files/etc/app/a.conf".to_string()), "{names:?}");
    }
}
