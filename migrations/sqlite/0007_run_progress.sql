-- Run records with shard and progress (issue 13): the shard (`--shard K/N`, NULL when the
-- run was not sharded), the counts so far (written every few seconds, then the final ones
-- from the run's report) and the time of the last write. A run whose process died keeps
-- outcome NULL and an old updated_at: `mastomedia status` calls it stale. Same columns as
-- migrations/postgres/0001_journal.sql.
ALTER TABLE runs ADD COLUMN shard_index INTEGER;
ALTER TABLE runs ADD COLUMN shard_count INTEGER;
ALTER TABLE runs ADD COLUMN updated_at TEXT;
ALTER TABLE runs ADD COLUMN row_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN object_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN byte_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN failure_count INTEGER NOT NULL DEFAULT 0;
