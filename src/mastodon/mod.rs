//! Mastodon's PostgreSQL database: connection, schema introspection, the advisory lock,
//! the media retention setting, privilege checks and the documented column updates.
//!
//! Must not: run DDL or migrations, write any table or column beyond the attachment
//! columns Mastodon itself clears (`docs/reference/tootctl-rules.md#refetch`) and `updated_at`, or
//! write settings.

mod connect;
pub mod diagnose;
mod exec;
pub mod schema;
mod suspended;
mod update;

pub use connect::{DatabaseConfig, DatabaseSettings, InvalidSetting, LockDatabaseConfig};
pub use exec::{MastodonPool, Pooling};
pub use schema::Schema;
pub use update::{ClearRequest, RowTable, update_columns};

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection as _, Row as _};

use crate::model::{JobKey, Shard};

/// A database failure, with what we were doing. All are fatal for a run (exit 3).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The server cannot be reached or refused the login.
    #[error(
        "cannot connect to Mastodon's database at {target}: {source}. Check DB_HOST/DB_PORT/DB_USER/DB_PASS/DB_NAME or DATABASE_URL"
    )]
    Connect {
        /// The redacted target.
        target: String,
        /// Driver error.
        source: sqlx::Error,
    },
    /// A query failed.
    #[error("database error while {what}: {source}")]
    Query {
        /// What we were doing.
        what: String,
        /// Driver error.
        source: sqlx::Error,
    },
    /// Core columns are missing: not a Mastodon database we support.
    #[error(
        "not a supported Mastodon database (4.2–4.6): missing {0}. Check DB_NAME / DATABASE_URL"
    )]
    NotMastodon(String),
    /// The database user lacks UPDATE on columns we must clear.
    #[error(
        "database user {user} may not update {columns}: nothing was deleted. Run as Mastodon's own database user, or GRANT UPDATE ON {table} TO {user}"
    )]
    NoUpdatePrivilege {
        /// `current_user`.
        user: String,
        /// The table.
        table: String,
        /// The columns lacking the privilege.
        columns: String,
    },
    /// A run of the other kind holds the job's lock: shards (`--shard K/N`) of the job
    /// while an unsharded run starts, the unsharded run while a shard starts, or shards
    /// with another N.
    #[error("cannot start mastomedia {job}: {detail}")]
    LockConflict {
        /// The job, with its shard (`prune shard 1/4`).
        job: String,
        /// Who holds what, and what to do.
        detail: String,
    },
    /// Another run holds the advisory lock.
    #[error(
        "another mastomedia {0} is running against this database (advisory lock held); try again when it has finished"
    )]
    Locked(String),
    /// The session holding our advisory lock ended (terminated, restart or failover,
    /// `idle_session_timeout`, a proxy that switched sessions): another run may hold the
    /// lock now, so nothing more may be deleted.
    #[error(
        "lost the advisory lock of mastomedia {job} (the database session holding it ended: {detail}); another run may have started; stopping before the next delete. Run again to continue; if DB_HOST/DATABASE_URL points at PgBouncer in transaction mode, point mastomedia at PostgreSQL itself or a session-mode pool (an advisory lock needs one session)"
    )]
    LockLost {
        /// The job whose lock was lost (`prune`).
        job: String,
        /// What the check saw.
        detail: String,
    },
    /// No connection on which a session advisory lock can hold: `DATABASE_URL` / `DB_HOST`
    /// reaches PostgreSQL through transaction pooling and `MASTOMEDIA_LOCK_DATABASE_URL`
    /// is unset, or that URL itself is pooled or reaches another database.
    #[error(
        "cannot take the advisory lock of mastomedia {job}: {detail}. Nothing was changed. Set MASTOMEDIA_LOCK_DATABASE_URL (in the env file or the environment) to a connection straight to PostgreSQL, bypassing PgBouncer (e.g. postgres://mastodon:PASSWORD@127.0.0.1:5432/mastodon_production), or to a PgBouncer pool in pool_mode = session; the other queries keep using DATABASE_URL / DB_HOST"
    )]
    LockUnavailable {
        /// The job (`prune`, `orphans`).
        job: String,
        /// Why.
        detail: String,
    },
}

