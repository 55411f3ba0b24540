//! The PostgreSQL journal (`--journal postgres://…`): the records of the SQLite journal
//! in a database every shard of a job can reach, so `mastomedia status` shows all of them.
//!
//! Every table lives in the schema [`SCHEMA`] (`migrations/postgres/`), never in `public`.
//! The database may be a journal database of its own or Mastodon's: Mastodon's migrations
//! and tables are all in `public`, which this journal never writes (a dedicated schema
//! rather than a refusal, because many servers have one database and a user without
//! CREATEDB). The guarantee has three parts: every query names `mastomedia.<table>`; the
//! migrating connection starts with `search_path=mastomedia` (a startup option) and is
//! refused, before anything is written, when its search_path is anything else (a pooler
//! that drops startup options), so sqlx's `_sqlx_migrations` lands in the schema too; and
//! the schema is created (only when absent, under a transaction-level advisory lock, so
//! concurrent first runs do not race) before migrating. Concurrent writers are safe: run
//! ids come from an identity column, file records and scan positions are upserts, each
//! batch one transaction (keys sorted, so two batches never deadlock), and sqlx's migrator
//! holds its own advisory lock while migrating.
//!
//! Needs a session of its own (a direct connection or PgBouncer's session pooling): the
//! startup option and sqlx's migration lock do not survive transaction pooling.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Acquire, PgConnection};

use super::location::PgLocation;
use super::migrate::READ_PAGE;
use super::run::{shard_of, stored};
use super::{
    FileRecord, FileState, Journal, JournalError, JournalFiles, RunCounts, RunId, RunQuery,
    RunRecord, ScanPosition,
};
use crate::model::JobKey;

/// The schema every table of the PostgreSQL journal lives in.
pub const SCHEMA: &str = "mastomedia";

/// How the refusal of a connection with another search_path begins (told apart from
/// sqlx's own configuration errors by it).
const WRONG_PATH: &str = "the connection has search_path";

/// An open PostgreSQL journal.
#[derive(Debug, Clone)]
pub struct PgJournal {
    pool: PgPool,
    shown: String,
}

fn query_err(what: &'static str) -> impl FnOnce(sqlx::Error) -> JournalError {
    move |source| JournalError::Query { what, source }
}

impl PgJournal {
    /// A connection of the journal's pool taken out of it (checked as every pooled one:
    /// search_path `mastomedia`), for the session advisory locks of [`super::RunLock`],
    /// which must outlive any query. Errors: the pool's connect error.
    pub(super) async fn dedicated(&self) -> Result<sqlx::PgConnection, JournalError> {
        let conn = self
            .pool
            .acquire()
            .await
            .map_err(|source| JournalError::Query {
                what: "connecting for the run lock",
                source,
            })?;
        Ok(conn.detach())
    }

