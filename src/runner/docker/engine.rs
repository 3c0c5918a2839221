//! The Docker Engine API calls the docker runner makes (through `bollard`),
//! in the runner's terms: a missing object is not an error where the runner
//! only wants it gone, and every error reads as a sentence for a log or a
//! status message.

use super::labels;
use super::policy::Grant;
use bollard::models::{ContainerConfig, ContainerCreateBody, ContainerSummary, HostConfig, NetworkCreateRequest};
use bollard::query_parameters::{
    BuildImageOptions, CommitContainerOptions, CreateContainerOptions, DownloadFromContainerOptions, ListContainersOptions,
    ListImagesOptions, ListNetworksOptions, ListVolumesOptions, RemoveContainerOptions, RemoveImageOptions, RemoveVolumeOptions,
    RenameContainerOptions, StopContainerOptions, UploadToContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;
use std::collections::HashMap;
use std::io::Read;

/// An Engine API failure, in words.
pub type EngineResult<T> = std::result::Result<T, String>;

fn describe(error: bollard::errors::Error) -> String {
    match error {
        bollard::errors::Error::DockerResponseServerError { status_code, message } => format!("{message} (HTTP {status_code})"),
        other => other.to_string(),
    }
}

fn status_of(error: &bollard::errors::Error) -> Option<u16> {
    match error {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The Docker endpoint, connected (the API version is negotiated when the
/// runner starts).
#[derive(Debug, Clone)]
pub struct Engine {
    pub(super) docker: Docker,
}

/// A container as a list call reports it.
#[derive(Debug, Clone)]
pub struct ListedContainer {
    pub id: String,
    pub name: String,
    pub labels: HashMap<String, String>,
    pub running: bool,
    pub image: String,
}

/// An image as a list call reports it.
#[derive(Debug, Clone)]
pub struct ListedImage {
    pub id: String,
    /// Its tags; empty once untagged.
    pub tags: Vec<String>,
    pub labels: HashMap<String, String>,
    pub size: i64,
}

impl From<ContainerSummary> for ListedContainer {
    fn from(summary: ContainerSummary) -> Self {
        let name = summary.names.unwrap_or_default().into_iter().next().unwrap_or_default();
        let running = summary.state.map(|state| state.to_string() == "running").unwrap_or(false);
        ListedContainer {
            id: summary.id.unwrap_or_default(),
            name: name.trim_start_matches('/').to_string(),
            labels: summary.labels.unwrap_or_default(),
            running,
            image: summary.image.unwrap_or_default(),
        }
    }
}

/// A network as the runner needs to know it.
#[derive(Debug, Clone, Default)]
pub struct ListedNetwork {
    pub name: String,
    /// The bridge interface on the host (`com.docker.network.bridge.name`).
    pub bridge: Option<String>,
    pub labels: HashMap<String, String>,
    /// Its gateways: the host's addresses on it.
    pub gateways: Vec<std::net::IpAddr>,
    /// How many containers are attached.
    pub containers: usize,
}

/// The option that names a bridge network's interface on the host.
pub const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

impl From<bollard::models::NetworkInspect> for ListedNetwork {
    fn from(network: bollard::models::NetworkInspect) -> Self {
        let gateways = network.ipam.and_then(|ipam| ipam.config).unwrap_or_default();
        ListedNetwork {
            name: network.name.unwrap_or_default(),
            bridge: network.options.unwrap_or_default().get(BRIDGE_NAME_OPTION).cloned(),
            labels: network.labels.unwrap_or_default(),
            gateways: gateways.into_iter().filter_map(|config| config.gateway?.parse().ok()).collect(),
            containers: network.containers.map_or(0, |containers| containers.len()),
        }
    }
}

/// A file of a build context: path, content, mode.
pub type ContextFile<'a> = (&'a str, &'a [u8], u32);

impl Engine {
    /// Connects to `docker_host` (`unix://`, `tcp://`, `http://`), else to
    /// `DOCKER_HOST` or the default socket, and checks that it answers.
    pub async fn connect(docker_host: Option<&str>) -> EngineResult<Engine> {
        let docker = match docker_host {
            Some(host) => Docker::connect_with_host(host),
            None => Docker::connect_with_defaults(),
        }
        .map_err(|e| format!("cannot reach the Docker daemon: {}", describe(e)))?;
        let docker = docker.negotiate_version().await.map_err(|e| format!("the Docker daemon does not answer: {}", describe(e)))?;
        Ok(Engine { docker })
    }

    /// Containers (running or not) with every one of the labels.
    pub async fn containers(&self, with_labels: &[(&str, &str)]) -> EngineResult<Vec<ListedContainer>> {
        let filters = HashMap::from([("label".to_string(), with_labels.iter().map(|(k, v)| labels::filter(k, v)).collect())]);
        let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let list = self.docker.list_containers(Some(options)).await.map_err(describe)?;
        Ok(list.into_iter().map(ListedContainer::from).collect())
    }

    /// Image references matching a `reference` filter (`vsc-abc-*`).
    pub async fn images_named(&self, reference: &str) -> EngineResult<Vec<String>> {
        self.image_tags(HashMap::from([("reference".to_string(), vec![reference.to_string()])])).await
    }

    async fn image_tags(&self, filters: HashMap<String, Vec<String>>) -> EngineResult<Vec<String>> {
        let options = ListImagesOptions { filters: Some(filters), ..Default::default() };
        let list = self.docker.list_images(Some(options)).await.map_err(describe)?;
        Ok(list.into_iter().flat_map(|image| image.repo_tags).filter(|tag| tag != "<none>:<none>").collect())
    }

    /// An image's labels and size, or `None` if there is no such image.
    pub async fn image(&self, name: &str) -> EngineResult<Option<(HashMap<String, String>, i64)>> {
        match self.docker.inspect_image(name).await {
            Ok(image) => {
                let labels = image.config.and_then(|config| config.labels).unwrap_or_default();
                Ok(Some((labels, image.size.unwrap_or(0))))
            }
            Err(error) if status_of(&error) == Some(404) => Ok(None),
            Err(error) => Err(describe(error)),
        }
    }

    /// Removes a container, running or not; a missing one is fine.
    pub async fn remove_container(&self, id: &str) -> EngineResult<()> {
        let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        match self.docker.remove_container(id, Some(options)).await {
            Err(error) if status_of(&error) != Some(404) => Err(describe(error)),
            _ => Ok(()),
        }
    }

    /// Removes an image reference; a missing one is fine. `force` untags an
    /// image that containers still use (their layers stay while they do).
    pub async fn remove_image(&self, name: &str, force: bool) -> EngineResult<()> {
        let options = RemoveImageOptions { force, noprune: false, ..Default::default() };
        match self.docker.remove_image(name, Some(options), None).await {
            Err(error) if status_of(&error) != Some(404) => Err(describe(error)),
            _ => Ok(()),
        }
    }

    /// Images carrying all of `with_labels`, tagged or not (an untagged one
    /// is still there while a container uses it).
    pub async fn images(&self, with_labels: &[(&str, &str)]) -> EngineResult<Vec<ListedImage>> {
        let filters = HashMap::from([("label".to_string(), with_labels.iter().map(|(k, v)| labels::filter(k, v)).collect())]);
        let options = ListImagesOptions { filters: Some(filters), ..Default::default() };
        let list = self.docker.list_images(Some(options)).await.map_err(describe)?;
        Ok(list
            .into_iter()
            .map(|image| ListedImage {
                id: image.id,
                tags: image.repo_tags.into_iter().filter(|tag| tag != "<none>:<none>").collect(),
                labels: image.labels,
                size: image.size,
            })
            .collect())
    }

    /// Removes an image by ID unless a container still uses it: `false`
    /// then (Docker refuses with a conflict). A missing one is fine.
    pub async fn remove_unused_image(&self, id: &str) -> EngineResult<bool> {
        let options = RemoveImageOptions { force: false, noprune: false, ..Default::default() };
        match self.docker.remove_image(id, Some(options), None).await {
            Err(error) if status_of(&error) == Some(409) => Ok(false),
            Err(error) if status_of(&error) != Some(404) => Err(describe(error)),
            _ => Ok(true),
        }
    }

    /// Stops a container (SIGTERM, then SIGKILL after `seconds`).
    pub async fn stop(&self, id: &str, seconds: i32) -> EngineResult<()> {
        let options = StopContainerOptions { t: Some(seconds), ..Default::default() };
        match self.docker.stop_container(id, Some(options)).await {
            // 304: already stopped.
            Err(error) if !matches!(status_of(&error), Some(304) | Some(404)) => Err(describe(error)),
            _ => Ok(()),
        }
    }

    pub async fn start(&self, id: &str) -> EngineResult<()> {
        match self.docker.start_container(id, None).await {
            Err(error) if status_of(&error) != Some(304) => Err(describe(error)),
            _ => Ok(()),
        }
    }

    pub async fn rename(&self, id: &str, name: &str) -> EngineResult<()> {
        self.docker.rename_container(id, RenameContainerOptions { name: name.to_string() }).await.map_err(describe)
    }

    /// Why a container has more than `grant` (empty when it is as
    /// granted): the runner checks every container before it runs anything
    /// in it or hands it out.
    pub async fn excess(&self, id: &str, grant: &Grant) -> EngineResult<Vec<String>> {
        let container = self.docker.inspect_container(id, None).await.map_err(describe)?;
        Ok(grant.excess(&container))
    }

    /// Sets one label on an image (a build `FROM` it, tagged with the same
    /// name): how the runner takes keys out of a built image's
    /// `devcontainer.metadata` before the Dev Containers CLI reads them.
    pub async fn relabel(&self, image: &str, key: &str, value: &str) -> EngineResult<()> {
        let dockerfile = format!("FROM {image}\n");
        let labels = HashMap::from([(key.to_string(), value.to_string())]);
        self.build(image, &[("Dockerfile", dockerfile.as_bytes(), 0o644)], labels).await.map_err(|e| format!("cannot relabel {image}: {e}"))
    }

    /// Builds `files` (a `Dockerfile` among them) into the image `tag`,
    /// with `labels`.
    pub async fn build(&self, tag: &str, files: &[ContextFile<'_>], labels: HashMap<String, String>) -> EngineResult<()> {
        let mut context = tar::Builder::new(Vec::new());
        for (path, content, mode) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(*mode);
            header.set_cksum();
            context.append_data(&mut header, path, *content).map_err(|e| e.to_string())?;
        }
        let context = context.into_inner().map_err(|e| e.to_string())?;
        self.build_context(tag, context, labels, true).await
    }

    /// Builds a build context (a tar archive with a `Dockerfile`) into the
    /// image `tag`, with `labels`; from the build cache if `cache`. A build
    /// without it shares no intermediate image with another build of the
    /// same files, which the other's clean-up could remove under it (the
    /// daemon then fails the build: "failed to get digest").
    pub async fn build_context(&self, tag: &str, context: Vec<u8>, labels: HashMap<String, String>, cache: bool) -> EngineResult<()> {
        let options = BuildImageOptions {
            dockerfile: "Dockerfile".into(),
            t: Some(tag.to_string()),
            rm: true,
            forcerm: true,
            nocache: !cache,
            labels: Some(labels),
            ..Default::default()
        };
        let mut stream = self.docker.build_image(options, None, Some(bollard::body_full(context.into())));
        while let Some(info) = stream.next().await {
            let info = info.map_err(describe)?;
            if let Some(detail) = info.error_detail {
                return Err(detail.message.unwrap_or_default());
            }
        }
        Ok(())
    }

    /// The networks with every one of the labels, inspected (a list call
    /// does not say which containers are attached).
    pub async fn networks(&self, with_labels: &[(&str, &str)]) -> EngineResult<Vec<ListedNetwork>> {
        let filters = HashMap::from([("label".to_string(), with_labels.iter().map(|(k, v)| labels::filter(k, v)).collect())]);
        let list = self.docker.list_networks(Some(ListNetworksOptions { filters: Some(filters) })).await.map_err(describe)?;
        let mut networks = Vec::new();
        for network in list {
            if let Some(found) = self.network(network.name.as_deref().unwrap_or_default()).await? {
                networks.push(found);
            }
        }
        Ok(networks)
    }

    /// A network by name, or `None` if there is no such network.
    pub async fn network(&self, name: &str) -> EngineResult<Option<ListedNetwork>> {
        match self.docker.inspect_network(name, None).await {
            Ok(network) => Ok(Some(network.into())),
            Err(error) if status_of(&error) == Some(404) => Ok(None),
            Err(error) => Err(describe(error)),
        }
    }

    /// Creates a bridge network with its interface named `bridge` and
    /// traffic between its containers off; one of that name that exists
    /// already is fine (creation is idempotent).
    pub async fn create_network(&self, name: &str, bridge: &str, labels: HashMap<String, String>) -> EngineResult<()> {
        self.create_bridge(name, bridge, labels, false).await
    }

    /// Creates a bridge network with its interface named `bridge`, traffic
    /// between its containers on (`icc`: one Compose stack's) or off; one
    /// of that name that exists already is fine.
    pub async fn create_bridge(&self, name: &str, bridge: &str, labels: HashMap<String, String>, icc: bool) -> EngineResult<()> {
        let options = HashMap::from([
            (BRIDGE_NAME_OPTION.to_string(), bridge.to_string()),
            ("com.docker.network.bridge.enable_icc".to_string(), icc.to_string()),
        ]);
        let request = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            options: Some(options),
            labels: Some(labels),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Err(error) if status_of(&error) != Some(409) => Err(describe(error)),
            _ => Ok(()),
        }
    }

    /// The volumes with every one of the labels: their names and labels.
    pub async fn volumes(&self, with_labels: &[(&str, &str)]) -> EngineResult<Vec<(String, HashMap<String, String>)>> {
        let filters = HashMap::from([("label".to_string(), with_labels.iter().map(|(k, v)| labels::filter(k, v)).collect())]);
        let options = ListVolumesOptions { filters: Some(filters) };
        let list = self.docker.list_volumes(Some(options)).await.map_err(describe)?;
        Ok(list.volumes.unwrap_or_default().into_iter().map(|volume| (volume.name, volume.labels)).collect())
    }

    /// Removes a volume; a missing one is fine, one in use is an error.
    pub async fn remove_volume(&self, name: &str) -> EngineResult<()> {
        match self.docker.remove_volume(name, Some(RemoveVolumeOptions { force: false })).await {
            Err(error) if status_of(&error) != Some(404) => Err(describe(error)),
            _ => Ok(()),
        }
    }

    /// A container's labels, or `None` if there is no such container.
    pub async fn container_labels(&self, name_or_id: &str) -> EngineResult<Option<HashMap<String, String>>> {
        match self.docker.inspect_container(name_or_id, None).await {
            Ok(container) => Ok(Some(container.config.and_then(|config| config.labels).unwrap_or_default())),
            Err(error) if status_of(&error) == Some(404) => Ok(None),
            Err(error) => Err(describe(error)),
        }
    }

    /// Removes a network; a missing one is fine.
    pub async fn remove_network(&self, name: &str) -> EngineResult<()> {
        match self.docker.remove_network(name).await {
            Err(error) if status_of(&error) != Some(404) => Err(describe(error)),
            _ => Ok(()),
        }
    }

    /// Creates and starts a container that runs the image's own command
    /// with nothing granted (no capabilities, `no-new-privileges`, little
    /// memory), on `network`; returns its ID and its process's PID on the
    /// host.
    pub async fn run_confined(
        &self,
        name: &str,
        image: &str,
        network: &str,
        labels: HashMap<String, String>,
    ) -> EngineResult<(String, i64)> {
        let host_config = HostConfig {
            network_mode: Some(network.to_string()),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            memory: Some(16 << 20),
            pids_limit: Some(4),
            readonly_rootfs: Some(true),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            labels: Some(labels),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = CreateContainerOptions { name: Some(name.to_string()), ..Default::default() };
        let id = self.docker.create_container(Some(options), body).await.map_err(describe)?.id;
        self.start(&id).await?;
        let container = self.docker.inspect_container(&id, None).await.map_err(describe)?;
        match container.state.and_then(|state| state.pid).filter(|pid| *pid > 0) {
            Some(pid) => Ok((id, pid)),
            None => Err(format!("the container {name} is not running")),
        }
    }

    /// A file of a container (small ones: `/etc/passwd`), or `None` if it
    /// does not exist.
    pub async fn read_file(&self, id: &str, path: &str) -> EngineResult<Option<Vec<u8>>> {
        let options = DownloadFromContainerOptions { path: path.to_string() };
        let mut stream = self.docker.download_from_container(id, Some(options));
        let mut archive = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => archive.extend_from_slice(&bytes),
                Err(error) if status_of(&error) == Some(404) => return Ok(None),
                Err(error) => return Err(describe(error)),
            }
        }
        let mut tar = tar::Archive::new(archive.as_slice());
        let mut entries = tar.entries().map_err(|e| e.to_string())?;
        match entries.next() {
            Some(Ok(mut entry)) => {
                let mut content = Vec::new();
                entry.read_to_end(&mut content).map_err(|e| e.to_string())?;
                Ok(Some(content))
            }
            _ => Ok(None),
        }
    }

    /// Extracts a tar archive, streamed, into a container at `/`.
    pub async fn upload(
        &self,
        id: &str,
        archive: impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
    ) -> EngineResult<()> {
        let options = UploadToContainerOptions { path: "/".into(), ..Default::default() };
        self.docker.upload_to_container(id, Some(options), bollard::body_try_stream(archive)).await.map_err(describe)
    }

    /// Commits a container to `repository:tag`, adding `labels` to the
    /// image. Returns the image's size in bytes.
    pub async fn commit(&self, id: &str, repository: &str, tag: &str, labels: HashMap<String, String>) -> EngineResult<i64> {
        let options = CommitContainerOptions {
            container: Some(id.to_string()),
            repo: Some(repository.to_string()),
            tag: Some(tag.to_string()),
            pause: false,
            ..Default::default()
        };
        let config = ContainerConfig { labels: Some(labels), ..Default::default() };
        self.docker.commit_container(options, config).await.map_err(describe)?;
        let size = self.image(&format!("{repository}:{tag}")).await?.map(|(_, size)| size);
        size.ok_or_else(|| format!("the committed image {repository}:{tag} is missing"))
    }

    /// Creates a container from an image with the runner's labels and the
    /// settings the policy granted (the class's limits, `no-new-privileges`
    /// unless the class allows new privileges, volumes of its own, no host
    /// mount); a container of the same name that exists already is reused
    /// (creation is idempotent).
    pub async fn create(&self, name: &str, image: &str, labels: HashMap<String, String>, grant: &Grant) -> EngineResult<String> {
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            labels: Some(labels),
            hostname: grant.hostname.clone(),
            host_config: Some(grant.host_config()),
            ..Default::default()
        };
        let options = CreateContainerOptions { name: Some(name.to_string()), ..Default::default() };
        match self.docker.create_container(Some(options), body).await {
            Ok(created) => Ok(created.id),
            Err(error) if status_of(&error) == Some(409) => {
                let container = self.docker.inspect_container(name, None).await.map_err(describe)?;
                Ok(container.id.unwrap_or_default())
            }
            Err(error) => Err(describe(error)),
        }
    }

    /// Runs `argv` in a running container as `user` (empty: the image's)
    /// in `workdir` with `env` added, its output appended line by line to
    /// `log`; returns its exit code.
    pub async fn exec(
        &self,
        id: &str,
        user: &str,
        workdir: &str,
        env: &[String],
        argv: &[String],
        log: &crate::runner::LogSink,
    ) -> EngineResult<i64> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        let options = CreateExecOptions {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            user: (!user.is_empty()).then(|| user.to_string()),
            working_dir: (!workdir.is_empty()).then(|| workdir.to_string()),
            env: (!env.is_empty()).then(|| env.to_vec()),
            cmd: Some(argv.to_vec()),
            ..Default::default()
        };
        let created = self.docker.create_exec(id, options).await.map_err(describe)?;
        if let StartExecResults::Attached { mut output, .. } = self.docker.start_exec(&created.id, None).await.map_err(describe)? {
            let mut pending = Vec::new();
            while let Some(chunk) = output.next().await {
                pending.extend_from_slice(&chunk.map_err(describe)?.into_bytes());
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    log.line(String::from_utf8_lossy(&line).trim_end()).await;
                }
            }
            if !pending.is_empty() {
                log.line(String::from_utf8_lossy(&pending).trim_end()).await;
            }
        }
        let inspected = self.docker.inspect_exec(&created.id).await.map_err(describe)?;
        Ok(inspected.exit_code.unwrap_or(-1))
    }
}
