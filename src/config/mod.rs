//! Configuration: Mastodon's `.env.production`, overridden by the process environment,
//! validated into one [`Config`].
//!
//! Owns: reading the env file (dotenv syntax, as Mastodon's Ruby dotenv reads it), the
//! defaults Mastodon applies (`docs/reference/env-file.md`), and the redaction of secrets.
//! Must not: be read by anything but `commands/`, open connections, or print secrets.

mod linode;
pub mod settings;

use crate::journal::JournalError;
pub use crate::journal::JournalLocation;
use crate::mastodon::DatabaseSettings;
pub use crate::mastodon::{DatabaseConfig, LockDatabaseConfig};
pub use crate::model::{Secret, without_userinfo};
pub use crate::store::s3::{DeleteChecksum, S3Config};
pub use linode::LinodeConfig;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::plan::layout::KeyPrefix;

/// How an invalid value appears in an error: quoted, and only its first line. A value
/// that runs over several lines comes from an unterminated quote, which swallows the lines
/// after it, secrets included (`DB_PASS=…`): those lines are never printed, only counted.
fn shown_value(value: &str) -> String {
    match value.split_once('\n') {
        None => format!("{value:?}"),
        Some((first, rest)) => format!(
            "{first:?}… (the value runs on over {} more line(s), not shown: is its closing quote missing?)",
            rest.lines().count().max(1)
        ),
    }
}

/// A configuration problem: the message names the variable (or file) and says what to fix.
/// Maps to exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The env file could not be read.
    #[error(
        "cannot read env file {path}: {source}. Pass --env-file with the path of Mastodon's .env.production (e.g. /home/mastodon/live/.env.production)"
    )]
    EnvFileUnreadable {
        /// The path tried.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line of the env file does not parse.
    #[error(
        "{path}: {detail}. Fix that line: each line must be KEY=value, `export KEY=value` or a # comment"
    )]
    EnvFileSyntax {
        /// The env file.
        path: PathBuf,
        /// What the parser said (with the line).
        detail: String,
    },
    /// A required variable is missing.
    #[error("{var} is not set: {fix}")]
    Missing {
        /// The variable name.
        var: &'static str,
        /// What to do.
        fix: String,
    },
    /// A variable has a value we cannot use.
    #[error("{var}={} is invalid: {fix}", shown_value(value))]
    Invalid {
        /// The variable name.
        var: &'static str,
        /// The offending value (never a secret).
        value: String,
        /// What to do.
        fix: String,
    },
    /// The configured storage is one mastomedia does not support.
    #[error("{0}")]
    Unsupported(String),
}

/// Where Mastodon's media lives.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // built once per run; boxing buys nothing
pub enum StorageConfig {
    /// `S3_ENABLED=true`.
    S3(S3Config),
    /// Local files below `PAPERCLIP_ROOT_PATH`.
    Filesystem(FsConfig),
}

/// Filesystem storage (`docs/reference/env-file.md#filesystem`).
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// `PAPERCLIP_ROOT_PATH` (default `<dir of the env file>/public/system`), normalised.
    pub root: PathBuf,
}

/// The validated configuration every command starts from.
#[derive(Debug, Clone)]
pub struct Config {
    /// The env file that was read.
    pub env_file: PathBuf,
    /// Mastodon's database.
    pub database: DatabaseConfig,
    /// Mastodon's media storage.
    pub storage: StorageConfig,
    /// `MASTOMEDIA_JOURNAL`: the journal of migrate, orphans and prune when `--journal` is
    /// not given (`None`: their default SQLite files).
    pub journal: Option<JournalLocation>,
}

/// Variables whose values are never printed.
pub const SECRET_VARS: &[&str] = &[
    "AWS_SECRET_ACCESS_KEY",
    "DB_PASS",
    "DATABASE_URL",
    "MASTOMEDIA_LOCK_DATABASE_URL",
    "REPLICA_DATABASE_URL",
    "SECRET_KEY_BASE",
    "OTP_SECRET",
    "LINODE_TOKEN",
    "SMTP_PASSWORD",
    "VAPID_PRIVATE_KEY",
    "ACTIVE_RECORD_ENCRYPTION_PRIMARY_KEY",
];

