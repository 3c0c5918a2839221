//! The measurements, one method each: prebuilds, claims, starts, creations
//! and the throughput baselines.

use super::*;

impl Bench {
    pub(super) async fn scenarios(&self) -> Result<(), String> {
        // The base image and the project.
        let started = Instant::now();
        self.import_base_image().await?;
        let (project, outside, base) = (self.project(), self.outside(), self.base_image());
        let workspace_bytes = tokio::task::spawn_blocking(move || generate(&project, &outside, &base))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot generate the project: {e}"))?;
        self.generate_stack().await?;
        let outside_bytes = (OUTSIDE_MB as f64 * MB) as u64;
        let tree_bytes = workspace_bytes + outside_bytes;
        println!(
            "base image {} imported, project generated ({} files, {:.0} MB; onCreateCommand writes {OUTSIDE_MB} MB to /opt) in {:.1} s",
            self.base_image(),
            DIRS * FILES_PER_DIR,
            mb(workspace_bytes),
            started.elapsed().as_secs_f64()
        );

        // The server, with a docker runner.
        let data_dir = self.work.join("data");
        let server = ChildServer::start_with(&data_dir, |listen| self.config(listen))?;
        server.ready().await?;
        let base = server.base.clone();
        *self.server.lock().map_err(|_| "poisoned")? = Some(server);
        let channel = Channel::from_shared(base).map_err(|e| e.to_string())?.connect().await.map_err(|e| e.to_string())?;
        let mut prebuilds = PrebuildServiceClient::with_interceptor(channel.clone(), auth as Auth);
        let mut claims = WarmPoolInstanceServiceClient::with_interceptor(channel, auth as Auth);

        println!(
            "\n== 1. Prebuild: CreatePrebuild to COMPLETED ({PREBUILDS} in a row; the first is cold: a new base image, no build cache)"
        );
        let mut all = Vec::new();
        for _ in 0..PREBUILDS {
            settle().await;
            all.push(self.prebuild(&mut prebuilds, &data_dir, PROJECT, STEPS).await?);
        }
        // The pool follows the newest snapshot.
        let prebuilt = all.last().ok_or("no prebuild")?;
        let snapshot = Self::snapshot_image(&prebuilt.id);
        let snapshot_layer = self.docker.top_layer_bytes(&snapshot).await?;
        print_prebuilds(&all, snapshot_layer);

        println!("\n== 2. Claim to shell (warm pool minSize 1, maxSize 2)");
        let started = Instant::now();
        let pool = prebuilds
            .create_warm_pool(CreateWarmPoolRequest {
                project_id: PROJECT.into(),
                environment_class_id: CLASS.into(),
                min_size: Some(POOL_MIN),
                max_size: Some(POOL_MAX),
                ..Default::default()
            })
            .await
            .map_err(status_text)?
            .into_inner()
            .warm_pool
            .ok_or("CreateWarmPool returned no pool")?;
        wait_backfilled(&mut prebuilds, &pool.id, &prebuilt.id).await?;
        let pool_ready = started.elapsed();
        println!(
            "CreateWarmPool (minSize {POOL_MIN}, maxSize {POOL_MAX}) to READY, 1 running + 1 created container from the {:.0} MB image: {:.2} s",
            mb(prebuilt.image_bytes),
            pool_ready.as_secs_f64()
        );
        let mut rounds = Vec::new();
        let mut floor = Vec::new();
        for round in 0..ROUNDS {
            let claim = self.claim(&mut prebuilds, &mut claims, &pool.id, &prebuilt.id, (round == 0).then_some(&mut floor)).await?;
            rounds.push(claim);
        }
        print_claims(&rounds, &floor);
        self.stack_scenario(&mut prebuilds, &mut claims, &data_dir).await?;
        self.stop_server().await;
        // The pool's containers go now, so the rest runs on a quiet daemon.
        let runner_filter = format!("label={RUNNER_LABEL}={}", self.runner_id);
        let leftover = self.docker.lines(&["ps", "-aq", "--no-trunc", "--filter", &runner_filter]).await?;
        self.remove_containers(&leftover).await?;

        println!("\n== 3. Start of a stopped (created) instance, and 4b. instance creation");
        let creation = self.instances(&snapshot).await?;
        creation.print(prebuilt.image_bytes);

        println!(
            "\n== 4a. Throughput on the same bytes: the workspace ({:.0} MB), and it + {OUTSIDE_MB} MB outside it ({:.0} MB); {REPEATS} each",
            mb(workspace_bytes),
            mb(tree_bytes)
        );
        let (mut copies, mut docker_cps, mut commits, mut tars, mut zstds) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut commit_layer, mut tar_bytes, mut zstd_bytes) = (0, 0, 0);
        for n in 0..REPEATS {
            settle().await;
            copies.push(self.host_copy(n).await?);
            let (docker_cp, commit) = self.commit_baseline(n).await?;
            docker_cps.push(docker_cp);
            commits.push(commit);
            commit_layer = self.docker.top_layer_bytes(&self.commit_image(n)).await?;
            settle().await;
            let (took, bytes) = self.host_tar(false).await?;
            tars.push(took);
            tar_bytes = bytes;
            settle().await;
            let (took, bytes) = self.host_tar(true).await?;
            zstds.push(took);
            zstd_bytes = bytes;
        }
        let step = |index: usize| all.iter().filter_map(|p| p.steps.get(index).and_then(|(_, d)| *d)).collect::<Vec<_>>();
        let runner_commits: Vec<Duration> = all.iter().filter_map(|p| p.commit).collect();
        println!("{:<60} {:>8} {:>8} {:>8} {:>9}", "", "MB", "p50 s", "max s", "MB/s p50");
        let line = |what: &str, bytes: u64, sample: &[Duration]| {
            let (p50, max) = p50_max(sample);
            println!(
                "{what:<60} {:>8.1} {:>8.2} {:>8.2} {:>9.1}",
                mb(bytes),
                p50 / 1000.0,
                max / 1000.0,
                mb(bytes) / (p50 / 1000.0).max(1e-9)
            );
        };
        // Steps 1 and 4 of the prebuild table (0 is the pending time).
        line("runner: repository copied into its root (prebuilds above)", workspace_bytes, &step(1));
        line("baseline: cp -r of the workspace on the host", workspace_bytes, &copies);
        line("runner: workspace into the container (tar + upload)", workspace_bytes, &step(4));
        line("baseline: docker cp of the workspace into a container", workspace_bytes, &docker_cps);
        line("runner: snapshot, the commit (prebuilds above)", snapshot_layer, &runner_commits);
        line("baseline: docker commit of a container with the same bytes", commit_layer, &commits);
        line("baseline: tar of the same tree on the host (to a file)", tree_bytes, &tars);
        line(&format!("baseline: tar | zstd -3 -T0 on the host (to {:.1} MB)", mb(zstd_bytes)), tree_bytes, &zstds);
        println!(
            "(MB = 10^6 bytes; commits: the layer's size as Docker reports it; tar wrote {:.1} MB; the page cache is warm; `sync` before each, untimed)",
            mb(tar_bytes)
        );
        Ok(())
    }

    /// `docker import` of a busybox rootfs (root and a `dev` user), with no
    /// registry.
    pub(super) async fn import_base_image(&self) -> Result<(), String> {
        let output = tokio::process::Command::new("/bin/busybox")
            .arg("--list")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("cannot run /bin/busybox: {e}"))?;
        let applets: Vec<String> =
            String::from_utf8_lossy(&output.stdout).lines().filter(|a| !a.is_empty() && *a != "busybox").map(str::to_string).collect();
        let rootfs = tokio::task::spawn_blocking(move || busybox_rootfs(&applets))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot make the base image's rootfs: {e}"))?;
        let label = format!("LABEL {}", self.label());
        let image = self.base_image();
        self.docker.run_with_input(&["import", "--change", "ENV PATH=/bin", "--change", &label, "-", &image], rootfs).await
    }

    /// One prebuild of `project`, CreatePrebuild to COMPLETED, split into
    /// `steps` (see [`STEPS`]) by its log.
    pub(super) async fn prebuild(
        &self,
        client: &mut Prebuilds,
        data_dir: &Path,
        project: &str,
        steps_of: &[(&str, &str)],
    ) -> Result<Prebuilt, String> {
        let started = Instant::now();
        let created = client
            .create_prebuild(CreatePrebuildRequest {
                project_id: project.into(),
                environment_class_id: None,
                spec: Some(PrebuildSpec::default()),
            })
            .await
            .map_err(status_text)?
            .into_inner()
            .prebuild
            .ok_or("CreatePrebuild returned no prebuild")?;
        let mut log = LogTail {
            path: data_dir.join("logs").join(format!("{}.log", created.id)),
            since: started,
            read: 0,
            pending: String::new(),
            lines: Vec::new(),
        };
        let mut phases: Vec<(String, Duration)> = Vec::new();
        let status = loop {
            log.poll().await;
            let prebuild = client
                .get_prebuild(GetPrebuildRequest { prebuild_id: created.id.clone() })
                .await
                .map_err(status_text)?
                .into_inner()
                .prebuild
                .ok_or("GetPrebuild returned no prebuild")?;
            let status = prebuild.status.unwrap_or_default();
            let phase = PrebuildPhase::try_from(status.phase).unwrap_or_default();
            let name = phase.as_str_name().trim_start_matches("PREBUILD_PHASE_").to_string();
            if phases.last().is_none_or(|(last, _)| *last != name) {
                phases.push((name, started.elapsed()));
            }
            if matches!(phase, PrebuildPhase::Completed | PrebuildPhase::Failed | PrebuildPhase::Cancelled) {
                break status;
            }
            if started.elapsed() > PREBUILD_PATIENCE {
                return Err(format!("the prebuild did not finish in {} s; last log lines:\n{}", PREBUILD_PATIENCE.as_secs(), log.tail(30)));
            }
            tokio::time::sleep(POLL).await;
        };
        let total = phases.last().map(|(_, at)| *at).unwrap_or_default();
        log.poll().await;
        if status.phase != PrebuildPhase::Completed as i32 {
            return Err(format!("the prebuild did not complete: {}; last log lines:\n{}", status.failure_message, log.tail(30)));
        }
        // Each step ends at its line; the first begins when the runner's
        // first line shows (before it: the reconciler picking the job up).
        let mut steps = Vec::new();
        let first = log.lines.first().map(|(at, _)| *at);
        steps.push(("pending: until the runner's first log line".to_string(), first));
        let (mut from, mut index) = (first.unwrap_or_default(), 0);
        let mut commit = None;
        for (needle, step) in steps_of {
            match log.lines[index..].iter().position(|(_, line)| line.contains(needle)) {
                Some(found) => {
                    let at = log.lines[index + found].0;
                    steps.push((step.to_string(), Some(at.saturating_sub(from))));
                    if *needle == "committed:" {
                        commit = Some(at.saturating_sub(from));
                    }
                    from = at;
                    index += found + 1;
                }
                None => steps.push((step.to_string(), None)),
            }
        }
        steps.push(("clean-up, COMPLETED observed".to_string(), Some(total.saturating_sub(from))));
        Ok(Prebuilt { id: created.id, total, steps, phases, commit, image_bytes: status.snapshot_size_bytes.max(0) as u64 })
    }

    /// One claim: ClaimInstance, `docker exec true` in what it returned, and
    /// the backfill (the pool back at its size), with when Docker started
    /// the replacements: a promoted (created) instance, a new one; then the
    /// claimed container is removed. `floor` gets the times of `docker exec
    /// true` in the claimed (running) container.
    async fn claim(
        &self,
        prebuilds: &mut Prebuilds,
        claims: &mut Claims,
        pool_id: &str,
        snapshot_id: &str,
        floor: Option<&mut Vec<Duration>>,
    ) -> Result<Claim, String> {
        let before = wait_backfilled(prebuilds, pool_id, snapshot_id).await?;
        let containers_before = self.pool_containers(pool_id).await?;
        let wall = SystemTime::now();
        let started = Instant::now();
        let instance = claims
            .claim_instance(ClaimInstanceRequest { warm_pool_id: pool_id.into(), wait: None })
            .await
            .map_err(status_text)?
            .into_inner()
            .instance
            .ok_or("ClaimInstance returned no instance")?;
        let rpc = started.elapsed();
        if instance.container_id.is_empty() {
            return Err("ClaimInstance returned no container ID".into());
        }
        let (to_shell, attempts) = self.docker.exec_answers(&instance.container_id, started).await?;
        wait_backfilled(prebuilds, pool_id, snapshot_id).await?;
        let backfilled = started.elapsed();
        let (mut promoted, mut fresh) = (None, None);
        for (id, state) in self.pool_containers(pool_id).await? {
            if id == instance.container_id || state != "running" {
                continue;
            }
            let slot = match containers_before.iter().find(|(before, _)| *before == id) {
                Some((_, state)) if state == "created" => &mut promoted,
                Some(_) => continue,
                None => &mut fresh,
            };
            let at = self.docker.run(&["inspect", "--format", "{{.State.StartedAt}}", &id]).await?;
            if let Ok(at) = time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339) {
                *slot = Duration::try_from(at - time::OffsetDateTime::from(wall)).ok();
            }
        }
        if let Some(floor) = floor {
            for _ in 0..ROUNDS {
                let exec = Instant::now();
                self.docker.exec_answers(&instance.container_id, exec).await?;
                floor.push(exec.elapsed());
            }
        }
        self.remove_containers(&[instance.container_id]).await?;
        let shape = format!("{}+{}", before.running_instances, before.stopped_instances);
        Ok(Claim { shape, rpc, to_shell, attempts, promoted, fresh, backfilled })
    }

    /// The pool's containers (claimed ones too) and their states.
    pub(super) async fn pool_containers(&self, pool_id: &str) -> Result<Vec<(String, String)>, String> {
        let filter = format!("label={POOL_LABEL}={pool_id}");
        let lines = self.docker.lines(&["ps", "-a", "--no-trunc", "--filter", &filter, "--format", "{{.ID}} {{.State}}"]).await?;
        Ok(lines.iter().filter_map(|l| l.split_once(' ')).map(|(id, state)| (id.to_string(), state.to_string())).collect())
    }

    /// Containers from the snapshot image with the runner's settings:
    /// created (timed), then started (timed until `docker exec true`
    /// answers); then `docker run -d` of the same image with the same
    /// settings.
    async fn instances(&self, snapshot: &str) -> Result<Creation, String> {
        let flags = self.create_flags();
        let mut creation = Creation::default();
        let mut ids = Vec::new();
        for n in 0..ROUNDS {
            let name = self.name("instance", n);
            let mut args: Vec<&str> = vec!["create", "--name", &name];
            args.extend(flags.iter().map(String::as_str));
            args.push(snapshot);
            let (took, id) = self.docker.timed(&args).await?;
            creation.create.push(took);
            ids.push(id);
        }
        for id in &ids {
            let started = Instant::now();
            self.docker.run(&["start", id]).await?;
            creation.start.push(started.elapsed());
            creation.start_to_shell.push(self.docker.exec_answers(id, started).await?.0);
        }
        self.remove_containers(&ids).await?;
        let mut ids = Vec::new();
        for n in 0..ROUNDS {
            let name = self.name("run", n);
            let mut args: Vec<&str> = vec!["run", "-d", "--name", &name];
            args.extend(flags.iter().map(String::as_str));
            args.push(snapshot);
            let started = Instant::now();
            let id = self.docker.run(&args).await?;
            creation.run.push(started.elapsed());
            creation.run_to_shell.push(self.docker.exec_answers(&id, started).await?.0);
            ids.push(id);
        }
        self.remove_containers(&ids).await?;
        Ok(creation)
    }

    /// A container from the base image with the runner's settings, holding
    /// the same bytes as the prebuild's (the workspace at its folder, the
    /// 100 MB outside it), started and stopped like the prebuild's. Returns
    /// how long `docker cp` of the workspace into it took, and its `docker
    /// commit`.
    async fn commit_baseline(&self, n: usize) -> Result<(Duration, Duration), String> {
        let name = self.name("commit", n);
        let mut args: Vec<&str> = vec!["create", "--name", &name];
        let flags = self.create_flags();
        args.extend(flags.iter().map(String::as_str));
        let base = self.base_image();
        args.extend([base.as_str(), "sh", "-c", "trap 'exit 0' TERM; while sleep 1 & wait $!; do :; done"]);
        self.docker.run(&args).await?;
        self.docker.run(&["start", &name]).await?;
        let project = self.project().display().to_string();
        settle().await;
        let (docker_cp, _) = self.docker.timed(&["cp", &project, &format!("{name}:/workspaces/{PROJECT_DIR}")]).await?;
        let outside = self.outside().join("bench-build-output").display().to_string();
        self.docker.run(&["cp", &outside, &format!("{name}:/opt/bench-build-output")]).await?;
        self.docker.run(&["stop", "-t", "5", &name]).await?;
        settle().await;
        let (took, _) = self.docker.timed(&["commit", &name, &self.commit_image(n)]).await?;
        self.remove_containers(&[name]).await?;
        Ok((docker_cp, took))
    }

    /// `cp -r` of the workspace on the host (into the bench's directory),
    /// timed; the copy is removed after.
    async fn host_copy(&self, n: usize) -> Result<Duration, String> {
        let target = self.work.join(format!("copy-{n}"));
        let started = Instant::now();
        let status = tokio::process::Command::new("cp")
            .arg("-r")
            .arg(self.project())
            .arg(&target)
            .kill_on_drop(true)
            .status()
            .await
            .map_err(|e| format!("cannot run cp: {e}"))?;
        let took = started.elapsed();
        if !status.success() {
            return Err(format!("cp -r of the workspace failed ({status})"));
        }
        tokio::fs::remove_dir_all(&target).await.map_err(|e| format!("cannot remove {}: {e}", target.display()))?;
        Ok(took)
    }

    /// `tar` of the tree on the host into a file, or `tar | zstd`; the time
    /// and the bytes written.
    async fn host_tar(&self, compress: bool) -> Result<(Duration, u64), String> {
        let target = self.work.join(if compress { "tree.tar.zst" } else { "tree.tar" });
        let spawn = |command: &mut tokio::process::Command, what: &str| {
            command.kill_on_drop(true).spawn().map_err(|e| format!("cannot run {what}: {e}"))
        };
        let mut tar = tokio::process::Command::new("tar");
        tar.arg("-C").arg(&self.work).args(["-cf", "-", PROJECT_DIR, "outside"]).stdin(Stdio::null());
        let started = Instant::now();
        let statuses = if compress {
            let mut tar_child = spawn(tar.stdout(Stdio::piped()), "tar")?;
            let pipe: Stdio = tar_child.stdout.take().ok_or("no tar output")?.try_into().map_err(|e| format!("tar's output: {e}"))?;
            let mut zstd = tokio::process::Command::new("zstd");
            zstd.args(["-q", "-f", "-3", "-T0", "-", "-o"]).arg(&target).stdin(pipe);
            let mut zstd_child = spawn(&mut zstd, "zstd (install zstd)")?;
            let (a, b) = tokio::join!(tar_child.wait(), zstd_child.wait());
            vec![a, b]
        } else {
            let file = std::fs::File::create(&target).map_err(|e| format!("cannot create {}: {e}", target.display()))?;
            vec![spawn(tar.stdout(file), "tar")?.wait().await]
        };
        let took = started.elapsed();
        for status in statuses {
            let status = status.map_err(|e| e.to_string())?;
            if !status.success() {
                return Err(format!("the host archive failed ({status})"));
            }
        }
        let bytes = tokio::fs::metadata(&target).await.map_err(|e| e.to_string())?.len();
        let _ = tokio::fs::remove_file(&target).await;
        Ok((took, bytes))
    }

    pub(super) async fn remove_containers(&self, ids: &[String]) -> Result<(), String> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(ids.iter().map(String::as_str));
        self.docker.run(&args).await.map(|_| ())
    }

    /// Removes every container and image of the run (by the bench label,
    /// the runner ID and name), and says what is left, if anything.
    pub(super) async fn clean_up(&self) -> Result<(), String> {
        let filters = [format!("label={}", self.label()), format!("label={RUNNER_LABEL}={}", self.runner_id)];
        let mut containers = Vec::new();
        for filter in &filters {
            containers.extend(self.docker.lines(&["ps", "-aq", "--no-trunc", "--filter", filter]).await.unwrap_or_default());
        }
        containers.sort();
        containers.dedup();
        let removed_containers = containers.len();
        if let Err(error) = self.remove_containers(&containers).await {
            eprintln!("clean-up: {error}");
        }
        // Images go children first: an image with children cannot be
        // removed, so every pass removes what it can.
        let mut named: Vec<String> = (0..REPEATS).map(|n| self.commit_image(n)).collect();
        named.push(self.base_image());
        let mut removed_images = 0;
        let mut left = Vec::new();
        for _ in 0..4 {
            let mut images = Vec::new();
            for filter in &filters {
                images.extend(self.docker.lines(&["images", "-aq", "--no-trunc", "--filter", filter]).await.unwrap_or_default());
            }
            for name in &named {
                if let Ok(id) = self.docker.run(&["image", "inspect", "--format", "{{.Id}}", name]).await {
                    images.push(id);
                }
            }
            images.sort();
            images.dedup();
            left = images.clone();
            if images.is_empty() {
                break;
            }
            for image in images {
                if self.docker.run(&["rmi", "-f", &image]).await.is_ok() {
                    removed_images += 1;
                }
            }
        }
        // The runner's networks, and their rules (a table per network, named
        // after its bridge), go with the run.
        for network in self.docker.lines(&["network", "ls", "-q", "--filter", &filters[1]]).await.unwrap_or_default() {
            let bridge = self
                .docker
                .run(&["network", "inspect", "--format", "{{index .Options \"com.docker.network.bridge.name\"}}", &network])
                .await;
            if let Err(error) = self.docker.run(&["network", "rm", &network]).await {
                eprintln!("clean-up: {error}");
            }
            if let Ok(bridge) = bridge {
                let table = format!("prebuildd_{}", bridge.trim());
                let _ = tokio::process::Command::new("nft").args(["delete", "table", "inet", &table]).output().await;
            }
        }
        let mut left_containers = Vec::new();
        for filter in &filters {
            left_containers.extend(self.docker.lines(&["ps", "-aq", "--filter", filter]).await.unwrap_or_default());
        }
        println!("\nclean-up: {removed_containers} containers and {removed_images} images removed");
        if left.is_empty() && left_containers.is_empty() {
            Ok(())
        } else {
            Err(format!("clean-up left containers {left_containers:?} and images {left:?} (labelled {})", self.label()))
        }
    }
}

