//! The orphan scan journal's record: per storage target and listing prefix, the last key
//! whose batch was fully handled, so `orphans` continues after it (`docs/reference/provider-quirks.md#l1`). Written once per
//! batch, in key order; removed when a scan reaches the end. Stored by a
//! [`super::Journal`] ([`super::Journal::orphan_scan`] and the `orphan_scan_*` methods).

/// A scan in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPosition {
    /// `report`, `delete` or `delete+stale`: only a run of the same mode resumes it.
    pub mode: String,
    /// The last key handled (`""`: none yet).
    pub last_key: String,
    /// Objects handled by this scan so far, over all its runs.
    pub objects: i64,
    /// When the scan started (RFC 3339 UTC).
    pub started_at: String,
    /// When the position last moved.
    pub updated_at: String,
}
