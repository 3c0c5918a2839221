-- The PostgreSQL schema: the same tables, columns and indexes as the SQLite
-- schema after its migrations 0001 and 0002, so both backends answer every
-- query the same way. Prebuilds and warm pools are stored as encoded
-- gitpod.v1 messages (body) with the columns that filters and ordering need
-- beside them.
--
-- seq orders rows newest first and is the keyset of pagination; an identity
-- column never reuses a value. version guards read-modify-write updates.

CREATE TABLE prebuilds (
    seq                  BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                   TEXT    NOT NULL UNIQUE,
    organization_id      TEXT    NOT NULL,
    project_id           TEXT    NOT NULL,
    environment_class_id TEXT    NOT NULL,
    phase                INTEGER NOT NULL,
    triggered_by         INTEGER NOT NULL,
    creator_id           TEXT    NOT NULL,
    executor_id          TEXT    NOT NULL,
    version              BIGINT  NOT NULL,
    body                 BYTEA   NOT NULL,
    -- When the prebuild reached a final phase (microseconds since the
    -- epoch), for retention.
    finished_at          BIGINT
);

-- One index per filter, each ending in seq so a filtered page is a range scan.
CREATE INDEX prebuilds_by_organization ON prebuilds (organization_id, seq);
CREATE INDEX prebuilds_by_project      ON prebuilds (organization_id, project_id, seq);
CREATE INDEX prebuilds_by_phase        ON prebuilds (organization_id, phase, seq);
CREATE INDEX prebuilds_by_trigger      ON prebuilds (organization_id, triggered_by, seq);
CREATE INDEX prebuilds_by_creator      ON prebuilds (organization_id, creator_id, seq);
CREATE INDEX prebuilds_by_executor     ON prebuilds (organization_id, executor_id, seq);
-- The reconciler's work list: only rows not in a final phase
-- (COMPLETED 60, FAILED 70, CANCELLED 80), so its cost follows active work.
CREATE INDEX prebuilds_active ON prebuilds (seq) WHERE phase NOT IN (60, 70, 80);
-- A warm pool's snapshot: the newest COMPLETED prebuild of its pair.
CREATE INDEX prebuilds_completed_by_pair ON prebuilds (organization_id, project_id, environment_class_id, seq) WHERE phase = 60;
-- Retention: finished prebuilds by age.
CREATE INDEX prebuilds_finished ON prebuilds (phase, finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE warm_pools (
    seq                  BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                   TEXT    NOT NULL UNIQUE,
    organization_id      TEXT    NOT NULL,
    project_id           TEXT    NOT NULL,
    environment_class_id TEXT    NOT NULL,
    version              BIGINT  NOT NULL,
    body                 BYTEA   NOT NULL,
    -- The reference: only one warm pool per <project, environment_class> pair.
    UNIQUE (organization_id, project_id, environment_class_id)
);

CREATE INDEX warm_pools_by_organization ON warm_pools (organization_id, seq);
CREATE INDEX warm_pools_by_class        ON warm_pools (organization_id, environment_class_id, seq);

-- One row per scheduled prebuild made, so each (project, class) gets
-- exactly one per UTC day, also across restarts and replicas.
CREATE TABLE schedule_runs (
    project_id           TEXT NOT NULL,
    environment_class_id TEXT NOT NULL,
    day                  TEXT NOT NULL, -- YYYY-MM-DD, UTC
    prebuild_id          TEXT NOT NULL,
    PRIMARY KEY (project_id, environment_class_id, day)
);

-- Claims of warm pool instances: the demand the autoscaler follows.
CREATE TABLE warm_pool_claims (
    warm_pool_id TEXT   NOT NULL,
    claimed_at   BIGINT NOT NULL -- microseconds since the epoch
);
CREATE INDEX warm_pool_claims_by_pool ON warm_pool_claims (warm_pool_id, claimed_at);
