-- migrate: whether the source object was private when copied (1 private, 0 public, NULL
-- journalled before this column existed). A catch-up pass uploads a file again when its
-- privacy changed at the source (Mastodon chmods a suspended account's files to 0600 and
-- back on unsuspension without touching their mtime).
ALTER TABLE migrate_files ADD COLUMN source_private INTEGER;
