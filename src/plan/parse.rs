//! The inverse of [`super::layout`]: parse an object key back into Mastodon's layout
//! (`docs/reference/key-layout.md#template`, `docs/reference/tootctl-rules.md#remove-orphans`), for `du` and `orphans`.
//!
//! Unlike tootctl's `remove-orphans`, only one leading `cache/` segment is accepted, the
//! configured `S3_KEY_PREFIX` is stripped first, every partition group must be exactly three
//! digits, and keys outside the layout (root files, directory markers, short paths) are
//! reported as unrecognised rather than guessed at.

use std::ops::RangeInclusive;

use super::layout::{Attachment, KeyPrefix};

/// A key that fits Mastodon's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    /// Under `cache/` (a remote copy with storage schema version ≥ 1).
    pub cache: bool,
    /// The attachment slot (`<class>/<attachment>`).
    pub attachment: Attachment,
    /// The partition digits, groups joined without `/` (9, 12, 15 or 18 digits).
    pub partition: String,
    /// Style directory (`original`, `small`, `static`, ...).
    pub style: &'a str,
    /// The file name (last segment).
    pub file_name: &'a str,
}

impl ParsedKey<'_> {
    /// The ids whose partition is this one (`docs/reference/key-layout.md#shared-partitions`): one id for 3 and 6 groups; for 4 groups
    /// the 12-digit id and the 13–14-digit ids sharing its first 12 digits; for 5 groups the
    /// 15-digit id and the 16–17-digit ids sharing its first 15 digits.
    pub fn id_ranges(&self) -> Vec<RangeInclusive<i64>> {
        let Ok(base) = self.partition.parse::<i64>() else {
            return Vec::new();
        };
        match self.partition.len() {
            9 | 18 => vec![base..=base],
            12 => {
                // ids of 10–12 digits were zero-padded to 12: the value itself. 13–14
                // digit ids drop their last 1–2 digits.
                let mut v = vec![base..=base];
                if self.partition.starts_with(|c: char| c != '0') {
                    v.push(base * 10..=base * 10 + 9);
                    v.push(base * 100..=base * 100 + 99);
                }
                v
            }
            15 => {
                let mut v = vec![base..=base];
                if self.partition.starts_with(|c: char| c != '0') {
                    v.push(base * 10..=base * 10 + 9);
                    v.push(base * 100..=base * 100 + 99);
                }
                v
            }
            _ => Vec::new(),
        }
    }
}

/// Why a key is outside the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unrecognised {
    /// Not below the configured `S3_KEY_PREFIX`.
    OutsidePrefix,
    /// A "directory marker" (ends with `/`) or empty.
    DirectoryMarker,
    /// `<class>/<attachment>` is not one Mastodon stores.
    UnknownClass,
    /// Wrong number of segments, or a partition group that is not three digits.
    BadShape,
}

/// Parses `key` (as listed, with any `S3_KEY_PREFIX`).
pub fn parse_key<'a>(key: &'a str, prefix: &KeyPrefix) -> Result<ParsedKey<'a>, Unrecognised> {
    let rest = match prefix.as_deref() {
        Some(p) => key
            .strip_prefix(p)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or(Unrecognised::OutsidePrefix)?,
        None => key,
    };
    if rest.is_empty() || rest.ends_with('/') {
        return Err(Unrecognised::DirectoryMarker);
    }
    let (cache, rest) = match rest.strip_prefix("cache/") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let segs: Vec<&str> = rest.split('/').collect();
    // class, attachment, 3..=6 groups, style, file
    if segs.len() < 7 || segs.len() > 10 {
        return Err(
            if segs.len() >= 2 && attachment_of(segs[0], segs[1]).is_none() {
                Unrecognised::UnknownClass
            } else {
                Unrecognised::BadShape
            },
        );
    }
    let attachment = attachment_of(segs[0], segs[1]).ok_or(Unrecognised::UnknownClass)?;
    let groups = &segs[2..segs.len() - 2];
    if !groups
        .iter()
        .all(|g| g.len() == 3 && g.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(Unrecognised::BadShape);
    }
    let style = segs[segs.len() - 2];
    let file_name = segs[segs.len() - 1];
    if style.is_empty() || file_name.is_empty() {
        return Err(Unrecognised::BadShape);
    }
    Ok(ParsedKey {
        cache,
        attachment,
        partition: groups.concat(),
        style,
        file_name,
    })
}

