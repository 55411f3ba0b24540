//! The `orphans` report: objects per class (referenced, orphan, stale copy, unrecognised)
//! with reasons, what was deleted (or would be), the keys that matter, and the scan
//! position (human text or `--json` on stdout).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use humansize::{BINARY, format_size};
use serde::Serialize;

use super::{ExitCode, MAX_LISTED_FAILURES};
use crate::plan::orphans::Class;
use crate::plan::ownership::{Finding, OwnershipStats};

/// Objects and bytes, plus a count per reason (snake_case names of
/// [`Class::reason`]).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ClassCount {
    /// Objects.
    pub objects: u64,
    /// Bytes as listed.
    pub bytes: u64,
    /// Objects per reason.
    pub reasons: BTreeMap<&'static str, u64>,
}

impl ClassCount {
    fn add(&mut self, reason: &'static str, bytes: u64) {
        self.objects += 1;
        self.bytes += bytes;
        *self.reasons.entry(reason).or_default() += 1;
    }
}

/// What was done with a listed key (only orphans, stale copies and unrecognised keys are
/// listed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Report only (no `--delete`).
    None,
    /// Deleted.
    Deleted,
    /// Would be deleted (`--delete --dry-run`).
    WouldDelete,
    /// Gone before the delete reached it.
    AlreadyGone,
    /// Kept: younger than `--min-age`.
    TooYoung,
    /// Kept: never deleted (unrecognised), or a stale copy without `--include-stale`.
    Kept,
    /// The delete failed (see `failures`).
    Failed,
}

/// One listed key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyLine {
    /// The key as listed.
    pub key: String,
    /// Bytes.
    pub bytes: u64,
    /// `orphan`, `stale` or `unrecognised`.
    pub class: &'static str,
    /// `row_gone`, `attachment_cleared`, `not_owned`, `bad_shape`, ...
    pub reason: &'static str,
    /// What happened to it.
    pub action: Action,
}

/// A key whose delete failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyFailure {
    /// The key.
    pub key: String,
    /// Error code (`AccessDenied`, `SlowDown`, ...).
    pub code: String,
    /// Message.
    pub message: String,
}

/// The whole `orphans` run. JSON shape:
///
/// ```json
/// {"storage": "…", "prefix": "", "journal": "/…/orphans-….sqlite", "mode": "report",
///  "dry_run": false, "include_stale": false, "min_age_days": 1.0,
///  "resumed_after": null, "last_key": "…", "complete": true, "interrupted": false,
///  "fatal": null,
///  "scanned": {"objects": N, "bytes": N, "reasons": {}},
///  "referenced": {"objects": N, "bytes": N, "reasons": {"owned": N, "variant": N, "local_row": N, "uncertain": N}},
///  "orphans": {…, "reasons": {"row_gone": N, "attachment_cleared": N}},
///  "stale": {…, "reasons": {"not_owned": N}},
///  "unrecognised": {…, "reasons": {"bad_shape": N, "unknown_class": N, "directory_marker": N}},
///  "too_young": {…}, "deleted": {…}, "already_gone": N, "failed": N,
///  "failures": [{"key", "code", "message"}],
///  "keys": [{"key", "bytes", "class", "reason", "action"}], "keys_not_listed": N,
///  "ownership": {"stored_files_named": true, "scanned": N, "deletable": N,
///                "deletable_local_layout": N, "local_layout_samples": ["…"],
///                "newer_keys": N, "newer_key_samples": ["…"]},
///  "ownership_findings": [{"risk": "large-share", "message": "…", "accepted": false}],
///  "refused": null,
///  "requests": {…}, "attempts": {…}, "throttled": N, "elapsed_seconds": F}
/// ```
///
/// `refused` is the refusal text when a deleting run stopped before deleting anything
/// because the database may not own the storage (exit 3); `ownership_findings` are the
/// signs found, also in a report-only or dry run (printed there as warnings).
#[derive(Debug, Clone, Default, Serialize)]
pub struct OrphansReport {
    /// The store scanned.
    pub storage: String,
    /// `--shard K/N` of this run (`"1/4"`), `None` (JSON `null`) for the whole job.
    pub shard: Option<String>,
    /// The listing prefix (with `S3_KEY_PREFIX`).
    pub prefix: String,
    /// The journal file.
    pub journal: String,
    /// `report`, `delete` or `delete+stale`.
    pub mode: String,
    /// `--dry-run`: nothing deleted.
    pub dry_run: bool,
    /// Stale copies are deleted too.
    pub include_stale: bool,
    /// `--min-age`.
    pub min_age_days: f64,
    /// The key this run started after (journal or `--start-after`), if any.
    pub resumed_after: Option<String>,
    /// The last key handled.
    pub last_key: Option<String>,
    /// The listing reached the end (the journal position was cleared).
    pub complete: bool,
    /// Ctrl-C stopped intake (the position is kept: run again to continue).
    pub interrupted: bool,
    /// A fatal error stopped the run.
    pub fatal: Option<String>,
    /// Everything listed.
    pub scanned: ClassCount,
    /// Kept: owned by (or possibly belonging to) a row.
    pub referenced: ClassCount,
    /// No row owns them.
    pub orphans: ClassCount,
    /// A live row exists but no longer owns this key.
    pub stale: ClassCount,
    /// Outside Mastodon's layout: never deleted.
    pub unrecognised: ClassCount,
    /// Orphans and stale copies younger than `--min-age`: never deleted.
    pub too_young: ClassCount,
    /// Deleted (or, in a dry run, would be).
    pub deleted: ClassCount,
    /// Already gone when deleted.
    pub already_gone: u64,
    /// Deletes that failed.
    pub failed: u64,
    /// Failed deletes, at most [`MAX_LISTED_FAILURES`].
    pub failures: Vec<KeyFailure>,
    /// Orphans, stale copies and unrecognised keys, at most [`MAX_LISTED_KEYS`].
    pub keys: Vec<KeyLine>,
    /// Such keys beyond [`MAX_LISTED_KEYS`], counted only.
    pub keys_not_listed: u64,
    /// What the scan saw that bears on whether the database owns the storage.
    pub ownership: OwnershipStats,
    /// The signs that it may not ([`crate::plan::ownership::assess`]).
    pub ownership_findings: Vec<Finding>,
    /// Set when a deleting run refused to delete (exit 3): the reasons and the flags.
    pub refused: Option<String>,
    /// Requests to the store: `requests` (operations) and `attempts` per operation,
    /// `throttled` answers (flattened into the top level of the JSON).
    #[serde(flatten)]
    pub requests: crate::store::RequestStats,
    /// Wall time, seconds.
    pub elapsed_seconds: f64,
}

