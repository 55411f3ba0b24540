//! `mastomedia config` (issue 15.3): every variable mastomedia reads, with the value in
//! force (secrets never shown) and where it came from — a line of the env file, the process
//! environment (which overrides the file, as for Mastodon), or mastomedia's default,
//! which is Mastodon's own where Mastodon has one (`docs/reference/env-vars.md` if present;
//! the defaults are those `config/mod.rs` applies).

use std::collections::HashMap;
use std::path::Path;

use super::{SECRET_VARS, Vars};

/// Where a value in force came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The env file, at this 1-based line (the last line setting it: later lines win).
    EnvFile(usize),
    /// The process environment (overrides the env file).
    Environment,
    /// Not set: mastomedia's default applies.
    Default,
    /// Not set, and there is no default (the feature it enables is off).
    Unset,
}

/// One variable as `config` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The variable's name.
    pub name: &'static str,
    /// The value shown: the value itself, `[hidden]` for a secret (a database URL shows
    /// its password-free form instead), the default's description, or `None` when unset.
    pub value: Option<String>,
    /// Where it came from.
    pub origin: Origin,
}

/// Every variable mastomedia reads, with its default (`None`: no default).
pub const READ_VARS: &[(&str, Option<&str>)] = &[
    ("DATABASE_URL", None),
    ("DB_HOST", Some("localhost")),
    ("DB_PORT", Some("5432")),
    ("DB_NAME", Some("mastodon_production")),
    ("DB_USER", Some("mastodon")),
    ("DB_PASS", None),
    ("DB_SSLMODE", Some("prefer")),
    ("PREPARED_STATEMENTS", Some("true")),
    ("MASTOMEDIA_LOCK_DATABASE_URL", None),
    ("S3_ENABLED", Some("false (files in PAPERCLIP_ROOT_PATH)")),
    ("S3_BUCKET", None),
    ("S3_REGION", Some("us-east-1")),
    ("S3_ENDPOINT", Some("AWS (from S3_REGION)")),
    ("S3_OVERRIDE_PATH_STYLE", Some("false")),
    ("S3_PROTOCOL", Some("https")),
    ("S3_HOSTNAME", Some("s3-<S3_REGION>.amazonaws.com")),
    ("S3_ALIAS_HOST", None),
    ("S3_CLOUDFRONT_HOST", None),
    ("S3_PERMISSION", Some("public-read")),
    ("S3_BATCH_DELETE_LIMIT", Some("1000")),
    ("S3_KEY_PREFIX", None),
    ("S3_OPEN_TIMEOUT", Some("5")),
    ("S3_READ_TIMEOUT", Some("5")),
    ("S3_RETRY_LIMIT", Some("0")),
    ("S3_MULTIPART_THRESHOLD", Some("15728640 (15 MiB)")),
    ("AWS_ACCESS_KEY_ID", None),
    ("AWS_SECRET_ACCESS_KEY", None),
    (
        "PAPERCLIP_ROOT_PATH",
        Some("public/system beside the env file"),
    ),
    ("MASTOMEDIA_DELETE_CHECKSUM", Some("md5")),
    (
        "MASTOMEDIA_JOURNAL",
        Some("one SQLite file per job and target under ~/.local/state/mastomedia"),
    ),
    ("LINODE_TOKEN", None),
];

/// The 1-based line of the last `KEY=` (or `export KEY=`) assignment of each key in `text`.
/// Lines inside a multi-line quoted value may look like assignments; the last real one
/// still wins for every key Mastodon uses, which are never set inside another's value.
fn assignment_lines(text: &str) -> HashMap<String, usize> {
    let mut lines = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim_start();
        let l = l.strip_prefix("export ").map_or(l, str::trim_start);
        if l.starts_with('#') {
            continue;
        }
        if let Some((key, _)) = l.split_once('=') {
            let key = key.trim_end();
            if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                lines.insert(key.to_owned(), i + 1);
            }
        }
    }
    lines
}

/// The settings of `READ_VARS` for the merged `vars`, reading `env_file` again only to
/// find line numbers; `process_env` names the variables the process environment set.
/// `database_display` is the password-free form of the database URL in force, shown for
/// `DATABASE_URL` instead of its value. Never returns a secret's value.
pub fn settings(
    env_file: &Path,
    vars: &Vars,
    process_env: &[String],
    database_display: Option<&str>,
) -> Vec<Setting> {
    let text = std::fs::read_to_string(env_file).unwrap_or_default();
    let lines = assignment_lines(text.strip_prefix('\u{feff}').unwrap_or(&text));
    READ_VARS
        .iter()
        .map(|&(name, default)| {
            let set = vars.raw(name);
            let origin = match set {
                Some(_) if process_env.iter().any(|k| k == name) => Origin::Environment,
                Some(_) => lines
                    .get(name)
                    .map_or(Origin::Environment, |l| Origin::EnvFile(*l)),
                None if default.is_some() => Origin::Default,
                None => Origin::Unset,
            };
            let value = match set {
                Some(_) if name == "DATABASE_URL" => {
                    Some(database_display.map_or("[hidden]".to_owned(), |d| {
                        format!("[hidden; connects to {d}]")
                    }))
                }
                Some(_) if SECRET_VARS.contains(&name) => Some("[hidden]".to_owned()),
                // A postgres:// journal URL: rebuilt without its password (also one given
                // as ?password=).
                Some(v) if name == "MASTOMEDIA_JOURNAL" => Some(
                    crate::journal::JournalLocation::parse(std::ffi::OsStr::new(v.trim()))
                        .map_or_else(|_| "[hidden]: invalid".to_owned(), |l| l.shown()),
                ),
                Some(v) => Some(super::shown_value(&super::without_userinfo(v))),
                None => default.map(str::to_owned),
            };
            Setting {
                name,
                value,
                origin,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        use super::super::without_userinfo;
        assert_eq!(
            without_userinfo("https://u:p@s3.example.com/x"),
            "https://[hidden]@s3.example.com/x"
        );
        assert_eq!(
            without_userinfo("https://s3.example.com/a@b"),
            "https://s3.example.com/a@b"
        );
        assert_eq!(without_userinfo("not a url"), "not a url");
    }

    #[test]
    fn the_last_assignment_wins_and_comments_do_not_count() {
        let text = "# S3_BUCKET=old\nS3_BUCKET=a\nexport DB_HOST = db\n\nS3_BUCKET=b\n";
        let l = assignment_lines(text);
        assert_eq!(l["S3_BUCKET"], 5);
        assert_eq!(l["DB_HOST"], 3);
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn the_journal_url_is_shown_without_its_password() {
        for (value, shown) in [
            (
                "postgres://mm:pw-123@db.example/j",
                "postgres://mm@db.example:5432/j (schema mastomedia)",
            ),
            (
                "postgresql://mm@db.example/j?password=pw-123",
                "postgres://mm@db.example:5432/j (schema mastomedia)",
            ),
            ("/var/lib/mm/j.sqlite", "/var/lib/mm/j.sqlite"),
            ("postgres://mm:pw-123@db:x/j", "[hidden]: invalid"),
        ] {
            let vars = Vars::from_pairs([("MASTOMEDIA_JOURNAL", value)]);
            let all = settings(Path::new("/nonexistent/.env"), &vars, &[], None);
            let s = all.iter().find(|s| s.name == "MASTOMEDIA_JOURNAL").unwrap();
            assert_eq!(s.value.as_deref(), Some(shown), "{value}");
            assert_eq!(s.origin, Origin::Environment);
        }
    }
}
