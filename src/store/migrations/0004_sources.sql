-- What a prebuild builds (prebuildd.v1.PrebuildSource), beside the row:
-- the trigger beyond the official MANUAL/SCHEDULED, the branch and exact
-- commit, and for an incremental prebuild the full one it started from.
-- source_trigger 0 means "derive it from triggered_by" (rows made before
-- this migration, API calls and the schedule).
ALTER TABLE prebuilds ADD COLUMN source_trigger   INTEGER NOT NULL DEFAULT 0;
ALTER TABLE prebuilds ADD COLUMN source_provider  TEXT    NOT NULL DEFAULT '';
ALTER TABLE prebuilds ADD COLUMN source_branch    TEXT    NOT NULL DEFAULT '';
ALTER TABLE prebuilds ADD COLUMN source_commit    TEXT    NOT NULL DEFAULT '';
ALTER TABLE prebuilds ADD COLUMN incremental      INTEGER NOT NULL DEFAULT 0;
ALTER TABLE prebuilds ADD COLUMN base_prebuild_id TEXT    NOT NULL DEFAULT '';
ALTER TABLE prebuilds ADD COLUMN base_commit      TEXT    NOT NULL DEFAULT '';
ALTER TABLE prebuilds ADD COLUMN fingerprint      TEXT    NOT NULL DEFAULT '';
-- 0 for a branch other than the one warm pools follow: such a prebuild's
-- snapshot never becomes a pool's.
ALTER TABLE prebuilds ADD COLUMN feeds_warm_pools INTEGER NOT NULL DEFAULT 1;

-- Bursts: the newest prebuild of a (project, class, branch), and its
-- queued one.
CREATE INDEX prebuilds_by_branch ON prebuilds (project_id, environment_class_id, source_branch, seq);
-- The one-at-a-time rule reads the active prebuilds that pushes or polls
-- started (usually none).
CREATE INDEX prebuilds_active_pushes ON prebuilds (seq) WHERE phase NOT IN (60, 70, 80) AND source_trigger IN (3, 4);
-- How many incremental prebuilds a base has had (full_every).
CREATE INDEX prebuilds_by_base ON prebuilds (base_prebuild_id) WHERE base_prebuild_id != '';

-- Webhook deliveries already acted on, so a redelivery starts nothing,
-- also after a restart. Pruned by age and count (see retention).
CREATE TABLE webhook_deliveries (
    delivery_key TEXT    PRIMARY KEY, -- provider, project and the delivery's ID
    received_at  INTEGER NOT NULL     -- microseconds since the epoch
);
CREATE INDEX webhook_deliveries_by_age ON webhook_deliveries (received_at);