/// Most keys listed in a report.
pub const MAX_LISTED_KEYS: usize = 10_000;

impl OrphansReport {
    /// The run record's counts (`journal::RunCounts`): objects and bytes scanned, deletes
    /// failed; no rows.
    pub fn run_counts(&self) -> crate::journal::RunCounts {
        crate::journal::RunCounts {
            rows: 0,
            objects: self.scanned.objects,
            bytes: self.scanned.bytes,
            failures: self.failed,
        }
    }

    /// Counts one classified object.
    pub fn count(&mut self, class: Class, bytes: u64) {
        self.scanned.objects += 1;
        self.scanned.bytes += bytes;
        let bucket = match class {
            Class::Referenced(_) => &mut self.referenced,
            Class::Orphan(_) => &mut self.orphans,
            Class::Stale => &mut self.stale,
            Class::Unrecognised(_) => &mut self.unrecognised,
        };
        bucket.add(class.reason(), bytes);
    }

    /// Records what happened to an orphan, stale copy or unrecognised key.
    pub fn record(&mut self, key: &str, class: Class, bytes: u64, action: Action) {
        match action {
            Action::Deleted | Action::WouldDelete => self.deleted.add(class.reason(), bytes),
            Action::AlreadyGone => self.already_gone += 1,
            Action::TooYoung => self.too_young.add(class.reason(), bytes),
            Action::Failed => self.failed += 1,
            Action::None | Action::Kept => {}
        }
        if self.keys.len() < MAX_LISTED_KEYS {
            self.keys.push(KeyLine {
                key: key.to_owned(),
                bytes,
                class: class.name(),
                reason: class.reason(),
                action,
            });
        } else {
            self.keys_not_listed += 1;
        }
    }

    /// Adds a failed delete.
    pub fn push_failure(&mut self, f: KeyFailure) {
        if self.failures.len() < MAX_LISTED_FAILURES {
            self.failures.push(f);
        }
    }

    /// 3 fatal or refused, 130 interrupted, 1 some deletes failed, else 0.
    pub fn exit_code(&self) -> ExitCode {
        super::Outcome {
            fatal: self.fatal.is_some() || self.refused.is_some(),
            interrupted: self.interrupted,
            failed: self.failed > 0,
        }
        .exit_code()
    }

