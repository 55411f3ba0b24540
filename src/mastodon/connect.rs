//! [`DatabaseConfig`]: the connection options of Mastodon's database (and of the optional
//! lock connection), built from the plain settings `src/config/mod.rs` reads from
//! `.env.production` (`DATABASE_URL`, or `DB_HOST`/`DB_PORT`/`DB_USER`/`DB_PASS`/`DB_NAME`/
//! `DB_SSLMODE`; `PREPARED_STATEMENTS`; `MASTOMEDIA_LOCK_DATABASE_URL`). Only this module
//! turns them into sqlx options, so the configuration layer needs no sqlx.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// Connection settings for Mastodon's PostgreSQL database (§5.4).
#[derive(Clone)]
pub struct DatabaseConfig {
    /// Full connection options (may hold the password).
    pub options: PgConnectOptions,
    /// `postgres://user@host:port/db`, safe to log.
    pub display: String,
    /// `PREPARED_STATEMENTS` (Mastodon's setting, default true): `false` means no query may
    /// use a named prepared statement, as PgBouncer in transaction pooling requires; every
    /// query is then sent as an unnamed statement inside its own transaction.
    pub prepared_statements: bool,
    /// `MASTOMEDIA_LOCK_DATABASE_URL`: a connection straight to PostgreSQL (or a
    /// session-mode pool) on which the advisory lock is taken when `DATABASE_URL` /
    /// `DB_HOST` reaches the database through transaction pooling. `None` when unset.
    pub lock: Option<LockDatabaseConfig>,
}

/// The connection [`DatabaseConfig::lock`] names (`MASTOMEDIA_LOCK_DATABASE_URL`).
#[derive(Clone)]
pub struct LockDatabaseConfig {
    /// Full connection options (may hold the password).
    pub options: PgConnectOptions,
    /// `postgres://user@host:port/db`, safe to log.
    pub display: String,
}

impl std::fmt::Debug for LockDatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockDatabaseConfig")
            .field("display", &self.display)
            .finish_non_exhaustive()
    }
}

/// `postgres://user@host:port/db` of `options`: no password.
fn display_target(options: &PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    )
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("display", &self.display)
            .field("prepared_statements", &self.prepared_statements)
            .field("lock", &self.lock)
            .finish_non_exhaustive()
    }
}

/// The database settings of `.env.production`, with Mastodon's defaults already applied by
/// the configuration layer. Borrowed; nothing here is validated yet.
#[derive(Clone, Copy)]
pub struct DatabaseSettings<'a> {
    /// `DATABASE_URL`: when set, it wins over every `DB_*` variable (as Rails does).
    pub url: Option<&'a str>,
    /// `DB_HOST` (default `localhost`; a path means a Unix socket folder).
    pub host: &'a str,
    /// `DB_PORT` (default 5432), already checked to be 1–65535.
    pub port: u16,
    /// `DB_USER` (default `mastodon`).
    pub user: &'a str,
    /// `DB_NAME` (default `mastodon_production`).
    pub name: &'a str,
    /// `DB_PASS`, when set and not empty (already checked for NUL bytes).
    pub password: Option<&'a str>,
    /// `DB_SSLMODE` (default `prefer`).
    pub ssl_mode: &'a str,
    /// `PREPARED_STATEMENTS` is not `false`.
    pub prepared_statements: bool,
    /// `MASTOMEDIA_LOCK_DATABASE_URL`.
    pub lock_url: Option<&'a str>,
}

/// A database setting that cannot be used: the variable, its value as it may be shown
/// (`[redacted]` for URLs and passwords) and what to do. The configuration layer turns it
/// into its usage error (exit 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSetting {
    /// The variable's name.
    pub var: &'static str,
    /// The offending value, never a secret.
    pub value: String,
    /// What to do.
    pub fix: String,
}

impl DatabaseConfig {
    /// Builds the connection options from `s`: the URL when given, else the `DB_*` parts;
    /// `application_name=mastomedia`; no statement cache when prepared statements are off
    /// (PgBouncer in transaction pooling). Errors name the variable and the fix.
    pub fn from_settings(s: DatabaseSettings<'_>) -> Result<Self, InvalidSetting> {
        let mut options = if let Some(url) = s.url {
            PgConnectOptions::from_str(url).map_err(|_| InvalidSetting {
                var: "DATABASE_URL",
                value: "[redacted]".into(),
                fix: "expected postgres://user:password@host:port/database".into(),
            })?
        } else {
            let mut o = PgConnectOptions::new_without_pgpass()
                .host(s.host)
                .port(s.port)
                .username(s.user)
                .database(s.name);
            if let Some(pass) = s.password {
                o = o.password(pass);
            }
            let ssl = PgSslMode::from_str(s.ssl_mode).map_err(|_| InvalidSetting {
                var: "DB_SSLMODE",
                value: s.ssl_mode.to_owned(),
                fix: "use one of disable, allow, prefer, require, verify-ca, verify-full".into(),
            })?;
            o.ssl_mode(ssl)
        };
        let prepared_statements = s.prepared_statements;
        if !prepared_statements {
            options = options.statement_cache_capacity(0);
        }
        options = options.application_name("mastomedia");
        let lock = match s.lock_url {
            None => None,
            Some(url) => {
                let mut lock = PgConnectOptions::from_str(url).map_err(|_| InvalidSetting {
                    var: "MASTOMEDIA_LOCK_DATABASE_URL",
                    value: "[redacted]".into(),
                    fix: "expected postgres://user:password@host:port/database, reaching PostgreSQL itself (not PgBouncer in transaction pooling)".into(),
                })?;
                if !prepared_statements {
                    lock = lock.statement_cache_capacity(0);
                }
                let lock = lock.application_name("mastomedia");
                Some(LockDatabaseConfig {
                    display: display_target(&lock),
                    options: lock,
                })
            }
        };
        Ok(DatabaseConfig {
            display: display_target(&options),
            options,
            prepared_statements,
            lock,
        })
    }
}