impl DbError {
    pub(crate) fn query(what: &str, source: sqlx::Error) -> Self {
        DbError::Query {
            what: what.to_owned(),
            source,
        }
    }
}

/// A connection pool to Mastodon's database plus its introspected schema, how it reaches
/// PostgreSQL ([`Pooling`]) and where the advisory lock is taken.
#[derive(Debug, Clone)]
pub struct Db {
    pool: PgPool,
    schema: Schema,
    /// Named prepared statements allowed (`PREPARED_STATEMENTS` not `false`, and no
    /// transaction pooling detected).
    prepared: bool,
    pooling: Pooling,
    lock_target: Option<LockDatabaseConfig>,
}

/// Holds a session-level advisory lock for as long as it lives: the lock's connection is
/// detached from the pool, so dropping it closes the session, which releases the lock.
/// The session can end under us (`pg_terminate_backend`, a restart, `idle_session_timeout`,
/// a proxy): [`RunLock::ensure_held`] tells, and must pass before every destructive step.
#[derive(Debug)]
pub struct RunLock {
    job: String,
    /// The advisory locks this session must hold, as `pg_locks` shows them:
    /// `(classid, objid, objsubid)` (objsubid 1: a bigint key, 2: an int4 pair).
    held: Vec<(i64, i64, i32)>,
    /// `pg_backend_pid()` of the session that took the lock.
    pid: i32,
    /// Named prepared statements allowed on the lock's connection.
    prepared: bool,
    /// Where the lock lives: `None` on a connection of the main pool, else the redacted
    /// `MASTOMEDIA_LOCK_DATABASE_URL`.
    via: Option<String>,
    conn: tokio::sync::Mutex<sqlx::PgConnection>,
}

/// How long [`RunLock::ensure_held`] waits for the lock session to answer.
pub const LOCK_CHECK_TIMEOUT: Duration = Duration::from_secs(15);

impl RunLock {
    /// Proves, on the lock's own connection, that its session is alive, is still the
    /// backend that took the lock, and still holds it (`pg_locks`: advisory, granted, our
    /// key, our pid). One round trip; call it right before each delete batch (and, in
    /// other commands, before each destructive step). Errors: [`DbError::LockLost`] when
    /// the query fails (the session is gone), answers no, or does not answer within
    /// [`LOCK_CHECK_TIMEOUT`].
    pub async fn ensure_held(&self) -> Result<(), DbError> {
        let lost = |detail: String| DbError::LockLost {
            job: self.job.clone(),
            detail,
        };
        let mut conn = self.conn.lock().await;
        let (classids, objids, subids) = self.held.iter().fold(
            (Vec::new(), Vec::new(), Vec::new()),
            |(mut c, mut o, mut s), (ci, oi, si)| {
                c.push(*ci);
                o.push(*oi);
                s.push(*si);
                (c, o, s)
            },
        );
        let check = sqlx::query_scalar::<_, bool>(
            "SELECT pg_backend_pid() = $1 AND NOT EXISTS (SELECT 1 \
             FROM unnest($2::bigint[], $3::bigint[], $4::int[]) AS w(c, o, s) \
             WHERE NOT EXISTS (SELECT 1 FROM pg_locks l \
             WHERE l.locktype = 'advisory' AND l.pid = $1 AND l.granted AND l.objsubid = w.s \
             AND l.classid = w.c::oid AND l.objid = w.o::oid \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())))",
        )
        .bind(self.pid)
        .bind(classids)
        .bind(objids)
        .bind(subids)
        .persistent(self.prepared)
        .fetch_one(&mut *conn);
        match tokio::time::timeout(LOCK_CHECK_TIMEOUT, check).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(lost(format!(
                "backend {} no longer holds it, or this connection now reaches another session",
                self.pid
            ))),
            Ok(Err(e)) => Err(lost(e.to_string())),
            Err(_) => Err(lost(format!(
                "no answer within {} s",
                LOCK_CHECK_TIMEOUT.as_secs()
            ))),
        }
    }

    /// The backend pid of the session holding the lock (for messages and tests).
    pub fn backend_pid(&self) -> i32 {
        self.pid
    }

    /// The redacted `MASTOMEDIA_LOCK_DATABASE_URL` when the lock was taken there, `None`
    /// when it lives on a connection of `DATABASE_URL` / `DB_HOST`.
    pub fn via(&self) -> Option<&str> {
        self.via.as_deref()
    }
}

