-- migrate reads its journal in key byte order (a streamed copy pass merges it with the
-- source listing, which is in byte order): keyset pages `ORDER BY key COLLATE "C"`
-- (src/journal/postgres.rs, migrate_files_page). The primary key (target, key) is in the
-- database's own collation, which need not be byte order; this index is. Only in our own
-- schema, never in Mastodon's.
CREATE INDEX IF NOT EXISTS migrate_files_target_key_c
    ON mastomedia.migrate_files (target, key COLLATE "C");
