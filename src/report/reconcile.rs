//! `mastomedia reconcile`'s summary (issue 14, item 3): per category (media attachments,
//! avatars, headers, preview cards; remote and local) the rows checked and those whose
//! stored file is missing, the lost local files, and what `--apply` cleared.

use std::fmt::Write as _;

use serde::Serialize;

use super::{ExitCode, Outcome, PassReport, Summary, requests_line};
use crate::mastodon::RowTable;
use crate::store::RequestStats;

/// One category's counts. A row counts in a category when it names a file of it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CategoryReport {
    /// `media_attachments`, `avatars`, `headers` or `preview_cards`.
    pub category: &'static str,
    /// Rows checked.
    pub rows_checked: u64,
    /// Rows with at least one missing key in this category.
    pub rows_missing: u64,
    /// Missing keys.
    pub keys_missing: u64,
    /// Rows whose `original` is missing.
    pub missing_original: u64,
    /// Rows whose `original` is there but another style (`small`, `static`) is not.
    pub missing_styles_only: u64,
    /// Media rows whose custom thumbnail is missing.
    pub missing_thumbnail: u64,
}

/// A local row with a missing file: listed, never cleared (Mastodon cannot fetch it again).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LostRow {
    /// Its table.
    pub table: RowTable,
    /// Its id.
    pub id: i64,
    /// The missing keys.
    pub keys: Vec<String>,
}

/// The whole reconcile run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconcileReport {
    /// `--apply` was given (otherwise nothing was written).
    pub apply: bool,
    /// The store (`s3://bucket at endpoint` or `file:///root`).
    pub storage: String,
    /// Per category, the remote rows (re-fetchable: cleared with `--apply`), in a fixed
    /// order. Two lists rather than a field, so every `--metrics-file` series has its own
    /// name.
    pub remote: Vec<CategoryReport>,
    /// Per category, the local rows (lost files: only reported; no preview cards).
    pub local: Vec<CategoryReport>,
    /// Rows checked, over every category (an account counts once).
    pub rows_checked: u64,
    /// Rows with a missing file.
    pub rows_missing: u64,
    /// Rows whose keys could not be checked (their listing kept failing): neither counted
    /// nor cleared.
    pub rows_unchecked: u64,
    /// Local rows with a missing file (at most 100 listed).
    pub lost_local: Vec<LostRow>,
    /// Local rows with a missing file beyond those listed.
    pub lost_local_unlisted: u64,
    /// More than half of the checked rows miss a file (see `plan::reconcile::too_much_missing`):
    /// `--apply` refuses without `--force-missing`.
    pub too_much_missing: bool,
    /// The clearing passes of the remote rows (`media_attachments`, `accounts`,
    /// `preview_cards`): their remaining objects deleted, then their columns cleared as
    /// prune clears them (dry-run counts without `--apply`).
    pub passes: Vec<PassReport>,
    /// Ctrl-C stopped the run (run it again: cleared rows are no longer candidates).
    pub interrupted: bool,
    /// A fatal error stopped the run.
    pub fatal: Option<String>,
    /// Requests to the store (flattened into the JSON's top level).
    #[serde(flatten)]
    pub requests: RequestStats,
    /// Wall time, seconds.
    pub elapsed_seconds: f64,
}

impl ReconcileReport {
    /// The exit code: 3 fatal, 130 interrupted, 1 when a row could not be checked or
    /// cleared, else 0 (missing files are the report, not a failure).
    pub fn exit_code(&self) -> ExitCode {
        Outcome {
            fatal: self.fatal.is_some(),
            interrupted: self.interrupted,
            failed: self.rows_unchecked > 0
                || self
                    .passes
                    .iter()
                    .any(|p| p.rows_failed > 0 || p.objects_failed > 0),
        }
        .exit_code()
    }
}

impl Summary for ReconcileReport {
    fn human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "mastomedia reconcile{}: {}",
            if self.apply {
                ""
            } else {
                " (report only: nothing changed; --apply clears the remote rows)"
            },
            self.storage
        );
        let _ = writeln!(
            s,
            "{} rows checked, {} with a missing file",
            self.rows_checked, self.rows_missing
        );
        let all = self
            .remote
            .iter()
            .map(|c| (true, c))
            .chain(self.local.iter().map(|c| (false, c)));
        for (remote, c) in all {
            if c.rows_checked == 0 {
                continue;
            }
            let _ = writeln!(
                s,
                "{:<17} {:<6} {} checked, {} missing a file ({} keys): {} original, {} other style only, {} thumbnail",
                c.category,
                if remote { "remote" } else { "local" },
                c.rows_checked,
                c.rows_missing,
                c.keys_missing,
                c.missing_original,
                c.missing_styles_only,
                c.missing_thumbnail
            );
        }
        if self.rows_unchecked > 0 {
            let _ = writeln!(
                s,
                "{} rows could not be checked (their listing kept failing)",
                self.rows_unchecked
            );
        }
        for l in &self.lost_local {
            let _ = writeln!(
                s,
                "  LOST (local, not re-fetchable) {} {}: {}",
                l.table.name(),
                l.id,
                l.keys.join(" ")
            );
        }
        if self.lost_local_unlisted > 0 {
            let _ = writeln!(s, "  ... and {} more local rows", self.lost_local_unlisted);
        }
        if self.too_much_missing {
            let _ = writeln!(
                s,
                "most checked rows miss a file: is this the right storage (S3_BUCKET, PAPERCLIP_ROOT_PATH, S3_KEY_PREFIX)? --apply refuses unless --force-missing"
            );
        }
        let verb = if self.apply { "" } else { "would be " };
        for p in &self.passes {
            let _ = writeln!(
                s,
                "{:<17} remote rows: {} {verb}cleared (Mastodon re-fetches them on demand), {} failed, {} changed during run; {} leftover objects {verb}deleted",
                p.pass, p.rows_cleared, p.rows_failed, p.rows_changed, p.objects_deleted
            );
        }
        let _ = writeln!(s, "{}", requests_line(&self.requests));
        if self.interrupted {
            let _ = writeln!(s, "interrupted: run it again to continue");
        }
        if let Some(f) = &self.fatal {
            let _ = writeln!(s, "stopped: {f}");
        }
        let _ = writeln!(s, "elapsed: {:.1}s", self.elapsed_seconds);
        s
    }
}
