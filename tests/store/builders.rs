//! What the store tests build their rows with: prebuilds and warm pools
//! from a few fields, filters and pages, and small readers of results.

use super::*;

pub(super) fn subject(id: &str) -> Option<Subject> {
    Some(Subject { id: id.into(), principal: Principal::User as i32 })
}

#[derive(Clone, Copy)]
pub(super) struct Spec<'a> {
    pub(super) org: &'a str,
    pub(super) project: &'a str,
    pub(super) class: &'a str,
    pub(super) phase: i32,
    pub(super) trigger: i32,
    pub(super) creator: &'a str,
    pub(super) executor: &'a str,
}

pub(super) const DEFAULT: Spec<'static> =
    Spec { org: ORG, project: PROJECT_A, class: SMALL, phase: PENDING, trigger: MANUAL, creator: ALICE, executor: ALICE };

pub(super) fn prebuild(spec: Spec) -> Prebuild {
    Prebuild {
        id: uuid::Uuid::now_v7().to_string(),
        metadata: Some(PrebuildMetadata {
            organization_id: spec.org.into(),
            project_id: spec.project.into(),
            environment_class_id: spec.class.into(),
            creator: subject(spec.creator),
            triggered_by: spec.trigger,
            executor: subject(spec.executor),
            created_at: Some(pbjson_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
            ..Default::default()
        }),
        spec: Some(PrebuildSpec { spec_version: 1, ..Default::default() }),
        status: Some(PrebuildStatus { phase: spec.phase, status_version: 1, ..Default::default() }),
    }
}

/// A prebuild that finished `finished_at` microseconds after the epoch.
pub(super) fn finished(phase: i32, finished_at: i64) -> Prebuild {
    let mut p = prebuild(Spec { phase, ..DEFAULT });
    p.status.as_mut().unwrap().completion_time =
        Some(pbjson_types::Timestamp { seconds: finished_at / 1_000_000, nanos: (finished_at % 1_000_000) as i32 * 1000 });
    p
}

pub(super) fn warm_pool(org: &str, project: &str, class: &str) -> WarmPool {
    WarmPool {
        id: uuid::Uuid::now_v7().to_string(),
        metadata: Some(WarmPoolMetadata {
            organization_id: org.into(),
            project_id: project.into(),
            environment_class_id: class.into(),
            runner_id: RUNNER.into(),
            ..Default::default()
        }),
        spec: Some(WarmPoolSpec { spec_version: 1, min_size: Some(1), max_size: Some(2), ..Default::default() }),
        status: Some(WarmPoolStatus { status_version: 1, ..Default::default() }),
    }
}

pub(super) fn phase_of(p: &Prebuild) -> i32 {
    p.status.as_ref().unwrap().phase
}

pub(super) fn ids<T>(items: &[T], id: impl Fn(&T) -> &str) -> Vec<String> {
    items.iter().map(|item| id(item).to_string()).collect()
}

pub(super) fn prebuild_ids(items: &[Prebuild]) -> Vec<String> {
    ids(items, |p| &p.id)
}

pub(super) fn org_filter(org: &str) -> PrebuildFilter {
    PrebuildFilter { organization_id: org.into(), ..Default::default() }
}

pub(super) fn first_page(limit: usize) -> PageRequest {
    PageRequest { after_seq: None, limit }
}

/// Every page of a prebuild query: the IDs in order and each page's size.
pub(super) async fn all_prebuild_pages(store: &dyn Store, filter: &PrebuildFilter, limit: usize) -> (Vec<String>, Vec<usize>) {
    let (mut all, mut sizes, mut after_seq) = (Vec::new(), Vec::new(), None);
    loop {
        let page: Page<Prebuild> = store.list_prebuilds(filter.clone(), PageRequest { after_seq, limit }).await.unwrap();
        sizes.push(page.items.len());
        all.extend(prebuild_ids(&page.items));
        match page.next_after_seq {
            Some(next) => after_seq = Some(next),
            None => return (all, sizes),
        }
        assert!(sizes.len() < 1000, "paging does not end");
    }
}

pub(super) fn bump_status(p: &mut Prebuild) -> prebuildd::error::Result<Change> {
    p.status.get_or_insert_with(Default::default).status_version += 1;
    Ok(Change::Changed)
}
