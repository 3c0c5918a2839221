-- Prebuild logs, shared by the replicas: a runner writes its log to a file
-- on the replica that runs it, and that replica copies what is new into
-- this table in chunks, so every replica can serve and follow the log.
-- source names the data dir a chunk was copied from, and source_offset
-- where in that file it starts: a copier that restarts resumes after what
-- it already copied, and never copies a chunk twice.
CREATE TABLE prebuild_log_chunks (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prebuild_id   TEXT   NOT NULL,
    source        TEXT   NOT NULL,
    source_offset BIGINT NOT NULL,
    chunk         BYTEA  NOT NULL,
    UNIQUE (prebuild_id, source, source_offset)
);
CREATE INDEX prebuild_log_chunks_by_prebuild ON prebuild_log_chunks (prebuild_id, seq);