/// The largest `S3_RETRY_LIMIT` accepted: more retries only hide a broken provider (and
/// the attempt count must fit the SDK's `u32` after adding the first attempt).
const MAX_RETRY_LIMIT: u32 = 100;

/// Raw variables: the env file's pairs overridden by the process environment.
#[derive(Debug, Default, Clone)]
pub struct Vars(HashMap<String, String>);

impl Vars {
    /// Reads `path` (dotenv syntax) and overlays `process_env`. Errors: unreadable file,
    /// a line that does not parse (with its line number).
    pub fn load(
        path: &Path,
        process_env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::EnvFileUnreadable {
                path: path.to_owned(),
                source,
            })?;
        let mut map = HashMap::new();
        // A UTF-8 byte-order mark (Windows editors) is not part of the first key.
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        // dotenvy reports the failing line's content in its error; point at it by number too.
        let text = quote_bare_values(text);
        for item in dotenvy::from_read_iter(text.as_bytes()) {
            match item {
                Ok((k, v)) => {
                    map.insert(k, v);
                }
                Err(e) => {
                    return Err(ConfigError::EnvFileSyntax {
                        path: path.to_owned(),
                        detail: describe_parse_error(&text, &e),
                    });
                }
            }
        }
        map.extend(process_env);
        Ok(Self(map))
    }

    /// Builds from explicit pairs (tests, or an environment-only setup).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// The value of `var`, `None` when unset. An empty value is returned as `Some("")`.
    pub fn raw(&self, var: &str) -> Option<&str> {
        self.0.get(var).map(String::as_str)
    }

    /// The value with surrounding whitespace trimmed, `None` when unset or blank.
    pub fn get(&self, var: &str) -> Option<&str> {
        self.raw(var).map(str::trim).filter(|v| !v.is_empty())
    }

    fn flag(&self, var: &str) -> bool {
        self.get(var) == Some("true")
    }

    fn number<T: FromStr>(&self, var: &'static str, fix: &str) -> Result<Option<T>, ConfigError> {
        match self.get(var) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| ConfigError::Invalid {
                var,
                value: v.to_owned(),
                fix: fix.to_owned(),
            }),
        }
    }
}

/// Ruby's dotenv (which Mastodon uses) accepts unquoted values with spaces, such as
/// `SMTP_FROM_ADDRESS=Mastodon <notifications@example.com>`; dotenvy does not. Quote such
/// values (dropping a trailing ` # comment`, as both parsers do) before dotenvy reads the
/// text. Lines that are already quoted, comments and blank lines are left as they are.
fn quote_bare_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    // The quote of a value that runs over several lines, while inside it: those lines are
    // value text, never `KEY=value` lines, and are copied as they are.
    let mut open: Option<char> = None;
    for line in text.split_inclusive('\n') {
        let (body, newline) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        if let Some(q) = open {
            if closes(body, q) {
                open = None;
            }
            out.push_str(line);
            continue;
        }
        if let Some((_, value)) = body.split_once('=') {
            let value = value.trim_start();
            if let Some(q) = value.chars().next().filter(|c| *c == '"' || *c == '\'')
                && !closes(&value[1..], q)
                && !body.trim_start().starts_with('#')
            {
                open = Some(q);
                out.push_str(line);
                continue;
            }
        }
        let rest = body.trim_start();
        let rest = rest.strip_prefix("export ").map_or(rest, str::trim_start);
        let quoted = match rest.split_once('=') {
            Some((key, value))
                if !key.is_empty()
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') =>
            {
                let value = value.trim_start();
                let value = match value.find(" #").or_else(|| value.find("\t#")) {
                    Some(i) => &value[..i],
                    None => value,
                }
                .trim_end();
                let bare = !value.starts_with(['\'', '"']);
                if bare && value.contains(char::is_whitespace) {
                    let q = if value.contains('\'') {
                        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
                    } else {
                        format!("'{value}'")
                    };
                    Some(format!("{key}={q}"))
                } else {
                    None
                }
            }
            _ => None,
        };
        match quoted {
            Some(q) => {
                out.push_str(&q);
                out.push_str(newline);
            }
            None => out.push_str(line),
        }
    }
    out
}

