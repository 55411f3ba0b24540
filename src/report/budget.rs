//! The budget's part of prune's summary (`prune --max-cache-size`, issue 14 item 1):
//! [`BudgetReport`] and its human lines.

use std::fmt::Write as _;

use humansize::{BINARY, format_size};
use serde::Serialize;

/// What the sizing pass measured and what the budget implied. Bytes are exact object
/// sizes from the storage (ListObjectsV2 on S3, `stat` on the filesystem).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct BudgetReport {
    /// `--max-cache-size`, bytes.
    pub max_cache_size: u64,
    /// The cache's size before the run: bytes of every object the remote rows of the
    /// pruned kinds own (every style and thumbnail, `cache/` and legacy keys alike).
    pub measured_bytes: u64,
    /// Objects found in that measure.
    pub measured_objects: u64,
    /// Rows measured (remote rows of the pruned kinds naming a stored file).
    pub measured_rows: u64,
    /// Bytes of rows the filters keep (`--keep-interacted`, `--domain`,
    /// `--exclude-domain`, the profile rules): counted, never pruned.
    pub kept_bytes: u64,
    /// Rows whose keys could not be sized (listing kept failing): left out of the measure.
    pub rows_unsized: u64,
    /// The cutoff the budget implied (RFC 3339 UTC, inclusive), oldest first across kinds;
    /// `None` when the cache already fits (after the retention floors).
    pub cutoff: Option<String>,
    /// Rows the measure says the passes take.
    pub planned_rows: u64,
    /// Bytes the measure says the passes free.
    pub planned_bytes: u64,
    /// Nothing had to go: the cache fits the budget as it is.
    pub fits: bool,
    /// The cache fits after the planned removal; false when the rows the filters keep
    /// hold more than the budget.
    pub met: bool,
    /// The measure was interrupted: no pass ran.
    pub interrupted: bool,
    /// The cache's size after the passes: `measured_bytes` minus the bytes they freed
    /// (would free, in a dry run).
    pub left_bytes: u64,
}

impl BudgetReport {
    /// The human lines of the budget (`verb`: `""`, or `"would be "` in a dry run).
    pub fn human(&self, verb: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "cache budget {}: measured {} in {} objects of {} rows ({} kept by the filters)",
            format_size(self.max_cache_size, BINARY),
            format_size(self.measured_bytes, BINARY),
            self.measured_objects,
            self.measured_rows,
            format_size(self.kept_bytes, BINARY),
        );
        if self.rows_unsized > 0 {
            let _ = writeln!(
                s,
                "  {} rows could not be sized (their listing kept failing) and are not counted",
                self.rows_unsized
            );
        }
        if self.interrupted {
            let _ = writeln!(s, "  interrupted while measuring: nothing pruned");
        } else if self.fits {
            let _ = writeln!(s, "  the cache fits the budget: nothing to prune for it");
        } else {
            let _ = writeln!(
                s,
                "  budget cutoff {}: {} rows, {} to go (oldest first)",
                self.cutoff
                    .as_deref()
                    .unwrap_or("none (the retention alone)"),
                self.planned_rows,
                format_size(self.planned_bytes, BINARY)
            );
        }
        if !self.met {
            let _ = writeln!(
                s,
                "  the budget cannot be met: rows the filters keep hold {}, and everything else goes",
                format_size(self.kept_bytes, BINARY)
            );
        }
        let _ = writeln!(
            s,
            "  {verb}left in the cache: {}",
            format_size(self.left_bytes, BINARY)
        );
        s
    }
}
