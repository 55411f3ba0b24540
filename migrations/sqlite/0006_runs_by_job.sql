-- Each run of orphans and migrate is recorded in `runs` (command, target, started_at,
-- finished_at, outcome); `mastomedia status` reads the latest runs of a job and target.
CREATE INDEX runs_by_job ON runs (command, target, id);