    /// Connects to `location`, creates the schema `mastomedia` if absent and migrates it
    /// (`migrations/postgres/`), then proves it writable. Errors:
    /// [`JournalError::Connect`] (server unreachable, authentication, a failed migration)
    /// and [`JournalError::Refused`] (the connection's search_path is not `mastomedia`
    /// alone; the user may not create the schema or create in it, with the statement its
    /// owner must run), all before anything is written.
    pub async fn open(location: &PgLocation) -> Result<Self, JournalError> {
        let shown = location.shown().to_owned();
        let connect = |cause| JournalError::Connect {
            shown: shown.clone(),
            cause,
        };
        let options = location
            .options
            .clone()
            .options([("search_path", SCHEMA)])
            .application_name("mastomedia journal");
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(15))
            // Every connection, not only the first: one that lost the startup option
            // never runs a query (a pooler may hand out another server session).
            .after_connect(|conn, _| {
                Box::pin(async move {
                    let path = search_path(conn).await?;
                    if path.trim() == SCHEMA {
                        Ok(())
                    } else {
                        Err(sqlx::Error::Configuration(
                            format!("{WRONG_PATH} {path:?}, not {SCHEMA:?}").into(),
                        ))
                    }
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| match e {
                sqlx::Error::Configuration(reason)
                    if reason.to_string().starts_with(WRONG_PATH) =>
                {
                    JournalError::Refused {
                        shown: shown.clone(),
                        reason: format!(
                            "{reason} (a connection pooler that drops startup options?), so \
                         migrations could write outside the schema {SCHEMA}: connect directly \
                         or through session pooling"
                        ),
                    }
                }
                // PgBouncer refuses the startup option outright.
                e if e.to_string().contains("unsupported startup parameter") => {
                    JournalError::Refused {
                        shown: shown.clone(),
                        reason: format!(
                            "the server (a connection pooler?) does not take the startup option \
                             search_path={SCHEMA} that keeps the journal in its schema ({e}): \
                             connect directly to PostgreSQL or through session pooling"
                        ),
                    }
                }
                e => connect(e),
            })?;
        // No right to create the schema, or to create in it: say what the owner must do.
        let user = location.options.get_username().to_owned();
        let create = |cause: sqlx::Error| match not_allowed(&cause) {
            true => JournalError::Refused {
                shown: shown.clone(),
                reason: format!(
                    "the user {user} may not create the schema {SCHEMA} or its tables ({cause}): \
                     have the database's owner run `CREATE SCHEMA {SCHEMA} AUTHORIZATION {user};` \
                     once (where the schema exists: `GRANT USAGE, CREATE ON SCHEMA {SCHEMA} TO \
                     {user};`), or point --journal at a database of its own; nothing was written"
                ),
            },
            false => connect(cause),
        };
        let mut conn = pool.acquire().await.map_err(connect)?;
        create_schema(&mut conn).await.map_err(create)?;
        let mastodon: bool =
            sqlx::query_scalar("SELECT to_regclass('public.media_attachments') IS NOT NULL")
                .fetch_one(&mut *conn)
                .await
                .map_err(connect)?;
        drop(conn);
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| create(e.into()))?;
        if mastodon {
            tracing::info!(
                "the journal {shown} shares Mastodon's database; it writes only in its own schema {SCHEMA}"
            );
        }
        let j = Self { pool, shown };
        j.probe_writable().await?;
        Ok(j)
    }

    /// The pool (tests read the tables directly).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Whether `e` is PostgreSQL refusing to create: `42501` (insufficient_privilege: no
/// CREATE on the database for `CREATE SCHEMA`) or `3F000` (invalid_schema_name: "no schema
/// has been selected to create in", the schema exists but the user may not use it), also
/// inside a failed migration.
fn not_allowed(e: &sqlx::Error) -> bool {
    use sqlx::migrate::MigrateError;
    match e {
        sqlx::Error::Database(d) => matches!(d.code().as_deref(), Some("42501" | "3F000")),
        sqlx::Error::Migrate(m) => match m.as_ref() {
            MigrateError::Execute(inner) | MigrateError::ExecuteMigration(inner, _) => {
                not_allowed(inner)
            }
            _ => false,
        },
        _ => false,
    }
}

/// The connection's `search_path` setting.
async fn search_path(conn: &mut PgConnection) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT current_setting('search_path')")
        .fetch_one(conn)
        .await
}

/// `CREATE SCHEMA mastomedia` unless it exists (a DBA may have created it for a user that
/// may not create schemas), under a transaction-level advisory lock so two first runs at
/// once do not both try.
async fn create_schema(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(SCHEMA)
            .fetch_one(&mut *conn)
            .await?;
    if exists {
        return Ok(());
    }
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('mastomedia journal schema'))")
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A row of `mastomedia.runs`.
#[derive(sqlx::FromRow)]
struct StoredRun {
    command: String,
    target: String,
    shard_index: Option<i32>,
    shard_count: Option<i32>,
    outcome: Option<String>,
    started_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    row_count: i64,
    object_count: i64,
    byte_count: i64,
    failure_count: i64,
}

impl From<StoredRun> for RunRecord {
    fn from(r: StoredRun) -> Self {
        RunRecord {
            job: r.command,
            target: r.target,
            shard: shard_of(r.shard_index.map(i64::from), r.shard_count.map(i64::from)),
            outcome: r.outcome,
            started_at: r.started_at,
            updated_at: r.updated_at,
            finished_at: r.finished_at,
            counts: RunCounts {
                rows: r.row_count.max(0) as u64,
                objects: r.object_count.max(0) as u64,
                bytes: r.byte_count.max(0) as u64,
                failures: r.failure_count.max(0) as u64,
            },
        }
    }
}

impl Journal for PgJournal {
    fn location(&self) -> &str {
        &self.shown
    }

    async fn probe_writable(&self) -> Result<(), JournalError> {
        let err = query_err("proving the journal writable");
        let mut tx = self.pool.begin().await.map_err(err)?;
        let err = query_err("proving the journal writable");
        sqlx::query(
            "INSERT INTO mastomedia.runs (command, target, started_at, updated_at) \
             VALUES ('probe', '', now(), now())",
        )
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        // Never committed: the write was accepted, nothing stays.
        tx.rollback()
            .await
            .map_err(query_err("proving the journal writable"))
    }

