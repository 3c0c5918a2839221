//! The warm pool arithmetic shared by runners: which instances to make,
//! start and drop so that a pool converges on its target, decided under a
//! lock and carried out after it (files, containers). Pure bookkeeping,
//! level-triggered: deciding again on the same state changes nothing.

use super::{PoolObservation, PoolTarget};

/// A pool's instances as this runner knows them.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    /// The snapshot of the last target: the newest, the one claims prefer.
    pub(crate) snapshot_id: Option<String>,
    pub(crate) instances: Vec<Instance>,
    /// Why the last extraction failed; cleared by a success or a new snapshot.
    pub(crate) extraction_failure: Option<String>,
    /// Extractions under way: their files may still appear, so the pool is
    /// not gone until they end.
    pub(crate) extracting: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InstanceState {
    /// A reserved slot: a marker file.
    Stopped,
    /// Being extracted (new, or promoted from stopped).
    Starting,
    /// Extracted: ready to claim.
    Running,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Instance {
    pub(crate) id: String,
    pub(crate) snapshot_id: String,
    pub(crate) state: InstanceState,
}

/// The file work one sync decided on, done after the pool's lock is released.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// New stopped instances, whose marker files are to be written.
    pub(crate) markers: Vec<Instance>,
    /// Instances to extract (new, or promoted from stopped).
    pub(crate) extractions: Vec<Instance>,
    /// Instances dropped (surplus, outdated), whose files are to be deleted.
    pub(crate) discarded: Vec<Instance>,
}

/// The states that count toward a pool's running target.
pub(crate) const ACTIVE: [InstanceState; 2] = [InstanceState::Starting, InstanceState::Running];

impl Pool {
    pub(crate) fn count(&self, snapshot_id: &str, states: &[InstanceState]) -> u32 {
        self.instances.iter().filter(|i| i.snapshot_id == snapshot_id && states.contains(&i.state)).count() as u32
    }

