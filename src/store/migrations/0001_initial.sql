-- Prebuilds and warm pools, stored as encoded gitpod.v1 messages (body) with
-- the columns that filters and ordering need beside them.
--
-- seq orders rows newest first and is the keyset of pagination; AUTOINCREMENT
-- keeps it from ever being reused. version guards read-modify-write updates.

CREATE TABLE prebuilds (
    seq                  INTEGER PRIMARY KEY AUTOINCREMENT,
    id                   TEXT    NOT NULL UNIQUE,
    organization_id      TEXT    NOT NULL,
    project_id           TEXT    NOT NULL,
    environment_class_id TEXT    NOT NULL,
    phase                INTEGER NOT NULL,
    triggered_by         INTEGER NOT NULL,
    creator_id           TEXT    NOT NULL,
    executor_id          TEXT    NOT NULL,
    version              INTEGER NOT NULL,
    body                 BLOB    NOT NULL
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

CREATE TABLE warm_pools (
    seq                  INTEGER PRIMARY KEY AUTOINCREMENT,
    id                   TEXT    NOT NULL UNIQUE,
    organization_id      TEXT    NOT NULL,
    project_id           TEXT    NOT NULL,
    environment_class_id TEXT    NOT NULL,
    version              INTEGER NOT NULL,
    body                 BLOB    NOT NULL,
    -- The reference: only one warm pool per <project, environment_class> pair.
    UNIQUE (organization_id, project_id, environment_class_id)
);

CREATE INDEX warm_pools_by_organization ON warm_pools (organization_id, seq);
CREATE INDEX warm_pools_by_class        ON warm_pools (organization_id, environment_class_id, seq);