    async fn run_started(&self, key: &JobKey) -> Result<RunId, JournalError> {
        let shard = key.shard();
        let err = || query_err("recording the start of the run");
        // Committed explicitly, as in the SQLite journal: `fetch_one` of an autocommit
        // `INSERT … RETURNING` returns with the row and would not see a failed commit.
        let mut tx = self.pool.begin().await.map_err(err())?;
        let id = sqlx::query_scalar(
            "INSERT INTO mastomedia.runs (command, target, shard_index, shard_count, started_at, updated_at) \
             VALUES ($1, $2, $3, $4, now(), now()) RETURNING id",
        )
        .bind(key.job())
        .bind(key.journal_target().as_ref())
        .bind(shard.and_then(|s| i32::try_from(s.index()).ok()))
        .bind(shard.and_then(|s| i32::try_from(s.count()).ok()))
        .fetch_one(&mut *tx)
        .await
        .map_err(err())?;
        tx.commit().await.map_err(err())?;
        Ok(RunId(id))
    }

    async fn run_progress(&self, id: RunId, counts: RunCounts) -> Result<(), JournalError> {
        sqlx::query(
            "UPDATE mastomedia.runs SET row_count = $2, object_count = $3, byte_count = $4, \
             failure_count = $5, updated_at = now() WHERE id = $1 AND finished_at IS NULL",
        )
        .bind(id.0)
        .bind(stored(counts.rows))
        .bind(stored(counts.objects))
        .bind(stored(counts.bytes))
        .bind(stored(counts.failures))
        .execute(&self.pool)
        .await
        .map_err(query_err("recording the run's progress"))?;
        Ok(())
    }

    async fn runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, JournalError> {
        let rows: Vec<StoredRun> = sqlx::query_as(
            "SELECT command, target, shard_index, shard_count, outcome, started_at, updated_at, \
             finished_at, row_count, object_count, byte_count, failure_count FROM ( \
             SELECT r.*, row_number() OVER (PARTITION BY command, target, shard_index, shard_count \
             ORDER BY id DESC) AS n FROM mastomedia.runs r WHERE command <> 'probe' \
             AND ($1::text IS NULL OR command = $1)) t WHERE $2::bigint IS NULL OR n <= $2 \
             ORDER BY started_at DESC, id DESC",
        )
        .bind(query.job.as_deref())
        .bind(query.per_target.map(stored))
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("reading the run records"))?;
        Ok(rows.into_iter().map(RunRecord::from).collect())
    }

