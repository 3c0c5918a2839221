-- The PENDING prebuilds of a project, counted against the cap on queued
-- prebuilds (`[limits] max_pending_prebuilds_per_project`): only PENDING
-- rows are in it, so counting up to the cap reads at most that many.
CREATE INDEX prebuilds_pending ON prebuilds (project_id) WHERE phase = 10;
