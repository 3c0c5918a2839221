//! Warm instances of a Compose configuration are whole stacks: the
//! snapshot's stack template (see `stack.rs`) started as a Compose project
//! of its own, `prebuildd-stack-<instance id>`, on a network of its own,
//! with the snapshot image in place of the dev container's service. A
//! running instance is the project up (`up -d`); a stopped one is created,
//! not started (`up --no-start`: disk only). The dev container is named
//! `prebuildd-instance-<instance id>` and labelled as any instance, so the
//! pool counts, adopts and claims stacks by their dev containers; the other
//! containers are labelled `dev.prebuildd.role=service` with the same pool,
//! snapshot and instance.
//!
//! A claim renames the stack's containers `prebuildd-claimed-...`: the
//! stack is the claimant's, and the runner never touches it again.

use super::super::engine::Engine;
use super::super::labels;
use super::super::Core;
use super::prebuild::{check_stack, resource_labels};
use super::stack::{Project, StackTemplate};
use super::COMPOSE_TIMEOUT;
use crate::catalog::EgressAllowance;
use crate::runner::pool_plan::Instance;
use crate::runner::process::JobProcesses;
use crate::runner::ServiceContainer;
use std::collections::{BTreeMap, HashSet};

/// What a warm instance's stack is made from.
pub(in crate::runner::docker) struct StackInstance<'a> {
    pub warm_pool_id: &'a str,
    pub instance: &'a Instance,
    pub template: &'a StackTemplate,
    /// The runner's network for the class's allowances: the instance's
    /// label, so that a change of allowances replaces the stack.
    pub class_network: Option<&'a str>,
    pub allowances: &'a [EgressAllowance],
    pub start: bool,
}

impl Core {
    /// Removes a stack whole: its containers (with their anonymous
    /// volumes), its volumes, its network and the network's rules.
    pub(in crate::runner::docker) async fn remove_stack(&self, engine: &Engine, project: &str) -> Result<(), String> {
        let ours = [(labels::RUNNER_ID, self.runner_id.as_str()), (labels::COMPOSE_PROJECT, project)];
        for container in engine.containers(&ours).await? {
            engine.remove_container(&container.id).await?;
        }
        for (volume, _) in engine.volumes(&ours).await? {
            engine.remove_volume(&volume).await?;
        }
        self.networks.remove_stack(engine, project).await?;
        // Isolation off: Compose made the network, with the stack's labels.
        for network in engine.networks(&ours).await? {
            engine.remove_network(&network.name).await?;
        }
        Ok(())
    }

    /// Creates a warm instance's stack (and starts it if asked); returns
    /// its dev container's ID. A stack that cannot be made whole, or whose
    /// containers have more than granted, is removed again.
    pub(in crate::runner::docker) async fn provision_stack(&self, engine: &Engine, made: StackInstance<'_>) -> Result<String, String> {
        let project = labels::instance_project(&made.instance.id);
        let result = self.make_stack(engine, &made, &project).await;
        if result.is_err() {
            if let Err(error) = self.remove_stack(engine, &project).await {
                tracing::warn!(%project, %error, "docker runner: cannot remove a stack that could not be made");
            }
        }
        result
    }

    async fn make_stack(&self, engine: &Engine, made: &StackInstance<'_>, project: &str) -> Result<String, String> {
        let tool = self.compose_tool().await?;
        let network = self.networks.for_stack(engine, project, made.allowances).await?;
        let instance = made.instance;
        let container_labels = |dev: bool| {
            let mut labels = vec![
                (labels::RUNNER_ID.to_string(), self.runner_id.clone()),
                (labels::WARM_POOL_ID.to_string(), made.warm_pool_id.to_string()),
                (labels::SNAPSHOT_ID.to_string(), instance.snapshot_id.clone()),
                (labels::INSTANCE_ID.to_string(), instance.id.clone()),
                (labels::ROLE.to_string(), if dev { labels::ROLE_INSTANCE } else { labels::ROLE_SERVICE }.to_string()),
                (labels::COMPOSE_PROJECT.to_string(), project.to_string()),
            ];
            if let Some(class_network) = made.class_network {
                labels.push((labels::NETWORK.to_string(), class_network.to_string()));
            }
            labels
        };
        let dev_name = labels::instance_name(&instance.id);
        let file = made.template.render(&Project {
            network: network.as_deref(),
            dev_image: &labels::snapshot_image(&instance.snapshot_id),
            dev_container_name: Some(&dev_name),
            labels: &container_labels,
            resource_labels: resource_labels(&self.runner_id, project, None),
        });
        let dir = self.root.join("stacks");
        let path = dir.join(format!("{}.json", instance.id));
        let text = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
        tokio::fs::create_dir_all(&dir).await.map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        tokio::fs::write(&path, text).await.map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let path_arg = path.display().to_string();
        let mut args = vec!["--project-name", project, "-f", &path_arg, "up"];
        args.extend(if made.start { ["-d", "--no-build"] } else { ["--no-start", "--no-build"] });
        let processes = JobProcesses::default();
        let env = self.compose_env();
        let started = tool.run(&processes, None, &env, &dir, &args, COMPOSE_TIMEOUT).await;
        let _ = tokio::fs::remove_file(&path).await;
        started.map_err(|e| format!("the stack could not be {}: {e}", if made.start { "started" } else { "created" }))?;
        let dev = engine.containers(&[(labels::INSTANCE_ID, instance.id.as_str()), (labels::ROLE, labels::ROLE_INSTANCE)]).await?;
        let Some(dev) = dev.into_iter().next() else { return Err("Docker Compose made no dev container".into()) };
        let problems = check_stack(engine, project, made.template, network.as_deref()).await?;
        if !problems.is_empty() {
            return Err(format!("its containers have more than its class's policy granted ({})", problems.join("; ")));
        }
        Ok(dev.id)
    }

