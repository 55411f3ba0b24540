-- migrate: one row per source file and target bucket. A file is skipped on later runs
-- while its size and version (mtime for files, ETag for bucket objects) are unchanged.
CREATE TABLE migrate_files (
    target TEXT NOT NULL,
    key TEXT NOT NULL,
    size INTEGER NOT NULL,
    version TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('uploaded', 'verified', 'mismatch')),
    updated_at TEXT NOT NULL,
    PRIMARY KEY (target, key)
) WITHOUT ROWID;
