//! Whether the database can be the owner of the storage an `orphans --delete` run is about
//! to empty: the signs that it may not be (a database of another instance, a restored
//! backup or staging copy missing its newest rows, a copy with almost nothing left), and
//! the decision to refuse. Pure: the scan counts ([`OwnershipStats`]), [`assess`] decides.
//!
//! An orphan scan trusts the database completely: every object no row names looks like an
//! orphan. So a database that is not the whole truth about this storage turns live media
//! into "orphans". The signs checked (each can be accepted by the admin with
//! `--accept-risk <name>`, which names the risk):
//!
//! - [`OwnershipRisk::NoStoredFiles`]: the database names no stored file at all, so it
//!   cannot own any object.
//! - [`OwnershipRisk::NewerKeys`]: objects sit above the database's highest id of their
//!   table (keys sort by id within a partition width; a row deleted by Mastodon takes its
//!   files with it, so such keys mean the database is older than the storage). Only
//!   objects last modified, or with a snowflake id minted, [`NEWER_KEY_GRACE_MINUTES`]
//!   before the scan started count, so a file uploaded just before its row was committed
//!   does not.
//! - [`OwnershipRisk::LargeShare`]: the run would delete more than `--max-share` percent
//!   (default [`DEFAULT_MAX_SHARE_PERCENT`]) of the objects scanned.
//! - [`OwnershipRisk::LocalKeys`]: the run would delete keys outside `cache/`, the layout
//!   of local uploads (which no server can send again), other than legacy remote copies
//!   whose partition holds a remote row of the database.

use std::collections::BTreeSet;

use serde::Serialize;

/// Share of the scanned objects above which a deleting run refuses, percent.
pub const DEFAULT_MAX_SHARE_PERCENT: f64 = 5.0;
/// Objects younger than this (before the scan started) never count as newer keys.
pub const NEWER_KEY_GRACE_MINUTES: i64 = 15;
/// Sample keys kept per sign, for the message.
const SAMPLES: usize = 5;

/// A sign that the database may not own the storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OwnershipRisk {
    /// The database names no stored file.
    NoStoredFiles,
    /// Objects exist above the database's highest id of their table.
    NewerKeys,
    /// More than the allowed share of the scanned objects would be deleted.
    LargeShare,
    /// Keys outside `cache/` (local layout) would be deleted.
    LocalKeys,
}

impl OwnershipRisk {
    /// The name used by `--accept-risk` and in JSON (`no-stored-files`, `newer-keys`,
    /// `large-share`, `local-keys`).
    pub fn name(self) -> &'static str {
        match self {
            OwnershipRisk::NoStoredFiles => "no-stored-files",
            OwnershipRisk::NewerKeys => "newer-keys",
            OwnershipRisk::LargeShare => "large-share",
            OwnershipRisk::LocalKeys => "local-keys",
        }
    }
}

/// What a scan saw that bears on ownership. Counts are objects.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OwnershipStats {
    /// The database names at least one stored file (media file or avatar).
    pub stored_files_named: bool,
    /// Objects listed.
    pub scanned: u64,
    /// Objects the run deletes (or, in a dry run or report, would delete with `--delete`).
    pub deletable: u64,
    /// Of those, keys outside `cache/` that no remote row vouches for (may be local).
    pub deletable_local_layout: u64,
    /// Up to five of them.
    pub local_layout_samples: Vec<String>,
    /// Objects above the database's highest id of their table.
    pub newer_keys: u64,
    /// Up to five of them.
    pub newer_key_samples: Vec<String>,
}

impl OwnershipStats {
    /// Counts one deletable key; `refetchable` = it is under `cache/`, or the database
    /// shows a remote row in its partition (a legacy remote copy: Mastodon can fetch it
    /// again). Any other key may be a local upload.
    pub fn add_deletable(&mut self, key: &str, refetchable: bool) {
        self.deletable += 1;
        if !refetchable {
            self.deletable_local_layout += 1;
            if self.local_layout_samples.len() < SAMPLES {
                self.local_layout_samples.push(key.to_owned());
            }
        }
    }

