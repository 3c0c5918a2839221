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
            let key = (project.id.clone(), class_id.clone(), day.clone());
            if crate::sync::lock(&reconciler.schedules_done).contains(&key) {
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
            crate::sync::lock(&reconciler.schedules_done).insert(key);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn days_and_hours_are_utc() {
        let at = UNIX_EPOCH + Duration::from_secs(1_577_470_279); // 2019-12-27T18:11:19Z
        assert_eq!(utc_day_and_hour(at), ("2019-12-27".to_string(), 18));
    }
}