/// The advisory locks of one job run ([`JobKey`]), and how they are taken:
///
/// - unsharded: the job's key (`advisory_key("prune")`, the key of every release before
///   shards) exclusively (`pg_try_advisory_lock`);
/// - shard K/N: the job's key in SHARED mode (`pg_try_advisory_lock_shared`), the shard's
///   own key `advisory_key("prune#K/N")` exclusively, and the int4 pair
///   `(low 32 bits of the job's key, N)` shared as the mark of the shard count.
///
/// So the shards of one job run side by side (shared locks do not conflict), two runs of
/// the same shard exclude each other (the shard key), and an unsharded run and any shard
/// exclude each other (exclusive against shared on the job key). Shards of another N would
/// overlap partitions: after taking its locks a shard looks in `pg_locks` for a count mark
/// of the job with another N and refuses when there is one (two such runs starting at the
/// same instant may both refuse; never both go on).
#[derive(Debug, Clone, PartialEq, Eq)]
struct LockSpec {
    /// For messages: `prune`, `prune shard 1/4`.
    name: String,
    /// The job's own name (`prune`).
    job: String,
    shard: Option<Shard>,
}

impl LockSpec {
    fn of(key: &JobKey) -> Self {
        Self {
            name: match key.shard() {
                None => key.job().to_owned(),
                Some(s) => format!("{} shard {s}", key.job()),
            },
            job: key.job().to_owned(),
            shard: key.shard(),
        }
    }

    /// A bigint key as `pg_locks` shows it.
    fn bigint(key: i64) -> (i64, i64, i32) {
        ((key >> 32) & 0xffff_ffff, key & 0xffff_ffff, 1)
    }

    /// The int4 pair marking shard count `n` of the job.
    fn count_mark(&self) -> (i32, i32) {
        (
            advisory_key(&self.job) as i32,
            self.shard.map_or(0, |s| s.count()) as i32,
        )
    }
}

