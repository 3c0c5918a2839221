//! Every devcontainer.json property the docker runner knows, and what it
//! does with each (the README's table says the same, and a test checks that
//! it lists every key here).

/// What the runner does with a property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Passed to the Dev Containers CLI as written.
    Honoured,
    /// Kept in the image's metadata for the client that starts a session
    /// from a warm instance; a prebuild does not run or use it.
    Session,
    /// Decided by the class's privilege policy (granted, refused, or left
    /// out with a warning).
    Policy,
    /// Decided by the runner, as described.
    Runner(&'static str),
    /// Ignored; the prebuild's warning says why.
    Warned(&'static str),
    /// Ignored; the prebuild's log says why.
    Noted(&'static str),
}

/// The properties, in the spec's order of topics.
pub const KEYS: &[(&str, Treatment)] = &[
    ("name", Treatment::Honoured),
    ("image", Treatment::Honoured),
    ("build", Treatment::Honoured),
    ("dockerFile", Treatment::Honoured),
    ("context", Treatment::Honoured),
    ("features", Treatment::Honoured),
    ("overrideFeatureInstallOrder", Treatment::Honoured),
    ("containerEnv", Treatment::Honoured),
    ("remoteEnv", Treatment::Honoured),
    ("containerUser", Treatment::Honoured),
    ("remoteUser", Treatment::Honoured),
    ("userEnvProbe", Treatment::Honoured),
    ("overrideCommand", Treatment::Honoured),
    ("onCreateCommand", Treatment::Honoured),
    ("updateContentCommand", Treatment::Honoured),
    ("waitFor", Treatment::Honoured),
    ("customizations", Treatment::Honoured),
    ("$schema", Treatment::Honoured),
    ("postCreateCommand", Treatment::Session),
    ("postStartCommand", Treatment::Session),
    ("postAttachCommand", Treatment::Session),
    ("forwardPorts", Treatment::Session),
    ("portsAttributes", Treatment::Session),
    ("otherPortsAttributes", Treatment::Session),
    ("shutdownAction", Treatment::Session),
    ("extensions", Treatment::Session),
    ("settings", Treatment::Session),
    ("runArgs", Treatment::Policy),
    ("privileged", Treatment::Policy),
    ("capAdd", Treatment::Policy),
    ("securityOpt", Treatment::Policy),
    ("mounts", Treatment::Policy),
    ("init", Treatment::Policy),
    ("workspaceFolder", Treatment::Runner("where the workspace is copied to and the commands run (default /workspaces/<repository name>)")),
    (
        "workspaceMount",
        Treatment::Runner("its target is where the workspace is copied to (its source must be the repository or a folder in it)"),
    ),
    ("hostRequirements", Treatment::Runner("compared with the environment class; more than the class gives is a warning")),
    ("updateRemoteUserUID", Treatment::Noted("the workspace is given to the container's user instead")),
    ("initializeCommand", Treatment::Warned("the spec runs it on the host, and a prebuild never runs anything on the runner's host")),
    ("appPort", Treatment::Warned("no port of the runner's host is published; forwarding ports is the client's business")),
    ("secrets", Treatment::Noted("a prebuild has no user to ask for secrets")),
    (
        "dockerComposeFile",
        Treatment::Runner(
            "the dev container is a service of this Compose project (a file or a list, relative to the devcontainer.json; see Docker Compose configurations)",
        ),
    ),
    ("service", Treatment::Runner("the Compose service that is the dev container (with dockerComposeFile)")),
    ("runServices", Treatment::Runner("the Compose services that are started (default: all; with dockerComposeFile)")),
];

/// What the runner does with `key`; `None` for a property it does not know
/// (the spec lets tools ignore those).
pub fn treatment(key: &str) -> Option<Treatment> {
    KEYS.iter().find(|(name, _)| *name == key).map(|(_, treatment)| *treatment)
}
