-- mastomedia's own journal (SQLite). Never shared with Mastodon's database.
-- Runs of any command, for diagnosis and resumption.
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    command TEXT NOT NULL,
    target TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    outcome TEXT
);
