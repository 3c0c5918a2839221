-- What replicas sharing this database share besides the resources.

-- The secret that signs page tokens and logs tokens: one row, created by
-- the first process to start (INSERT ... ON CONFLICT DO NOTHING, then read
-- back), so a token minted by one replica verifies on every other.
CREATE TABLE token_secret (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    secret BYTEA   NOT NULL CHECK (length(secret) = 32)
);

-- The reconciler's leader: one row, taken and renewed in single statements
-- timed by the database's now() (no clock of a replica is trusted). term
-- grows by one each time another holder (or the same one after its lease
-- ran out) takes it.
CREATE TABLE reconciler_lease (
    id         INTEGER     PRIMARY KEY CHECK (id = 1),
    holder     TEXT        NOT NULL,
    term       BIGINT      NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