    /// Counts one key above the database's highest id.
    pub fn add_newer(&mut self, key: &str) {
        self.newer_keys += 1;
        if self.newer_key_samples.len() < SAMPLES {
            self.newer_key_samples.push(key.to_owned());
        }
    }

    /// Adds the counts of one batch.
    pub fn merge(&mut self, other: OwnershipStats) {
        self.stored_files_named |= other.stored_files_named;
        self.scanned += other.scanned;
        self.deletable += other.deletable;
        self.deletable_local_layout += other.deletable_local_layout;
        self.newer_keys += other.newer_keys;
        for k in other.local_layout_samples {
            if self.local_layout_samples.len() < SAMPLES {
                self.local_layout_samples.push(k);
            }
        }
        for k in other.newer_key_samples {
            if self.newer_key_samples.len() < SAMPLES {
                self.newer_key_samples.push(k);
            }
        }
    }
}

/// One sign found, with the sentence that explains it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Which sign.
    pub risk: OwnershipRisk,
    /// Why it matters, with figures and sample keys.
    pub message: String,
    /// The admin accepted it with `--accept-risk` (the run goes on).
    pub accepted: bool,
}

/// The signs in `stats`, each marked accepted when `accepted` holds it. `max_share` is a
/// percentage (0–100). A run with deletes refuses when any finding is not accepted.
pub fn assess(
    stats: &OwnershipStats,
    max_share: f64,
    accepted: &BTreeSet<OwnershipRisk>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut push = |risk: OwnershipRisk, message: String| {
        out.push(Finding {
            risk,
            message,
            accepted: accepted.contains(&risk),
        });
    };
    if !stats.stored_files_named {
        push(
            OwnershipRisk::NoStoredFiles,
            "the database names no stored media file or avatar, so it cannot own any object here"
                .into(),
        );
    }
    if stats.newer_keys > 0 {
        push(
            OwnershipRisk::NewerKeys,
            format!(
                "{} object(s) sit above the database's highest id of their table (e.g. {}): the database looks older than the storage (a restored backup or staging copy?)",
                stats.newer_keys,
                stats.newer_key_samples.join(", ")
            ),
        );
    }
    if stats.scanned > 0 {
        let share = stats.deletable as f64 * 100.0 / stats.scanned as f64;
        if share > max_share {
            push(
                OwnershipRisk::LargeShare,
                format!(
                    "{} of the {} objects scanned ({share:.1} %) would be deleted, more than --max-share {max_share} %",
                    stats.deletable, stats.scanned
                ),
            );
        }
    }
    if stats.deletable_local_layout > 0 {
        push(
            OwnershipRisk::LocalKeys,
            format!(
                "{} key(s) outside cache/ would be deleted (e.g. {}): local uploads can never be fetched again",
                stats.deletable_local_layout,
                stats.local_layout_samples.join(", ")
            ),
        );
    }
    out
}

