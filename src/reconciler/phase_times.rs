//! When each active prebuild entered its phase, so that the metrics can
//! time phases and whole prebuilds as the reconciler moves them.
//!
//! The store keeps no per-phase times, so this lives in memory: the
//! reconciler notes the time of every phase change it writes, and each pass
//! notes the phases the API set in between (a cancel, a delete). A phase
//! this process did not see begin (after a restart, or on a replica that
//! just took the lease) is timed from the prebuild's last update, which is
//! when its phase was written unless a snapshot percentage was written since;
//! PENDING always from the prebuild's creation. Entries of prebuilds no
//! longer active are dropped at the end of each pass, so memory follows
//! active work.

use crate::clock::{between, system_time, timestamp};
use crate::domain::phase_of;
use crate::metrics::Metrics;
use crate::proto::gitpod::v1::{Prebuild, PrebuildPhase};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

struct Entered {
    phase: PrebuildPhase,
    at: SystemTime,
    /// The last pass that read the prebuild as active.
    pass: u64,
}

#[derive(Default)]
pub struct PhaseTimes {
    entries: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_prebuild: HashMap<String, Entered>,
    pass: u64,
}

/// PENDING and UNSPECIFIED are one phase (a prebuild is stored PENDING).
fn normalized(phase: PrebuildPhase) -> PrebuildPhase {
    if phase == PrebuildPhase::Unspecified {
        PrebuildPhase::Pending
    } else {
        phase
    }
}

/// When a prebuild entered the phase it is stored with, as far as the
/// prebuild itself tells (see the module doc).
fn entered_from_record(prebuild: &Prebuild, now: SystemTime) -> SystemTime {
    let metadata = prebuild.metadata.as_ref();
    let at = if normalized(phase_of(prebuild)) == PrebuildPhase::Pending {
        metadata.and_then(|m| m.created_at.as_ref())
    } else {
        metadata.and_then(|m| m.updated_at.as_ref().or(m.created_at.as_ref()))
    };
    at.map_or(now, system_time)
}

fn elapsed(since: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(since).unwrap_or(Duration::ZERO)
}

impl PhaseTimes {
    /// Notes the active prebuilds a pass read: a phase changed by someone
    /// else ends the phase noted before. Sets the gauge of prebuilds by
    /// phase, and forgets prebuilds that are no longer active.
    pub fn observe_pass(&self, metrics: &Metrics, active: &[Prebuild], now: SystemTime) {
        let mut counts: Vec<(PrebuildPhase, i64)> = Vec::with_capacity(8);
        let mut inner = crate::sync::lock(&self.entries);
        inner.pass += 1;
        let pass = inner.pass;
        for prebuild in active {
            let phase = normalized(phase_of(prebuild));
            match counts.iter_mut().find(|(p, _)| *p == phase) {
                Some((_, n)) => *n += 1,
                None => counts.push((phase, 1)),
            }
            match inner.by_prebuild.get_mut(&prebuild.id) {
                Some(entered) if entered.phase == phase => entered.pass = pass,
                Some(entered) => {
                    metrics.record_phase(entered.phase, elapsed(entered.at, now));
                    *entered = Entered { phase, at: now, pass };
                }
                None => {
                    inner.by_prebuild.insert(prebuild.id.clone(), Entered { phase, at: entered_from_record(prebuild, now), pass });
                }
            }
        }
        inner.by_prebuild.retain(|_, entered| entered.pass == pass);
        drop(inner);
        metrics.set_prebuilds_by_phase(&counts);
    }

    /// The reconciler wrote `after` over `before`: a new phase ends the old
    /// one, and a final phase ends the prebuild (timed from its creation).
    pub fn changed(&self, metrics: &Metrics, before: &Prebuild, after: &Prebuild, now: SystemTime) {
        let (from, to) = (normalized(phase_of(before)), normalized(phase_of(after)));
        if from == to {
            return;
        }
        let mut inner = crate::sync::lock(&self.entries);
        let pass = inner.pass;
        let since = match inner.by_prebuild.get(&after.id) {
            Some(entered) if entered.phase == from => entered.at,
            _ => entered_from_record(before, now),
        };
        metrics.record_phase(from, elapsed(since, now));
        if to.is_final() {
            inner.by_prebuild.remove(&after.id);
            drop(inner);
            let status = after.status.as_ref();
            let ended = status.and_then(|s| s.completion_time).unwrap_or_else(|| timestamp(now));
            let created = after.metadata.as_ref().and_then(|m| m.created_at);
            let size = status.filter(|_| to == PrebuildPhase::Completed).map(|s| s.snapshot_size_bytes.max(0) as u64);
            if let Some(created) = created {
                metrics.record_finished(to, between(&created, &ended), size);
            }
        } else {
            inner.by_prebuild.insert(after.id.clone(), Entered { phase: to, at: now, pass });
        }
    }

