//! The labels the docker runner puts on every container and image it makes.
//! They are the runner's memory across restarts: after one, the runner reads
//! them back to adopt what exists (a ready pool keeps its containers) and to
//! remove what nothing owns. `docker ps --filter label=...` shows the same.

pub const RUNNER_ID: &str = "dev.prebuildd.runner-id";
/// On prebuild containers and snapshot images (and inherited by the
/// instances made from a snapshot, where it equals the snapshot ID).
pub const PREBUILD_ID: &str = "dev.prebuildd.prebuild-id";
pub const WARM_POOL_ID: &str = "dev.prebuildd.warm-pool-id";
pub const SNAPSHOT_ID: &str = "dev.prebuildd.snapshot-id";
pub const INSTANCE_ID: &str = "dev.prebuildd.instance-id";
/// What a container or image is: one of the `ROLE_*` values. Containers
/// inherit their image's labels, so this tells a prebuild's container from
/// an instance made from its snapshot.
pub const ROLE: &str = "dev.prebuildd.role";
/// The workspace's folder inside the container (on snapshot images).
pub const WORKSPACE_FOLDER: &str = "dev.prebuildd.workspace-folder";
/// What the policy granted the prebuild's container beyond an unprivileged
/// one (JSON, on snapshot images): warm instances get the same, as long as
/// their class still allows it.
pub const GRANT: &str = "dev.prebuildd.grant";

/// On the runner's networks: the class allowances (`allow_egress`, in
/// their canonical spelling, comma-separated) its rules let through; on pool
/// containers: the network they were made on, so that instances of a class
/// whose allowances changed are replaced.
pub const ALLOW_EGRESS: &str = "dev.prebuildd.allow-egress";
pub const NETWORK: &str = "dev.prebuildd.network";

pub const ROLE_PREBUILD: &str = "prebuild";
pub const ROLE_SNAPSHOT: &str = "snapshot";
pub const ROLE_INSTANCE: &str = "instance";
/// The runner's networks, and the short-lived containers that check them.
pub const ROLE_NETWORK: &str = "network";
pub const ROLE_PROBE: &str = "probe";
/// The other containers of a warm instance's Compose stack (its dev
/// container is the `instance`), and the volumes of any stack.
pub const ROLE_SERVICE: &str = "service";
pub const ROLE_VOLUME: &str = "volume";

/// On every container, network and volume of a Compose stack: its Compose
/// project, so that a stack is removed whole.
pub const COMPOSE_PROJECT: &str = "dev.prebuildd.compose-project";
/// On snapshot images of Compose configurations: the stack their instances
/// start (JSON, see `compose/stack.rs`); on the images of a stack's other
/// services that the runner built, the service.
pub const COMPOSE_STACK: &str = "dev.prebuildd.compose-stack";
pub const COMPOSE_SERVICE: &str = "dev.prebuildd.compose-service";

/// The repository of snapshot images: `prebuildd-snapshot:<prebuild id>`.
pub const SNAPSHOT_REPOSITORY: &str = "prebuildd-snapshot";
/// The images `devcontainer build` makes for a prebuild are
/// `prebuildd-build-<runner id>:<prebuild id>` (removed when the prebuild
/// ends). The CLI cannot label them, so the runner's ID is in the name: a
/// runner sweeping its own leftovers never touches another runner's build.
pub const BUILD_REPOSITORY_PREFIX: &str = "prebuildd-build-";

/// Container names: `prebuildd-instance-<instance id>` for pool instances,
/// renamed to `prebuildd-claimed-<instance id>` when claimed (Docker cannot
/// change labels, so the name says a container is no longer the pool's).
pub const INSTANCE_NAME_PREFIX: &str = "prebuildd-instance-";
pub const CLAIMED_NAME_PREFIX: &str = "prebuildd-claimed-";

pub fn snapshot_image(prebuild_id: &str) -> String {
    format!("{SNAPSHOT_REPOSITORY}:{prebuild_id}")
}

pub fn build_repository(runner_id: &str) -> String {
    format!("{BUILD_REPOSITORY_PREFIX}{runner_id}")
}

pub fn build_image(runner_id: &str, prebuild_id: &str) -> String {
    format!("{}:{prebuild_id}", build_repository(runner_id))
}

/// The Compose project of a prebuild's stack.
pub fn prebuild_project(prebuild_id: &str) -> String {
    format!("prebuildd-prebuild-{prebuild_id}")
}

/// The Compose project of a warm instance's stack.
pub fn instance_project(instance_id: &str) -> String {
    format!("prebuildd-stack-{instance_id}")
}

/// The image of a stack's other service, built or completed by the runner
/// for a prebuild (kept with its snapshot).
pub fn service_image(prebuild_id: &str, service: &str) -> String {
    let service: String =
        service.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c.to_ascii_lowercase() } else { '-' }).collect();
    format!("{SNAPSHOT_REPOSITORY}-{service}:{prebuild_id}")
}

pub fn instance_name(instance_id: &str) -> String {
    format!("{INSTANCE_NAME_PREFIX}{instance_id}")
}

pub fn claimed_name(instance_id: &str) -> String {
    format!("{CLAIMED_NAME_PREFIX}{instance_id}")
}

/// A `label=key=value` filter for list calls.
pub fn filter(key: &str, value: &str) -> String {
    format!("{key}={value}")
}