    /// Removes the instances `drop` selects, into `plan.discarded`.
    pub(crate) fn discard_where(&mut self, plan: &mut Plan, mut drop: impl FnMut(&Instance) -> bool) {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.instances).into_iter().partition(|i| drop(i));
        self.instances = kept;
        plan.discarded.extend(gone);
    }

    /// Drops the newest `surplus` instances of `snapshot_id` in `state`.
    pub(crate) fn trim(&mut self, plan: &mut Plan, snapshot_id: &str, state: InstanceState, mut surplus: u32) {
        let mut index = self.instances.len();
        while surplus > 0 && index > 0 {
            index -= 1;
            if self.instances[index].snapshot_id == snapshot_id && self.instances[index].state == state {
                plan.discarded.push(self.instances.remove(index));
                surplus -= 1;
            }
        }
    }

    /// Decides one step toward `target` (level-triggered: deciding again on
    /// the same state changes nothing). `can_provision` is false while the
    /// snapshot's archive is missing: then nothing new is made, and nothing
    /// that could still be claimed is dropped.
    pub(crate) fn plan(&mut self, target: &PoolTarget, can_provision: bool, mut new_id: impl FnMut() -> String) -> Plan {
        let mut plan = Plan::default();
        let Some(snapshot_id) = target.snapshot_id.clone() else {
            self.snapshot_id = None;
            self.discard_where(&mut plan, |_| true);
            return plan;
        };
        if self.snapshot_id.as_deref() != Some(snapshot_id.as_str()) {
            self.snapshot_id = Some(snapshot_id.clone());
            self.extraction_failure = None;
        }
        // Outdated instances that cannot be claimed are of no use.
        self.discard_where(&mut plan, |i| i.snapshot_id != snapshot_id && i.state != InstanceState::Running);

        if can_provision {
            self.provision(&mut plan, &snapshot_id, target, &mut new_id);
        }
        // Scale down: instances not yet ready go first.
        let surplus = self.count(&snapshot_id, &ACTIVE).saturating_sub(target.running);
        let starting = surplus.min(self.count(&snapshot_id, &[InstanceState::Starting]));
        self.trim(&mut plan, &snapshot_id, InstanceState::Starting, starting);
        self.trim(&mut plan, &snapshot_id, InstanceState::Running, surplus - starting);
        let stopped_surplus = self.count(&snapshot_id, &[InstanceState::Stopped]).saturating_sub(target.stopped);
        self.trim(&mut plan, &snapshot_id, InstanceState::Stopped, stopped_surplus);

        // Rotation: outdated running instances stay claimable until the new
        // snapshot's are ready.
        if self.count(&snapshot_id, &[InstanceState::Running]) >= target.running {
            self.discard_where(&mut plan, |i| i.snapshot_id != snapshot_id);
        }
        plan
    }

    /// Adds what is missing: running instances (promoting stopped ones
    /// first, since their slot is reserved already), then stopped ones.
    pub(crate) fn provision(&mut self, plan: &mut Plan, snapshot_id: &str, target: &PoolTarget, new_id: &mut impl FnMut() -> String) {
        let mut active = self.count(snapshot_id, &ACTIVE);
        for instance in self.instances.iter_mut().filter(|i| i.snapshot_id == snapshot_id && i.state == InstanceState::Stopped) {
            if active >= target.running {
                break;
            }
            instance.state = InstanceState::Starting;
            plan.extractions.push(instance.clone());
            active += 1;
        }
        for _ in active..target.running {
            let instance = Instance { id: new_id(), snapshot_id: snapshot_id.to_string(), state: InstanceState::Starting };
            plan.extractions.push(instance.clone());
            self.instances.push(instance);
        }
        for _ in self.count(snapshot_id, &[InstanceState::Stopped])..target.stopped {
            let instance = Instance { id: new_id(), snapshot_id: snapshot_id.to_string(), state: InstanceState::Stopped };
            plan.markers.push(instance.clone());
            self.instances.push(instance);
        }
    }

    pub(crate) fn observe(&self, missing_archive: Option<String>) -> PoolObservation {
        let Some(snapshot_id) = self.snapshot_id.as_deref() else {
            return PoolObservation { outdated: self.instances.len() as u32, ..Default::default() };
        };
        PoolObservation {
            running: self.count(snapshot_id, &[InstanceState::Running]),
            stopped: self.count(snapshot_id, &[InstanceState::Stopped]),
            outdated: self.instances.iter().filter(|i| i.snapshot_id != snapshot_id).count() as u32,
            failure: missing_archive.or_else(|| self.extraction_failure.clone()),
        }
    }

    /// Takes the running instance a claim gets: one of the newest snapshot,
    /// else (mid-rotation) the newest outdated one.
    pub(crate) fn take_for_claim(&mut self) -> Option<Instance> {
        let newest = self.snapshot_id.clone();
        let index = self
            .instances
            .iter()
            .enumerate()
            .filter(|(_, i)| i.state == InstanceState::Running)
            // Instance IDs are version 7 UUIDs: a later ID was made later.
            .max_by_key(|(_, i)| (Some(&i.snapshot_id) == newest.as_ref(), i.id.clone()))
            .map(|(index, _)| index)?;
        Some(self.instances.remove(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "01900000-0000-7000-8000-000000000001";
    const NEW: &str = "01900000-0000-7000-8000-000000000002";

    fn target(snapshot_id: Option<&str>, running: u32, stopped: u32) -> PoolTarget {
        PoolTarget {
            warm_pool_id: "pool".into(),
            snapshot_id: snapshot_id.map(str::to_string),
            snapshot_image: None,
            running,
            stopped,
            resources: Default::default(),
            policy: Default::default(),
        }
    }

    /// IDs that sort in creation order, as version 7 UUIDs do.
    fn ids() -> impl FnMut() -> String {
        let mut next = 0;
        move || {
            next += 1;
            format!("instance-{next:03}")
        }
    }

    /// Marks every starting instance extracted, as the extraction threads would.
    fn finish_extractions(pool: &mut Pool) {
        for instance in &mut pool.instances {
            if instance.state == InstanceState::Starting {
                instance.state = InstanceState::Running;
            }
        }
    }

    fn observed(pool: &Pool) -> (u32, u32, u32) {
        let o = pool.observe(None);
        (o.running, o.stopped, o.outdated)
    }

    #[test]
    fn a_pool_fills_then_holds_still() {
        let (mut pool, mut new_id) = (Pool::default(), ids());
        let plan = pool.plan(&target(Some(OLD), 2, 1), true, &mut new_id);
        assert_eq!((plan.extractions.len(), plan.markers.len(), plan.discarded.len()), (2, 1, 0));
        assert_eq!(observed(&pool), (0, 1, 0), "extractions are not ready yet");
        assert_eq!(pool.plan(&target(Some(OLD), 2, 1), true, &mut new_id), Plan::default(), "deciding again changes nothing");
        finish_extractions(&mut pool);
        assert_eq!(observed(&pool), (2, 1, 0));
        assert_eq!(pool.plan(&target(Some(OLD), 2, 1), true, &mut new_id), Plan::default());
    }

    #[test]
    fn a_claim_is_backfilled_by_promoting_a_stopped_instance_first() {
        let (mut pool, mut new_id) = (Pool::default(), ids());
        pool.plan(&target(Some(OLD), 2, 1), true, &mut new_id);
        finish_extractions(&mut pool);
        let stopped = pool.instances.iter().find(|i| i.state == InstanceState::Stopped).cloned().unwrap();
        assert!(pool.take_for_claim().is_some());
        let plan = pool.plan(&target(Some(OLD), 2, 1), true, &mut new_id);
        assert_eq!(plan.extractions.iter().map(|i| i.id.clone()).collect::<Vec<_>>(), vec![stopped.id], "the stopped one is promoted");
        assert_eq!(plan.markers.len(), 1, "and its slot reserved again");
        finish_extractions(&mut pool);
        assert_eq!(observed(&pool), (2, 1, 0));
    }

    #[test]
    fn rotation_keeps_old_instances_until_the_new_ones_are_ready() {
        let (mut pool, mut new_id) = (Pool::default(), ids());
        pool.plan(&target(Some(OLD), 2, 1), true, &mut new_id);
        finish_extractions(&mut pool);

        let plan = pool.plan(&target(Some(NEW), 2, 1), true, &mut new_id);
        assert_eq!((plan.extractions.len(), plan.markers.len()), (2, 1));
        assert_eq!(plan.discarded.len(), 1, "only the old stopped one (it cannot be claimed) goes now");
        assert_eq!(observed(&pool), (0, 1, 2));
        let claimed = pool.take_for_claim().unwrap();
        assert_eq!(claimed.snapshot_id, OLD, "mid-rotation, a claim still finds an instance");
        assert!(pool.plan(&target(Some(NEW), 2, 1), true, &mut new_id).discarded.is_empty(), "not ready: the old one stays");

        finish_extractions(&mut pool);
        assert_eq!(pool.take_for_claim().unwrap().snapshot_id, NEW, "the newest snapshot is preferred");
        pool.plan(&target(Some(NEW), 2, 1), true, &mut new_id);
        finish_extractions(&mut pool);
        let plan = pool.plan(&target(Some(NEW), 2, 1), true, &mut new_id);
        assert_eq!(plan.discarded.iter().map(|i| i.snapshot_id.as_str()).collect::<Vec<_>>(), vec![OLD], "now the old one goes");
        assert_eq!(observed(&pool), (2, 1, 0));
    }

    #[test]
    fn scaling_down_drops_instances_not_yet_ready_first() {
        let (mut pool, mut new_id) = (Pool::default(), ids());
        pool.plan(&target(Some(OLD), 1, 2), true, &mut new_id);
        finish_extractions(&mut pool);
        pool.plan(&target(Some(OLD), 3, 2), true, &mut new_id);
        let plan = pool.plan(&target(Some(OLD), 1, 0), true, &mut new_id);
        let states: Vec<_> = plan.discarded.iter().map(|i| i.state).collect();
        assert_eq!(
            states.iter().filter(|s| **s == InstanceState::Starting).count(),
            2,
            "the two still extracting go, the ready one stays: {states:?}"
        );
        assert_eq!(observed(&pool), (1, 0, 0));
    }

    #[test]
    fn a_missing_archive_provisions_nothing_and_no_snapshot_keeps_nothing() {
        let (mut pool, mut new_id) = (Pool::default(), ids());
        assert_eq!(pool.plan(&target(Some(OLD), 2, 1), false, &mut new_id), Plan::default());
        let observation = pool.observe(Some("missing".into()));
        assert_eq!(observation.failure.as_deref(), Some("missing"));

        pool.plan(&target(Some(OLD), 1, 1), true, &mut new_id);
        finish_extractions(&mut pool);
        let plan = pool.plan(&target(Some(NEW), 1, 1), false, &mut new_id);
        assert!(plan.extractions.is_empty() && plan.markers.is_empty());
        assert_eq!(observed(&pool), (0, 0, 1), "the old running one stays claimable");

        let plan = pool.plan(&target(None, 1, 1), true, &mut new_id);
        assert_eq!(plan.discarded.len(), 1);
        assert_eq!(pool.observe(None), PoolObservation::default());
    }
}