    async fn started_runs(&self, command: &str, target: &str) -> Result<u64, JournalError> {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM mastomedia.runs WHERE command = $1 AND target = $2",
        )
        .bind(command)
        .bind(target)
        .fetch_one(&self.pool)
        .await
        .map(|n| n.max(0) as u64)
        .map_err(query_err("reading the journal's earlier runs"))
    }

    async fn run_finished(
        &self,
        id: RunId,
        outcome: &str,
        counts: RunCounts,
    ) -> Result<(), JournalError> {
        sqlx::query(
            "UPDATE mastomedia.runs SET finished_at = now(), updated_at = now(), outcome = $2, \
             row_count = $3, object_count = $4, byte_count = $5, failure_count = $6 WHERE id = $1",
        )
        .bind(id.0)
        .bind(outcome)
        .bind(stored(counts.rows))
        .bind(stored(counts.objects))
        .bind(stored(counts.bytes))
        .bind(stored(counts.failures))
        .execute(&self.pool)
        .await
        .map_err(query_err("recording the end of the run"))?;
        Ok(())
    }

    async fn migrate_files(&self, target: &str) -> Result<JournalFiles, JournalError> {
        // Keyset pages in byte order (`migrate_files_page`).
        let mut records: Vec<FileRecord> = Vec::new();
        loop {
            let after = records.last().map(|r| r.key.as_str());
            let rows = self.migrate_files_page(target, after, READ_PAGE).await?;
            let full = rows.len() as i64 == READ_PAGE;
            records.extend(rows);
            if !full {
                break;
            }
        }
        Ok(JournalFiles::from_records(records))
    }

    async fn migrate_files_page(
        &self,
        target: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<FileRecord>, JournalError> {
        // Byte order whatever the database's collation (`COLLATE "C"`), along the index
        // of migrations/postgres/0002_migrate_files_byte_order.sql.
        let rows: Vec<(String, i64, String, String, Option<bool>)> = sqlx::query_as(
            "SELECT key, size, version, state, source_private FROM mastomedia.migrate_files \
             WHERE target = $1 AND key COLLATE \"C\" > $2 \
             ORDER BY key COLLATE \"C\" LIMIT $3",
        )
        .bind(target)
        // Keys are never empty: "" is before the first.
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("loading the migration journal"))?;
        Ok(rows
            .into_iter()
            .map(|(key, size, version, state, source_private)| FileRecord {
                key,
                size: size.max(0) as u64,
                version,
                state: FileState::parse(&state),
                source_private,
            })
            .collect())
    }

    async fn record_migrated(
        &self,
        target: &str,
        files: &[FileRecord],
    ) -> Result<(), JournalError> {
        if files.is_empty() {
            return Ok(());
        }
        const WHAT: &str = "writing the migration journal";
        let mut sorted: Vec<&FileRecord> = files.iter().collect();
        sorted.sort_by(|a, b| a.key.cmp(&b.key));
        let mut tx = self.pool.begin().await.map_err(query_err(WHAT))?;
        for f in sorted {
            sqlx::query(
                "INSERT INTO mastomedia.migrate_files (target, key, size, version, state, source_private, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, now()) \
                 ON CONFLICT (target, key) DO UPDATE SET size = excluded.size, version = excluded.version, \
                 state = excluded.state, source_private = excluded.source_private, updated_at = excluded.updated_at",
            )
            .bind(target)
            .bind(&f.key)
            .bind(stored(f.size))
            .bind(&f.version)
            .bind(f.state.as_str())
            .bind(f.source_private)
            .execute(&mut *tx)
            .await
            .map_err(query_err(WHAT))?;
        }
        tx.commit().await.map_err(query_err(WHAT))
    }

    async fn orphan_scan(
        &self,
        target: &str,
        prefix: &str,
    ) -> Result<Option<ScanPosition>, JournalError> {
        type Row = (String, String, i64, DateTime<Utc>, DateTime<Utc>);
        let row: Option<Row> = sqlx::query_as(
            "SELECT mode, last_key, objects, started_at, updated_at FROM mastomedia.orphan_scans \
             WHERE target = $1 AND prefix = $2",
        )
        .bind(target)
        .bind(prefix)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("reading the orphan scan position"))?;
        Ok(row.map(
            |(mode, last_key, objects, started_at, updated_at)| ScanPosition {
                mode,
                last_key,
                objects,
                started_at: rfc3339(started_at),
                updated_at: rfc3339(updated_at),
            },
        ))
    }

    async fn orphan_scan_start(
        &self,
        target: &str,
        prefix: &str,
        mode: &str,
        start_after: &str,
    ) -> Result<(), JournalError> {
        sqlx::query(
            "INSERT INTO mastomedia.orphan_scans (target, prefix, mode, last_key, objects, started_at, updated_at) \
             VALUES ($1, $2, $3, $4, 0, now(), now()) \
             ON CONFLICT (target, prefix) DO UPDATE SET mode = excluded.mode, \
             last_key = excluded.last_key, objects = 0, started_at = excluded.started_at, \
             updated_at = excluded.updated_at",
        )
        .bind(target)
        .bind(prefix)
        .bind(mode)
        .bind(start_after)
        .execute(&self.pool)
        .await
        .map_err(query_err("starting an orphan scan"))?;
        Ok(())
    }

    async fn orphan_scan_advance(
        &self,
        target: &str,
        prefix: &str,
        last_key: &str,
        objects: u64,
    ) -> Result<(), JournalError> {
        sqlx::query(
            "UPDATE mastomedia.orphan_scans SET last_key = $3, objects = objects + $4, \
             updated_at = now() WHERE target = $1 AND prefix = $2",
        )
        .bind(target)
        .bind(prefix)
        .bind(last_key)
        .bind(stored(objects))
        .execute(&self.pool)
        .await
        .map_err(query_err("saving the orphan scan position"))?;
        Ok(())
    }

    async fn orphan_scan_finish(&self, target: &str, prefix: &str) -> Result<(), JournalError> {
        sqlx::query("DELETE FROM mastomedia.orphan_scans WHERE target = $1 AND prefix = $2")
            .bind(target)
            .bind(prefix)
            .execute(&self.pool)
            .await
            .map_err(query_err("finishing the orphan scan"))?;
        Ok(())
    }
}
