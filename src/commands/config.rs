//! `mastomedia config`: the variables in force with their origins
//! (`config/settings.rs`), the derived facts, and the schema's Mastodon version (one
//! short read-only connection unless `--offline`). Writes nothing.

use std::path::Path;
use std::time::Duration;

use super::CommandError;
use crate::cli::config::Args;
use crate::config::settings::{Origin, settings};
use crate::config::{Config, StorageConfig, Vars};
use crate::mastodon::Db;
use crate::report::config::{ConfigReport, Derived, VariableLine};
use crate::report::{ExitCode, Summary as _};

/// Runs `config`. Errors: the env file cannot be read or parsed (exit 2). An invalid
/// value is reported (exit 2) with every variable still shown.
pub async fn run(env_file: &Path, args: Args, _quiet: bool) -> Result<ExitCode, CommandError> {
    let vars = Vars::load(env_file, std::env::vars()).map_err(CommandError::usage)?;
    let process_env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    let cfg = Config::from_vars(env_file, &vars);
    let display = cfg.as_ref().ok().map(|c| c.database.display.clone());
    let variables = settings(env_file, &vars, &process_env, display.as_deref())
        .into_iter()
        .map(|s| {
            let (origin, line) = match s.origin {
                Origin::EnvFile(l) => ("env_file", Some(l)),
                Origin::Environment => ("environment", None),
                Origin::Default => ("default", None),
                Origin::Unset => ("unset", None),
            };
            VariableLine {
                name: s.name.to_owned(),
                value: s.value,
                origin,
                line,
            }
        })
        .collect();
    let mut report = ConfigReport {
        env_file: env_file.display().to_string(),
        variables,
        ..ConfigReport::default()
    };
    match &cfg {
        Err(e) => report.error = Some(e.to_string()),
        Ok(cfg) => {
            report.derived = derived(cfg);
            report.derived.mastodon_version = Some(if args.offline {
                "not checked (--offline)".to_owned()
            } else {
                mastodon_version(cfg).await
            });
        }
    }
    report.print(args.json);
    Ok(if report.error.is_some() {
        ExitCode::Usage
    } else {
        ExitCode::Success
    })
}

fn derived(cfg: &Config) -> Derived {
    let mut d = Derived {
        database: Some(cfg.database.display.clone()),
        ..Derived::default()
    };
    match &cfg.storage {
        StorageConfig::S3(s3) => {
            let endpoint = s3
                .endpoint
                .clone()
                .unwrap_or_else(|| format!("AWS ({})", s3.region));
            d.storage = Some(format!("s3://{} at {endpoint}", s3.bucket));
            d.addressing = Some(
                if s3.force_path_style {
                    "path-style"
                } else {
                    "virtual-hosted"
                }
                .to_owned(),
            );
            d.key_prefix = s3.key_prefix.as_deref().map(str::to_owned);
        }
        StorageConfig::Filesystem(fs) => {
            d.storage = Some(format!("file://{}", fs.root.display()));
        }
    }
    d
}

/// The schema's Mastodon release, or why it could not be read (never fails the command).
async fn mastodon_version(cfg: &Config) -> String {
    match tokio::time::timeout(Duration::from_secs(20), Db::connect(&cfg.database, 2)).await {
        Err(_) => "unknown: the database did not answer within 20 s".to_owned(),
        Ok(Err(e)) => format!("unknown: {e}"),
        Ok(Ok(db)) => {
            let s = db.schema();
            format!(
                "{} (schema_migrations {})",
                s.version_label(),
                s.migration_version.as_deref().unwrap_or("?")
            )
        }
    }
}
