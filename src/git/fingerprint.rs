//! A commit's dev container configuration as one digest: equal digests
//! mean an incremental prebuild may start from the other commit's
//! snapshot, because the container it would build is the same.
//!
//! What goes in: the environment class; the devcontainer.json the
//! prebuild uses (found as the runners find it: the project's
//! `devcontainer_path`, else the spec's lookup order) with its path and
//! whole text, so `image`, `features` and their options, and the lifecycle
//! commands all count; the git object of its folder when that folder is
//! `.devcontainer/` or below (the Dockerfile, local features and scripts
//! beside it); and, for a `build.dockerfile`, that file and every source its
//! `COPY` and `ADD` instructions name, relative to the build context (a
//! source of `.` is the whole context). Git object IDs are content hashes,
//! so this reads no file twice and costs a few `git` calls.

use super::{GitResult, Mirror};
use sha2::{Digest, Sha256};

/// The fingerprint of `sha`'s configuration for `environment_class_id`.
pub async fn configuration_fingerprint(
    mirror: &Mirror,
    sha: &str,
    devcontainer_path: Option<&str>,
    environment_class_id: &str,
) -> GitResult<String> {
    let mut hasher = Sha256::new();
    let mut add = |name: &str, value: &[u8]| {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value);
    };
    add("class", environment_class_id.as_bytes());
    match locate(mirror, sha, devcontainer_path).await? {
        None => add("devcontainer", b"none"),
        Some(path) => {
            let text = mirror.file_at(sha, &path).await?.unwrap_or_default();
            add("path", path.as_bytes());
            add("devcontainer.json", &text);
            let folder = parent(&path);
            if folder.starts_with(".devcontainer") {
                add("folder", mirror.object_at(sha, folder).await?.unwrap_or_default().as_bytes());
            }
            for (name, id) in build_inputs(mirror, sha, folder, &text).await? {
                add(&name, id.as_bytes());
            }
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Whether `sha`'s configuration is a Docker Compose one
/// (`dockerComposeFile`). Its prebuilds are always full: the snapshot is
/// the dev container alone, one service of a stack, and an update of it
/// would leave the stack's other services and their images behind.
pub async fn uses_compose(mirror: &Mirror, sha: &str, devcontainer_path: Option<&str>) -> GitResult<bool> {
    let Some(path) = locate(mirror, sha, devcontainer_path).await? else { return Ok(false) };
    let text = mirror.file_at(sha, &path).await?.unwrap_or_default();
    let json = crate::runner::devcontainer::jsonc_to_json(&String::from_utf8_lossy(&text));
    Ok(serde_json::from_str::<serde_json::Value>(&json).is_ok_and(|value| value.get("dockerComposeFile").is_some()))
}

/// The configuration's path at the commit, as the runners look for it.
async fn locate(mirror: &Mirror, sha: &str, chosen: Option<&str>) -> GitResult<Option<String>> {
    if let Some(chosen) = chosen {
        return Ok(mirror.object_at(sha, chosen).await?.map(|_| chosen.to_string()));
    }
    for path in [".devcontainer/devcontainer.json", ".devcontainer.json"] {
        if mirror.object_at(sha, path).await?.is_some() {
            return Ok(Some(path.to_string()));
        }
    }
    let mut folders = mirror.list_dir(sha, ".devcontainer").await?;
    folders.sort();
    for folder in folders {
        let path = format!(".devcontainer/{folder}/devcontainer.json");
        if mirror.object_at(sha, &path).await?.is_some() {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// Joins a path relative to `dir` inside the repository; `None` if it
/// leaves the repository.
fn join(dir: &str, relative: &str) -> Option<String> {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

/// The Dockerfile a configuration builds and what its COPY and ADD
/// instructions read, as (name, git object ID) pairs.
async fn build_inputs(mirror: &Mirror, sha: &str, folder: &str, text: &[u8]) -> GitResult<Vec<(String, String)>> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&crate::runner::devcontainer::jsonc_to_json(&String::from_utf8_lossy(text)))
    else {
        return Ok(Vec::new());
    };
    let build = value.get("build");
    let dockerfile = build.and_then(|b| b.get("dockerfile")).or_else(|| value.get("dockerFile")).and_then(|v| v.as_str());
    let Some(dockerfile) = dockerfile else { return Ok(Vec::new()) };
    let context = build.and_then(|b| b.get("context")).and_then(|v| v.as_str()).unwrap_or(".");
    let mut inputs = Vec::new();
    let Some(dockerfile_path) = join(folder, dockerfile) else { return Ok(inputs) };
    let content = mirror.file_at(sha, &dockerfile_path).await?.unwrap_or_default();
    inputs.push((format!("dockerfile {dockerfile_path}"), hex::encode(Sha256::digest(&content))));
    let Some(context_dir) = join(folder, context) else { return Ok(inputs) };
    for source in copy_sources(&String::from_utf8_lossy(&content)) {
        if let Some(path) = join(&context_dir, &source) {
            let id = mirror.object_at(sha, &path).await?.unwrap_or_default();
            inputs.push((format!("context {path}"), id));
        }
    }
    Ok(inputs)
}

/// The local sources of a Dockerfile's COPY and ADD instructions (not
/// `--from=` stages, not URLs), with wildcards cut at their segment (a
/// pattern counts as the folder it is in).
fn copy_sources(dockerfile: &str) -> Vec<String> {
    let joined = dockerfile.replace("\\\n", " ");
    let mut sources = Vec::new();
    for line in joined.lines() {
        let mut words = line.split_whitespace();
        let Some(instruction) = words.next() else { continue };
        if !instruction.eq_ignore_ascii_case("COPY") && !instruction.eq_ignore_ascii_case("ADD") {
            continue;
        }
        let args: Vec<&str> = words.collect();
        if args.iter().any(|a| a.starts_with("--from")) {
            continue;
        }
        let paths: Vec<&str> = args.into_iter().filter(|a| !a.starts_with("--")).collect();
        let Some((_, sources_only)) = paths.split_last() else { continue };
        for source in sources_only {
            let source = source.trim_matches(|c| c == '"' || c == '[' || c == ']' || c == ',');
            if source.contains("://") || source.is_empty() {
                continue;
            }
            let cut = source.split('/').take_while(|part| !part.contains(['*', '?', '['])).collect::<Vec<_>>().join("/");
            sources.push(if cut.is_empty() { ".".to_string() } else { cut });
        }
    }
    sources
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_and_add_sources() {
        let dockerfile = "FROM debian\nCOPY package.json package-lock.json /app/\nCOPY --from=build /out /out\nADD https://x/y.tgz /y\ncopy --chown=1:1 scripts/*.sh /s/\nRUN true\nCOPY . \\\n /src\n";
        assert_eq!(copy_sources(dockerfile), vec!["package.json", "package-lock.json", "scripts", "."]);
    }

    #[test]
    fn paths_join_inside_the_repository() {
        assert_eq!(join(".devcontainer", "Dockerfile").as_deref(), Some(".devcontainer/Dockerfile"));
        assert_eq!(join(".devcontainer", "..").as_deref(), Some(""));
        assert_eq!(join(".devcontainer/py", "../../x").as_deref(), Some("x"));
        assert_eq!(join("", ".."), None);
        assert_eq!(parent(".devcontainer/devcontainer.json"), ".devcontainer");
        assert_eq!(parent(".devcontainer.json"), "");
    }
}