/// Whether `text` (the rest of a value after its opening quote `q`) holds the closing
/// quote: an unescaped `"` for double quotes, any `'` for single quotes.
fn closes(text: &str, q: char) -> bool {
    let mut escaped = false;
    for c in text.chars() {
        if q == '"' && c == '\\' && !escaped {
            escaped = true;
            continue;
        }
        if c == q && !escaped {
            return true;
        }
        escaped = false;
    }
    false
}

/// dotenvy echoes the offending line, which may hold a secret: report its line number
/// and column instead, never its text.
fn describe_parse_error(text: &str, e: &dotenvy::Error) -> String {
    match e {
        dotenvy::Error::LineParse(line, index) => {
            // The "line" may span several lines (an unterminated quote): find its first one.
            let first = line.lines().next().unwrap_or("").trim_end();
            let number = text
                .lines()
                .position(|l| !first.is_empty() && l.trim_end() == first)
                .map_or_else(|| "a line".to_owned(), |n| format!("line {}", n + 1));
            format!("{number} does not parse (column {})", index + 1)
        }
        dotenvy::Error::EnvVar(_) => "a ${VARIABLE} substitution failed".to_owned(),
        dotenvy::Error::Io(io) => format!("read error: {io}"),
        _ => "a line does not parse".to_owned(),
    }
}

impl Config {
    /// The `S3_KEY_PREFIX` keys carry in this storage: the configured one on S3, none on the
    /// filesystem (Paperclip's paths there start at the class).
    pub fn key_prefix(&self) -> KeyPrefix {
        match &self.storage {
            StorageConfig::S3(s3) => s3.key_prefix.clone(),
            StorageConfig::Filesystem(_) => KeyPrefix::default(),
        }
    }

    /// Reads the env file and the process environment into a validated `Config`.
    pub fn load(env_file: &Path) -> Result<Self, ConfigError> {
        Self::load_with_vars(env_file).map(|(c, _)| c)
    }

    /// Like [`Config::load`], also returning the merged raw variables.
    pub fn load_with_vars(env_file: &Path) -> Result<(Self, Vars), ConfigError> {
        let vars = Vars::load(env_file, std::env::vars())?;
        let cfg = Self::from_vars(env_file, &vars)?;
        Ok((cfg, vars))
    }

    /// Validates `vars` (already merged) into a `Config`. `env_file` locates the default
    /// `public/system` root.
    pub fn from_vars(env_file: &Path, vars: &Vars) -> Result<Self, ConfigError> {
        let database = database_config(vars)?;
        let storage = if vars.get("S3_ENABLED").is_some() && !vars.flag("S3_ENABLED") {
            if vars.get("S3_ENABLED") != Some("false") {
                return Err(ConfigError::Invalid {
                    var: "S3_ENABLED",
                    value: vars.get("S3_ENABLED").unwrap_or("").to_owned(),
                    fix: "Mastodon only recognises exactly `true`; set S3_ENABLED=true for object storage or remove it for local files".into(),
                });
            }
            filesystem_config(env_file, vars)?
        } else if vars.flag("S3_ENABLED") {
            StorageConfig::S3(s3_config(vars)?)
        } else if vars.flag("SWIFT_ENABLED") {
            return Err(ConfigError::Unsupported(
                "SWIFT_ENABLED=true: OpenStack Swift storage is not supported by mastomedia; use tootctl media remove".into(),
            ));
        } else if vars.get("AZURE_ENABLED") == Some("true") {
            return Err(ConfigError::Unsupported(
                "AZURE_ENABLED=true: Azure Blob storage is not supported by mastomedia".into(),
            ));
        } else {
            filesystem_config(env_file, vars)?
        };
        Ok(Self {
            env_file: env_file.to_owned(),
            database,
            storage,
            journal: journal_location(vars)?,
        })
    }
}

