-- mastomedia's own journal in PostgreSQL (`--journal postgres://…`), the same records as
-- the SQLite journal (migrations/sqlite/): run records with shard and progress, orphan scan
-- positions, migrated files. Every table lives in the schema `mastomedia`, which the tool
-- creates before migrating and where sqlx keeps its `_sqlx_migrations` (search_path is
-- `mastomedia` alone on the migrating connection); nothing is ever created in `public`, so
-- even Mastodon's own database stays as Mastodon's migrations left it. Several processes
-- (the shards of one job, on several hosts) write here at once: inserts take their ids
-- from an identity column, positions and file records are upserts (ON CONFLICT).

-- One row per run. `outcome` NULL: running, or the process died (an old updated_at).
CREATE TABLE mastomedia.runs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    command TEXT NOT NULL,
    target TEXT NOT NULL,
    shard_index INTEGER,
    shard_count INTEGER,
    started_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    outcome TEXT,
    row_count BIGINT NOT NULL DEFAULT 0,
    object_count BIGINT NOT NULL DEFAULT 0,
    byte_count BIGINT NOT NULL DEFAULT 0,
    failure_count BIGINT NOT NULL DEFAULT 0,
    CHECK ((shard_index IS NULL) = (shard_count IS NULL))
);
CREATE INDEX runs_by_job ON mastomedia.runs (command, target, id);

-- orphans: the scan position per storage target (with its shard) and listing prefix.
CREATE TABLE mastomedia.orphan_scans (
    target TEXT NOT NULL,
    prefix TEXT NOT NULL,
    mode TEXT NOT NULL,
    last_key TEXT NOT NULL,
    objects BIGINT NOT NULL DEFAULT 0,
    started_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (target, prefix)
);

-- migrate: one row per source file and target bucket (see migrations/sqlite/0003–0005).
CREATE TABLE mastomedia.migrate_files (
    target TEXT NOT NULL,
    key TEXT NOT NULL,
    size BIGINT NOT NULL,
    version TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('uploaded', 'verified', 'mismatch', 'deleted_in_bucket')),
    updated_at TIMESTAMPTZ NOT NULL,
    source_private BOOLEAN,
    PRIMARY KEY (target, key)
);
