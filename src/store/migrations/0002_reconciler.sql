-- What the reconciler needs to remember across restarts.

-- When a prebuild reached a final phase (microseconds since the epoch), for
-- retention: finished prebuilds older than the retention are deleted.
ALTER TABLE prebuilds ADD COLUMN finished_at INTEGER;
CREATE INDEX prebuilds_finished ON prebuilds (phase, finished_at) WHERE finished_at IS NOT NULL;

-- One row per scheduled prebuild made, so each (project, class) gets
-- exactly one per UTC day, also across restarts.
CREATE TABLE schedule_runs (
    project_id           TEXT    NOT NULL,
    environment_class_id TEXT    NOT NULL,
    day                  TEXT    NOT NULL, -- YYYY-MM-DD, UTC
    prebuild_id          TEXT    NOT NULL,
    PRIMARY KEY (project_id, environment_class_id, day)
);

-- Claims of warm pool instances: the demand the autoscaler follows.
CREATE TABLE warm_pool_claims (
    warm_pool_id TEXT    NOT NULL,
    claimed_at   INTEGER NOT NULL -- microseconds since the epoch
);
CREATE INDEX warm_pool_claims_by_pool ON warm_pool_claims (warm_pool_id, claimed_at);