/// Waits until the pool is READY on the snapshot and back at its size: as
/// many running instances as it wants (one, more after claims: the
/// autoscaler follows demand up to maxSize), the rest of maxSize created.
pub(super) async fn wait_backfilled(client: &mut Prebuilds, pool_id: &str, snapshot_id: &str) -> Result<WarmPoolStatus, String> {
    let started = Instant::now();
    loop {
        let pool = client
            .get_warm_pool(GetWarmPoolRequest { warm_pool_id: pool_id.into() })
            .await
            .map_err(status_text)?
            .into_inner()
            .warm_pool
            .ok_or("GetWarmPool returned no pool")?;
        let status = pool.status.clone().unwrap_or_default();
        let snapshot = pool.spec.as_ref().and_then(|s| s.snapshot_id.as_deref());
        if snapshot == Some(snapshot_id)
            && status.phase == WarmPoolPhase::Ready as i32
            && status.running_instances >= status.desired_size.max(1)
            && status.running_instances + status.stopped_instances == POOL_MAX
        {
            return Ok(status);
        }
        if started.elapsed() > POOL_PATIENCE {
            return Err(format!("the pool did not get back to its size in {} s: {status:?}", POOL_PATIENCE.as_secs()));
        }
        tokio::time::sleep(POLL).await;
    }
}
