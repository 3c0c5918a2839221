//! Daily scheduled prebuilds: a project with `daily_schedule_hour_utc` gets
//! one prebuild per listed environment class each UTC day, once that hour
//! has come (a server that was down at that hour catches up later the same
//! day). The store makes it exactly once per day, also across restarts.

use super::Reconciler;
use crate::catalog::Catalog;
use crate::clock::timestamp;
use crate::error::Result;
use crate::proto::gitpod::v1::prebuild_metadata::PrebuildTrigger;
use crate::service::{new_prebuild, NewPrebuild};
use std::collections::HashSet;

/// The (project, class) pairs already scheduled on the current UTC day, so
/// that a pass makes no store write for them: only today's are kept, so its
/// size follows the configuration, not how many days the server has run.
/// (The store's unique key is what guarantees once per day.)
#[derive(Debug, Default)]
pub(super) struct ScheduledToday {
    day: String,
    done: HashSet<(String, String)>,
}

impl ScheduledToday {
    /// Whether the pair was scheduled on `day`; a new day forgets the last.
    fn contains(&mut self, day: &str, project_id: &str, class_id: &str) -> bool {
        self.roll_over(day);
        self.done.contains(&(project_id.to_string(), class_id.to_string()))
    }

    fn insert(&mut self, day: &str, project_id: &str, class_id: &str) {
        self.roll_over(day);
        self.done.insert((project_id.to_string(), class_id.to_string()));
    }

    fn roll_over(&mut self, day: &str) {
        if self.day != day {
            self.day = day.to_string();
            self.done.clear();
        }
    }
}

/// The UTC day and hour of a moment.
pub fn utc_day_and_hour(at: std::time::SystemTime) -> (String, u8) {
    let utc = time::OffsetDateTime::from(at);
    (format!("{:04}-{:02}-{:02}", utc.year(), u8::from(utc.month()), utc.day()), utc.hour())
}

pub(super) async fn run(reconciler: &Reconciler, catalog: &Catalog) -> Result<()> {
    let now = reconciler.now();
    let (day, hour) = utc_day_and_hour(now);
    for project in catalog.projects.values() {
        let settings = &project.prebuilds;
        let (Some(at_hour), Some(executor)) = (settings.daily_schedule_hour_utc, settings.executor.as_ref()) else { continue };
        if !settings.enabled || hour < at_hour {
            continue;
        }
        for class_id in &settings.environment_class_ids {
            if crate::sync::lock(&reconciler.schedules_done).contains(&day, &project.id, class_id) {
                continue;
            }
            let prebuild = new_prebuild(NewPrebuild {
                organization_id: project.organization_id.clone(),
                project_id: project.id.clone(),
                environment_class_id: class_id.clone(),
                creator: executor.clone(),
                executor: executor.clone(),
                triggered_by: PrebuildTrigger::Scheduled,
                timeout: settings.timeout,
                public_url: reconciler.service.public_url().to_string(),
                now: timestamp(now),
            });
            let id = prebuild.id.clone();
            if reconciler.store().insert_scheduled_prebuild(prebuild, &day).await? {
                tracing::info!(project = %project.id, class = %class_id, prebuild = %id, "scheduled prebuild created");
                reconciler.changes.notify_one();
            }
            crate::sync::lock(&reconciler.schedules_done).insert(&day, &project.id, class_id);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn only_todays_schedules_are_remembered() {
        let mut today = ScheduledToday::default();
        today.insert("2019-12-27", "p", "c");
        today.insert("2019-12-27", "p", "d");
        assert!(today.contains("2019-12-27", "p", "c"));
        assert!(!today.contains("2019-12-28", "p", "c"), "a new day, nothing done yet");
        assert!(today.done.is_empty(), "yesterday's pairs are forgotten");
        today.insert("2019-12-28", "p", "c");
        assert_eq!(today.done.len(), 1);
    }

    #[test]
    fn days_and_hours_are_utc() {
        let at = UNIX_EPOCH + Duration::from_secs(1_577_470_279); // 2019-12-27T18:11:19Z
        assert_eq!(utc_day_and_hour(at), ("2019-12-27".to_string(), 18));
    }
}
