//! `doctor`'s database checks: `database` (reachable, Mastodon version, the columns we
//! need), `locking` (the advisory lock that keeps two destructive runs apart, issue 9.1)
//! and `retention` (the media cache retention setting). Returns
//! [`Check`](crate::model::check::Check)s; the wording of the report is `report::doctor`'s.
//!
//! Must not: write to the database (the `doctor` lock is taken and released at once).

use std::future::Future;
use std::time::Duration;

use super::{Db, DbError, Pooling};
use crate::model::check::Checks;

/// How long `doctor` waits for the database to answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs the database checks on the connection `connect` yields (given up after
/// [`CONNECT_TIMEOUT`]); `display` is the target as shown (no password). Appends
/// `database`, `locking` and `retention`.
pub async fn database(
    connect: impl Future<Output = Result<Db, DbError>>,
    display: &str,
    c: &mut Checks,
) {
    let db = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Err(_) => {
            c.fail(
                "database",
                format!("no answer from {display} within 20 s"),
                "check DB_HOST/DB_PORT (or DATABASE_URL) and that PostgreSQL is running",
            );
            c.skip("locking", "the database is not reachable");
            c.skip("retention", "the database is not reachable");
            return;
        }
        Ok(Err(e)) => {
            c.fail(
                "database",
                e.to_string(),
                "check DB_HOST/DB_PORT/DB_USER/DB_PASS/DB_NAME (or DATABASE_URL) and that PostgreSQL is running",
            );
            c.skip("locking", "the database is not reachable");
            c.skip("retention", "the database is not reachable");
            return;
        }
        Ok(Ok(db)) => db,
    };
    let s = db.schema();
    c.ok(
        "database",
        format!(
            "{display} reachable ({}); Mastodon {} (schema_migrations {}); the media columns mastomedia needs are present",
            db.pooling().describe(),
            s.version_label(),
            s.migration_version.as_deref().unwrap_or("?")
        ),
    );
    locking(&db, c).await;
    match db.media_retention_days().await {
        Ok(Some(d)) => c.ok("retention", format!("media cache retention period: {d} days")),
        Ok(None) => c.warn(
            "retention",
            "no media cache retention period is set: Mastodon keeps remote media forever (mastomedia prune defaults to 7 days)",
            "set it under Administration → Server settings → Content retention, or pass prune --days",
        ),
        Err(e) => c.warn("retention", e.to_string(), "check the database user's SELECT on settings"),
    }
}

/// Whether the advisory lock that keeps two prunes (or orphan deletions) apart can be
/// taken and proved held: on `MASTOMEDIA_LOCK_DATABASE_URL` when set, else on the main
/// connection unless it is transaction-pooled (issue 9.1). Takes and releases the lock of
/// the job `doctor`, which no other run uses.
async fn locking(db: &Db, c: &mut Checks) {
    let pooled = db.pooling() == Pooling::Transaction;
    match db.lock("doctor").await {
        Ok(lock) => {
            let detail = match (lock.via(), pooled) {
                (Some(via), true) => format!(
                    "DATABASE_URL / DB_HOST is behind transaction pooling; the advisory lock is taken and held on MASTOMEDIA_LOCK_DATABASE_URL ({via})"
                ),
                (Some(via), false) => format!(
                    "the advisory lock is taken and held on MASTOMEDIA_LOCK_DATABASE_URL ({via})"
                ),
                (None, _) => "an advisory lock is taken and held on a session of its own (PostgreSQL directly or session pooling)".to_owned(),
            };
            c.ok("locking", detail);
        }
        Err(DbError::LockUnavailable { detail, .. }) => c.fail(
            "locking",
            format!("{detail}: prune and orphans --delete refuse to run (exit 3); du, orphans and prune --dry-run run with a warning"),
            "set MASTOMEDIA_LOCK_DATABASE_URL to a connection straight to PostgreSQL (bypassing PgBouncer), e.g. postgres://mastodon:PASSWORD@127.0.0.1:5432/mastodon_production, or use pool_mode = session",
        ),
        Err(e) => c.fail(
            "locking",
            e.to_string(),
            "check MASTOMEDIA_LOCK_DATABASE_URL, or point DATABASE_URL / DB_HOST at PostgreSQL itself",
        ),
    }
}