fn database_config(vars: &Vars) -> Result<DatabaseConfig, ConfigError> {
    let url = vars.get("DATABASE_URL");
    let mut port = 5432;
    let mut password = None;
    if url.is_none() {
        port = vars
            .number(
                "DB_PORT",
                "use the TCP port of PostgreSQL (1-65535), e.g. 5432",
            )?
            .unwrap_or(5432);
        if port == 0 {
            return Err(ConfigError::Invalid {
                var: "DB_PORT",
                value: "0".into(),
                fix: "use the TCP port of PostgreSQL (1-65535), e.g. 5432".into(),
            });
        }
        if let Some(pass) = vars.raw("DB_PASS").filter(|p| !p.is_empty()) {
            // libpq and sqlx end the password at a NUL byte: refuse rather than log in with
            // a truncated one.
            if pass.contains('\0') {
                return Err(ConfigError::Invalid {
                    var: "DB_PASS",
                    value: "[redacted]".into(),
                    fix:
                        "the password contains a NUL byte, which PostgreSQL cannot take; remove it"
                            .into(),
                });
            }
            password = Some(pass);
        }
    }
    DatabaseConfig::from_settings(DatabaseSettings {
        url,
        host: vars.get("DB_HOST").unwrap_or("localhost"),
        port,
        user: vars.get("DB_USER").unwrap_or("mastodon"),
        name: vars.get("DB_NAME").unwrap_or("mastodon_production"),
        password,
        ssl_mode: vars.get("DB_SSLMODE").unwrap_or("prefer"),
        // Mastodon's own reading (config/database.yml): anything but `false` keeps them on.
        prepared_statements: vars.get("PREPARED_STATEMENTS") != Some("false"),
        lock_url: vars.get("MASTOMEDIA_LOCK_DATABASE_URL"),
    })
    .map_err(|e| ConfigError::Invalid {
        var: e.var,
        value: e.value,
        fix: e.fix,
    })
}

