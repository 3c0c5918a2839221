//! The runner protocol's messages to and from the domain's runner types,
//! used by both ends: the server's remote runner and `prebuildd runner`.

use crate::catalog::{ClassPolicy, EgressAllowance, HostBindMounts, Resources};
use crate::proto::prebuildd::v1 as pb;
use crate::runner::{ClaimedInstance, JobState, PoolObservation, PoolTarget, PrebuildJob};

/// The message that starts a job on a runner.
pub fn start_job(job: &PrebuildJob) -> pb::StartJob {
    pb::StartJob {
        prebuild_id: job.prebuild_id.clone(),
        environment_id: job.environment_id.clone(),
        project_id: job.project_id.clone(),
        environment_class_id: job.environment_class_id.clone(),
        repository: job.repository.clone(),
        resources: Some(resources_to_wire(&job.resources)),
        policy: Some(policy_to_wire(&job.policy)),
        devcontainer_path: job.devcontainer_path.clone().unwrap_or_default(),
        branch: job.source.branch.clone().unwrap_or_default(),
        commit_sha: job.source.commit.clone().unwrap_or_default(),
        base_prebuild_id: job.source.base.as_ref().map(|b| b.prebuild_id.clone()).unwrap_or_default(),
        base_commit_sha: job.source.base.as_ref().map(|b| b.commit.clone()).unwrap_or_default(),
        tag_latest: job.tag_latest,
        base_snapshot_image: job.source.base.as_ref().and_then(|b| b.image.clone()).unwrap_or_default(),
    }
}

pub fn resources_to_wire(resources: &Resources) -> pb::Resources {
    pb::Resources { nano_cpus: resources.nano_cpus.unwrap_or(0), memory_bytes: resources.memory_bytes.unwrap_or(0) }
}

pub fn resources_from_wire(resources: Option<&pb::Resources>) -> Resources {
    let resources = resources.cloned().unwrap_or_default();
    Resources {
        nano_cpus: (resources.nano_cpus > 0).then_some(resources.nano_cpus),
        memory_bytes: (resources.memory_bytes > 0).then_some(resources.memory_bytes),
    }
}

pub fn policy_to_wire(policy: &ClassPolicy) -> pb::ClassPolicy {
    pb::ClassPolicy {
        class_name: policy.class_name.clone(),
        allow_capabilities: policy.allow_capabilities.clone(),
        allow_security_opt: policy.allow_security_opt.clone(),
        allow_privileged: policy.allow_privileged,
        allow_devices: policy.allow_devices.clone(),
        allow_host_network: policy.allow_host_network,
        allow_gpus: policy.allow_gpus,
        refuse_host_bind_mounts: policy.host_bind_mounts == HostBindMounts::Refuse,
        allow_new_privileges: policy.allow_new_privileges,
        allow_egress: policy.allow_egress.iter().map(ToString::to_string).collect(),
    }
}

pub fn policy_from_wire(policy: Option<&pb::ClassPolicy>) -> ClassPolicy {
    let policy = policy.cloned().unwrap_or_default();
    ClassPolicy {
        class_name: policy.class_name,
        allow_capabilities: policy.allow_capabilities,
        allow_security_opt: policy.allow_security_opt,
        allow_privileged: policy.allow_privileged,
        allow_devices: policy.allow_devices,
        allow_host_network: policy.allow_host_network,
        allow_gpus: policy.allow_gpus,
        allow_new_privileges: policy.allow_new_privileges,
        host_bind_mounts: if policy.refuse_host_bind_mounts { HostBindMounts::Refuse } else { HostBindMounts::Warn },
        // The server sends what it parsed; one this side cannot read is
        // left out, which allows less, never more.
        allow_egress: policy
            .allow_egress
            .iter()
            .filter_map(|text| match EgressAllowance::parse(text) {
                Ok(allowance) => Some(allowance),
                Err(error) => {
                    tracing::warn!(allowance = %text, %error, "runner: an allow_egress entry from the server cannot be read; left out");
                    None
                }
            })
            .collect(),
    }
}

pub fn job_report(prebuild_id: &str, state: &JobState) -> pb::JobReport {
    let mut report = pb::JobReport { prebuild_id: prebuild_id.to_string(), ..Default::default() };
    let phase = match state {
        JobState::Starting => pb::JobPhase::Starting,
        JobState::Running => pb::JobPhase::Running,
        JobState::Stopping => pb::JobPhase::Stopping,
        JobState::Snapshotting { percent } => {
            report.snapshot_percent = *percent;
            pb::JobPhase::Snapshotting
        }
        JobState::Completed { snapshot_size_bytes, warning, snapshot_image } => {
            report.snapshot_size_bytes = *snapshot_size_bytes;
            report.warning_message = warning.clone().unwrap_or_default();
            report.snapshot_image = snapshot_image.clone().unwrap_or_default();
            pb::JobPhase::Completed
        }
        JobState::Failed { message } => {
            report.failure_message = message.clone();
            pb::JobPhase::Failed
        }
        JobState::Stopped => pb::JobPhase::Stopped,
    };
    report.set_phase(phase);
    report
}

