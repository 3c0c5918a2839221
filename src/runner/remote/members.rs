//! A remote runner's fleet: the `prebuildd runner` processes attached under
//! one runner ID, each a member with a name of its own. What each member
//! holds and was asked for lives here; how work is spread over members is
//! decided by the pure functions at the bottom (tested without a stream).
//!
//! - **Prebuilds** go to the connected member with the most free slots
//!   (its slots minus the jobs it runs), ties to the one running fewer, then
//!   by name.
//! - **Pool instances** are split evenly over the members that are placed:
//!   connected ones and those away for less than the grace period (a member
//!   that restarts keeps its share and adopts its containers). Members are
//!   taken in name order, the first ones getting one more when the split is
//!   uneven.

use crate::proto::prebuildd::v1 as pb;
use crate::runner::{JobState, PoolObservation, PoolTarget};
use std::collections::{HashMap, HashSet};
use std::time::{Instant, SystemTime};
use tokio::sync::mpsc;

/// The name of a member whose hello names none (a runner older than fleets).
pub const DEFAULT_MEMBER: &str = "default";

/// Removals a member that is away may be owed at most; past it the oldest
/// are forgotten (the member's own collection finds what nothing owns).
pub(super) const MAX_OWED_REMOVALS: usize = 100_000;

/// One member of a runner's fleet.
pub(super) struct Member {
    /// The process behind the member's current (or last) stream.
    pub process_id: String,
    /// The open stream, if the member is connected.
    pub connection: Option<Connection>,
    /// Since when the member has been away (`None` while connected).
    pub away_since: Option<Instant>,
    /// Away past the grace period: its jobs went elsewhere, and it gets no
    /// share of the pools until it connects again.
    pub gone: bool,
    /// When the member last connected or left (for people: the dashboard).
    pub changed_at: SystemTime,
    /// Its own `max_concurrent_prebuilds`, if its runner.toml sets one.
    pub slots: Option<u32>,
    pub engine: String,
    pub version: String,
    /// Jobs to remove there, until the member confirms (in the order asked).
    pub job_removals: OwedRemovals,
    /// Per pool: the share this member was given, and what it last reported.
    pub pools: HashMap<String, MemberPool>,
    /// Pools whose instances it must remove, until it confirms.
    pub pool_removals: HashSet<String>,
}

/// The messages that may wait to be sent to a connected member.
pub(super) struct Connection {
    pub number: u64,
    pub outbox: mpsc::Sender<pb::AttachResponse>,
}

#[derive(Default)]
pub(super) struct MemberPool {
    /// The member's share of the pool's target, as last sent.
    pub share: Option<PoolTarget>,
    /// What the member last reported for the pool.
    pub observed: PoolObservation,
}

/// Job removals a member owes, bounded (see [`MAX_OWED_REMOVALS`]).
#[derive(Default)]
pub(super) struct OwedRemovals {
    order: std::collections::VecDeque<String>,
    set: HashSet<String>,
}

impl OwedRemovals {
    pub fn insert(&mut self, id: &str) {
        if self.set.insert(id.to_string()) {
            self.order.push_back(id.to_string());
        }
        while self.order.len() > MAX_OWED_REMOVALS {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
    }

    pub fn remove(&mut self, id: &str) {
        if self.set.remove(id) {
            self.order.retain(|owed| owed != id);
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &String> {
        self.order.iter()
    }
}

impl Member {
    pub fn new(process_id: &str) -> Member {
        Member {
            process_id: process_id.to_string(),
            connection: None,
            away_since: Some(Instant::now()),
            gone: false,
            changed_at: SystemTime::now(),
            slots: None,
            engine: String::new(),
            version: String::new(),
            job_removals: OwedRemovals::default(),
            pools: HashMap::new(),
            pool_removals: HashSet::new(),
        }
    }

    pub fn connected(&self) -> bool {
        self.connection.is_some()
    }

    /// Placed: its share of the pools is kept for it.
    pub fn placed(&self) -> bool {
        !self.gone
    }

    /// Queues a message for the member. A full outbox ends its connection
    /// (everything is resent at the next one); `false` then.
    pub fn send(&mut self, message: pb::attach_response::Message) -> bool {
        let Some(connection) = &self.connection else { return true };
        match connection.outbox.try_send(pb::AttachResponse { message: Some(message) }) {
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(limit = super::OUTBOX, "a runner member does not read its messages as fast as they come; disconnecting it");
                self.leave();
                false
            }
            _ => true,
        }
    }

    /// The member is away from now on.
    pub fn leave(&mut self) {
        if self.connection.take().is_some() {
            self.away_since = Some(Instant::now());
            self.changed_at = SystemTime::now();
        }
    }
}

/// A job's place: the member it was given to, and what it last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PlacedJob {
    pub member: String,
    pub state: JobState,
}

/// What the placement of a new prebuild looks at, per connected member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load<'a> {
    pub member: &'a str,
    pub slots: u32,
    /// Jobs given to it that have not ended.
    pub running: u32,
}

