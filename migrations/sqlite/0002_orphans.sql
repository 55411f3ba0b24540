-- orphans: the scan position per storage target and listing prefix. After every batch
-- whose objects are all handled (classified and, with --delete, their deletes answered),
-- last_key moves to the batch's last key; a run that dies continues after it. `mode`
-- (report, delete, delete+stale) must match for a run to resume: a report-only scan never
-- moves the position of a deleting one. The row is removed when a scan reaches the end.
CREATE TABLE orphan_scans (
    target TEXT NOT NULL,
    prefix TEXT NOT NULL,
    mode TEXT NOT NULL,
    last_key TEXT NOT NULL,
    objects INTEGER NOT NULL DEFAULT 0,
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (target, prefix)
) WITHOUT ROWID;
