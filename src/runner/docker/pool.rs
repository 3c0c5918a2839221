//! Warm pools as containers. A running instance is a started container made
//! from the pool's snapshot image (workspace included), ready for `docker
//! exec`; a stopped instance is a created container that is not running
//! (disk only; starting it is all a promotion takes). Containers are named
//! `prebuildd-instance-<instance id>` and labelled with the pool, snapshot
//! and instance, so creation is idempotent and a restart adopts them.
//!
//! What to make, start and drop is decided by `runner::pool_plan` under the
//! pools' lock; the Engine API calls run after it, in tasks. Every sync also
//! reads what Docker reports, so an instance whose container was removed
//! or died behind the runner's back is replaced.

use super::compose::instances::StackInstance;
use super::compose::stack::StackTemplate;
use super::engine::ListedContainer;
use super::policy::Grant;
use super::registry::Local;
use super::{labels, Core};
use crate::error::{Error, Result};
use crate::runner::pool_plan::{Instance, InstanceState, Pool};
use crate::runner::process::lock;
use crate::runner::{ClaimedInstance, PoolObservation, PoolTarget};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A pool's bookkeeping on the docker runner.
#[derive(Debug, Default)]
pub(super) struct DockerPool {
    pub pool: Pool,
    /// Instances whose container is being created or started: Docker may not
    /// show them yet, so the sync does not take their absence for a loss.
    pub busy: HashSet<String>,
    /// Claims under way, and claims done. A container list taken while a
    /// claim was under way can still show the claimed container under its
    /// pool name: the sync that took it must not remove it as a stray.
    pub claiming: usize,
    pub claims: u64,
}

impl DockerPool {
    /// Instances adopted from the containers of a previous run.
    pub fn adopted(containers: &[ListedContainer]) -> DockerPool {
        let mut pool = Pool::default();
        for container in containers {
            let (Some(id), Some(snapshot_id)) = (container.labels.get(labels::INSTANCE_ID), container.labels.get(labels::SNAPSHOT_ID))
            else {
                continue;
            };
            let state = if container.running { InstanceState::Running } else { InstanceState::Stopped };
            pool.instances.push(Instance { id: id.clone(), snapshot_id: snapshot_id.clone(), state });
        }
        // Instance IDs are version 7 UUIDs: sorted, oldest first, as created.
        pool.instances.sort_by(|a, b| a.id.cmp(&b.id));
        DockerPool { pool, ..Default::default() }
    }

    /// Brings the bookkeeping in line with what Docker reports. Returns the
    /// containers nothing owns (to remove) and the instances whose container
    /// died (to remove too; the plan replaces them).
    ///
    /// Containers on another network than `network` (made before their
    /// class's `allow_egress` changed, or before isolation was turned on or
    /// off) count as dead: the plan replaces them.
    fn align(&mut self, containers: &[ListedContainer], strays: bool, network: Option<&str>) -> Vec<String> {
        let on_network = |c: &&ListedContainer| c.labels.get(labels::NETWORK).map(String::as_str) == network;
        let (containers, elsewhere): (Vec<&ListedContainer>, Vec<&ListedContainer>) = containers.iter().partition(on_network);
        let by_instance: HashMap<&str, &ListedContainer> =
            containers.into_iter().filter_map(|c| c.labels.get(labels::INSTANCE_ID).map(|id| (id.as_str(), c))).collect();
        let mut doomed = Vec::new();
        let busy = &self.busy;
        self.pool.instances.retain_mut(|instance| {
            if busy.contains(&instance.id) {
                return true;
            }
            match (by_instance.get(instance.id.as_str()), instance.state) {
                (None, _) => false,
                (Some(container), InstanceState::Running) if !container.running => {
                    doomed.push(container.id.clone());
                    false
                }
                (Some(container), InstanceState::Stopped) if container.running => {
                    instance.state = InstanceState::Running;
                    true
                }
                _ => true,
            }
        });
        for container in elsewhere {
            if container.labels.get(labels::INSTANCE_ID).is_some_and(|id| busy.contains(id)) {
                continue;
            }
            doomed.push(container.id.clone());
        }
        let known: HashSet<&str> = self.pool.instances.iter().map(|i| i.id.as_str()).collect();
        for (instance_id, container) in &by_instance {
            if strays && !known.contains(instance_id) && !self.busy.contains(*instance_id) && !doomed.contains(&container.id) {
                doomed.push(container.id.clone());
            }
        }
        doomed
    }
}

