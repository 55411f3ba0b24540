//! `mastomedia config`'s output (issue 15.3), from plain values: each variable mastomedia
//! reads with the value in force (secrets hidden by `config/settings.rs` before they get
//! here) and its origin, then the facts derived from them. Human text, or `--json`:
//!
//! ```text
//! {"env_file": "…", "variables": [{"name", "value" (null: unset), "origin":
//!  "env_file"|"environment"|"default"|"unset", "line" (env file only)}],
//!  "derived": {"storage", "addressing", "key_prefix", "database", "mastodon_version"},
//!  "error": "…" | null}
//! ```

use std::fmt::Write as _;

use serde::Serialize;

/// One variable.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VariableLine {
    /// The name.
    pub name: String,
    /// The value shown (never a secret), or `None` when unset.
    pub value: Option<String>,
    /// `env_file`, `environment`, `default` or `unset`.
    pub origin: &'static str,
    /// The env file line, for `env_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

/// What the variables add up to.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Derived {
    /// `s3://bucket at endpoint` or `file://root`.
    pub storage: Option<String>,
    /// S3 bucket addressing: `path-style` or `virtual-hosted`.
    pub addressing: Option<String>,
    /// `S3_KEY_PREFIX` as keys carry it (`None`: none).
    pub key_prefix: Option<String>,
    /// The database, without password.
    pub database: Option<String>,
    /// The Mastodon release the schema looks like, or why it could not be read.
    pub mastodon_version: Option<String>,
}

/// The whole `config` report.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ConfigReport {
    /// The env file read.
    pub env_file: String,
    /// Every variable mastomedia reads, in a fixed order.
    pub variables: Vec<VariableLine>,
    /// The derived facts (absent where the configuration is invalid).
    pub derived: Derived,
    /// Why the configuration is invalid (exit 2), if it is.
    pub error: Option<String>,
}

impl super::Summary for ConfigReport {
    fn human(&self) -> String {
        let mut s = format!("configuration from {}\n", self.env_file);
        let width = self
            .variables
            .iter()
            .map(|v| v.name.len())
            .max()
            .unwrap_or(0);
        for v in &self.variables {
            let origin = match (v.origin, v.line) {
                ("env_file", Some(l)) => format!("env file line {l}"),
                ("environment", _) => "process environment".to_owned(),
                ("default", _) => "default".to_owned(),
                _ => "unset".to_owned(),
            };
            let value = v.value.as_deref().unwrap_or("-");
            let _ = writeln!(s, "  {:width$}  {value}  ({origin})", v.name);
        }
        let d = &self.derived;
        for (name, value) in [
            ("storage", &d.storage),
            ("addressing", &d.addressing),
            ("key prefix", &d.key_prefix),
            ("database", &d.database),
            ("Mastodon version", &d.mastodon_version),
        ] {
            if let Some(v) = value {
                let _ = writeln!(s, "{name}: {v}");
            }
        }
        if let Some(e) = &self.error {
            let _ = writeln!(s, "invalid: {e}");
        }
        s
    }
}