/// The state a report says; `None` for a phase this build does not know
/// (a newer runner), which the server treats as "no news".
pub fn job_state(report: &pb::JobReport) -> Option<JobState> {
    Some(match report.phase() {
        pb::JobPhase::Unspecified => return None,
        pb::JobPhase::Starting => JobState::Starting,
        pb::JobPhase::Running => JobState::Running,
        pb::JobPhase::Stopping => JobState::Stopping,
        pb::JobPhase::Snapshotting => JobState::Snapshotting { percent: report.snapshot_percent.clamp(0, 100) },
        pb::JobPhase::Completed => JobState::Completed {
            snapshot_size_bytes: report.snapshot_size_bytes.max(0),
            warning: (!report.warning_message.is_empty()).then(|| report.warning_message.clone()),
            snapshot_image: (!report.snapshot_image.is_empty()).then(|| report.snapshot_image.clone()),
        },
        pb::JobPhase::Failed => JobState::Failed {
            message: if report.failure_message.is_empty() {
                "the runner reported a failure without a message".into()
            } else {
                report.failure_message.clone()
            },
        },
        pb::JobPhase::Stopped => JobState::Stopped,
    })
}

pub fn pool_target_to_wire(target: &PoolTarget) -> pb::PoolTarget {
    pb::PoolTarget {
        warm_pool_id: target.warm_pool_id.clone(),
        snapshot_id: target.snapshot_id.clone().unwrap_or_default(),
        snapshot_image: target.snapshot_image.clone().unwrap_or_default(),
        running: target.running,
        stopped: target.stopped,
        resources: Some(resources_to_wire(&target.resources)),
        policy: Some(policy_to_wire(&target.policy)),
    }
}

pub fn pool_target_from_wire(target: &pb::PoolTarget) -> PoolTarget {
    PoolTarget {
        warm_pool_id: target.warm_pool_id.clone(),
        snapshot_id: (!target.snapshot_id.is_empty()).then(|| target.snapshot_id.clone()),
        snapshot_image: (!target.snapshot_image.is_empty()).then(|| target.snapshot_image.clone()),
        running: target.running,
        stopped: target.stopped,
        resources: resources_from_wire(target.resources.as_ref()),
        policy: policy_from_wire(target.policy.as_ref()),
    }
}

pub fn pool_report(warm_pool_id: &str, observation: &PoolObservation) -> pb::PoolReport {
    pb::PoolReport {
        warm_pool_id: warm_pool_id.to_string(),
        running: observation.running,
        stopped: observation.stopped,
        outdated: observation.outdated,
        failure_message: observation.failure.clone().unwrap_or_default(),
    }
}

pub fn pool_observation(report: &pb::PoolReport) -> PoolObservation {
    PoolObservation {
        running: report.running,
        stopped: report.stopped,
        outdated: report.outdated,
        failure: (!report.failure_message.is_empty()).then(|| report.failure_message.clone()),
    }
}

pub fn claim_result(request_id: &str, outcome: &crate::error::Result<Option<ClaimedInstance>>) -> pb::ClaimResult {
    let mut result = pb::ClaimResult { request_id: request_id.to_string(), ..Default::default() };
    match outcome {
        Ok(Some(instance)) => {
            result.claimed = true;
            result.instance_id = instance.instance_id.clone();
            result.snapshot_id = instance.snapshot_id.clone();
            result.workspace_path = instance.workspace_path.clone();
            result.container_id = instance.container_id.clone();
            result.compose_project = instance.compose_project.clone();
            result.services = instance
                .services
                .iter()
                .map(|s| pb::ServiceContainer { service: s.service.clone(), container_id: s.container_id.clone() })
                .collect();
        }
        Ok(None) => {}
        Err(error) => result.error_message = error.to_string(),
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_state_survives_the_wire() {
        let states = [
            JobState::Starting,
            JobState::Running,
            JobState::Stopping,
            JobState::Snapshotting { percent: 40 },
            JobState::Completed { snapshot_size_bytes: 4096, warning: Some("no devcontainer.json".into()), snapshot_image: None },
            JobState::Completed {
                snapshot_size_bytes: 1,
                warning: None,
                snapshot_image: Some("registry.example.com/prebuilds/p@sha256:0123".into()),
            },
            JobState::Failed { message: "exit 2".into() },
            JobState::Stopped,
        ];
        for state in states {
            assert_eq!(job_state(&job_report("p", &state)), Some(state));
        }
        assert_eq!(job_state(&pb::JobReport::default()), None, "an unknown phase is no news");
    }

    #[test]
    fn pool_targets_and_reports_survive_the_wire() {
        let target = PoolTarget {
            warm_pool_id: "w".into(),
            snapshot_id: Some("s".into()),
            snapshot_image: Some("registry.example.com/prebuilds/p@sha256:0123".into()),
            running: 1,
            stopped: 2,
            resources: Resources { nano_cpus: Some(1_000_000_000), memory_bytes: None },
            policy: ClassPolicy {
                class_name: "small".into(),
                allow_capabilities: vec!["SYS_PTRACE".into()],
                allow_security_opt: vec!["seccomp=unconfined".into()],
                allow_privileged: true,
                allow_devices: vec!["/dev/fuse".into()],
                allow_host_network: true,
                allow_gpus: true,
                allow_new_privileges: true,
                host_bind_mounts: HostBindMounts::Refuse,
                allow_egress: ["10.1.2.0/24", "[fd00::1]:5000"].iter().map(|t| EgressAllowance::parse(t).unwrap()).collect(),
            },
        };
        assert_eq!(pool_target_from_wire(&pool_target_to_wire(&target)), target);
        let empty = PoolTarget { snapshot_id: None, snapshot_image: None, ..target };
        assert_eq!(pool_target_from_wire(&pool_target_to_wire(&empty)), empty);
        let observation = PoolObservation { running: 1, stopped: 1, outdated: 3, failure: Some("no image".into()) };
        assert_eq!(pool_observation(&pool_report("w", &observation)), observation);
    }
}