    /// The claim of a stack: its other containers are renamed as the
    /// claimant's (the dev container is already), and every container is
    /// reported with its service.
    pub(in crate::runner::docker) async fn claim_stack(&self, engine: &Engine, instance_id: &str) -> Result<Vec<ServiceContainer>, String> {
        let mut services = Vec::new();
        for container in engine.containers(&[(labels::RUNNER_ID, self.runner_id.as_str()), (labels::INSTANCE_ID, instance_id)]).await? {
            let service = container.labels.get("com.docker.compose.service").cloned().unwrap_or_default();
            if !container.name.starts_with(labels::CLAIMED_NAME_PREFIX) {
                engine.rename(&container.id, &format!("{}-{service}", labels::claimed_name(instance_id))).await?;
            }
            services.push(ServiceContainer { service, container_id: container.id });
        }
        services.sort_by(|a, b| a.service.cmp(&b.service));
        Ok(services)
    }

    /// Removes the stacks of a pool that lost their dev container (the
    /// rest of a stack whose making was cut short, or whose dev container
    /// was removed behind the runner's back), but for the instances in
    /// `busy` and claimed ones. Returns how many it removed.
    pub(in crate::runner::docker) async fn sweep_stacks(&self, engine: &Engine, warm_pool_id: &str, busy: &HashSet<String>) -> usize {
        let ours = [(labels::RUNNER_ID, self.runner_id.as_str()), (labels::WARM_POOL_ID, warm_pool_id)];
        let Ok(containers) = engine.containers(&ours).await else { return 0 };
        let mut stacks: BTreeMap<String, bool> = BTreeMap::new();
        for container in &containers {
            let Some(project) = container.labels.get(labels::COMPOSE_PROJECT) else { continue };
            let instance = container.labels.get(labels::INSTANCE_ID).map(String::as_str).unwrap_or_default();
            let keep = container.labels.get(labels::ROLE).map(String::as_str) == Some(labels::ROLE_INSTANCE)
                || container.name.starts_with(labels::CLAIMED_NAME_PREFIX)
                || busy.contains(instance);
            *stacks.entry(project.clone()).or_default() |= keep;
        }
        let mut removed = 0;
        for (project, keep) in stacks {
            if keep {
                continue;
            }
            match self.remove_stack(engine, &project).await {
                Ok(()) => removed += 1,
                Err(error) => tracing::warn!(%project, %error, "docker runner: cannot remove what is left of a stack"),
            }
        }
        removed
    }

    /// After a restart: the volumes of stacks that have no container left
    /// (a prebuild or an instance cut short) are removed.
    pub(in crate::runner::docker) async fn sweep_stack_volumes(&self, engine: &Engine) -> Result<(), String> {
        let ours = [(labels::RUNNER_ID, self.runner_id.as_str()), (labels::ROLE, labels::ROLE_VOLUME)];
        let mut seen: BTreeMap<String, bool> = BTreeMap::new();
        for (volume, volume_labels) in engine.volumes(&ours).await? {
            let Some(project) = volume_labels.get(labels::COMPOSE_PROJECT).cloned() else { continue };
            let used = match seen.get(&project) {
                Some(used) => *used,
                None => {
                    let used = !engine.containers(&[(labels::COMPOSE_PROJECT, project.as_str())]).await?.is_empty();
                    seen.insert(project.clone(), used);
                    used
                }
            };
            if !used {
                tracing::info!(%volume, "docker runner: removing a volume of a stack that no container uses");
                engine.remove_volume(&volume).await?;
            }
        }
        Ok(())
    }
}