/// The attachment slot for a `<class>/<attachment>` pair.
pub fn attachment_of(class: &str, segment: &str) -> Option<Attachment> {
    Attachment::ALL
        .into_iter()
        .find(|a| a.class() == class && a.segment() == segment)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::layout::{StoredAttachment, id_partition};

    #[test]
    fn parses_what_layout_writes() {
        let cases = [
            (Attachment::MediaFile, 109345678901234567_i64, Some(1), true),
            (Attachment::MediaThumbnail, 109345678901234567, None, true),
            (Attachment::Avatar, 123456789, Some(1), true),
            (Attachment::EmojiImage, 1, None, false),
            (Attachment::PreviewCardImage, 4242, Some(1), true),
            (Attachment::SiteUploadFile, 3, None, false),
            (Attachment::ImportData, 7, None, false),
            (Attachment::MediaFile, 99999999999999999, Some(1), true),
            (Attachment::MediaFile, 1234567890123, Some(1), true),
        ];
        for prefix in [KeyPrefix::default(), KeyPrefix::new(Some("social"))] {
            for (att, id, version, remote) in cases {
                let a = StoredAttachment {
                    attachment: att,
                    id,
                    file_name: "0123456789abcdef.png",
                    content_type: Some("image/png"),
                    storage_schema_version: version,
                    remote,
                    site_upload_var: Some("thumbnail"),
                };
                for key in a.keys(&prefix) {
                    let p =
                        parse_key(key.as_str(), &prefix).unwrap_or_else(|e| panic!("{key}: {e:?}"));
                    assert_eq!(p.attachment, att);
                    assert_eq!(p.cache, a.cached(), "{key}");
                    assert_eq!(p.partition, id_partition(id).replace('/', ""));
                    assert!(
                        p.id_ranges().iter().any(|r| r.contains(&id)),
                        "{key}: {id} in {:?}",
                        p.id_ranges()
                    );
                }
            }
        }
    }

    #[test]
    fn strangers_are_unrecognised_never_guessed() {
        let none = KeyPrefix::default();
        let cases = [
            ("robots.txt", Unrecognised::BadShape),
            ("media_attachments/", Unrecognised::DirectoryMarker),
            ("", Unrecognised::DirectoryMarker),
            (
                "cache/media_attachments/files/109/original/x.png",
                Unrecognised::BadShape,
            ),
            (
                "media_attachments/files/10a/345/678/original/x.png",
                Unrecognised::BadShape,
            ),
            (
                "statuses/files/000/000/001/original/x.png",
                Unrecognised::UnknownClass,
            ),
            (
                "cache/cache/media_attachments/files/000/000/001/original/x.png",
                Unrecognised::UnknownClass,
            ),
            (
                "media_attachments/files/000/000/001/original/",
                Unrecognised::DirectoryMarker,
            ),
        ];
        for (key, want) in cases {
            assert_eq!(parse_key(key, &none), Err(want), "{key}");
        }
        assert_eq!(
            parse_key(
                "other/cache/preview_cards/images/000/004/242/original/c.jpg",
                &KeyPrefix::new(Some("social"))
            ),
            Err(Unrecognised::OutsidePrefix)
        );
    }

    #[test]
    fn seventeen_digit_partitions_cover_their_neighbours() {
        let p = parse_key(
            "cache/media_attachments/files/999/999/999/999/999/original/a.png",
            &KeyPrefix::default(),
        )
        .unwrap();
        let ranges = p.id_ranges();
        for id in [999999999999999_i64, 9999999999999998, 99999999999999999] {
            assert!(ranges.iter().any(|r| r.contains(&id)), "{id}");
        }
    }
}
