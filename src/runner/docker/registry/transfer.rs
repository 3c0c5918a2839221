//! The Engine API calls that move snapshots to and from a registry: tag,
//! push (with its progress and the digest it ends with), pull by digest,
//! and the references an image goes by. The daemon does the transfer; the
//! credentials go with each call (`X-Registry-Auth`), never into the
//! daemon's own config.

use super::credentials::Credentials;
use crate::runner::docker::engine::{Engine, EngineResult};
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{CreateImageOptions, PushImageOptions, TagImageOptions};
use futures::StreamExt;
use std::collections::HashMap;

/// The credentials as the Engine API takes them.
fn docker_credentials(credentials: Option<&Credentials>, host: &str) -> Option<DockerCredentials> {
    let credentials = credentials?;
    let mut docker = DockerCredentials { serveraddress: Some(host.to_string()), ..Default::default() };
    match credentials {
        Credentials::Password { username, password } => {
            docker.username = Some(username.clone());
            docker.password = Some(password.clone());
        }
        Credentials::IdentityToken(token) => docker.identitytoken = Some(token.clone()),
    }
    Some(docker)
}

/// How far a push is, from the daemon's progress messages: bytes of the
/// layers being uploaded. The messages do not name their layer, so layers
/// are told apart by their size (what each message's `total` is); a layer
/// the registry has already reports none.
#[derive(Debug, Default)]
pub struct PushProgress {
    by_layer: HashMap<i64, i64>,
}

impl PushProgress {
    pub fn update(&mut self, current: i64, total: i64) {
        if total > 0 {
            let seen = self.by_layer.entry(total).or_default();
            *seen = (*seen).max(current.clamp(0, total));
        }
    }

    /// The share uploaded, 0.0 to 1.0 (0 while nothing has a size yet).
    pub fn fraction(&self) -> f64 {
        let total: i64 = self.by_layer.keys().sum();
        let done: i64 = self.by_layer.values().sum();
        if total == 0 {
            0.0
        } else {
            done as f64 / total as f64
        }
    }
}

/// The digest in a push's last status line (`<tag>: digest: sha256:... size: N`).
pub fn digest_in(status: &str) -> Option<String> {
    let rest = &status[status.find("digest: ")? + "digest: ".len()..];
    let digest: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
    (digest.starts_with("sha256:") && digest.len() == 71).then_some(digest)
}

impl Engine {
    /// Tags `source` as `repository:tag`.
    pub async fn tag(&self, source: &str, repository: &str, tag: &str) -> EngineResult<()> {
        let options = TagImageOptions { repo: Some(repository.to_string()), tag: Some(tag.to_string()) };
        self.docker.tag_image(source, Some(options)).await.map_err(|e| format!("cannot tag {source} as {repository}:{tag}: {e}"))
    }

    /// Pushes `repository:tag`, calling `progress` with each message's
    /// bytes (current, total); returns the manifest's digest.
    pub async fn push(
        &self,
        repository: &str,
        tag: &str,
        credentials: Option<&Credentials>,
        host: &str,
        mut progress: impl FnMut(i64, i64) + Send,
    ) -> EngineResult<String> {
        let options = PushImageOptions { tag: Some(tag.to_string()), ..Default::default() };
        let mut stream = self.docker.push_image(repository, Some(options), docker_credentials(credentials, host));
        let mut digest = None;
        while let Some(message) = stream.next().await {
            let message = message.map_err(|e| format!("pushing {repository}:{tag}: {e}"))?;
            if let Some(detail) = message.error_detail {
                return Err(format!("pushing {repository}:{tag}: {}", detail.message.unwrap_or_default()));
            }
            if let Some(detail) = &message.progress_detail {
                progress(detail.current.unwrap_or(0), detail.total.unwrap_or(0));
            }
            if let Some(found) = message.status.as_deref().and_then(digest_in) {
                digest = Some(found);
            }
        }
        match digest {
            Some(digest) => Ok(digest),
            None => self
                .repo_digest(&format!("{repository}:{tag}"), repository)
                .await?
                .ok_or_else(|| format!("the push of {repository}:{tag} ended without a digest")),
        }
    }

    /// Pulls an image by reference (`repository@sha256:...`).
    pub async fn pull(&self, reference: &str, credentials: Option<&Credentials>, host: &str) -> EngineResult<()> {
        let options = CreateImageOptions { from_image: Some(reference.to_string()), ..Default::default() };
        let mut stream = self.docker.create_image(Some(options), None, docker_credentials(credentials, host));
        while let Some(message) = stream.next().await {
            let message = message.map_err(|e| format!("pulling {reference}: {e}"))?;
            if let Some(detail) = message.error_detail {
                return Err(format!("pulling {reference}: {}", detail.message.unwrap_or_default()));
            }
        }
        Ok(())
    }

    /// An image's tags and digests (`repository@sha256:...`), or `None`
    /// if there is no such image.
    pub async fn references(&self, image: &str) -> EngineResult<Option<(Vec<String>, Vec<String>)>> {
        match self.docker.inspect_image(image).await {
            Ok(found) => Ok(Some((found.repo_tags.unwrap_or_default(), found.repo_digests.unwrap_or_default()))),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(error) => Err(error.to_string()),
        }
    }

    /// The digest an image has in `repository`, if it was pushed there or
    /// pulled from there.
    async fn repo_digest(&self, image: &str, repository: &str) -> EngineResult<Option<String>> {
        let Some((_, digests)) = self.references(image).await? else { return Ok(None) };
        Ok(digests.into_iter().find_map(|reference| reference.strip_prefix(&format!("{repository}@")).map(str::to_string)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_read_from_the_last_status() {
        let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
        assert_eq!(digest_in(&format!("p1: digest: {digest} size: 1570")), Some(digest));
        assert_eq!(digest_in("Pushed"), None);
        assert_eq!(digest_in("digest: sha256:short size: 1"), None);
    }

    #[test]
    fn progress_counts_bytes_of_the_layers_being_pushed() {
        let mut progress = PushProgress::default();
        assert_eq!(progress.fraction(), 0.0);
        progress.update(50, 100);
        progress.update(0, 300);
        assert_eq!(progress.fraction(), 50.0 / 400.0);
        progress.update(30, 100);
        assert_eq!(progress.fraction(), 50.0 / 400.0, "never backwards");
        progress.update(100, 100);
        progress.update(300, 300);
        assert_eq!(progress.fraction(), 1.0);
        progress.update(5, 0);
        assert_eq!(progress.fraction(), 1.0, "no size, no say");
    }
}
