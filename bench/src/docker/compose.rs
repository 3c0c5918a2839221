//! The two-service Docker Compose stack, beside the single container: the
//! dev container built from a Dockerfile on the base image and a small TCP
//! server (`nc`) from the same image, as a Rails or Django app sits beside
//! its database. Cold and warm prebuilds (CreatePrebuild to COMPLETED),
//! then claim to shell on a pool of stacks (minSize 1, maxSize 2), and
//! claim until the dev container gets its own server's answer.
use super::scenarios::wait_backfilled;
use super::*;

/// The stack's project: a second project of the bench's server.
pub(super) const STACK_PROJECT: &str = "d0c4e000-b3c4-4000-8000-0000000000a2";
const STACK_DIR: &str = "bench-stack";

/// Asks the stack's server from inside the dev container until it answers.
const ASK_DB: &str = "until nc -w 2 db 5432 </dev/null | grep -q hello; do sleep 0.05; done";

impl Bench {
    pub(super) fn stack_project(&self) -> PathBuf {
        self.work.join(STACK_DIR)
    }

    /// The stack's repository: a devcontainer.json naming a Compose file
    /// with the dev container and its server.
    pub(super) async fn generate_stack(&self) -> Result<(), String> {
        let dir = self.stack_project().join(".devcontainer");
        let base = self.base_image();
        let files = [
            (
                "devcontainer.json",
                r#"{ "dockerComposeFile": "compose.yml", "service": "app", "onCreateCommand": "nc -w 2 db 5432 </dev/null > from-db.txt || true" }"#
                    .to_string(),
            ),
            (
                "compose.yml",
                format!(
                    "services:\n  app:\n    build: {{ context: ., dockerfile: Dockerfile }}\n    command: [\"sleep\", \"2147483647\"]\n    depends_on: [db]\n  db:\n    image: {base}\n    command: [\"nc\", \"-ll\", \"-p\", \"5432\", \"-e\", \"echo\", \"hello\"]\n"
                ),
            ),
            ("Dockerfile", format!("FROM {base}\n")),
        ];
        tokio::fs::create_dir_all(&dir).await.map_err(|e| e.to_string())?;
        for (name, content) in files {
            tokio::fs::write(dir.join(name), content).await.map_err(|e| format!("cannot write {name}: {e}"))?;
        }
        Ok(())
    }

    /// The stack's measurements, on the running server.
    pub(super) async fn stack_scenario(&self, prebuilds: &mut Prebuilds, claims: &mut Claims) -> Result<(), String> {
        println!("\n== 5. A two-service Docker Compose stack (the dev container and a TCP server from the same base image)");
        let mut totals = Vec::new();
        let mut last = String::new();
        for _ in 0..PREBUILDS {
            settle().await;
            let (id, took) = self.stack_prebuild(prebuilds).await?;
            totals.push(took);
            last = id;
        }
        let cells: Vec<String> = totals.iter().map(|d| format!("{:.2}", d.as_secs_f64())).collect();
        println!("CreatePrebuild to COMPLETED, s (#1 cold, then warm): {} (p50 {:.2})", cells.join(", "), p50_max(&totals).0 / 1000.0);

        let started = Instant::now();
        let pool = prebuilds
            .create_warm_pool(CreateWarmPoolRequest {
                project_id: STACK_PROJECT.into(),
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
        wait_backfilled(prebuilds, &pool.id, &last).await?;
        println!(
            "CreateWarmPool (minSize {POOL_MIN}, maxSize {POOL_MAX}) to READY, 1 running + 1 created stack: {:.2} s",
            started.elapsed().as_secs_f64()
        );
        let (mut rpcs, mut shells, mut servers, mut backfills) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            wait_backfilled(prebuilds, &pool.id, &last).await?;
            let started = Instant::now();
            let instance = claims
                .claim_instance(ClaimInstanceRequest { warm_pool_id: pool.id.clone(), wait: None })
                .await
                .map_err(status_text)?
                .into_inner()
                .instance
                .ok_or("ClaimInstance returned no instance")?;
            rpcs.push(started.elapsed());
            shells.push(self.docker.exec_answers(&instance.container_id, started).await?.0);
            self.docker.run(&["exec", &instance.container_id, "sh", "-c", ASK_DB]).await?;
            servers.push(started.elapsed());
            wait_backfilled(prebuilds, &pool.id, &last).await?;
            backfills.push(started.elapsed());
            let stack: Vec<String> = instance.services.iter().map(|s| s.container_id.clone()).collect();
            self.remove_containers(&stack).await?;
        }
        println!("{:<52} {:>8} {:>8}", "claim of a stack (five)", "p50 ms", "max ms");
        for (what, sample) in [
            ("ClaimInstance", &rpcs),
            ("claim to `docker exec true` answering", &shells),
            ("claim to the dev container reaching its server", &servers),
            ("claim to the pool back at its size", &backfills),
        ] {
            let (p50, max) = p50_max(sample);
            println!("{what:<52} {p50:>8.1} {max:>8.1}");
        }
        Ok(())
    }

    async fn stack_prebuild(&self, client: &mut Prebuilds) -> Result<(String, Duration), String> {
        let started = Instant::now();
        let created = client
            .create_prebuild(CreatePrebuildRequest {
                project_id: STACK_PROJECT.into(),
                environment_class_id: None,
                spec: Some(PrebuildSpec::default()),
            })
            .await
            .map_err(status_text)?
            .into_inner()
            .prebuild
            .ok_or("CreatePrebuild returned no prebuild")?;
        loop {
            let prebuild = client
                .get_prebuild(GetPrebuildRequest { prebuild_id: created.id.clone() })
                .await
                .map_err(status_text)?
                .into_inner()
                .prebuild
                .ok_or("GetPrebuild returned no prebuild")?;
            let status = prebuild.status.unwrap_or_default();
            match PrebuildPhase::try_from(status.phase).unwrap_or_default() {
                PrebuildPhase::Completed => return Ok((created.id, started.elapsed())),
                PrebuildPhase::Failed | PrebuildPhase::Cancelled => {
                    return Err(format!("the stack's prebuild did not complete: {}", status.failure_message))
                }
                _ if started.elapsed() > PREBUILD_PATIENCE => return Err("the stack's prebuild did not finish in time".into()),
                _ => tokio::time::sleep(POLL).await,
            }
        }
    }
}