/// The refusal text for the findings not accepted, naming the flags that accept them;
/// `None` when every finding is accepted (or there is none).
pub fn refusal(findings: &[Finding]) -> Option<String> {
    let open: Vec<&Finding> = findings.iter().filter(|f| !f.accepted).collect();
    if open.is_empty() {
        return None;
    }
    let reasons = open
        .iter()
        .map(|f| f.message.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let flags = open
        .iter()
        .map(|f| format!("--accept-risk {}", f.risk.name()))
        .collect::<Vec<_>>()
        .join(" ");
    Some(format!(
        "the database may not be the owner of this storage: {reasons}. Nothing was deleted. Check DATABASE_URL / DB_NAME and S3_BUCKET / S3_KEY_PREFIX; if this database really is the whole truth about this storage, run again with {flags}"
    ))
}

/// Whether a key whose partition holds ids from `min_id` up lies above `max_id`, the
/// highest id of its table (`None`: the table is empty, so every key does).
pub fn above_max_id(min_id: Option<i64>, max_id: Option<i64>) -> bool {
    match (min_id, max_id) {
        (Some(id), Some(max)) => id > max,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The creation time (Unix milliseconds) a Mastodon snowflake id carries: ids of 18 digits
/// are `ms << 16 | sequence` (`docs/reference/mastodon-schema.md#snowflake-ids`); `None` for serial ids.
pub fn snowflake_ms(id: i64) -> Option<i64> {
    (100_000_000_000_000_000..=999_999_999_999_999_999)
        .contains(&id)
        .then_some(id >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(scanned: u64, deletable: u64) -> OwnershipStats {
        OwnershipStats {
            stored_files_named: true,
            scanned,
            deletable,
            ..Default::default()
        }
    }

    #[test]
    fn a_healthy_scan_has_no_finding() {
        let s = stats(1000, 50);
        assert!(assess(&s, DEFAULT_MAX_SHARE_PERCENT, &BTreeSet::new()).is_empty());
        assert_eq!(refusal(&[]), None);
    }

    #[test]
    fn each_sign_is_found_and_named_in_the_refusal() {
        let mut s = stats(1000, 51);
        s.stored_files_named = false;
        s.add_newer("media_attachments/files/111/000/000/000/000/001/original/a.png");
        s.add_deletable("media_attachments/files/000/000/001/original/b.png", false);
        let f = assess(&s, DEFAULT_MAX_SHARE_PERCENT, &BTreeSet::new());
        let risks: Vec<_> = f.iter().map(|f| f.risk).collect();
        assert_eq!(
            risks,
            [
                OwnershipRisk::NoStoredFiles,
                OwnershipRisk::NewerKeys,
                OwnershipRisk::LargeShare,
                OwnershipRisk::LocalKeys
            ]
        );
        let r = refusal(&f).unwrap();
        assert!(r.contains("--accept-risk no-stored-files --accept-risk newer-keys --accept-risk large-share --accept-risk local-keys"), "{r}");
        assert!(r.contains("5.2 %"), "{r}");
        assert!(r.contains("000/000/001/original/b.png"), "{r}");
    }

    #[test]
    fn accepted_risks_do_not_refuse() {
        let s = stats(100, 100);
        let accepted: BTreeSet<_> = [OwnershipRisk::LargeShare].into();
        let f = assess(&s, DEFAULT_MAX_SHARE_PERCENT, &accepted);
        assert_eq!(f.len(), 1);
        assert!(f[0].accepted);
        assert_eq!(refusal(&f), None);
        // The share threshold itself is a setting.
        assert!(assess(&s, 100.0, &BTreeSet::new()).is_empty());
        assert_eq!(assess(&stats(100, 5), 5.0, &BTreeSet::new()), vec![]);
        assert_eq!(assess(&stats(100, 6), 5.0, &BTreeSet::new()).len(), 1);
    }

    #[test]
    fn merge_adds_counts_and_keeps_five_samples() {
        let mut a = OwnershipStats::default();
        for i in 0..4 {
            a.add_newer(&format!("k{i}"));
        }
        let mut b = OwnershipStats {
            stored_files_named: true,
            scanned: 3,
            ..Default::default()
        };
        for i in 4..8 {
            b.add_newer(&format!("k{i}"));
        }
        a.merge(b);
        assert!(a.stored_files_named);
        assert_eq!(a.newer_keys, 8);
        assert_eq!(a.newer_key_samples, ["k0", "k1", "k2", "k3", "k4"]);
        assert_eq!(a.scanned, 3);
    }

    #[test]
    fn snowflake_ms_reads_the_creation_time_of_18_digit_ids() {
        // docs/reference/mastodon-schema.md#snowflake-ids: 2024-01-01T00:00Z is 111677748019200000.
        assert_eq!(
            snowflake_ms(111_677_748_019_200_000),
            Some(1_704_067_200_000)
        );
        assert_eq!(snowflake_ms(4242), None);
        assert_eq!(snowflake_ms(99_999_999_999_999_999), None);
    }

    #[test]
    fn above_max_id_compares_the_lowest_id_of_the_partition() {
        assert!(above_max_id(Some(11), Some(10)));
        assert!(!above_max_id(Some(10), Some(10)));
        assert!(above_max_id(Some(1), None));
        assert!(!above_max_id(None, Some(1)));
    }
}
