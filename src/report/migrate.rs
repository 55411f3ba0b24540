//! The `migrate` summary: files and bytes copied, skipped and failed, the catch-up gap,
//! verification and repair results, throughput. Human text or `--json` on stdout.

use std::fmt::Write as _;

use humansize::{BINARY, format_size};
use serde::Serialize;

use super::ExitCode;

/// One file that could not be copied, verified or repaired.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileFailure {
    /// Key relative to the source root.
    pub key: String,
    /// Error code (`EACCES`, `AccessDenied`, `SizeMismatch`, ...).
    pub code: String,
    /// Message.
    pub message: String,
}

/// Outcome of a `migrate` run. Sizes in bytes, rates per second of wall time.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MigrateReport {
    /// Nothing was uploaded.
    pub dry_run: bool,
    /// `--shard K/N` of this run (`"1/4"`), `None` (JSON `null`) for the whole job.
    pub shard: Option<String>,
    /// `file:///...` or `s3://...` of the source.
    pub source: String,
    /// The target bucket.
    pub target: String,
    /// The journal file.
    pub journal: String,
    /// Files found at the source (after `--skip-cache`).
    pub files_total: u64,
    /// Bytes found at the source (after `--skip-cache`).
    pub bytes_total: u64,
    /// Files uploaded in this run (or that would be).
    pub files_uploaded: u64,
    /// Bytes uploaded in this run (or that would be).
    pub bytes_uploaded: u64,
    /// Files skipped because the journal says they were copied unchanged.
    pub files_unchanged: u64,
    /// Files uploaded with the `private` ACL (backups, imports, private at the source, or
    /// hidden by the database).
    pub files_uploaded_private: u64,
    /// Files whose source ACL could not be read (uploaded private).
    pub source_acl_unreadable: u64,
    /// Files left out by `--skip-cache`.
    pub files_skipped_cache: u64,
    /// Symlinks skipped (with a warning).
    pub symlinks_skipped: u64,
    /// Unfinished multipart uploads of keys this run writes, started before it (left by a
    /// killed run), aborted (or, in a dry run, that would be).
    pub stale_uploads_aborted: u64,
    /// Journalled files no longer at the source (deleted between passes); never deleted
    /// from the target by migrate.
    pub deleted_at_source: u64,
    /// Their keys (without `S3_KEY_PREFIX`), sorted, at most 10,000.
    pub deleted_at_source_keys: Vec<String>,
    /// Copied files, unchanged at the source, that are gone from the bucket (deleted there
    /// since the copy): not uploaded again unless `--reupload-missing`; not failures.
    pub deleted_in_bucket: u64,
    /// Their keys (without `S3_KEY_PREFIX`), at most 10,000.
    pub deleted_in_bucket_keys: Vec<String>,
    /// How to delete one target key by hand, `{}` standing for the key below the
    /// target's `S3_KEY_PREFIX` (human output only), e.g.
    /// `aws --endpoint-url https://… s3 rm 's3://bucket/{}'`.
    #[serde(skip)]
    pub remove_command: String,
    /// Files that failed (listed in `failures`).
    pub files_failed: u64,
    /// Objects checked by `--verify`.
    pub verified: u64,
    /// Objects whose size or MD5 differ (listed in `failures`, re-uploaded next run).
    pub verify_mismatches: u64,
    /// Objects examined by `--repair`.
    pub repair_checked: u64,
    /// Objects rewritten by `--repair`.
    pub repaired: u64,
    /// Private objects `--repair` left private.
    pub left_private: u64,
    /// Failures (at most 10,000 listed).
    pub failures: Vec<FileFailure>,
    /// Requests to the store: `requests` (operations) and `attempts` per operation,
    /// `throttled` answers (flattened into the top level of the JSON).
    #[serde(flatten)]
    pub requests: crate::store::RequestStats,
    /// Set when a fatal error stopped the run.
    pub fatal: Option<String>,
    /// Set when Ctrl-C stopped intake.
    pub interrupted: bool,
    /// Wall time, seconds.
    pub elapsed_seconds: f64,
    /// Files uploaded per second.
    pub files_per_second: f64,
    /// MiB uploaded per second.
    pub mib_per_second: f64,
}

impl MigrateReport {
    /// The run record's counts (`journal::RunCounts`): files uploaded as objects, bytes
    /// uploaded, files failed; no rows.
    pub fn run_counts(&self) -> crate::journal::RunCounts {
        crate::journal::RunCounts {
            rows: 0,
            objects: self.files_uploaded,
            bytes: self.bytes_uploaded,
            failures: self.files_failed,
        }
    }

    /// Records a failure (listing at most 10,000).
    pub fn fail(&mut self, key: &str, code: &str, message: String) {
        self.files_failed += 1;
        if self.failures.len() < super::MAX_LISTED_FAILURES {
            self.failures.push(FileFailure {
                key: key.to_owned(),
                code: code.to_owned(),
                message,
            });
        }
    }

    /// Records a `--verify` mismatch (`SizeMismatch`, `Md5Mismatch`, `Missing`,
    /// `HeadFailed`), listing at most 10,000 failures.
    pub fn mismatch(&mut self, key: &str, code: String, message: String) {
        self.verify_mismatches += 1;
        if self.failures.len() < super::MAX_LISTED_FAILURES {
            self.failures.push(FileFailure {
                key: key.to_owned(),
                code,
                message,
            });
        }
    }