fn s3_config(vars: &Vars) -> Result<S3Config, ConfigError> {
    let bucket = vars
        .get("S3_BUCKET")
        .ok_or_else(|| ConfigError::Missing {
            var: "S3_BUCKET",
            fix: "set it to the bucket that holds Mastodon's media (S3_ENABLED=true needs it)"
                .into(),
        })?
        .to_owned();
    if bucket.len() < 3
        || bucket.len() > 63
        || !bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err(ConfigError::Invalid {
            var: "S3_BUCKET",
            value: bucket,
            fix: "a bucket name has 3–63 characters of a-z, 0-9, '.' and '-'".into(),
        });
    }
    let region = vars.get("S3_REGION").unwrap_or("us-east-1").to_owned();
    let endpoint = match vars.get("S3_ENDPOINT") {
        None => None,
        Some(e) if without_userinfo(e) != e => {
            // Never echoed: the user:password part is a secret.
            return Err(ConfigError::Invalid {
                var: "S3_ENDPOINT",
                value: without_userinfo(e),
                fix: "remove the user:password@ part: the bucket's credentials go in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
            });
        }
        Some(e) => {
            let ok = (e.starts_with("https://") || e.starts_with("http://"))
                && e.split("://").nth(1).is_some_and(|h| !h.is_empty());
            if !ok {
                return Err(ConfigError::Invalid {
                    var: "S3_ENDPOINT",
                    value: e.to_owned(),
                    fix: "give the full API URL with scheme, e.g. https://us-east-1.linodeobjects.com"
                        .into(),
                });
            }
            Some(strip_bucket_host(e.trim_end_matches('/'), &bucket))
        }
    };
    let dotted_https = bucket.contains('.')
        && endpoint
            .as_deref()
            .is_none_or(|e| e.starts_with("https://"));
    let force_path_style =
        (endpoint.is_some() && !vars.flag("S3_OVERRIDE_PATH_STYLE")) || dotted_https;
    let access_key_id = vars
        .get("AWS_ACCESS_KEY_ID")
        .ok_or_else(|| ConfigError::Missing {
            var: "AWS_ACCESS_KEY_ID",
            fix: "set the access key of the bucket's credentials".into(),
        })?
        .to_owned();
    let secret = vars
        .get("AWS_SECRET_ACCESS_KEY")
        .ok_or_else(|| ConfigError::Missing {
            var: "AWS_SECRET_ACCESS_KEY",
            fix: "set the secret key of the bucket's credentials".into(),
        })?
        .to_owned();
    let permission = match vars.raw("S3_PERMISSION") {
        None => Some("public-read".to_owned()),
        Some(v) if v.trim().is_empty() => None,
        Some(v) => {
            let v = v.trim();
            const ACLS: &[&str] = &[
                "private",
                "public-read",
                "public-read-write",
                "authenticated-read",
                "aws-exec-read",
                "bucket-owner-read",
                "bucket-owner-full-control",
            ];
            if !ACLS.contains(&v) {
                return Err(ConfigError::Invalid {
                    var: "S3_PERMISSION",
                    value: v.to_owned(),
                    fix: "use a canned ACL such as public-read, or leave it empty to send no ACL"
                        .into(),
                });
            }
            Some(v.to_owned())
        }
    };
    let batch_delete_limit: usize = vars
        .number(
            "S3_BATCH_DELETE_LIMIT",
            "use a number of keys from 1 to 1000",
        )?
        .unwrap_or(1000);
    if !(1..=1000).contains(&batch_delete_limit) {
        return Err(ConfigError::Invalid {
            var: "S3_BATCH_DELETE_LIMIT",
            value: batch_delete_limit.to_string(),
            fix: "S3 accepts 1 to 1000 keys per DeleteObjects request".into(),
        });
    }
    let secs = |var: &'static str, default: u64| -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(
            vars.number(var, "use a whole number of seconds")?
                .unwrap_or(default),
        ))
    };
    let open_timeout = secs("S3_OPEN_TIMEOUT", 5)?;
    let read_timeout = secs("S3_READ_TIMEOUT", 5)?.max(Duration::from_secs(1));
    let long_timeout = read_timeout.max(Duration::from_secs(120));
    let retry_limit: u32 = vars
        .number(
            "S3_RETRY_LIMIT",
            "use a whole number of retries from 0 to 100, e.g. 3",
        )?
        .unwrap_or(0);
    if retry_limit > MAX_RETRY_LIMIT {
        return Err(ConfigError::Invalid {
            var: "S3_RETRY_LIMIT",
            value: retry_limit.to_string(),
            fix: format!("use a whole number of retries from 0 to {MAX_RETRY_LIMIT}, e.g. 3"),
        });
    }
    let delete_checksum = match vars.get("MASTOMEDIA_DELETE_CHECKSUM") {
        None | Some("md5") => DeleteChecksum::Md5,
        Some("crc32") => DeleteChecksum::Crc32,
        Some(other) => {
            return Err(ConfigError::Invalid {
                var: "MASTOMEDIA_DELETE_CHECKSUM",
                value: other.to_owned(),
                fix: "use md5 (Content-MD5 only, the default) or crc32 (the SDK's checksum headers as well)".into(),
            });
        }
    };
    let multipart_threshold: Option<u64> = vars.number(
        "S3_MULTIPART_THRESHOLD",
        "use a number of bytes, e.g. 15728640 (15 MiB, Mastodon's default)",
    )?;
    let hostname = vars
        .get("S3_HOSTNAME")
        .map(str::to_owned)
        .unwrap_or_else(|| format!("s3-{region}.amazonaws.com"));
    Ok(S3Config {
        bucket,
        region,
        endpoint,
        force_path_style,
        protocol: vars.get("S3_PROTOCOL").unwrap_or("https").to_owned(),
        hostname,
        alias_host: vars
            .get("S3_ALIAS_HOST")
            .or_else(|| vars.get("S3_CLOUDFRONT_HOST"))
            .map(str::to_owned),
        permission,
        batch_delete_limit,
        key_prefix: KeyPrefix::new(vars.get("S3_KEY_PREFIX")),
        access_key_id,
        secret_access_key: Secret::new(secret),
        open_timeout,
        read_timeout,
        long_timeout,
        max_attempts: (retry_limit + 1).max(5),
        delete_checksum,
        multipart_threshold,
    })
}