/// The Compose stack a snapshot's instances are (`None`: a single
/// container), with what each of its services was granted checked against
/// the class as it is now.
fn stack_template(image_labels: &HashMap<String, String>, target: &PoolTarget) -> std::result::Result<Option<Arc<StackTemplate>>, String> {
    let Some(text) = image_labels.get(labels::COMPOSE_STACK) else { return Ok(None) };
    let mut template = StackTemplate::from_label(text)?;
    for (service, grant) in template.grants.iter_mut() {
        *grant = grant.clone().under(&target.policy, target.resources).map_err(|e| format!("service {service}: {e}"))?;
    }
    Ok(Some(Arc::new(template)))
}

/// The containers of a pool that are still the pool's (claimed ones are not).
fn pool_containers(containers: Vec<ListedContainer>) -> Vec<ListedContainer> {
    containers.into_iter().filter(|c| !c.name.starts_with(labels::CLAIMED_NAME_PREFIX)).collect()
}

impl Core {
    fn instance_labels(&self, warm_pool_id: &str, instance: &Instance, network: Option<&str>) -> HashMap<String, String> {
        let mut labels = HashMap::from([
            (labels::RUNNER_ID.to_string(), self.runner_id.clone()),
            (labels::WARM_POOL_ID.to_string(), warm_pool_id.to_string()),
            (labels::SNAPSHOT_ID.to_string(), instance.snapshot_id.clone()),
            (labels::INSTANCE_ID.to_string(), instance.id.clone()),
            (labels::ROLE.to_string(), labels::ROLE_INSTANCE.to_string()),
        ]);
        if let Some(network) = network {
            labels.insert(labels::NETWORK.to_string(), network.to_string());
        }
        labels
    }

    async fn listed_pool_containers(&self, warm_pool_id: &str) -> Result<Vec<ListedContainer>> {
        let engine = self.engine().await.map_err(Error::Internal)?;
        let filter =
            [(labels::RUNNER_ID, self.runner_id.as_str()), (labels::WARM_POOL_ID, warm_pool_id), (labels::ROLE, labels::ROLE_INSTANCE)];
        let containers = engine.containers(&filter).await.map_err(|e| Error::Internal(format!("docker runner: {e}")))?;
        Ok(pool_containers(containers))
    }

