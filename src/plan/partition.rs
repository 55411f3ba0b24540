//! Which folders to list to size a batch of Mastodon keys with few requests: the
//! "partition" folder a row's styles share, and a coarser folder where several rows of a
//! batch sit close together (`docs/ARCHITECTURE.md`, "Prune pipeline": rows whose
//! snowflake ids lie within ~15 s of each other share one listing). The store lists the
//! prefixes it is given ([`crate::store::Store::stat_many`]) and knows nothing of this
//! layout.
//!
//! Mastodon's id partitions (`src/plan/layout.rs`): a serial id is split into three
//! groups of three digits (`000/004/242`), a snowflake id into six (`109/345/678/901/234/567`).

use std::collections::{BTreeMap, BTreeSet};

/// Rows whose partitions share a coarser folder at least this often are sized with one
/// listing of that folder instead of one per row.
pub const COARSE_MIN_ROWS: usize = 3;

/// The "partition directory" a key's styles share: the key without its last two segments
/// (`<style>/<file>`), with a trailing slash; `""` for a key of fewer than three segments.
/// Listing it returns every style of the row.
pub fn partition_prefix(key: &str) -> &str {
    let mut cut = key.len();
    for _ in 0..2 {
        match key[..cut].rfind('/') {
            Some(i) => cut = i,
            None => return "",
        }
    }
    &key[..=cut]
}

/// The prefixes to list to size `keys` (pass only keys `store::validate_key` accepts):
/// each row's partition folder, or, where at least [`COARSE_MIN_ROWS`] rows share it, a
/// coarser folder ([`coarse_prefix`]). On busy instances this sizes dozens of rows per
/// request. In key order, without repeats; every key starts with one of them.
pub fn listing_prefixes<'a>(keys: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let rows: BTreeSet<&str> = keys.into_iter().map(partition_prefix).collect();
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for p in rows {
        groups.entry(coarse_prefix(p)).or_default().push(p);
    }
    let mut out = Vec::new();
    for (coarse, members) in groups {
        if members.len() >= COARSE_MIN_ROWS && coarse.len() < members[0].len() {
            out.push(coarse.to_owned());
        } else {
            out.extend(members.into_iter().map(str::to_owned));
        }
    }
    out
}

/// A partition folder without its finest groups: a snowflake partition (six or more
/// three-digit groups at its end) without its last three (ids within ~15 s of each
/// other), a serial partition (three to five groups) without its last one (1000 ids):
/// `…/109/345/678/901/234/567/` → `…/109/345/678/`; `…/000/004/242/` → `…/000/004/`;
/// anything else unchanged.
pub fn coarse_prefix(prefix: &str) -> &str {
    let groups = prefix
        .trim_end_matches('/')
        .rsplit('/')
        .take_while(|g| g.len() == 3 && g.bytes().all(|b| b.is_ascii_digit()))
        .count();
    let drop = match groups {
        6.. => 3,
        3..=5 => 1,
        _ => return prefix,
    };
    let mut cut = prefix.len() - 1; // the trailing slash
    for _ in 0..drop {
        cut = prefix[..cut].rfind('/').unwrap_or(0);
    }
    &prefix[..=cut]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_rows_share_one_listing() {
        let p = "cache/media_attachments/files/109/345/678";
        let keys = [
            format!("{p}/901/234/567/original/a.png"),
            format!("{p}/901/234/567/small/a.png"),
            format!("{p}/901/299/001/original/b.png"),
            format!("{p}/955/000/123/original/c.png"),
            "cache/media_attachments/files/109/999/000/111/222/333/original/d.png".to_owned(),
        ];
        let got = listing_prefixes(keys.iter().map(String::as_str));
        assert_eq!(
            got,
            [
                format!("{p}/"),
                "cache/media_attachments/files/109/999/000/111/222/333/".to_owned()
            ]
        );
        assert_eq!(
            coarse_prefix("cache/accounts/avatars/000/004/242/"),
            "cache/accounts/avatars/000/004/"
        );
        assert_eq!(coarse_prefix("robots/"), "robots/");
    }

    #[test]
    fn partition_prefix_drops_style_and_file() {
        assert_eq!(
            partition_prefix(
                "cache/media_attachments/files/109/345/678/901/234/567/original/a.png"
            ),
            "cache/media_attachments/files/109/345/678/901/234/567/"
        );
        assert_eq!(partition_prefix("a/b"), "");
        assert_eq!(partition_prefix("x/a/b"), "x/");
    }

    #[test]
    fn coarse_prefix_table() {
        for (input, want) in [
            ("a/109/345/678/901/234/567/", "a/109/345/678/"),
            ("a/1/109/345/678/901/234/567/", "a/1/109/345/678/"),
            ("accounts/avatars/000/004/242/", "accounts/avatars/000/004/"),
            ("a/000/004/242/111/", "a/000/004/242/"),
            ("a/000/004/", "a/000/004/"),
            ("a/00x/004/242/", "a/00x/004/242/"),
            ("", ""),
            ("x/", "x/"),
        ] {
            assert_eq!(coarse_prefix(input), want, "{input}");
        }
    }

    #[test]
    fn sparse_rows_keep_their_own_partition_and_every_key_is_covered() {
        let keys = [
            "accounts/avatars/000/004/242/original/a.png",
            "accounts/avatars/000/004/243/original/b.png",
            "accounts/headers/000/004/242/original/h.png",
            "robots.txt",
            "x/y",
        ];
        let got = listing_prefixes(keys);
        assert_eq!(
            got,
            [
                "",
                "accounts/avatars/000/004/242/",
                "accounts/avatars/000/004/243/",
                "accounts/headers/000/004/242/",
            ]
        );
        for k in keys {
            assert!(got.iter().any(|p| k.starts_with(p.as_str())), "{k}");
        }
        // Three rows in one serial folder: one listing of the folder.
        let dense = [
            "accounts/avatars/000/004/242/original/a.png",
            "accounts/avatars/000/004/243/original/b.png",
            "accounts/avatars/000/004/244/original/c.png",
        ];
        assert_eq!(listing_prefixes(dense), ["accounts/avatars/000/004/"]);
        assert!(listing_prefixes([]).is_empty());
    }
}