/// The member a new prebuild goes to: the most free slots, then the fewest
/// jobs, then the first name. `None` without members.
pub fn choose_member<'a>(loads: &[Load<'a>]) -> Option<&'a str> {
    loads
        .iter()
        .min_by(|a, b| {
            let free = |l: &Load| i64::from(l.slots) - i64::from(l.running);
            free(b).cmp(&free(a)).then(a.running.cmp(&b.running)).then(a.member.cmp(b.member))
        })
        .map(|load| load.member)
}

/// The `index`th of `count` members' share of `total` instances.
pub fn share(total: u32, index: usize, count: usize) -> u32 {
    if count == 0 {
        return 0;
    }
    let count = count as u32;
    let index = index as u32;
    total / count + u32::from(index < total % count)
}

/// A member's share of a pool's target: the counts split, the rest as is.
pub fn share_of(target: &PoolTarget, index: usize, count: usize) -> PoolTarget {
    PoolTarget { running: share(target.running, index, count), stopped: share(target.stopped, index, count), ..target.clone() }
}

/// What a pool has over the members that reported it (connected ones: an
/// away member cannot hand out its instances): the counts summed, the
/// failures named by member when there is more than one member.
pub fn combine(observations: &[(&str, &PoolObservation)], members: usize) -> PoolObservation {
    let mut combined = PoolObservation::default();
    let mut failures = Vec::new();
    for (member, observed) in observations {
        combined.running += observed.running;
        combined.stopped += observed.stopped;
        combined.outdated += observed.outdated;
        if let Some(failure) = &observed.failure {
            failures.push(if members > 1 { format!("member {member}: {failure}") } else { failure.clone() });
        }
    }
    combined.failure = (!failures.is_empty()).then(|| failures.join("; "));
    combined
}

/// Whether a member name is one the server accepts: what a host name may
/// be (letters, digits, `.`, `-`, `_`), 1 to 63 characters.
pub fn valid_member_name(name: &str) -> bool {
    (1..=63).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prebuilds_go_where_most_slots_are_free() {
        let loads = [
            Load { member: "a", slots: 4, running: 3 },
            Load { member: "b", slots: 2, running: 0 },
            Load { member: "c", slots: 8, running: 6 },
        ];
        assert_eq!(choose_member(&loads), Some("b"), "b has 2 free, a 1, c 2 but runs more");
        let even = [Load { member: "b", slots: 4, running: 1 }, Load { member: "a", slots: 4, running: 1 }];
        assert_eq!(choose_member(&even), Some("a"), "ties go by name");
        let full = [Load { member: "a", slots: 1, running: 3 }, Load { member: "b", slots: 1, running: 1 }];
        assert_eq!(choose_member(&full), Some("b"), "over capacity: the least over");
        assert_eq!(choose_member(&[]), None);
    }

    #[test]
    fn instances_split_evenly_the_first_members_taking_the_rest() {
        assert_eq!((0..2).map(|i| share(4, i, 2)).collect::<Vec<_>>(), vec![2, 2]);
        assert_eq!((0..3).map(|i| share(4, i, 3)).collect::<Vec<_>>(), vec![2, 1, 1]);
        assert_eq!((0..3).map(|i| share(1, i, 3)).collect::<Vec<_>>(), vec![1, 0, 0]);
        assert_eq!(share(4, 0, 1), 4);
        assert_eq!(share(4, 0, 0), 0);
        for total in 0..20 {
            for count in 1..6 {
                assert_eq!((0..count).map(|i| share(total, i, count)).sum::<u32>(), total, "{total} over {count}");
            }
        }
    }

    #[test]
    fn a_pool_counts_what_its_members_report() {
        let a = PoolObservation { running: 2, stopped: 1, outdated: 0, failure: None };
        let b = PoolObservation { running: 1, stopped: 0, outdated: 2, failure: Some("no image".into()) };
        let combined = combine(&[("a", &a), ("b", &b)], 2);
        assert_eq!((combined.running, combined.stopped, combined.outdated), (3, 1, 2));
        assert_eq!(combined.failure.as_deref(), Some("member b: no image"));
        assert_eq!(combine(&[("b", &b)], 1).failure.as_deref(), Some("no image"), "one member: its words");
    }

    #[test]
    fn member_names_are_host_names() {
        for name in ["runner-1", "build.example.com", "a", "x_y"] {
            assert!(valid_member_name(name), "{name}");
        }
        for name in ["", "has space", "slash/y", &"x".repeat(64)] {
            assert!(!valid_member_name(name), "{name}");
        }
    }

    #[test]
    fn owed_removals_are_bounded_and_keep_their_order() {
        let mut owed = OwedRemovals::default();
        owed.insert("a");
        owed.insert("b");
        owed.insert("a");
        assert_eq!(owed.iter().cloned().collect::<Vec<_>>(), vec!["a", "b"]);
        owed.remove("a");
        assert!(!owed.contains("a") && owed.contains("b"));
        for i in 0..MAX_OWED_REMOVALS + 5 {
            owed.insert(&i.to_string());
        }
        assert_eq!(owed.iter().count(), MAX_OWED_REMOVALS);
        assert!(!owed.contains("b"), "the oldest went first");
    }
}