/// `MASTOMEDIA_JOURNAL` (env file or process environment): a SQLite file or a
/// `postgres://` URL, the default of every `--journal`. Errors: a value that is not a
/// usable location ([`ConfigError::Invalid`], shown without credentials).
pub fn journal_location(vars: &Vars) -> Result<Option<JournalLocation>, ConfigError> {
    let Some(v) = vars.get("MASTOMEDIA_JOURNAL") else {
        return Ok(None);
    };
    JournalLocation::parse(std::ffi::OsStr::new(v))
        .map(Some)
        .map_err(|e| match e {
            JournalError::BadLocation { shown, reason } => ConfigError::Invalid {
                var: "MASTOMEDIA_JOURNAL",
                value: shown,
                fix: reason,
            },
            other => ConfigError::Invalid {
                var: "MASTOMEDIA_JOURNAL",
                value: "[hidden]".into(),
                fix: other.to_string(),
            },
        })
}

/// Where Mastodon keeps local media: `PAPERCLIP_ROOT_PATH` (`:rails_root` replaced by the
/// env file's folder), else `public/system` beside the env file. Not resolved or checked.
pub fn media_root(env_file: &Path, vars: &Vars) -> PathBuf {
    let rails_root = env_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    match vars.get("PAPERCLIP_ROOT_PATH") {
        Some(v) => PathBuf::from(v.replace(":rails_root", &rails_root.to_string_lossy())),
        None => rails_root.join("public").join("system"),
    }
}

/// `docs/reference/provider-quirks.md#k1`: an endpoint whose host starts with `<bucket>.` (copied from a provider's
/// "bucket URL") breaks path-style requests; use the bare endpoint and say so.
fn strip_bucket_host(endpoint: &str, bucket: &str) -> String {
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return endpoint.to_owned();
    };
    match rest.strip_prefix(&format!("{bucket}.")) {
        Some(host) if !host.is_empty() => {
            tracing::warn!(
                "S3_ENDPOINT {endpoint} contains the bucket name; using {scheme}://{host} (set S3_ENDPOINT to the region endpoint without the bucket)"
            );
            format!("{scheme}://{host}")
        }
        _ => endpoint.to_owned(),
    }
}