    pub(super) async fn sync_pool(self: &Arc<Self>, target: PoolTarget) -> Result<PoolObservation> {
        // A daemon that does not answer is the pool's failure (DEGRADED, with
        // the reason), not an internal error: the operator can act on it.
        let unreachable = |failure: String| Ok(PoolObservation { failure: Some(failure), ..Default::default() });
        let engine = match self.engine().await {
            Ok(engine) => engine,
            Err(error) => return unreachable(error),
        };
        // Where instances come from (by digest when the snapshot was
        // pushed, pulled here first if need be), and what they get: what
        // its prebuild was granted, as long as the class still allows it,
        // and a Compose stack's template when the snapshot is a stack's.
        let mut pulling = false;
        let mut source = String::new();
        let (missing, grant, stack) = match &target.snapshot_id {
            Some(snapshot_id) => match self.snapshot_source(engine, snapshot_id, target.snapshot_image.as_deref()).await {
                Local::Pulling => {
                    pulling = true;
                    (None, Grant::default(), None)
                }
                Local::Failed(error) => {
                    (Some(format!("cannot pull the snapshot of prebuild {snapshot_id} from its registry: {error}")), Grant::default(), None)
                }
                Local::Present(image) => match engine.image(&image).await {
                    Ok(Some((image_labels, _))) => match Grant::from_image_labels(&image_labels, target.resources)
                        .and_then(|grant| grant.under(&target.policy, target.resources))
                        .and_then(|grant| Ok((grant, stack_template(&image_labels, &target)?)))
                    {
                        Ok((grant, stack)) => {
                            source = image;
                            (None, grant, stack)
                        }
                        Err(error) => (
                            Some(format!("cannot make instances of the snapshot of prebuild {snapshot_id}: {error}")),
                            Grant::default(),
                            None,
                        ),
                    },
                    Ok(None) => (
                        Some(format!("the snapshot of prebuild {snapshot_id} is missing on this runner (image {image} does not exist)")),
                        Grant::default(),
                        None,
                    ),
                    Err(error) => (Some(format!("cannot inspect the snapshot image: {error}")), Grant::default(), None),
                },
            },
            None => (None, Grant::default(), None),
        };
        let claims_before = lock(&self.pools).get(&target.warm_pool_id).map_or((0, 0), |entry| (entry.claiming, entry.claims));
        // Where the instances live: the runner's network for the class's
        // allowances; a runner that refuses to make one makes no instance.
        let network = match self.network_for(engine, &target.policy.allow_egress).await {
            Ok(network) => network,
            // Nothing is made or removed: the instances there stay as they
            // are (they are on the network, whose rules stay), and the pool
            // says why it cannot go on.
            Err(refused) => {
                let pools = lock(&self.pools);
                let observed = pools.get(&target.warm_pool_id).map(|entry| entry.pool.observe(Some(refused.clone())));
                return Ok(observed.unwrap_or(PoolObservation { failure: Some(refused), ..Default::default() }));
            }
        };
        let grant = Grant { network: network.clone(), ..grant };
        let containers = match self.listed_pool_containers(&target.warm_pool_id).await {
            Ok(containers) => containers,
            Err(error) => return unreachable(error.to_string()),
        };
        if stack.is_some() {
            // What is left of stacks that lost their dev container.
            let busy = lock(&self.pools).get(&target.warm_pool_id).map(|entry| entry.busy.clone()).unwrap_or_default();
            self.sweep_stacks(engine, &target.warm_pool_id, &busy).await;
        }
        let (plan, doomed) = {
            let mut pools = lock(&self.pools);
            let entry = pools.entry(target.warm_pool_id.clone()).or_default();
            // Strays only from a list no claim overlapped (see `claiming`).
            let quiet = claims_before == (0, entry.claims) && entry.claiming == 0;
            let doomed = entry.align(&containers, quiet, network.as_deref());
            let plan = entry.pool.plan(&target, missing.is_none() && !pulling, || uuid::Uuid::now_v7().to_string());
            for instance in plan.markers.iter().chain(&plan.extractions) {
                entry.busy.insert(instance.id.clone());
            }
            (plan, doomed)
        };
        for container_id in doomed {
            let core = self.clone();
            tokio::spawn(async move { core.remove_container(&container_id).await });
        }
        for instance in plan.discarded {
            let core = self.clone();
            tokio::spawn(async move { core.remove_container(&labels::instance_name(&instance.id)).await });
        }
        for (instance, start) in plan.markers.into_iter().map(|i| (i, false)).chain(plan.extractions.into_iter().map(|i| (i, true))) {
            let (core, pool_id, grant, source) = (self.clone(), target.warm_pool_id.clone(), grant.clone(), source.clone());
            let stack = stack.clone().map(|template| (template, target.policy.allow_egress.clone()));
            tokio::spawn(async move { core.provision(&pool_id, instance, start, &grant, stack, &source).await });
        }
        let pools = lock(&self.pools);
        Ok(pools.get(&target.warm_pool_id).map(|entry| entry.pool.observe(missing)).unwrap_or_default())
    }

    /// Removes an instance's container, and the rest of its stack if it
    /// is a Compose stack's dev container.
    async fn remove_container(&self, name_or_id: &str) {
        if let Ok(engine) = self.engine().await {
            let stack = engine.container_labels(name_or_id).await.ok().flatten().and_then(|l| l.get(labels::COMPOSE_PROJECT).cloned());
            if let Err(error) = engine.remove_container(name_or_id).await {
                tracing::warn!(container = %name_or_id, %error, "docker runner: cannot remove a warm pool container");
            }
            if let Some(project) = stack {
                if let Err(error) = self.remove_stack(engine, &project).await {
                    tracing::warn!(%project, %error, "docker runner: cannot remove a warm instance's stack");
                }
            }
        }
    }