    /// Sets the wall time (`elapsed`) and the rates derived from it (files and MiB
    /// uploaded per second; a run under a millisecond counts as one).
    pub fn finish(&mut self, elapsed: std::time::Duration) {
        self.elapsed_seconds = elapsed.as_secs_f64();
        let secs = self.elapsed_seconds.max(0.001);
        self.files_per_second = self.files_uploaded as f64 / secs;
        self.mib_per_second = self.bytes_uploaded as f64 / 1048576.0 / secs;
    }

    /// Exit code: 3 fatal, 130 interrupted, 1 some files failed or mismatched, else 0.
    pub fn exit_code(&self) -> ExitCode {
        super::Outcome {
            fatal: self.fatal.is_some(),
            interrupted: self.interrupted,
            failed: self.files_failed > 0 || self.verify_mismatches > 0,
        }
        .exit_code()
    }

    /// The shell command that deletes `key` from the target, from [`Self::remove_command`]
    /// (single quotes in the key escaped for a POSIX shell).
    pub fn remove_command_for(&self, key: &str) -> String {
        self.remove_command
            .replace("{}", &key.replace('\'', "'\\''"))
    }

    /// Human summary.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let would = if self.dry_run { "would be " } else { "" };
        let _ = writeln!(
            s,
            "mastomedia migrate{}: {} → {}",
            if self.dry_run {
                " (dry run: nothing uploaded)"
            } else {
                ""
            },
            self.source,
            self.target
        );
        if let Some(line) = super::shard_line(
            self.shard.as_deref(),
            "the source files whose key hashes to this shard",
            self.requests.rate,
        ) {
            let _ = writeln!(s, "{line}");
        }
        let _ = writeln!(s, "journal: {}", self.journal);
        let _ = writeln!(
            s,
            "files: {} at the source ({}), {} {would}uploaded ({}), {} unchanged since the last run, {} failed",
            self.files_total,
            format_size(self.bytes_total, BINARY),
            self.files_uploaded,
            format_size(self.bytes_uploaded, BINARY),
            self.files_unchanged,
            self.files_failed
        );
        if self.files_uploaded_private > 0 {
            let _ = writeln!(
                s,
                "private: {} of the files {would}uploaded got the private ACL (backups, imports, private at the source, or hidden by the database)",
                self.files_uploaded_private
            );
        }
        if self.source_acl_unreadable > 0 {
            let _ = writeln!(
                s,
                "source ACL unreadable: {} files {would}uploaded private; once Mastodon uses this bucket, `migrate --repair --repair-acl` publishes those the database vouches for",
                self.source_acl_unreadable
            );
        }
        if self.files_skipped_cache > 0 {
            let _ = writeln!(s, "left out (cache/): {} files", self.files_skipped_cache);
        }
        if self.stale_uploads_aborted > 0 {
            let _ = writeln!(
                s,
                "unfinished multipart uploads of keys copied here, left by an earlier run: {} {}aborted (they were billed as stored parts)",
                self.stale_uploads_aborted,
                if self.dry_run { "would be " } else { "" }
            );
        }
        if self.symlinks_skipped > 0 {
            let _ = writeln!(s, "symlinks skipped: {}", self.symlinks_skipped);
        }
        if self.deleted_at_source > 0 {
            let _ = writeln!(
                s,
                "{} files copied earlier are gone from the source since (deleted or replaced by Mastodon); migrate never deletes them in the bucket. \
                 Once Mastodon uses the bucket, `mastomedia orphans --delete --include-stale --accept-risk local-keys` removes those no row owns any more \
                 (orphans) and the old files of rows that now store another one (stale copies: a local avatar or header replaced during the migration window); \
                 `orphans --delete --include-stale --dry-run` shows them first. Or remove each by exact key:",
                self.deleted_at_source
            );
            for k in &self.deleted_at_source_keys {
                let _ = writeln!(s, "  {}", self.remove_command_for(k));
            }
            let unlisted = self.deleted_at_source - self.deleted_at_source_keys.len() as u64;
            if unlisted > 0 {
                let _ = writeln!(s, "  … and {unlisted} more (see --json)");
            }
        }
        if self.deleted_in_bucket > 0 {
            let _ = writeln!(
                s,
                "deleted in the bucket since the copy: {} file(s) (unchanged at the source, gone from the bucket: Mastodon or an admin deleted them there; catch-up passes never upload them again, `--reupload-missing` does)",
                self.deleted_in_bucket
            );
            for k in &self.deleted_in_bucket_keys {
                let _ = writeln!(s, "  {k}");
            }
        }
        if self.verified > 0 || self.verify_mismatches > 0 {
            let _ = writeln!(
                s,
                "verify: {} checked, {} mismatches",
                self.verified, self.verify_mismatches
            );
        }
        if self.repair_checked > 0 {
            let _ = writeln!(
                s,
                "repair: {} checked, {} {would}rewritten, {} private objects left private",
                self.repair_checked, self.repaired, self.left_private
            );
        }
        for f in &self.failures {
            let _ = writeln!(s, "  FAILED {}: {} {}", f.key, f.code, f.message);
        }
        let _ = writeln!(s, "{}", super::requests_line(&self.requests));
        let _ = writeln!(
            s,
            "elapsed: {:.1}s, {:.1} files/s, {:.2} MiB/s",
            self.elapsed_seconds, self.files_per_second, self.mib_per_second
        );
        if self.interrupted {
            let _ = writeln!(s, "interrupted: run the same command again to continue");
        }
        if let Some(f) = &self.fatal {
            let _ = writeln!(s, "stopped: {f}");
        }
        s
    }
}

impl super::Summary for MigrateReport {
    fn human(&self) -> String {
        MigrateReport::human(self)
    }
}
