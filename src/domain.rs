//! The domain's rules that more than one layer needs, written once: which
//! phases are final or active, the phase a stored prebuild or pool is in,
//! and the time unit the store keeps (microseconds since the epoch).
//!
//! Transport, service, reconciler, store and the CLI import these instead of
//! spelling the phases out: a rule written twice is a rule that can differ.
//! This module does no I/O and knows no layer.
//!
//! **DELETING** is the one phase that is easy to get wrong. It is *not*
//! final: the reconciler still has work to do (stop the runner's work,
//! remove the snapshot, the environment and the log, then the row), so it
//! is active and stays in the reconciler's work list and in the
//! `prebuildd_prebuilds` gauge. But a prebuild being deleted will never run
//! again: it [has ended](PrebuildPhase::has_ended), so a log stream and the
//! CLI's `--watch` stop there, as they stop at a final phase.

use crate::proto::gitpod::v1::{Prebuild, PrebuildPhase, WarmPool, WarmPoolPhase};
use pbjson_types::Timestamp;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

impl PrebuildPhase {
    /// The final phases: the prebuild's outcome, which nothing changes any
    /// more except deletion.
    pub const FINAL: [PrebuildPhase; 3] = [PrebuildPhase::Completed, PrebuildPhase::Failed, PrebuildPhase::Cancelled];

    /// COMPLETED, FAILED or CANCELLED (see [`PrebuildPhase::FINAL`]).
    pub fn is_final(self) -> bool {
        Self::FINAL.contains(&self)
    }

    /// Not final: the reconciler has work to do (DELETING included; see the
    /// module documentation).
    pub fn is_active(self) -> bool {
        !self.is_final()
    }

    /// Waiting for a runner slot. A stored prebuild without a phase is
    /// treated as PENDING (it was stored before it was given one).
    pub fn is_pending(self) -> bool {
        matches!(self, PrebuildPhase::Pending | PrebuildPhase::Unspecified)
    }

    /// STARTING to SNAPSHOTTING: the runner holds an environment for it and
    /// reports on it.
    pub fn is_running(self) -> bool {
        matches!(self, PrebuildPhase::Starting | PrebuildPhase::Running | PrebuildPhase::Stopping | PrebuildPhase::Snapshotting)
    }

    /// Whether the prebuild takes one of its runner's concurrent slots:
    /// while running, and while its work is being stopped.
    pub fn occupies_slot(self) -> bool {
        self.is_running() || self == PrebuildPhase::Cancelling
    }

    /// DELETING (or DELETED, the desired phase it goes to).
    pub fn is_deleting(self) -> bool {
        matches!(self, PrebuildPhase::Deleting | PrebuildPhase::Deleted)
    }

    /// The prebuild will not run, or write to its log, any more: final, or
    /// being deleted. Log streams and watches end here.
    pub fn has_ended(self) -> bool {
        self.is_final() || self.is_deleting()
    }

    /// The final phases as SQL (`60, 70, 80`), for the stores' queries; the
    /// migrations' partial indexes spell the same list (a test checks it).
    pub fn final_phases_sql() -> String {
        Self::FINAL.iter().map(|p| (*p as i32).to_string()).collect::<Vec<_>>().join(", ")
    }
}

impl WarmPoolPhase {
    /// DELETING (or DELETED): the pool is being drained and cannot change.
    pub fn is_deleting(self) -> bool {
        matches!(self, WarmPoolPhase::Deleting | WarmPoolPhase::Deleted)
    }
}

/// The phase a stored prebuild is in; UNSPECIFIED for a missing or unknown
/// value.
pub fn phase_of(prebuild: &Prebuild) -> PrebuildPhase {
    prebuild.status.as_ref().and_then(|s| PrebuildPhase::try_from(s.phase).ok()).unwrap_or(PrebuildPhase::Unspecified)
}

/// The phase a stored warm pool is in; UNSPECIFIED for a missing or unknown
/// value.
pub fn warm_pool_phase(pool: &WarmPool) -> WarmPoolPhase {
    pool.status.as_ref().and_then(|s| WarmPoolPhase::try_from(s.phase).ok()).unwrap_or(WarmPoolPhase::Unspecified)
}

/// A point in time as the stores keep it: microseconds since the Unix
/// epoch (what a protobuf timestamp keeps at the precision the API uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Micros(pub i64);

impl Micros {
    pub const EPOCH: Micros = Micros(0);

    /// `at`, truncated to the microsecond; before the epoch is the epoch.
    pub fn from_system_time(at: SystemTime) -> Micros {
        let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        Micros(i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
    }

    /// A protobuf timestamp, truncated to the microsecond.
    pub fn from_timestamp(at: &Timestamp) -> Micros {
        Micros(at.seconds.saturating_mul(1_000_000).saturating_add(i64::from(at.nanos / 1000)))
    }

    /// `duration` before `at`, or the epoch if that is earlier.
    pub fn before(at: SystemTime, duration: Duration) -> Micros {
        at.checked_sub(duration).map_or(Micros::EPOCH, Micros::from_system_time)
    }

    pub fn as_i64(self) -> i64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [PrebuildPhase; 12] = [
        PrebuildPhase::Unspecified,
        PrebuildPhase::Pending,
        PrebuildPhase::Starting,
        PrebuildPhase::Running,
        PrebuildPhase::Stopping,
        PrebuildPhase::Snapshotting,
        PrebuildPhase::Completed,
        PrebuildPhase::Failed,
        PrebuildPhase::Cancelling,
        PrebuildPhase::Cancelled,
        PrebuildPhase::Deleting,
        PrebuildPhase::Deleted,
    ];

    #[test]
    fn every_phase_is_either_final_or_active_and_deleting_is_active_but_ended() {
        for phase in ALL {
            assert_ne!(phase.is_final(), phase.is_active(), "{phase:?}");
            if phase.is_final() {
                assert!(phase.has_ended() && !phase.occupies_slot() && !phase.is_pending(), "{phase:?}");
            }
            if phase.occupies_slot() || phase.is_pending() {
                assert!(phase.is_active() && !phase.has_ended(), "{phase:?}");
            }
        }
        assert!(PrebuildPhase::Deleting.is_active() && PrebuildPhase::Deleting.has_ended());
        assert!(PrebuildPhase::Cancelling.occupies_slot() && !PrebuildPhase::Cancelling.is_running());
        assert_eq!(ALL.iter().filter(|p| p.is_final()).count(), 3);
        assert_eq!(PrebuildPhase::final_phases_sql(), "60, 70, 80");
    }

    #[test]
    fn micros_truncate_and_clamp() {
        let at = UNIX_EPOCH + Duration::new(12, 345_678_901);
        assert_eq!(Micros::from_system_time(at), Micros(12_345_678));
        assert_eq!(Micros::from_timestamp(&Timestamp { seconds: 12, nanos: 345_678_901 }), Micros(12_345_678));
        assert_eq!(Micros::before(at, Duration::from_secs(2)), Micros(10_345_678));
        assert_eq!(Micros::before(at, Duration::from_secs(20)), Micros::EPOCH);
        assert_eq!(Micros::from_system_time(UNIX_EPOCH - Duration::from_secs(1)), Micros::EPOCH);
    }
}
