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

/// The stack's onCreateCommand: the server's answer into the workspace, asked
/// until it comes (Compose starts the server before the dev container, but
/// does not wait for it to listen), between the markers the steps end at.
const STACK_ON_CREATE: &str = "printf 'bench: %s\\n' onCreate-begins && until nc -w 2 db 5432 </dev/null > from-db.txt && grep -q hello from-db.txt; do sleep 0.05; done && printf 'bench: %s\\n' onCreate-ends";

/// The steps of a stack's prebuild, as [`STEPS`] for a single container.
const STACK_STEPS: &[(&str, &str)] = &[
    ("reading the Docker Compose configuration", "repository copied into the runner's root"),
    ("building the dev container image", "the Compose configuration read and policed"),
    ("the stack is Compose project", "devcontainer build, the stack's network and file"),
    ("copying the workspace into the container", "devcontainer up (the stack created, started)"),
    ("bench: onCreate-begins", "workspace into the container (tar + upload)"),
    ("bench: onCreate-ends", "onCreateCommand (until the server answers)"),
    ("stopping the dev container", "rest of run-user-commands"),
    ("committing the snapshot", "dev container stopped"),
    ("committed:", "snapshot committed"),
];

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
                format!(r#"{{ "dockerComposeFile": "compose.yml", "service": "app", "onCreateCommand": {} }}"#, serde_json::Value::String(STACK_ON_CREATE.into())),
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
    pub(super) async fn stack_scenario(&self, prebuilds: &mut Prebuilds, claims: &mut Claims, data_dir: &Path) -> Result<(), String> {
        println!(
            "\n== 5. A two-service Docker Compose stack (the dev container built from a Dockerfile, a TCP server from the base image)"
        );
        println!("Prebuild: CreatePrebuild to COMPLETED ({PREBUILDS} in a row; the first is the first of the stack's images)");
        let mut all = Vec::new();
        for _ in 0..PREBUILDS {
            settle().await;
            all.push(self.prebuild(prebuilds, data_dir, STACK_PROJECT, STACK_STEPS).await?);
        }
        let last = all.last().ok_or("no prebuild")?.id.clone();
        let layer = self.docker.top_layer_bytes(&Self::snapshot_image(&last)).await?;
        print_prebuilds(&all, layer);

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
}