    /// Creates an instance's container (stopped) from `image` (the
    /// snapshot, by digest when it was pushed), and starts it if `start`;
    /// then records the result. An instance discarded meanwhile has its
    /// container removed instead.
    async fn provision(
        &self,
        warm_pool_id: &str,
        instance: Instance,
        start: bool,
        grant: &Grant,
        stack: Option<(Arc<StackTemplate>, Vec<crate::catalog::EgressAllowance>)>,
        image: &str,
    ) {
        let name = labels::instance_name(&instance.id);
        let result = async {
            let engine = self.engine().await?;
            if let Some((template, allowances)) = &stack {
                let made = StackInstance {
                    warm_pool_id,
                    instance: &instance,
                    template,
                    class_network: grant.network.as_deref(),
                    allowances,
                    start,
                };
                return self.provision_stack(engine, made).await.map(|_| ());
            }
            let labels = self.instance_labels(warm_pool_id, &instance, grant.network.as_deref());
            let id = engine.create(&name, image, labels, grant).await?;
            let problems = engine.excess(&id, grant).await?;
            if !problems.is_empty() {
                return Err(format!("its container has more than its class's policy granted ({})", problems.join("; ")));
            }
            if start {
                engine.start(&id).await?;
            }
            Ok::<_, String>(())
        }
        .await;
        let kept = {
            let mut pools = lock(&self.pools);
            match pools.get_mut(warm_pool_id) {
                Some(entry) => {
                    entry.busy.remove(&instance.id);
                    let wanted = if start { InstanceState::Starting } else { InstanceState::Stopped };
                    let index = entry.pool.instances.iter().position(|i| i.id == instance.id && i.state == wanted);
                    match (index, &result) {
                        (Some(index), Ok(())) => {
                            if start {
                                entry.pool.instances[index].state = InstanceState::Running;
                            }
                            entry.pool.extraction_failure = None;
                            true
                        }
                        (Some(index), Err(error)) => {
                            entry.pool.instances.remove(index);
                            entry.pool.extraction_failure =
                                Some(format!("cannot make an instance from the snapshot of prebuild {}: {error}", instance.snapshot_id));
                            false
                        }
                        // Promoted while being created: the promotion's start
                        // does the rest.
                        (None, Ok(())) if !start && entry.pool.instances.iter().any(|i| i.id == instance.id) => true,
                        (None, _) => false,
                    }
                }
                None => false,
            }
        };
        // Ready, or failed: either way the pool has news.
        self.events.changed();
        if !kept {
            self.remove_container(&name).await;
        }
    }

    pub(super) async fn claim_instance(&self, warm_pool_id: &str) -> Result<Option<ClaimedInstance>> {
        let engine = self.engine().await.map_err(Error::Internal)?;
        // An instance whose container went away is skipped; the next sync
        // replaces it.
        loop {
            // Busy until renamed, and counted as a claim under way: a sync
            // meanwhile must not take the container (still under the pool's
            // name) for one nothing owns.
            let taken = lock(&self.pools).get_mut(warm_pool_id).and_then(|entry| {
                let instance = entry.pool.take_for_claim()?;
                entry.busy.insert(instance.id.clone());
                entry.claiming += 1;
                Some(instance)
            });
            let Some(instance) = taken else { return Ok(None) };
            let name = labels::instance_name(&instance.id);
            let renamed = engine.rename(&name, &labels::claimed_name(&instance.id)).await;
            if let Some(entry) = lock(&self.pools).get_mut(warm_pool_id) {
                entry.busy.remove(&instance.id);
                entry.claiming -= 1;
                entry.claims += 1;
            }
            if renamed.is_err() {
                continue;
            }
            let image = labels::snapshot_image(&instance.snapshot_id);
            let folder = engine.image(&image).await.ok().flatten().and_then(|(l, _)| l.get(labels::WORKSPACE_FOLDER).cloned());
            let containers = engine
                .containers(&[(labels::INSTANCE_ID, instance.id.as_str()), (labels::ROLE, labels::ROLE_INSTANCE)])
                .await
                .unwrap_or_default();
            let dev = containers.first();
            let container_id = dev.map(|c| c.id.clone()).unwrap_or_else(|| labels::claimed_name(&instance.id));
            // A stack is the claimant's whole: its other containers too.
            let compose_project = dev.and_then(|c| c.labels.get(labels::COMPOSE_PROJECT)).cloned().unwrap_or_default();
            let services = match compose_project.is_empty() {
                true => Vec::new(),
                false => self.claim_stack(engine, &instance.id).await.map_err(|e| Error::Internal(format!("docker runner: {e}")))?,
            };
            return Ok(Some(ClaimedInstance {
                instance_id: instance.id,
                snapshot_id: instance.snapshot_id,
                workspace_path: folder.unwrap_or_default(),
                container_id,
                compose_project,
                services,
            }));
        }
    }

