//! `prebuildd-bench --only incremental` on the docker runner: the same
//! repository and measurement as on the local runner (`crate::incremental`),
//! its dev container on this bench's base image. An incremental prebuild
//! here is a container from the base's snapshot image, the commit's
//! changes copied in, `updateContentCommand` by exec, and a commit that
//! writes only the new layer.

use super::*;

impl Bench {
    pub(super) async fn incremental(&self) -> Result<(), String> {
        self.import_base_image().await?;
        let (project, image) = (self.project(), self.base_image());
        let generated = project.clone();
        tokio::task::spawn_blocking(move || crate::incremental::generate_repository(&generated, Some(&image)))
            .await
            .map_err(|e| e.to_string())??;
        let data_dir = self.work.join("data");
        let server = ChildServer::start_with(&data_dir, |listen| self.config(listen) + "[projects.prebuilds.git]\nincremental = true\n")?;
        server.ready().await?;
        let base = server.base.clone();
        *self.server.lock().map_err(|_| "poisoned")? = Some(server);
        crate::incremental::measure(&base, &data_dir.join("logs"), &project, PROJECT, "docker runner", Some(&self.base_image())).await
    }
}
