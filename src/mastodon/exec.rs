//! The executor every query against Mastodon's database goes through ([`MastodonPool`]),
//! and the probe that tells whether the connection reaches PostgreSQL through transaction
//! pooling ([`Pooling`]).
//!
//! With `PREPARED_STATEMENTS=false` (what Mastodon's docs require behind PgBouncer in
//! `pool_mode = transaction`) no query may create a named prepared statement: sqlx 0.8
//! names every statement `sqlx_s_<n>` even with a statement cache of 0, and the next
//! client handed the same server session fails with `prepared statement "sqlx_s_1"
//! already exists`. [`MastodonPool`] marks each query non-persistent, which sqlx sends as
//! the unnamed statement (`Parse` with an empty name). sqlx parses and binds in two
//! round trips (each ending in `Sync`), and a transaction pooler may hand the server
//! session to another client between them, whose own unnamed statement ours would then
//! bind to; so each query also runs inside its own `BEGIN … COMMIT`, which pins one server
//! session for both round trips (PgBouncer releases a session only when it reports idle).

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt as _, TryStreamExt as _};
use sqlx::postgres::{PgConnection, PgPool, PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Describe, Either, Execute, Executor, Postgres};

/// How the database connection reaches PostgreSQL's sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// One server session per connection for as long as it lives: PostgreSQL itself, or a
    /// pooler in session mode. A session advisory lock holds.
    Session,
    /// Statements of one connection run on whichever server session is free (PgBouncer
    /// `pool_mode = transaction` or `statement`): session state, prepared statements and
    /// session advisory locks do not survive from one transaction to the next.
    Transaction,
}

impl Pooling {
    /// A short phrase for messages (`transaction pooling`, `one session per connection`).
    pub fn describe(self) -> &'static str {
        match self {
            Pooling::Session => "one session per connection",
            Pooling::Transaction => "transaction pooling",
        }
    }
}

/// Finds out whether two connections of a pool reach PostgreSQL through transaction
/// pooling: `a` reads its backend pid; `b` opens a transaction (which pins a server session
/// for it) and reads its own; `a` reads its pid again while `b`'s transaction is open.
/// Transaction pooling shows as `b` being handed `a`'s server session, or `a` landing on
/// another session the second time. Only simple-protocol statements are sent (no prepared
/// statement of any kind). Best effort: a busy pooler that happens to hand `a` the same
/// session again is not caught here, which is why [`super::RunLock::ensure_held`] also
/// compares the backend pid before every destructive step.
pub(crate) async fn probe_pooling(
    a: &mut PgConnection,
    b: &mut PgConnection,
) -> Result<Pooling, sqlx::Error> {
    let first = backend_pid(a).await?;
    b.execute("BEGIN").await?;
    let other = backend_pid(b).await;
    let again = backend_pid(a).await;
    let end = b.execute("ROLLBACK").await;
    let (other, again) = (other?, again?);
    end?;
    Ok(if other == first || again != first {
        Pooling::Transaction
    } else {
        Pooling::Session
    })
}

/// `pg_backend_pid()` through the simple query protocol (one message, no statement).
async fn backend_pid(conn: &mut PgConnection) -> Result<i32, sqlx::Error> {
    use sqlx::Row as _;
    let row = conn.fetch_one("SELECT pg_backend_pid()").await?;
    row.try_get::<i32, _>(0)
}

/// The executor for Mastodon's database: `&PgPool` when prepared statements are allowed;
/// with `PREPARED_STATEMENTS=false` (or transaction pooling detected) every query is an
/// unnamed statement in a transaction of its own (module docs). Results of a query are
/// then read whole before they are handed on (every query of ours is bounded: keyset
/// pages, batch lookups, sums). `prepare` and `describe` are refused in that mode, as
/// they would create a named statement.
#[derive(Debug, Clone, Copy)]
pub struct MastodonPool<'p> {
    pool: &'p PgPool,
    prepared: bool,
}

impl<'p> MastodonPool<'p> {
    pub(crate) fn new(pool: &'p PgPool, prepared: bool) -> Self {
        Self { pool, prepared }
    }

    /// Whether named prepared statements are used.
    pub fn prepared_statements(&self) -> bool {
        self.prepared
    }
}

/// A query marked non-persistent: sqlx sends it as the unnamed statement.
struct Unnamed<E>(E);

impl<'q, E: Execute<'q, Postgres>> Execute<'q, Postgres> for Unnamed<E> {
    fn sql(&self) -> &'q str {
        self.0.sql()
    }

    fn statement(&self) -> Option<&PgStatement<'q>> {
        self.0.statement()
    }

    fn take_arguments(
        &mut self,
    ) -> Result<Option<sqlx::postgres::PgArguments>, sqlx::error::BoxDynError> {
        self.0.take_arguments()
    }

    fn persistent(&self) -> bool {
        false
    }
}

/// Runs `query` unnamed inside `BEGIN … COMMIT` on one pooled connection and collects its
/// results; rolls back on any error.
async fn in_transaction<'q, E>(
    pool: PgPool,
    query: E,
) -> Result<Vec<Either<PgQueryResult, PgRow>>, sqlx::Error>
where
    E: 'q + Execute<'q, Postgres>,
{
    let mut tx = pool.begin().await?;
    let out: Result<Vec<_>, _> = (&mut *tx).fetch_many(Unnamed(query)).try_collect().await;
    match out {
        Ok(items) => {
            tx.commit().await?;
            Ok(items)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

fn named_refused() -> sqlx::Error {
    sqlx::Error::Configuration(
        "PREPARED_STATEMENTS=false (or transaction pooling): mastomedia creates no named prepared statement".into(),
    )
}

impl<'p> Executor<'p> for MastodonPool<'p> {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        if self.prepared {
            return self.pool.fetch_many(query);
        }
        let pool = self.pool.clone();
        futures::stream::once(in_transaction(pool, query))
            .map_ok(|items| futures::stream::iter(items.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        if self.prepared {
            return self.pool.fetch_optional(query);
        }
        let pool = self.pool.clone();
        Box::pin(async move {
            let items = in_transaction(pool, query).await?;
            Ok(items.into_iter().find_map(|step| match step {
                Either::Right(row) => Some(row),
                Either::Left(_) => None,
            }))
        })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement<'q>, sqlx::Error>>
    where
        'p: 'e,
    {
        if self.prepared {
            return self.pool.prepare_with(sql, parameters);
        }
        Box::pin(async { Err(named_refused()) })
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>>
    where
        'p: 'e,
    {
        if self.prepared {
            return self.pool.describe(sql);
        }
        Box::pin(async { Err(named_refused()) })
    }
}
