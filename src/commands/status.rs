//! `mastomedia status`: reads the run records of `--journal` (a SQLite file or a
//! postgres:// URL), else `MASTOMEDIA_JOURNAL` (env file or process environment), else
//! every default journal file in the state folder (`journal::state_dir`), and prints them
//! (`report/status.rs`). Needs neither Mastodon's database nor the storage.

use std::path::Path;

use super::{CommandError, journal_location};
use crate::cli::status::Args;
use crate::config::{Vars, journal_location as configured_journal};
use crate::journal::{AnyJournal, Journal as _, JournalLocation, RunQuery, state_dir};
use crate::report::status::StatusReport;
use crate::report::{ExitCode, Summary as _};

/// Runs `status`: exit 0 (also when nothing is recorded, with a message). Errors: a bad
/// `--journal` or `MASTOMEDIA_JOURNAL`, or a given journal file that does not exist (exit
/// 2); an unreachable PostgreSQL journal or a failed read (exit 3).
pub async fn run(env_file: &Path, args: Args) -> Result<ExitCode, CommandError> {
    // The env file is optional here: status may run anywhere MASTOMEDIA_JOURNAL is set.
    let vars = if env_file.exists() {
        Vars::load(env_file, std::env::vars())?
    } else {
        Vars::from_pairs(std::env::vars())
    };
    let configured = configured_journal(&vars)?;
    let query = RunQuery {
        job: args.job.map(|j| j.name().to_owned()),
        per_target: if args.all {
            None
        } else {
            Some(args.limit.unwrap_or(1))
        },
    };
    let locations = match journal_location(args.journal.as_ref(), configured.as_ref())? {
        Some(l) => vec![l],
        None => default_journals(),
    };
    let mut journals = Vec::new();
    let mut records = Vec::new();
    for location in &locations {
        let journal = AnyJournal::open_existing(location).await?;
        let shown = journal.location().to_owned();
        let live = matches!(journal, AnyJournal::Postgres(_));
        records.extend(
            journal
                .runs(&query)
                .await?
                .into_iter()
                .map(|r| (shown.clone(), live, r)),
        );
        journals.push(shown);
    }
    let mut report = StatusReport::new(journals, records, args.stale_after, chrono::Utc::now());
    if locations.is_empty() {
        report.note = Some(format!(
            "no journal found in {}: migrate, orphans and prune record their runs there by default; pass --journal PATH|URL (or set MASTOMEDIA_JOURNAL) to read another",
            state_dir().display()
        ));
    }
    report.print(args.json);
    Ok(ExitCode::Success)
}

/// The default journal files of the state folder (`prune-…`, `migrate-…`, `orphans-…`
/// `.sqlite`), sorted; none when the folder does not exist.
fn default_journals() -> Vec<JournalLocation> {
    let Ok(entries) = std::fs::read_dir(state_dir()) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.ends_with(".sqlite")
                && ["prune-", "migrate-", "orphans-"]
                    .iter()
                    .any(|job| name.starts_with(job))
                && p.is_file()
        })
        .collect();
    files.sort();
    files.into_iter().map(JournalLocation::File).collect()
}