fn filesystem_config(env_file: &Path, vars: &Vars) -> Result<StorageConfig, ConfigError> {
    let root = media_root(env_file, vars);
    let root = root.canonicalize().map_err(|e| ConfigError::Invalid {
        var: "PAPERCLIP_ROOT_PATH",
        value: root.display().to_string(),
        fix: format!(
            "the media folder cannot be opened ({e}); set PAPERCLIP_ROOT_PATH to Mastodon's public/system folder, or S3_ENABLED=true for object storage"
        ),
    })?;
    Ok(StorageConfig::Filesystem(FsConfig { root }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by tests/it/parsers.rs: `S3_ENABLED="true` (no closing quote) swallowed the
    /// lines below it, and the error printed them, `DB_PASS` included.
    #[test]
    fn an_unterminated_quote_never_prints_the_lines_it_swallowed() {
        let dir =
            std::env::temp_dir().join(format!("mastomedia-unterminated-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(".env.production");
        std::fs::write(
            &path,
            "S3_ENABLED=\"true\nDB_PASS=hunter2-secret\nS3_BUCKET=b\"\n",
        )
        .unwrap();
        let vars = Vars::load(&path, Vec::new()).unwrap();
        let e = Config::from_vars(&path, &vars).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(
            e.contains("S3_ENABLED=\"true\"… (the value runs on over 2 more line(s)"),
            "{e}"
        );
        assert!(e.contains("closing quote missing"), "{e}");
    }

    fn s3_vars(extra: &[(&str, &str)]) -> Vars {
        let mut v = vec![
            ("S3_ENABLED", "true"),
            ("S3_BUCKET", "files-example"),
            ("AWS_ACCESS_KEY_ID", "AK"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret"),
        ];
        v.extend_from_slice(extra);
        Vars::from_pairs(v)
    }

    fn s3(vars: &Vars) -> S3Config {
        match Config::from_vars(Path::new("/nonexistent/.env"), vars)
            .unwrap()
            .storage
        {
            StorageConfig::S3(s) => s,
            StorageConfig::Filesystem(_) => panic!("expected S3"),
        }
    }

    #[test]
    fn s3_defaults_follow_mastodon() {
        let c = s3(&s3_vars(&[]));
        assert_eq!(c.region, "us-east-1");
        assert_eq!(c.permission.as_deref(), Some("public-read"));
        assert_eq!(c.batch_delete_limit, 1000);
        assert!(
            !c.force_path_style,
            "AWS without endpoint is virtual-host style"
        );
        assert_eq!(c.hostname, "s3-us-east-1.amazonaws.com");
        assert!(!format!("{c:?}").contains("very-secret"));
    }

    #[test]
    fn endpoint_implies_path_style_unless_overridden() {
        let c = s3(&s3_vars(&[(
            "S3_ENDPOINT",
            "https://us-east-1.linodeobjects.com/",
        )]));
        assert!(c.force_path_style);
        assert_eq!(
            c.endpoint.as_deref(),
            Some("https://us-east-1.linodeobjects.com")
        );
        let c = s3(&s3_vars(&[
            ("S3_ENDPOINT", "https://x.example"),
            ("S3_OVERRIDE_PATH_STYLE", "true"),
        ]));
        assert!(!c.force_path_style);
    }

    #[test]
    fn bucket_in_endpoint_host_is_stripped() {
        let c = s3(&s3_vars(&[(
            "S3_ENDPOINT",
            "https://files-example.us-east-1.linodeobjects.com",
        )]));
        assert_eq!(
            c.endpoint.as_deref(),
            Some("https://us-east-1.linodeobjects.com")
        );
    }

    #[test]
    fn empty_permission_means_no_acl() {
        let c = s3(&s3_vars(&[("S3_PERMISSION", "")]));
        assert_eq!(c.permission, None);
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let cases = [
            ("S3_BATCH_DELETE_LIMIT", "5000"),
            ("S3_BATCH_DELETE_LIMIT", "many"),
            ("S3_ENDPOINT", "linodeobjects.com"),
            ("S3_PERMISSION", "publicread"),
            ("S3_BUCKET", "Bad_Bucket"),
        ];
        for (var, value) in cases {
            let err = Config::from_vars(Path::new(".env"), &s3_vars(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(var), "{err}");
        }
        let err = Config::from_vars(
            Path::new(".env"),
            &Vars::from_pairs([("S3_ENABLED", "true")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("S3_BUCKET"), "{err}");
    }

    #[test]
    fn database_url_wins_and_is_redacted() {
        let mut vars = s3_vars(&[
            ("DATABASE_URL", "postgres://u:pw-secret@db.example:6543/m"),
            ("DB_HOST", "other"),
        ]);
        let c = Config::from_vars(Path::new(".env"), &vars).unwrap();
        assert_eq!(c.database.display, "postgres://u@db.example:6543/m");
        assert!(!format!("{c:?}").contains("pw-secret"));
        vars.0.remove("DATABASE_URL");
        vars.0.insert("DB_PASS".into(), "pw2".into());
        let c = Config::from_vars(Path::new(".env"), &vars).unwrap();
        assert_eq!(
            c.database.display,
            "postgres://mastodon@other:5432/mastodon_production"
        );
    }

    #[test]
    fn issue9_1_prepared_statements_and_lock_url() {
        let c = Config::from_vars(Path::new(".env"), &s3_vars(&[])).unwrap();
        assert!(c.database.prepared_statements);
        assert!(c.database.lock.is_none());
        let vars = s3_vars(&[
            ("PREPARED_STATEMENTS", "false"),
            (
                "MASTOMEDIA_LOCK_DATABASE_URL",
                "postgres://u:lock-secret@10.0.0.5:5432/m",
            ),
        ]);
        let c = Config::from_vars(Path::new(".env"), &vars).unwrap();
        assert!(!c.database.prepared_statements);
        let lock = c.database.lock.as_ref().unwrap();
        assert_eq!(lock.display, "postgres://u@10.0.0.5:5432/m");
        assert!(!format!("{c:?}").contains("lock-secret"));
        assert!(SECRET_VARS.contains(&"MASTOMEDIA_LOCK_DATABASE_URL"));
        let err = Config::from_vars(
            Path::new(".env"),
            &s3_vars(&[(
                "MASTOMEDIA_LOCK_DATABASE_URL",
                "postgres://x:pw-here@h:port/m",
            )]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("MASTOMEDIA_LOCK_DATABASE_URL"), "{err}");
        assert!(!err.contains("pw-here"), "{err}");
    }

    #[test]
    fn parse_errors_give_the_line_number_never_the_text() {
        let dir = std::env::temp_dir().join(format!("mm-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(".env.production");
        std::fs::write(
            &path,
            "S3_ENABLED=true\nAWS_SECRET_ACCESS_KEY=\"abc def\nX=1\n",
        )
        .unwrap();
        let err = Vars::load(&path, Vec::new()).unwrap_err().to_string();
        assert!(!err.contains("abc"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Issue 9.7: `.env.production` nits (BOM, multi-line values, DB_PORT=0, NUL in
    /// DB_PASS, S3_RETRY_LIMIT overflow).
    #[test]
    fn case9_7_env_file_nits() {
        let dir = std::env::temp_dir().join(format!("mm-env3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(".env.production");
        // A UTF-8 BOM on line 1 and a double-quoted value over three lines whose middle
        // line looks like `K=a b`: read as Ruby dotenv reads them.
        std::fs::write(
            &path,
            "\u{feff}S3_ENABLED=true\nPEM=\"-----BEGIN-----\nK=a b\n-----END-----\"\nAFTER=x y\n",
        )
        .unwrap();
        let v = Vars::load(&path, Vec::new()).unwrap();
        assert_eq!(v.get("S3_ENABLED"), Some("true"));
        assert_eq!(v.raw("PEM"), Some("-----BEGIN-----\nK=a b\n-----END-----"));
        assert_eq!(v.get("K"), None);
        assert_eq!(v.get("AFTER"), Some("x y"));
        let _ = std::fs::remove_dir_all(dir);

        let err = |extra: &[(&str, &str)]| {
            let mut vars = s3_vars(&[]);
            for (k, val) in extra {
                vars.0.insert((*k).into(), (*val).into());
            }
            Config::from_vars(Path::new(".env"), &vars)
                .unwrap_err()
                .to_string()
        };
        let e = err(&[("DB_PORT", "0")]);
        assert!(e.contains("DB_PORT") && e.contains("1-65535"), "{e}");
        let e = err(&[("DB_PASS", "secret\0tail")]);
        assert!(e.contains("NUL") && !e.contains("secret"), "{e}");
        for big in ["4294967295", "4294967296", "101"] {
            let e = err(&[("S3_RETRY_LIMIT", big)]);
            assert!(
                e.contains("S3_RETRY_LIMIT") && e.contains("0 to 100"),
                "{e}"
            );
        }
        let mut vars = s3_vars(&[("S3_RETRY_LIMIT", "100")]);
        vars.0.insert("DB_PORT".into(), "6432".into());
        assert!(Config::from_vars(Path::new(".env"), &vars).is_ok());
    }

    #[test]
    fn unquoted_values_with_spaces_parse_as_ruby_dotenv_reads_them() {
        let dir = std::env::temp_dir().join(format!("mm-env2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(".env.production");
        std::fs::write(
            &path,
            "SMTP_FROM_ADDRESS=Mastodon <notifications@example.com>\nexport A=x y # note\nB='it s'\nC=it's here\nD=plain\n",
        )
        .unwrap();
        let v = Vars::load(&path, Vec::new()).unwrap();
        assert_eq!(
            v.get("SMTP_FROM_ADDRESS"),
            Some("Mastodon <notifications@example.com>")
        );
        assert_eq!(v.get("A"), Some("x y"));
        assert_eq!(v.get("B"), Some("it s"));
        assert_eq!(v.get("C"), Some("it's here"));
        assert_eq!(v.get("D"), Some("plain"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn swift_is_refused() {
        let err = Config::from_vars(
            Path::new(".env"),
            &Vars::from_pairs([("SWIFT_ENABLED", "true")]),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::Unsupported(_)));
    }
}