    /// Forgets every phase start: this process stopped leading, and
    /// another replica may move the prebuilds meanwhile.
    pub fn clear(&self) {
        crate::sync::lock(&self.entries).by_prebuild.clear();
    }

    /// The reconciler removed a deleted prebuild: its DELETING phase ended.
    pub fn removed(&self, metrics: &Metrics, prebuild: &Prebuild, now: SystemTime) {
        let entered = crate::sync::lock(&self.entries).by_prebuild.remove(&prebuild.id);
        let since = match entered {
            Some(entered) if entered.phase == PrebuildPhase::Deleting => entered.at,
            _ => entered_from_record(prebuild, now),
        };
        if normalized(phase_of(prebuild)) == PrebuildPhase::Deleting {
            metrics.record_phase(PrebuildPhase::Deleting, elapsed(since, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::gitpod::v1::{PrebuildMetadata, PrebuildStatus};

    fn prebuild(phase: PrebuildPhase, created: SystemTime) -> Prebuild {
        Prebuild {
            id: "p".into(),
            metadata: Some(PrebuildMetadata {
                created_at: Some(timestamp(created)),
                updated_at: Some(timestamp(created)),
                ..Default::default()
            }),
            status: Some(PrebuildStatus { phase: phase as i32, snapshot_size_bytes: 8192, ..Default::default() }),
            ..Default::default()
        }
    }

    fn count(text: &str, series: &str) -> f64 {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
    }

    #[test]
    fn phases_and_outcomes_are_timed_as_the_reconciler_moves_them() {
        let metrics = Metrics::new();
        let times = PhaseTimes::default();
        let t0 = SystemTime::now();
        let pending = prebuild(PrebuildPhase::Pending, t0);
        times.observe_pass(&metrics, std::slice::from_ref(&pending), t0 + Duration::from_secs(1));
        let starting = prebuild(PrebuildPhase::Starting, t0);
        times.changed(&metrics, &pending, &starting, t0 + Duration::from_secs(2));
        // The API cancels: the next pass sees CANCELLING.
        let cancelling = prebuild(PrebuildPhase::Cancelling, t0);
        times.observe_pass(&metrics, std::slice::from_ref(&cancelling), t0 + Duration::from_secs(5));
        let mut cancelled = prebuild(PrebuildPhase::Cancelled, t0);
        cancelled.status.as_mut().unwrap().completion_time = Some(timestamp(t0 + Duration::from_secs(6)));
        times.changed(&metrics, &cancelling, &cancelled, t0 + Duration::from_secs(6));
        times.observe_pass(&metrics, &[], t0 + Duration::from_secs(7));

        let text = metrics.render();
        // Stored times have microseconds: compare to the millisecond.
        let seconds = |series: &str| (count(&text, series) * 1000.0).round() / 1000.0;
        assert_eq!(seconds(r#"prebuildd_prebuild_phase_duration_seconds_sum{phase="pending"}"#), 2.0, "{text}");
        assert_eq!(seconds(r#"prebuildd_prebuild_phase_duration_seconds_sum{phase="starting"}"#), 3.0, "{text}");
        assert_eq!(seconds(r#"prebuildd_prebuild_phase_duration_seconds_sum{phase="cancelling"}"#), 1.0, "{text}");
        assert_eq!(seconds(r#"prebuildd_prebuild_duration_seconds_sum{outcome="cancelled"}"#), 6.0, "{text}");
        assert_eq!(count(&text, "prebuildd_snapshot_size_bytes_count"), 0.0, "only completed prebuilds have snapshots");
        assert_eq!(count(&text, r#"prebuildd_prebuilds{phase="cancelling"}"#), 0.0);
        assert!(times.entries.lock().unwrap().by_prebuild.is_empty(), "finished prebuilds are forgotten");
    }
}
