//! `prebuildd-bench --only registry`: snapshots through an OCI registry.
//! The same base image and project as `--only docker`, a docker runner with
//! `registry` set, and Debian's `docker-registry` (the CNCF distribution
//! server) on loopback ports, storage in the run's directory:
//!
//! 1. **push**: each prebuild's push of its snapshot (from its log line
//!    `snapshot pushed as ... in N s`) vs `docker push` of the same image
//!    to a fresh registry;
//! 2. **pull**: the runner's pull of the snapshot by digest when a pool
//!    needs it on a daemon that lacks it (from its log line `pulled a
//!    snapshot ... seconds=N`) vs `docker pull` of the same digest, both
//!    with the base image's layers present (as on a machine that has the
//!    base image);
//! 3. **claim to shell on a member that had to pull**: CreateWarmPool
//!    (minSize 1) with the snapshot missing locally, then ClaimInstance
//!    (waiting up to 60 s) until `docker exec <container> true` answers.
//!
//! MB are 10^6 bytes of the image's layers as Docker sizes them
//! (uncompressed); the registry stores them gzipped.

use super::*;
use std::process::Child;

/// A `docker-registry` child, killed when dropped.
struct RegistryProcess {
    child: Child,
    port: u16,
}

impl RegistryProcess {
    fn start(dir: &Path) -> Result<RegistryProcess, String> {
        let program = Path::new("/usr/bin/docker-registry");
        if !program.exists() {
            return Err("/usr/bin/docker-registry is missing: install Debian's docker-registry (scripts/install-test-tools does)".into());
        }
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let config = dir.join("config.yml");
        let text = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        );
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("registry.log")).map_err(|e| e.to_string())?;
        let child = std::process::Command::new(program)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start docker-registry: {e}"))?;
        let registry = RegistryProcess { child, port };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(20) {
                return Err(format!("docker-registry did not listen on port {port}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(registry)
    }

    /// As image names name it (Docker speaks plain HTTP to localhost).
    fn host(&self) -> String {
        format!("localhost:{}", self.port)
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The seconds in the first line of `text` after `from` that contains
/// `needle`, read after `marker` (`in 3.2 s` or `seconds=3.2`).
fn seconds_after(text: &str, needle: &str, marker: &str, skip: usize) -> Option<f64> {
    let line = text.lines().filter(|line| line.contains(needle)).nth(skip)?;
    let rest = &line[line.find(marker)? + marker.len()..];
    rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect::<String>().parse().ok()
}

impl Bench {
    pub(super) async fn registry(&self) -> Result<(), String> {
        self.import_base_image().await?;
        let (project, outside, base) = (self.project(), self.outside(), self.base_image());
        tokio::task::spawn_blocking(move || generate(&project, &outside, &base))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot generate the project: {e}"))?;
        let registry = RegistryProcess::start(&self.work.join("registry"))?;
        let repository = format!("{}/bench/{PROJECT}", registry.host());
        println!("registry {} (docker-registry, filesystem storage in the run's directory)", registry.host());

        let data_dir = self.work.join("data");
        let setting = format!("registry = \"{}/bench\"\n[[environment_classes]]", registry.host());
        // At info: the runner's pulls say how long they took.
        let server =
            ChildServer::start_logging(&data_dir, "info", |listen| self.config(listen).replacen("[[environment_classes]]", &setting, 1))?;
        server.ready().await?;
        let base = server.base.clone();
        *self.server.lock().map_err(|_| "poisoned")? = Some(server);
        let channel = Channel::from_shared(base).map_err(|e| e.to_string())?.connect().await.map_err(|e| e.to_string())?;
        let mut prebuilds = PrebuildServiceClient::with_interceptor(channel.clone(), auth as Auth);
        let mut claims = WarmPoolInstanceServiceClient::with_interceptor(channel, auth as Auth);

        println!("\n== 1. Push: the runner's push of each prebuild's snapshot vs docker push of the same image to a fresh registry");
        let mut pushes = Vec::new();
        let mut last = None;
        for _ in 0..PREBUILDS {
            settle().await;
            let prebuilt = self.prebuild(&mut prebuilds, &data_dir, PROJECT, STEPS).await?;
            let log =
                tokio::fs::read_to_string(data_dir.join("logs").join(format!("{}.log", prebuilt.id))).await.map_err(|e| e.to_string())?;
            let seconds = seconds_after(&log, "snapshot pushed as", " in ", 0).ok_or("no push line in the prebuild's log")?;
            let image = Self::snapshot_image(&prebuilt.id);
            let layer = self.docker.top_layer_bytes(&image).await?;
            pushes.push((prebuilt.total, layer, Duration::from_secs_f64(seconds)));
            last = Some(prebuilt);
        }
        let prebuilt = last.ok_or("no prebuild")?;
        let image = Self::snapshot_image(&prebuilt.id);
        let image_bytes: u64 = self
            .docker
            .run(&["image", "inspect", "--format", "{{.Size}}", &image])
            .await?
            .parse()
            .map_err(|e| format!("image size: {e}"))?;
        let mut baseline_pushes = Vec::new();
        for n in 0..REPEATS {
            settle().await;
            // A fresh registry: nothing of the image is there yet (the
            // runner's first push found none either; later ones found the
            // base's layers, a few MB).
            let fresh = RegistryProcess::start(&self.work.join(format!("baseline-registry-{n}")))?;
            let target = format!("{}/baseline/{PROJECT}:{n}", fresh.host());
            self.docker.run(&["tag", &image, &target]).await?;
            let (took, _) = self.docker.timed(&["push", &target]).await?;
            self.docker.run(&["rmi", &target]).await?;
            baseline_pushes.push(took);
        }
        println!("{:<58} {:>8} {:>8} {:>8} {:>9}", "", "MB", "p50 s", "max s", "MB/s p50");
        let line = |what: &str, bytes: u64, sample: &[Duration]| {
            let (p50, max) = p50_max(sample);
            println!("{what:<58} {:>8.1} {:>8.2} {:>8.2} {:>9.1}", mb(bytes), p50 / 1000.0, max / 1000.0, mb(bytes) / (p50 / 1000.0));
        };
        for (n, (total, layer, push)) in pushes.iter().enumerate() {
            println!(
                "prebuild #{}: CreatePrebuild to COMPLETED {:.2} s, of which the push {:.2} s ({:.0} MB new layer: {:.1} MB/s)",
                n + 1,
                total.as_secs_f64(),
                push.as_secs_f64(),
                mb(*layer),
                mb(*layer) / push.as_secs_f64()
            );
        }
        let runner_pushes: Vec<Duration> = pushes.iter().map(|(_, _, push)| *push).collect();
        let layer_bytes = pushes.last().map(|(_, layer, _)| *layer).unwrap_or_default();
        line("runner: push of a snapshot (its new layer)", layer_bytes, &runner_pushes);
        line("baseline: docker push of the same image, fresh registry", image_bytes, &baseline_pushes);

        println!("\n== 2 and 3. Pull by digest, and claim to shell on a daemon that had to pull (pool minSize 1, maxSize 1)");
        let recorded = self.recorded_image(&prebuilt.id).await?;
        let digest = recorded.split_once('@').map(|(_, d)| d.to_string()).ok_or("the snapshot was not recorded by digest")?;
        println!("the snapshot: {recorded}");
        let mut runner_pulls = Vec::new();
        let mut to_shell = Vec::new();
        for n in 0..REPEATS {
            // The daemon lacks the snapshot: every reference of it goes
            // (the base image stays, as on a machine that has it).
            self.forget_snapshot(&prebuilt.id, &repository).await?;
            settle().await;
            let started = Instant::now();
            let pool = prebuilds
                .create_warm_pool(CreateWarmPoolRequest {
                    project_id: PROJECT.into(),
                    environment_class_id: CLASS.into(),
                    min_size: Some(1),
                    max_size: Some(1),
                    ..Default::default()
                })
                .await
                .map_err(status_text)?
                .into_inner()
                .warm_pool
                .ok_or("CreateWarmPool returned no pool")?;
            let instance = claims
                .claim_instance(ClaimInstanceRequest { warm_pool_id: pool.id.clone(), wait: None })
                .await
                .map_err(status_text)?
                .into_inner()
                .instance
                .ok_or("ClaimInstance returned no instance")?;
            let (shell, _) = self.docker.exec_answers(&instance.container_id, started).await?;
            to_shell.push(shell);
            let log = tokio::fs::read_to_string(data_dir.join("server.log")).await.map_err(|e| e.to_string())?;
            let pulled = seconds_after(&log, "pulled a snapshot", "seconds=", n).ok_or("no pull in the server's log")?;
            runner_pulls.push(Duration::from_secs_f64(pulled));
            prebuilds.delete_warm_pool(DeleteWarmPoolRequest { warm_pool_id: pool.id.clone() }).await.map_err(status_text)?;
            let claimed = vec![instance.container_id.clone()];
            self.remove_containers(&claimed).await?;
            self.pool_gone(&pool.id).await?;
        }
        let mut baseline_pulls = Vec::new();
        let by_digest = format!("{repository}@{digest}");
        for _ in 0..REPEATS {
            self.forget_snapshot(&prebuilt.id, &repository).await?;
            settle().await;
            let (took, _) = self.docker.timed(&["pull", "-q", &by_digest]).await?;
            baseline_pulls.push(took);
        }
        println!("{:<58} {:>8} {:>8} {:>8} {:>9}", "", "MB", "p50 s", "max s", "MB/s p50");
        line("runner: pull by digest (its new layer)", layer_bytes, &runner_pulls);
        line("baseline: docker pull of the same digest", layer_bytes, &baseline_pulls);
        let (p50, max) = p50_max(&to_shell);
        println!(
            "claim to shell, snapshot not on the daemon (CreateWarmPool, ClaimInstance waiting, until exec true answers): p50 {:.2} s, max {:.2} s",
            p50 / 1000.0,
            max / 1000.0
        );
        Ok(())
    }

    /// The snapshot's digest reference, as the server recorded it.
    async fn recorded_image(&self, prebuild_id: &str) -> Result<String, String> {
        let base = self.server.lock().map_err(|_| "poisoned")?.as_ref().map(|s| s.base.clone()).ok_or("no server")?;
        let channel = Channel::from_shared(base).map_err(|e| e.to_string())?.connect().await.map_err(|e| e.to_string())?;
        let mut sources = prebuildd::proto::prebuildd::v1::prebuild_source_service_client::PrebuildSourceServiceClient::with_interceptor(
            channel,
            auth as Auth,
        );
        let answer = sources
            .list_prebuild_sources(prebuildd::proto::prebuildd::v1::ListPrebuildSourcesRequest { prebuild_ids: vec![prebuild_id.into()] })
            .await
            .map_err(status_text)?
            .into_inner();
        answer
            .sources
            .first()
            .map(|s| s.snapshot_image.clone())
            .filter(|i| !i.is_empty())
            .ok_or_else(|| "no snapshot image recorded".into())
    }

    /// Removes every local reference of the snapshot image (no container
    /// uses it at this point), so that the next use must pull it.
    async fn forget_snapshot(&self, prebuild_id: &str, repository: &str) -> Result<(), String> {
        let image = Self::snapshot_image(prebuild_id);
        let mut references = Vec::new();
        if let Ok(id) = self.docker.run(&["image", "inspect", "--format", "{{.Id}}", &image]).await {
            references.push(id);
        }
        let digests = self.docker.lines(&["images", "--digests", "--format", "{{.Repository}}@{{.Digest}}", repository]).await?;
        references.extend(digests.into_iter().filter(|d| !d.ends_with("@<none>")));
        for reference in references {
            let _ = self.docker.run(&["rmi", "-f", &reference]).await;
        }
        Ok(())
    }

    /// Waits until a deleted pool's containers are gone.
    async fn pool_gone(&self, pool_id: &str) -> Result<(), String> {
        let started = Instant::now();
        while !self.pool_containers(pool_id).await?.is_empty() {
            if started.elapsed() > POOL_PATIENCE {
                return Err("the deleted pool's containers stayed".into());
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn seconds_are_read_from_log_lines() {
        let log =
            "a\nsnapshot pushed as x@sha256:1 in 3.25 s\nINFO pulled a snapshot image=x seconds=1.5\nINFO pulled a snapshot seconds=2\n";
        assert_eq!(super::seconds_after(log, "snapshot pushed as", " in ", 0), Some(3.25));
        assert_eq!(super::seconds_after(log, "pulled a snapshot", "seconds=", 1), Some(2.0));
        assert_eq!(super::seconds_after(log, "nothing", " in ", 0), None);
    }
}
