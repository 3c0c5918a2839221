//! The spec's variables (`${localWorkspaceFolder}`, `${localEnv:NAME}`,
//! ...) as they resolve on a runner, so that the policy judges a mount or a
//! flag by what it would really be.
//!
//! "Local" is the runner's machine: `localWorkspaceFolder` is the runner's
//! clone of the repository, `localWorkspaceFolderBasename` the repository's
//! name (the clone's own folder is named after the environment), and
//! `localEnv` reads only the variables the runner's `pass_env` lists, never
//! the rest of the runner's environment. `containerEnv:NAME` and
//! `devcontainerId` are left as written: they only mean something inside the
//! container (the Dev Containers CLI resolves them there).

use std::collections::BTreeMap;

/// What the variables resolve to for one prebuild.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Variables {
    /// The runner's clone of the repository.
    pub local_workspace_folder: String,
    /// The repository's name.
    pub local_workspace_folder_basename: String,
    /// The workspace's folder inside the container.
    pub container_workspace_folder: String,
    /// The runner's environment, only the variables `pass_env` lists.
    pub local_env: BTreeMap<String, String>,
}

impl Variables {
    /// `text` with every variable this side can resolve replaced.
    pub fn resolve(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let name = &after[..end];
            match self.value_of(name) {
                Some(value) => out.push_str(&value),
                None => out.push_str(&rest[start..start + 3 + end]),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn value_of(&self, name: &str) -> Option<String> {
        let basename = |path: &str| path.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_string();
        match name {
            "localWorkspaceFolder" => Some(self.local_workspace_folder.clone()),
            "localWorkspaceFolderBasename" => Some(self.local_workspace_folder_basename.clone()),
            "containerWorkspaceFolder" => Some(self.container_workspace_folder.clone()),
            "containerWorkspaceFolderBasename" => Some(basename(&self.container_workspace_folder)),
            _ => {
                let (kind, rest) = name.split_once(':')?;
                if kind != "localEnv" && kind != "env" {
                    return None;
                }
                let (variable, default) = rest.split_once(':').unwrap_or((rest, ""));
                Some(self.local_env.get(variable).cloned().unwrap_or_else(|| default.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variables() -> Variables {
        Variables {
            local_workspace_folder: "/runner/workspaces/e1".into(),
            local_workspace_folder_basename: "app".into(),
            container_workspace_folder: "/workspaces/app".into(),
            local_env: BTreeMap::from([("NPM_TOKEN".to_string(), "secret".to_string())]),
        }
    }

    #[test]
    fn variables_resolve_as_on_a_runner() {
        let v = variables();
        assert_eq!(v.resolve("source=${localWorkspaceFolder}/.cache,target=/c"), "source=/runner/workspaces/e1/.cache,target=/c");
        assert_eq!(v.resolve("/work/${localWorkspaceFolderBasename}"), "/work/app");
        assert_eq!(v.resolve("${containerWorkspaceFolder}/x ${containerWorkspaceFolderBasename}"), "/workspaces/app/x app");
        assert_eq!(v.resolve("${localEnv:NPM_TOKEN}"), "secret");
        assert_eq!(v.resolve("${localEnv:HOME}/.ssh"), "/.ssh", "a variable the runner does not pass is empty");
        assert_eq!(v.resolve("${localEnv:HOME:/home/none}/.ssh"), "/home/none/.ssh", "or its default");
        assert_eq!(v.resolve("${env:NPM_TOKEN}"), "secret");
        assert_eq!(v.resolve("vol-${devcontainerId} ${containerEnv:PATH}"), "vol-${devcontainerId} ${containerEnv:PATH}");
        assert_eq!(v.resolve("unclosed ${localEnv:X"), "unclosed ${localEnv:X");
        assert_eq!(v.resolve("no variables"), "no variables");
    }
}