/// Takes `spec`'s locks on `conn` (a session of its own, already proved not pooled)
/// without waiting, and proves them held. Errors: [`DbError::Locked`] (the same run, or
/// the same shard, holds it), [`DbError::LockConflict`] (see [`LockSpec`]),
/// [`DbError::LockLost`], a query error.
async fn lock_on(
    mut conn: sqlx::PgConnection,
    spec: &LockSpec,
    prepared: bool,
    via: Option<String>,
) -> Result<RunLock, DbError> {
    let job_key = advisory_key(&spec.job);
    let q = |what| move |e| DbError::query(what, e);
    let (pid, held) = match spec.shard {
        None => {
            let row =
                sqlx::query("SELECT pg_try_advisory_lock($1) AS got, pg_backend_pid() AS pid")
                    .bind(job_key)
                    .persistent(prepared)
                    .fetch_one(&mut conn)
                    .await
                    .map_err(q("taking the advisory lock"))?;
            if !row.get::<bool, _>("got") {
                // Held exclusively by another unsharded run, or shared by shards.
                let (c, o, _) = LockSpec::bigint(job_key);
                let shards: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
                     AND objsubid = 1 AND classid = $1::oid AND objid = $2::oid \
                     AND mode = 'ShareLock' AND granted \
                     AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))",
                )
                .bind(c)
                .bind(o)
                .persistent(prepared)
                .fetch_one(&mut conn)
                .await
                .map_err(q("reading who holds the advisory lock"))?;
                if shards {
                    return Err(DbError::LockConflict {
                        job: spec.name.clone(),
                        detail: format!(
                            "shards of mastomedia {} (--shard K/N) are running against this database, and an unsharded run would redo their work; try again when they have finished, or run as a shard too",
                            spec.job
                        ),
                    });
                }
                return Err(DbError::Locked(spec.name.clone()));
            }
            (row.get::<i32, _>("pid"), vec![LockSpec::bigint(job_key)])
        }
        Some(shard) => {
            let shard_key = advisory_key(&format!("{}#{shard}", spec.job));
            let (mark_class, mark_n) = spec.count_mark();
            let row = sqlx::query(
                "SELECT pg_try_advisory_lock_shared($1) AS job, pg_try_advisory_lock($2) AS shard, \
                 pg_try_advisory_lock_shared($3, $4) AS mark, pg_backend_pid() AS pid",
            )
            .bind(job_key)
            .bind(shard_key)
            .bind(mark_class)
            .bind(mark_n)
            .persistent(prepared)
            .fetch_one(&mut conn)
            .await
            .map_err(q("taking the advisory locks of the shard"))?;
            // Whatever was taken is released with the session when `conn` drops.
            if !row.get::<bool, _>("job") {
                return Err(DbError::LockConflict {
                    job: spec.name.clone(),
                    detail: format!(
                        "an unsharded mastomedia {} is running against this database (it holds the job's advisory lock); try again when it has finished",
                        spec.job
                    ),
                });
            }
            if !row.get::<bool, _>("shard") {
                return Err(DbError::Locked(spec.name.clone()));
            }
            let other: Option<i64> = sqlx::query_scalar(
                "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 \
                 AND classid = ($1::bigint & 4294967295)::oid AND objid <> ($2::bigint & 4294967295)::oid \
                 AND granted \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) LIMIT 1",
            )
            .bind(i64::from(mark_class))
            .bind(i64::from(mark_n))
            .persistent(prepared)
            .fetch_optional(&mut conn)
            .await
            .map_err(q("looking for shards of another count"))?;
            if let Some(n) = other {
                return Err(DbError::LockConflict {
                    job: spec.name.clone(),
                    detail: format!(
                        "shards of mastomedia {} with another number of shards (--shard K/{n}) are running against this database; their partitions overlap this one's, so every shard of one job must use the same N",
                        spec.job
                    ),
                });
            }
            let mark = (
                i64::from(mark_class) & 0xffff_ffff,
                i64::from(mark_n) & 0xffff_ffff,
                2,
            );
            (
                row.get::<i32, _>("pid"),
                vec![LockSpec::bigint(job_key), LockSpec::bigint(shard_key), mark],
            )
        }
    };
    let lock = RunLock {
        job: spec.name.clone(),
        held,
        pid,
        prepared,
        via,
        conn: tokio::sync::Mutex::new(conn),
    };
    // Behind a proxy that hands each statement to another session the lock protects
    // nothing: find out now, before any change, rather than at the first delete.
    lock.ensure_held().await?;
    Ok(lock)
}

/// The identity of the database a connection reaches: name, oid and the server's start
/// time (a replica or another cluster differs), so the lock connection can be proved to
/// reach the same database as the main one.
const IDENTITY_SQL: &str = "SELECT current_database()::text || '/' || \
    (SELECT oid FROM pg_database WHERE datname = current_database())::text || '/' || \
    extract(epoch FROM pg_postmaster_start_time())::text";

