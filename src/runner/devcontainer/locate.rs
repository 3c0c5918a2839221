//! Which devcontainer.json of a repository a prebuild uses: the project's
//! choice (`devcontainer_path`), else the first in the spec's lookup order:
//! `.devcontainer/devcontainer.json`, `.devcontainer.json`, then
//! `.devcontainer/<folder>/devcontainer.json` one level deep. The spec
//! leaves a choice among several sub-folders to the tool; a prebuild
//! cannot ask, so it takes the first by name and says so in its warning,
//! naming the setting that chooses another.

use std::path::{Path, PathBuf};

/// The devcontainer.json found, and a warning when the choice was a guess.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub path: PathBuf,
    pub warning: Option<String>,
}

/// Finds the configuration in `workspace`; `Ok(None)` when the repository
/// has none (and none was chosen). A chosen path that does not exist is an
/// error naming it.
pub fn locate(workspace: &Path, chosen: Option<&str>) -> Result<Option<Located>, String> {
    if let Some(chosen) = chosen {
        let path = workspace.join(chosen);
        if !path.is_file() {
            return Err(format!("the project's devcontainer_path {chosen:?} is not a file in the repository"));
        }
        return Ok(Some(Located { path, warning: None }));
    }
    let folder = workspace.join(".devcontainer");
    for path in [folder.join("devcontainer.json"), workspace.join(".devcontainer.json")] {
        if path.is_file() {
            return Ok(Some(Located { path, warning: None }));
        }
    }
    let mut nested: Vec<PathBuf> = std::fs::read_dir(&folder)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("devcontainer.json"))
        .filter(|path| path.is_file())
        .collect();
    nested.sort();
    let Some(first) = nested.first().cloned() else { return Ok(None) };
    let relative = |path: &Path| path.strip_prefix(workspace).unwrap_or(path).display().to_string();
    let warning = (nested.len() > 1).then(|| {
        let others: Vec<String> = nested[1..].iter().map(|path| relative(path)).collect();
        format!(
            "the repository has several dev container configurations; the prebuild used {} (the first by name, not {}); set devcontainer_path on the project to choose",
            relative(&first),
            others.join(", ")
        )
    });
    Ok(Some(Located { path: first, warning }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "{}").unwrap();
    }

    #[test]
    fn the_spec_lookup_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert_eq!(locate(root, None), Ok(None));
        write(root, ".devcontainer/python/devcontainer.json");
        write(root, ".devcontainer/go/devcontainer.json");
        let found = locate(root, None).unwrap().unwrap();
        assert_eq!(found.path, root.join(".devcontainer/go/devcontainer.json"), "the first sub-folder by name");
        let warning = found.warning.unwrap();
        assert!(warning.contains(".devcontainer/python/devcontainer.json") && warning.contains("devcontainer_path"), "{warning}");
        write(root, ".devcontainer.json");
        assert_eq!(locate(root, None).unwrap().unwrap(), Located { path: root.join(".devcontainer.json"), warning: None });
        write(root, ".devcontainer/devcontainer.json");
        assert_eq!(locate(root, None).unwrap().unwrap().path, root.join(".devcontainer/devcontainer.json"), "the folder wins");
    }

    #[test]
    fn a_single_sub_folder_needs_no_warning_and_a_choice_wins() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, ".devcontainer/node/devcontainer.json");
        assert_eq!(locate(root, None).unwrap().unwrap().warning, None);
        write(root, ".devcontainer/devcontainer.json");
        write(root, "tools/dev.json");
        assert_eq!(locate(root, Some("tools/dev.json")).unwrap().unwrap().path, root.join("tools/dev.json"));
        assert!(locate(root, Some("missing.json")).unwrap_err().contains("\"missing.json\" is not a file"));
    }
}