    /// The human summary (stdout): counts, then up to 50 keys.
    pub fn human(&self) -> String {
        let size = |b: u64| format_size(b, BINARY);
        let mut s = String::new();
        let what = match (self.mode.as_str(), self.dry_run) {
            _ if self.refused.is_some() => "refused: nothing deleted",
            ("report", _) => "report only: nothing deleted",
            (_, true) => "dry run: nothing deleted",
            ("delete+stale", false) => "deleting orphans and stale copies",
            _ => "deleting orphans",
        };
        let _ = writeln!(s, "mastomedia orphans ({what}): {}", self.storage);
        if let Some(line) = super::shard_line(
            self.shard.as_deref(),
            "the listed keys whose hash falls in this shard (owners looked up in the whole database)",
            self.requests.rate,
        ) {
            let _ = writeln!(s, "{line}");
        }
        if !self.prefix.is_empty() {
            let _ = writeln!(s, "prefix: {}", self.prefix);
        }
        if let Some(k) = &self.resumed_after {
            let _ = writeln!(s, "started after {k} (journal {})", self.journal);
        }
        let line = |s: &mut String, label: &str, c: &ClassCount| {
            let reasons = c
                .reasons
                .iter()
                .map(|(k, v)| format!("{} {v}", k.replace('_', " ")))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                s,
                "{label:<14} {:>9} {:>11}{}",
                c.objects,
                size(c.bytes),
                if reasons.is_empty() {
                    String::new()
                } else {
                    format!("  ({reasons})")
                }
            );
        };
        line(&mut s, "scanned", &self.scanned);
        line(&mut s, "referenced", &self.referenced);
        line(&mut s, "orphans", &self.orphans);
        line(&mut s, "stale copies", &self.stale);
        line(&mut s, "unrecognised", &self.unrecognised);
        if self.too_young.objects > 0 {
            line(&mut s, "too young", &self.too_young);
        }
        if self.mode != "report" {
            let verb = if self.dry_run || self.refused.is_some() {
                "would delete"
            } else {
                "deleted"
            };
            line(&mut s, verb, &self.deleted);
            let _ = writeln!(s, "{:<14} {:>9}", "already gone", self.already_gone);
            let _ = writeln!(s, "{:<14} {:>9}", "failed", self.failed);
        }
        for f in &self.failures {
            let _ = writeln!(s, "  FAILED {}: {} {}", f.key, f.code, f.message);
        }
        const SHOWN: usize = 50;
        for k in self.keys.iter().take(SHOWN) {
            let action = serde_json::to_value(k.action)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "  {:<12} {:<18} {:<12} {:>10}  {}",
                k.class,
                k.reason,
                action,
                size(k.bytes),
                k.key
            );
        }
        let more = (self.keys.len().saturating_sub(SHOWN)) as u64 + self.keys_not_listed;
        if more > 0 {
            let _ = writeln!(
                s,
                "  ... and {more} more keys (--json lists up to {MAX_LISTED_KEYS})"
            );
        }
        if self.mode == "report" && (self.orphans.objects > 0 || self.stale.objects > 0) {
            let _ = writeln!(
                s,
                "run with --delete --dry-run to see what would go, then --delete (stale copies need --include-stale)"
            );
        }
        if let (Some(k), false, None) = (&self.last_key, self.complete, &self.refused) {
            let _ = writeln!(s, "stopped after {k}: run again to continue from there");
        }
        if let Some(f) = &self.fatal {
            let _ = writeln!(s, "stopped: {f}");
        }
        if let Some(r) = &self.refused {
            let _ = writeln!(s, "REFUSED: {r}");
        } else {
            for f in &self.ownership_findings {
                let what = if f.accepted {
                    "accepted with --accept-risk"
                } else if self.mode == "report" || self.dry_run {
                    "--delete would refuse"
                } else {
                    "warning"
                };
                let _ = writeln!(
                    s,
                    "WARNING ({}, {what}): the database may not own this storage: {}",
                    f.risk.name(),
                    f.message
                );
            }
        }
        let _ = writeln!(s, "{}", super::requests_line(&self.requests));
        let _ = writeln!(s, "elapsed: {:.1}s", self.elapsed_seconds);
        s
    }
}

impl super::Summary for OrphansReport {
    fn human(&self) -> String {
        OrphansReport::human(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::orphans::{Kept, OrphanReason};
    use crate::plan::parse::Unrecognised;

    #[test]
    fn counts_by_class_and_reason_and_exit_codes() {
        let mut r = OrphansReport {
            mode: "delete".into(),
            ..Default::default()
        };
        r.count(Class::Referenced(Kept::Owned), 10);
        r.count(Class::Orphan(OrphanReason::RowGone), 5);
        r.count(Class::Unrecognised(Unrecognised::BadShape), 1);
        r.record(
            "a",
            Class::Orphan(OrphanReason::RowGone),
            5,
            Action::Deleted,
        );
        r.record(
            "robots.txt",
            Class::Unrecognised(Unrecognised::BadShape),
            1,
            Action::Kept,
        );
        assert_eq!(r.scanned.objects, 3);
        assert_eq!(r.scanned.bytes, 16);
        assert_eq!(r.orphans.reasons["row_gone"], 1);
        assert_eq!(r.deleted.bytes, 5);
        assert_eq!(r.keys.len(), 2);
        assert_eq!(r.exit_code(), ExitCode::Success);
        r.record("b", Class::Stale, 1, Action::Failed);
        assert_eq!(r.exit_code(), ExitCode::ItemsFailed);
        r.interrupted = true;
        assert_eq!(r.exit_code(), ExitCode::Interrupted);
        assert!(r.human().contains("deleted"));
    }
}
