//! Where a journal lives: `--journal PATH` (SQLite) or `--journal postgres://…`
//! (`postgresql://` too), also from `MASTOMEDIA_JOURNAL`. The URL's password (in the
//! authority or as `?password=`) is never shown: [`JournalLocation::shown`] is rebuilt from
//! the parsed user, host, port and database only.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;

use super::JournalError;

/// A journal's location.
#[derive(Debug, Clone)]
pub enum JournalLocation {
    /// A SQLite file (created with its folder when a run opens it).
    File(PathBuf),
    /// A PostgreSQL database; the journal lives in its schema `mastomedia`.
    Postgres(Box<PgLocation>),
}

/// A parsed PostgreSQL journal URL and its password-free form.
#[derive(Clone)]
pub struct PgLocation {
    pub(super) options: PgConnectOptions,
    shown: String,
}

impl std::fmt::Debug for PgLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl PgLocation {
    /// `postgres://user@host:port/db (schema mastomedia)`: never the password.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// The password-free form of a URL that did not parse: scheme and host only, the
/// userinfo, path and query (which may carry `password=`) left out. Everything up to the
/// last `@` goes, not only up to the first `/`: an unparseable URL is often one whose
/// password holds an unencoded `/`, `#` or `?` (`postgres://mm:pa/ss@db/j`), and there the
/// authority seems to end inside the password.
fn redacted(url: &str) -> String {
    let shown = match url.split_once("://") {
        Some((scheme, rest)) => match rest.rfind('@') {
            Some(at) => format!("{scheme}://[hidden]@{}", &rest[at + 1..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    };
    match shown.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let tail = if end < rest.len() { "/…" } else { "" };
            format!("{scheme}://{}{tail}", &rest[..end])
        }
        None => "[hidden]".to_owned(),
    }
}

impl JournalLocation {
    /// Reads `--journal`'s value: a `postgres://` or `postgresql://` URL (checked here, so a
    /// bad one is a usage error before anything runs), else a file path. Errors:
    /// [`JournalError::BadLocation`] (exit 2) naming the URL without its credentials; also
    /// an empty value and a URL of another scheme (`mysql://`, `sqlite://`).
    pub fn parse(arg: &OsStr) -> Result<Self, JournalError> {
        let Some(s) = arg.to_str() else {
            return Ok(Self::File(PathBuf::from(arg)));
        };
        let s = s.trim();
        if s.is_empty() {
            return Err(JournalError::BadLocation {
                shown: "\"\"".into(),
                reason: "empty: pass a file path or a postgres:// URL".into(),
            });
        }
        let scheme = s
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("postgres" | "postgresql") => {
                let options = PgConnectOptions::from_str(s).map_err(|e| JournalError::BadLocation {
                    shown: redacted(s),
                    reason: format!(
                        "not a valid PostgreSQL URL ({}): use postgres://USER:PASSWORD@HOST:PORT/DATABASE",
                        reason_of(&e)
                    ),
                })?;
                let shown = format!(
                    "postgres://{}@{}:{}/{} (schema {})",
                    options.get_username(),
                    options.get_host(),
                    options.get_port(),
                    options.get_database().unwrap_or(options.get_username()),
                    super::postgres::SCHEMA
                );
                Ok(Self::Postgres(Box::new(PgLocation { options, shown })))
            }
            Some(other) if !s.starts_with('/') && !s.starts_with('.') => {
                Err(JournalError::BadLocation {
                    shown: redacted(s),
                    reason: format!(
                        "{other}:// is not a journal: pass a file path (SQLite) or a postgres:// URL"
                    ),
                })
            }
            _ => Ok(Self::File(PathBuf::from(s))),
        }
    }

    /// Like [`JournalLocation::parse`] for an owned value (clap's `OsString`).
    pub fn from_arg(arg: &OsString) -> Result<Self, JournalError> {
        Self::parse(arg.as_os_str())
    }

    /// The location for messages: the path, or the URL without its password.
    pub fn shown(&self) -> String {
        match self {
            Self::File(p) => p.display().to_string(),
            Self::Postgres(pg) => pg.shown.clone(),
        }
    }
}

/// sqlx's reason for refusing a URL, without the URL itself (which its message may
/// quote).
fn reason_of(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Configuration(inner) => {
            let text = inner.to_string();
            // url::ParseError's messages name the problem only ("invalid port number").
            if text.contains("://") || text.contains('@') {
                "unparseable".to_owned()
            } else {
                text
            }
        }
        _ => "unparseable".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths_are_told_apart_and_never_show_a_password() {
        let ok = [
            ("/var/lib/mm/j.sqlite", None),
            ("j.sqlite", None),
            (
                "postgres://mm:s3cret@db.example:6432/journal",
                Some("postgres://mm@db.example:6432/journal (schema mastomedia)"),
            ),
            (
                "postgresql://mm@db.example/journal?password=s3cret&sslmode=require",
                Some("postgres://mm@db.example:5432/journal (schema mastomedia)"),
            ),
        ];
        for (arg, shown) in ok {
            let loc = JournalLocation::parse(OsStr::new(arg)).unwrap();
            match (&loc, shown) {
                (JournalLocation::File(p), None) => assert_eq!(p.to_str(), Some(arg)),
                (JournalLocation::Postgres(pg), Some(want)) => {
                    assert_eq!(pg.shown(), want);
                    assert!(!format!("{loc:?} {}", loc.shown()).contains("s3cret"));
                }
                _ => panic!("{arg}: {loc:?}"),
            }
        }
        let bad = [
            "postgres://mm:s3cret@db.example:notaport/journal",
            "postgresql://mm:s3cret@[::1/journal",
            // A password with an unencoded `/`, `#` or `?`: the URL parser takes `s3`
            // for the port; no part of the password may show.
            "postgres://mm:s3cret/x@db.example:5432/journal",
            "postgres://mm:s3cret#x@db.example:5432/journal",
            "postgres://mm:s3cret?x@db.example:5432/journal",
            "mysql://mm:s3cret@db.example/journal",
            "",
        ];
        for arg in bad {
            let e = JournalLocation::parse(OsStr::new(arg)).unwrap_err();
            assert!(e.is_usage(), "{arg}: {e}");
            let text = e.to_string();
            assert!(!text.contains("s3cr"), "{text}");
            assert!(text.starts_with("--journal "), "{text}");
        }
    }
}