impl Db {
    /// Connects (at most `max_connections`, at least 2), finds out whether the connection
    /// reaches PostgreSQL through transaction pooling (`exec::probe_pooling`) and
    /// introspects the schema. With transaction pooling named prepared statements are
    /// turned off even when `PREPARED_STATEMENTS` is not `false` (with a warning): they
    /// cannot work there.
    pub async fn connect(cfg: &DatabaseConfig, max_connections: u32) -> Result<Self, DbError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(15))
            .connect_with(cfg.options.clone())
            .await
            .map_err(|source| DbError::Connect {
                target: cfg.display.clone(),
                source,
            })?;
        let pooling = {
            let probe = |e| DbError::query("finding out whether the connection is pooled", e);
            let mut a = pool.acquire().await.map_err(probe)?;
            let mut b = pool.acquire().await.map_err(probe)?;
            // A session pool with one server connection would make `b` wait for ever.
            tokio::time::timeout(LOCK_CHECK_TIMEOUT, exec::probe_pooling(&mut a, &mut b))
                .await
                .unwrap_or(Err(sqlx::Error::PoolTimedOut))
                .map_err(probe)?
        };
        let mut prepared = cfg.prepared_statements;
        if pooling == Pooling::Transaction && prepared {
            tracing::warn!(
                "{} reaches PostgreSQL through transaction pooling but PREPARED_STATEMENTS is not false: mastomedia uses no named prepared statement anyway; set PREPARED_STATEMENTS=false, as Mastodon itself needs it behind PgBouncer in transaction mode",
                cfg.display
            );
            prepared = false;
        }
        let schema = Schema::load(MastodonPool::new(&pool, prepared)).await?;
        Ok(Self {
            pool,
            schema,
            prepared,
            pooling,
            lock_target: cfg.lock.clone(),
        })
    }

    /// The executor for every query against Mastodon's database (inventory, sums, owner
    /// lookups, row clears): named prepared statements only when they are allowed
    /// ([`MastodonPool`]).
    pub fn pool(&self) -> MastodonPool<'_> {
        MastodonPool::new(&self.pool, self.prepared)
    }

    /// How `DATABASE_URL` / `DB_HOST` reaches PostgreSQL, as probed at connect.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// The redacted `MASTOMEDIA_LOCK_DATABASE_URL`, when set.
    pub fn lock_target(&self) -> Option<&str> {
        self.lock_target.as_ref().map(|t| t.display.as_str())
    }

    /// The introspected schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Takes the advisory lock for `job` (e.g. `prune`) without waiting and proves it is
    /// held ([`RunLock::ensure_held`]). Two runs of the same job against the same database
    /// never overlap while each checks the lock before its destructive steps. Where: on
    /// `MASTOMEDIA_LOCK_DATABASE_URL` when set (proved to be one session per connection
    /// and to reach the same database), else on a connection of the main pool unless that
    /// one is transaction-pooled. Errors: [`DbError::Locked`], [`DbError::LockLost`],
    /// [`DbError::LockUnavailable`] (transaction pooling and no usable lock URL),
    /// [`DbError::Connect`] (the lock URL does not answer).
    pub async fn lock(&self, job: &str) -> Result<RunLock, DbError> {
        self.lock_spec(&LockSpec {
            name: job.to_owned(),
            job: job.to_owned(),
            shard: None,
        })
        .await
    }

    /// [`Db::lock`] for a job run that may be one shard: without a shard exactly
    /// [`Db::lock`] of the job's name; with `--shard K/N` the job's lock shared plus the
    /// shard's own exclusively, plus a shared mark of N. So shards of one job run side by
    /// side (shared locks do not conflict); two runs of the same shard exclude each other
    /// (the shard key); an unsharded run and any shard exclude each other (exclusive
    /// against shared on the job key, the key every release before shards took); shards
    /// of another N refuse (their partitions overlap): after taking its locks a shard looks
    /// in `pg_locks` for the job's mark with another N. Keys: `advisory_key("<job>")`,
    /// `advisory_key("<job>#K/N")`, and the int4 pair `(low 32 bits of the job's key, N)`.
    /// Errors: [`Db::lock`]'s, and [`DbError::LockConflict`].
    pub async fn lock_job(&self, key: &JobKey) -> Result<RunLock, DbError> {
        self.lock_spec(&LockSpec::of(key)).await
    }

    async fn lock_spec(&self, spec: &LockSpec) -> Result<RunLock, DbError> {
        let job = spec.name.as_str();
        if let Some(target) = &self.lock_target {
            return self.lock_via(spec, target).await;
        }
        if self.pooling == Pooling::Transaction {
            return Err(DbError::LockUnavailable {
                job: job.to_owned(),
                detail: "DATABASE_URL / DB_HOST reaches PostgreSQL through transaction pooling (PgBouncer pool_mode = transaction), where a session advisory lock does not hold".into(),
            });
        }
        let conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| DbError::query("taking a connection for the advisory lock", e))?;
        // Detach: the lock lives with this session; dropping closes the connection.
        lock_on(conn.detach(), spec, self.prepared, None).await
    }

    /// Like [`Db::lock_job`], but for a run that changes nothing (`prune --dry-run`, `orphans`
    /// without `--delete`, or `--delete --dry-run`): when no lock can be had through
    /// transaction pooling ([`DbError::LockUnavailable`]), warns and returns `None`, as a
    /// read-only run cannot harm a concurrent one. `destructive` runs get [`Db::lock_job`]'s
    /// errors.
    pub async fn lock_for(
        &self,
        key: &JobKey,
        destructive: bool,
    ) -> Result<Option<RunLock>, DbError> {
        match self.lock_job(key).await {
            Ok(lock) => Ok(Some(lock)),
            Err(DbError::LockUnavailable { detail, job }) if !destructive => {
                tracing::warn!(
                    "running mastomedia {job} without its advisory lock, as this run changes nothing: {detail}. A run that deletes needs MASTOMEDIA_LOCK_DATABASE_URL (a connection straight to PostgreSQL)"
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Takes the lock on `MASTOMEDIA_LOCK_DATABASE_URL` after proving that it is one
    /// session per connection and reaches the same database as the main pool.
    async fn lock_via(
        &self,
        spec: &LockSpec,
        target: &LockDatabaseConfig,
    ) -> Result<RunLock, DbError> {
        let job = spec.name.as_str();
        let unavailable = |detail: String| DbError::LockUnavailable {
            job: job.to_owned(),
            detail,
        };
        let connect = |options: PgConnectOptions| async move {
            tokio::time::timeout(
                Duration::from_secs(15),
                sqlx::PgConnection::connect_with(&options),
            )
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut))
            .map_err(|source| DbError::Connect {
                target: format!("{} (MASTOMEDIA_LOCK_DATABASE_URL)", target.display),
                source,
            })
        };
        let mut a = connect(target.options.clone()).await?;
        let mut b = connect(target.options.clone()).await?;
        let pooling = tokio::time::timeout(LOCK_CHECK_TIMEOUT, exec::probe_pooling(&mut a, &mut b))
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut))
            .map_err(|e| DbError::query("probing MASTOMEDIA_LOCK_DATABASE_URL", e))?;
        let _ = b.close().await;
        if pooling == Pooling::Transaction {
            return Err(unavailable(format!(
                "MASTOMEDIA_LOCK_DATABASE_URL ({}) also reaches PostgreSQL through transaction pooling",
                target.display
            )));
        }
        let here: String = sqlx::query_scalar(IDENTITY_SQL)
            .persistent(self.prepared)
            .fetch_one(&mut a)
            .await
            .map_err(|e| {
                DbError::query("reading the database of MASTOMEDIA_LOCK_DATABASE_URL", e)
            })?;
        let main: String = sqlx::query_scalar(IDENTITY_SQL)
            .fetch_one(self.pool())
            .await
            .map_err(|e| DbError::query("reading the database of DATABASE_URL", e))?;
        if here != main {
            return Err(unavailable(format!(
                "MASTOMEDIA_LOCK_DATABASE_URL ({}) reaches another database or server than DATABASE_URL / DB_HOST, so its lock would not keep two runs against Mastodon's database apart",
                target.display
            )));
        }
        lock_on(a, spec, self.prepared, Some(target.display.clone())).await
    }

    /// The instance's `media_cache_retention_period` in days, `None` when unset, empty or
    /// not a positive integer (`docs/reference/tootctl-rules.md#retention-setting`). Read-only.
    pub async fn media_retention_days(&self) -> Result<Option<i64>, DbError> {
        if !self.schema.has("settings", "var") {
            return Ok(None);
        }
        let filter = if self.schema.settings_thing_type() {
            " AND thing_type IS NULL"
        } else {
            ""
        };
        let sql = format!(
            "SELECT value FROM settings WHERE var = 'media_cache_retention_period'{filter} ORDER BY id LIMIT 1"
        );
        let value: Option<Option<String>> = sqlx::query_scalar(&sql)
            .fetch_optional(self.pool())
            .await
            .map_err(|e| DbError::query("reading the media cache retention setting", e))?;
        let raw = value.flatten();
        let days = raw.as_deref().and_then(parse_retention_yaml);
        if let (Some(text), None) = (raw.as_deref(), days) {
            let shown = text.trim();
            if !shown.is_empty() && shown != "---" && shown != "--- ''" && shown != "--- \"\"" {
                tracing::warn!(
                    "the media cache retention setting holds {shown:?}, not a positive number of days; Mastodon treats it as unset, and so does mastomedia (--days or the default applies)"
                );
            }
        }
        Ok(days)
    }

    /// Checks that `current_user` may UPDATE every column in `columns` of `table`. Call
    /// before deleting anything. Errors: [`DbError::NoUpdatePrivilege`].
    pub async fn check_update_privilege(
        &self,
        table: &str,
        columns: &[String],
    ) -> Result<(), DbError> {
        let rows = sqlx::query(
            "SELECT current_user::text AS u, c AS col, has_column_privilege($1, c, 'UPDATE') AS ok \
             FROM unnest($2::text[]) AS c",
        )
        .bind(table)
        .bind(columns)
        .fetch_all(self.pool())
        .await
        .map_err(|e| DbError::query("checking UPDATE privileges", e))?;
        let mut user = String::new();
        let mut missing = Vec::new();
        for r in rows {
            user = r.get("u");
            if !r.get::<bool, _>("ok") {
                missing.push(r.get::<String, _>("col"));
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(DbError::NoUpdatePrivilege {
                user,
                table: table.to_owned(),
                columns: format!("{table}({})", missing.join(", ")),
            })
        }
    }
}

