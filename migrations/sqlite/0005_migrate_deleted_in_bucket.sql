-- migrate: 'deleted_in_bucket' marks a file that was copied, is unchanged at the source and
-- is no longer in the bucket (Mastodon or an admin deleted it after the copy). Catch-up
-- passes never upload it again; only `--reupload-missing` does. SQLite cannot alter a CHECK
-- constraint, so the table is rebuilt with every row kept.
CREATE TABLE migrate_files_new (
    target TEXT NOT NULL,
    key TEXT NOT NULL,
    size INTEGER NOT NULL,
    version TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('uploaded', 'verified', 'mismatch', 'deleted_in_bucket')),
    updated_at TEXT NOT NULL,
    source_private INTEGER,
    PRIMARY KEY (target, key)
) WITHOUT ROWID;
INSERT INTO migrate_files_new (target, key, size, version, state, updated_at, source_private)
    SELECT target, key, size, version, state, updated_at, source_private FROM migrate_files;
DROP TABLE migrate_files;
ALTER TABLE migrate_files_new RENAME TO migrate_files;