    pub(super) async fn remove_pool(&self, warm_pool_id: &str) -> Result<bool> {
        let busy = match lock(&self.pools).get_mut(warm_pool_id) {
            Some(entry) => {
                entry.pool.instances.clear();
                entry.pool.snapshot_id = None;
                entry.pool.extraction_failure = None;
                !entry.busy.is_empty()
            }
            None => false,
        };
        let containers = self.listed_pool_containers(warm_pool_id).await?;
        for container in &containers {
            self.remove_container(&container.id).await;
        }
        let engine = self.engine().await.map_err(Error::Internal)?;
        let leftovers = match busy {
            true => 0,
            false => self.sweep_stacks(engine, warm_pool_id, &HashSet::new()).await,
        };
        if busy || !containers.is_empty() || leftovers > 0 {
            // Creations under way remove their own containers when they end;
            // a later call checks that none is left.
            return Ok(false);
        }
        lock(&self.pools).remove(warm_pool_id);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(instance_id: &str, running: bool) -> ListedContainer {
        ListedContainer {
            id: format!("c-{instance_id}"),
            name: labels::instance_name(instance_id),
            labels: HashMap::from([
                (labels::INSTANCE_ID.to_string(), instance_id.to_string()),
                (labels::SNAPSHOT_ID.to_string(), "s1".to_string()),
            ]),
            running,
            image: labels::snapshot_image("s1"),
        }
    }

    #[test]
    fn adoption_reads_running_and_stopped_instances_from_containers() {
        let pool = DockerPool::adopted(&[container("b", false), container("a", true)]);
        let states: Vec<_> = pool.pool.instances.iter().map(|i| (i.id.as_str(), i.state)).collect();
        assert_eq!(states, vec![("a", InstanceState::Running), ("b", InstanceState::Stopped)]);
    }

    #[test]
    fn alignment_drops_lost_and_dead_instances_and_strays() {
        let mut pool = DockerPool::adopted(&[container("a", true), container("b", true), container("c", false)]);
        pool.pool.instances.push(Instance { id: "d".into(), snapshot_id: "s1".into(), state: InstanceState::Stopped });
        pool.busy.insert("d".into());
        // a died, b was removed behind our back, c is fine, d is being made,
        // e is a container nothing owns.
        let listed = [container("a", false), container("c", false), container("e", true)];
        // A list a claim overlapped may show the claimed container as e: no
        // stray is taken from it.
        let mut overlapped = DockerPool::adopted(&[container("a", true), container("c", false)]);
        assert_eq!(overlapped.align(&listed, false, None), vec!["c-a".to_string()], "only the dead one");
        let doomed = pool.align(&listed, true, None);
        let left: Vec<_> = pool.pool.instances.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(left, vec!["c", "d"]);
        let mut doomed = doomed;
        doomed.sort();
        assert_eq!(doomed, vec!["c-a", "c-e"]);
    }

    #[test]
    fn containers_on_another_network_are_replaced() {
        let mut pool = DockerPool::adopted(&[container("a", true), container("b", true)]);
        let mut moved = container("b", true);
        moved.labels.insert(labels::NETWORK.to_string(), "prebuildd-r1".into());
        let doomed = pool.align(&[container("a", true), moved.clone()], true, Some("prebuildd-r1"));
        assert_eq!(doomed, vec!["c-a"], "a is on Docker's default bridge");
        assert_eq!(pool.pool.instances.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), vec!["b"]);
        let doomed = pool.align(&[moved], true, Some("prebuildd-r1-0123456789"));
        assert_eq!(doomed, vec!["c-b"], "its class's allowances changed");
        assert!(pool.pool.instances.is_empty());
    }

    #[test]
    fn claimed_containers_are_not_the_pools() {
        let mut claimed = container("a", true);
        claimed.name = labels::claimed_name("a");
        assert!(pool_containers(vec![claimed, container("b", true)]).iter().all(|c| c.name == labels::instance_name("b")));
    }
}