/// The key of the session-level advisory lock [`Db::lock`] takes for `job` (e.g. `prune`):
/// FNV-1a over `mastomedia:<job>`, stable across runs and versions, so an operator (or a
/// test) can check or hold it with `pg_try_advisory_lock(<key>)`.
pub fn advisory_key(job: &str) -> i64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in format!("mastomedia:{job}").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h as i64
}

/// Parses Mastodon's YAML-serialised setting value leniently: strips `---`, `...` and
/// whitespace, reads an integer; `None` for anything else or ≤ 0 (`docs/reference/tootctl-rules.md#retention-setting`).
pub fn parse_retention_yaml(value: &str) -> Option<i64> {
    let v = value.trim();
    let v = v.strip_prefix("---").unwrap_or(v).trim();
    let v = v.strip_suffix("...").unwrap_or(v).trim();
    v.parse::<i64>().ok().filter(|d| *d > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_yaml_values() {
        let cases = [
            ("--- 30\n", Some(30)),
            ("--- 7\n...\n", Some(7)),
            ("--- ''\n", None),
            ("--- 0\n", None),
            ("--- -3\n", None),
            ("--- '14'\n", None),
            ("", None),
            ("--- thirty\n", None),
        ];
        for (v, want) in cases {
            assert_eq!(parse_retention_yaml(v), want, "{v:?}");
        }
    }

    #[test]
    fn advisory_keys_differ_per_job() {
        assert_ne!(advisory_key("prune"), advisory_key("orphans"));
        assert_eq!(advisory_key("prune"), advisory_key("prune"));
    }
}
