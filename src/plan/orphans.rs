//! Pure decisions of `orphans`: which class an object falls in, given its parsed key and
//! the rows that could own it, and whether it may be deleted.
//!
//! Compared with `tootctl media remove-orphans` (`docs/reference/tootctl-rules.md#remove-orphans`): the key is
//! compared with the exact keys the row owns now ([`StoredAttachment::keys`]), so a legacy
//! copy beside a `cache/` one (or an old file name, or a copy of one style's file under
//! another style) is a *stale copy*, not the row's; a key of a local row is kept unless it is
//! surely not the row's file (under `cache/`, another file name, the wrong style), in which
//! case it is a stale copy too; in a partition shared by several ids (13–17 digit
//! ids, `docs/reference/key-layout.md#shared-partitions`) a key whose file name a neighbour row holds is kept as uncertain; keys the
//! parser cannot place are never deleted.

use chrono::{DateTime, Utc};

use super::layout::{KeyPrefix, StoredAttachment};
use super::parse::{ParsedKey, Unrecognised};

/// Why a key counts as referenced (kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// One of the exact keys a row owns now.
    Owned,
    /// In the row's partition and location (`cache/` or not) with the row's stored
    /// basename, under a style the layout does not predict (e.g. a converted HEIC): what
    /// Mastodon's own orphan test counts as the row's.
    Variant,
    /// The row is local (a local upload, account or emoji, a site upload, backup, import
    /// or provider icon) and the key may be its file (same basename, a style the layout
    /// does not predict; or a shared partition; or the attachment is blank): never removed.
    LocalRow,
    /// A partition several ids share, where a neighbour row holds this file name, or a
    /// table or column this database does not have: cannot be decided, so kept.
    Uncertain,
}

/// Why a key is an orphan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrphanReason {
    /// No row with this id (in this partition) exists.
    RowGone,
    /// The row exists but its attachment is blank (pruned, removed).
    AttachmentCleared,
}

/// The class of one listed object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A row owns (or may own) it.
    Referenced(Kept),
    /// Nothing owns it.
    Orphan(OrphanReason),
    /// A remote row exists with this attachment stored, but this exact key is not one of
    /// the keys it owns now (legacy copy, old file name).
    Stale,
    /// Outside Mastodon's layout.
    Unrecognised(Unrecognised),
}

impl Class {
    /// Stable snake_case name of the class (`referenced`, `orphan`, `stale`, `unrecognised`).
    pub fn name(self) -> &'static str {
        match self {
            Class::Referenced(_) => "referenced",
            Class::Orphan(_) => "orphan",
            Class::Stale => "stale",
            Class::Unrecognised(_) => "unrecognised",
        }
    }

    /// Stable snake_case reason within the class.
    pub fn reason(self) -> &'static str {
        match self {
            Class::Referenced(Kept::Owned) => "owned",
            Class::Referenced(Kept::Variant) => "variant",
            Class::Referenced(Kept::LocalRow) => "local_row",
            Class::Referenced(Kept::Uncertain) => "uncertain",
            Class::Orphan(OrphanReason::RowGone) => "row_gone",
            Class::Orphan(OrphanReason::AttachmentCleared) => "attachment_cleared",
            Class::Stale => "not_owned",
            Class::Unrecognised(Unrecognised::OutsidePrefix) => "outside_prefix",
            Class::Unrecognised(Unrecognised::DirectoryMarker) => "directory_marker",
            Class::Unrecognised(Unrecognised::UnknownClass) => "unknown_class",
            Class::Unrecognised(Unrecognised::BadShape) => "bad_shape",
        }
    }

    /// Whether `--delete` may remove an object of this class: orphans, and stale copies
    /// only with `include_stale`. Never referenced or unrecognised keys.
    pub fn deletable(self, include_stale: bool) -> bool {
        match self {
            Class::Orphan(_) => true,
            Class::Stale => include_stale,
            Class::Referenced(_) | Class::Unrecognised(_) => false,
        }
    }
}

/// A row that may own a key: one row of the key's table whose id is in the key's
/// partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner<'a> {
    /// Primary key.
    pub id: i64,
    /// Remote record, decided from the database (`docs/reference/key-layout.md#cache-prefix`).
    pub remote: bool,
    /// The key's attachment on this row; `None` when blank.
    pub file: Option<StoredAttachment<'a>>,
}

/// Classifies `key` (as listed), parsed as `parsed`, given every row in its partition
/// (`owners`; `None` when the database cannot tell: table or columns missing).
pub fn classify(
    key: &str,
    parsed: &ParsedKey<'_>,
    owners: Option<&[Owner<'_>]>,
    prefix: &KeyPrefix,
) -> Class {
    let Some(owners) = owners else {
        return Class::Referenced(Kept::Uncertain);
    };
    if owners.is_empty() {
        return Class::Orphan(OrphanReason::RowGone);
    }
    if owners.iter().any(|o| owns_exactly(o, key, prefix)) {
        return Class::Referenced(Kept::Owned);
    }
    let same_base = |f: &StoredAttachment<'_>| basename(f.file_name) == basename(parsed.file_name);
    let shared = parsed.id_ranges().len() > 1;
    if owners.iter().any(|o| !o.remote) {
        // A local row in a partition of its own: a key it does not own is a stale copy when
        // it is surely not a variant of the row's file: under cache/ (a local row never is),
        // a copy of another style's file under the wrong style (`docs/reference/key-layout.md#styles`), or another file name
        // (an avatar or header replaced since). Everything else of a local row is kept.
        let stale = !shared
            && owners.iter().all(|o| {
                o.file
                    .as_ref()
                    .is_some_and(|f| !is_variant(f, parsed, prefix))
            });
        return if stale {
            Class::Stale
        } else {
            Class::Referenced(Kept::LocalRow)
        };
    }
    if shared {
        if owners
            .iter()
            .any(|o| o.file.as_ref().is_some_and(same_base))
        {
            return Class::Referenced(Kept::Uncertain);
        }
    } else if owners.iter().any(|o| {
        o.file
            .as_ref()
            .is_some_and(|f| is_variant(f, parsed, prefix))
    }) {
        return Class::Referenced(Kept::Variant);
    }
    if owners.iter().all(|o| o.file.is_none()) {
        return Class::Orphan(OrphanReason::AttachmentCleared);
    }
    Class::Stale
}

/// Whether a row of `owners` (the rows in `parsed`'s partition) names exactly this file:
/// one of its exact keys, or, in a partition of one id, a same-basename variant at the
/// row's location that is not a copy under the wrong style (what [`classify`] calls
/// owned or a variant, for local rows too). A shared 13–17-digit partition, a blank
/// attachment or another file name never counts. This is what may vouch for publishing a
/// private object (`migrate --repair-acl`, `docs/reference/provider-quirks.md#a3`): a row in the folder is not enough.
pub fn row_names(
    key: &str,
    parsed: &ParsedKey<'_>,
    owners: &[Owner<'_>],
    prefix: &KeyPrefix,
) -> bool {
    owners.iter().any(|o| owns_exactly(o, key, prefix))
        || (parsed.id_ranges().len() == 1
            && owners.iter().any(|o| {
                o.file
                    .as_ref()
                    .is_some_and(|f| is_variant(f, parsed, prefix))
            }))
}

/// Whether `key` is one of the exact keys `o` owns now (its attachment, every style).
fn owns_exactly(o: &Owner<'_>, key: &str, prefix: &KeyPrefix) -> bool {
    o.file
        .as_ref()
        .is_some_and(|f| f.keys(prefix).iter().any(|k| k.as_str() == key))
}

/// Whether the parsed key may be a variant of `f` that the layout does not predict: at the
/// row's location (`cache/` or not), with the stored basename, and not a copy of another
/// style's file under the wrong style. Only meaningful in a partition of one id.
fn is_variant(f: &StoredAttachment<'_>, parsed: &ParsedKey<'_>, prefix: &KeyPrefix) -> bool {
    f.cached() == parsed.cache
        && basename(f.file_name) == basename(parsed.file_name)
        && !wrong_style(f, parsed, prefix)
}

/// Whether the key is a copy of one style's file under another style the row has (a video's
/// `small/<base>.mp4`, where Mastodon writes `small/<base>.png` and `original/<base>.mp4`):
/// its style directory is one the layout predicts for `f`, and its file name is the one a
/// *different* style of `f` has. A same-basename file under a predicted style with a name
/// no style has (a converted HEIC kept as `.jpeg`, `docs/reference/key-layout.md#styles`) is not one: it stays a variant.
fn wrong_style(f: &StoredAttachment<'_>, parsed: &ParsedKey<'_>, prefix: &KeyPrefix) -> bool {
    let keys = f.keys(prefix);
    let split = |k: &str| -> Option<(String, String)> {
        let mut it = k.rsplitn(3, '/');
        let name = it.next()?.to_owned();
        let style = it.next()?.to_owned();
        Some((style, name))
    };
    let styled: Vec<(String, String)> = keys.iter().filter_map(|k| split(k.as_str())).collect();
    styled.iter().any(|(style, _)| style == parsed.style)
        && styled
            .iter()
            .any(|(style, name)| style != parsed.style && name == parsed.file_name)
}

/// Whether an object last modified at `modified` is younger than `min_age_days` at `now`
/// (an upload that may be in flight). Unknown times count as young: never deleted.
pub fn too_young(modified: Option<DateTime<Utc>>, now: DateTime<Utc>, min_age_days: f64) -> bool {
    let Some(m) = modified else {
        return true;
    };
    let age_ms = now.signed_duration_since(m).num_milliseconds();
    age_ms < 0 || (age_ms as f64) < min_age_days * 86_400_000.0
}

/// A stored name without its last extension (`a.b.png` → `a.b`; `abc` → `abc`).
fn basename(name: &str) -> &str {
    match name.rfind('.') {
        Some(i) if i > 0 => &name[..i],
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::layout::Attachment;
    use crate::plan::parse::parse_key;

    const P18: &str = "109/345/678/901/234/567";
    const ID: i64 = 109345678901234567;

    fn file(name: &str, version: Option<i32>, remote: bool) -> StoredAttachment<'_> {
        StoredAttachment {
            attachment: Attachment::MediaFile,
            id: ID,
            file_name: name,
            content_type: Some("image/png"),
            storage_schema_version: version,
            remote,
            site_upload_var: None,
        }
    }

    fn owner(file_: Option<StoredAttachment<'_>>, remote: bool) -> Owner<'_> {
        Owner {
            id: ID,
            remote,
            file: file_,
        }
    }

    fn class(key: &str, owners: Option<&[Owner<'_>]>) -> Class {
        let none = KeyPrefix::default();
        let parsed = parse_key(key, &none).unwrap();
        classify(key, &parsed, owners, &none)
    }

    #[test]
    fn unique_partitions() {
        let cached = format!("cache/media_attachments/files/{P18}/original/8f3a2b1c4d5e6f70.png");
        let legacy = format!("media_attachments/files/{P18}/original/8f3a2b1c4d5e6f70.png");
        let small = format!("cache/media_attachments/files/{P18}/small/8f3a2b1c4d5e6f70.jpeg");
        let old_name = format!("cache/media_attachments/files/{P18}/original/0000000000000000.png");
        let v1 = [owner(
            Some(file("8f3a2b1c4d5e6f70.png", Some(1), true)),
            true,
        )];
        let cleared = [owner(None, true)];
        let local = [owner(
            Some(file("8f3a2b1c4d5e6f70.png", Some(1), false)),
            false,
        )];
        let local_cleared = [owner(None, false)];
        let cases: Vec<(&str, Option<&[Owner<'_>]>, Class)> = vec![
            (&cached, Some(&v1), Class::Referenced(Kept::Owned)),
            (&legacy, Some(&v1), Class::Stale),
            (&small, Some(&v1), Class::Referenced(Kept::Variant)),
            (&old_name, Some(&v1), Class::Stale),
            (&cached, Some(&[]), Class::Orphan(OrphanReason::RowGone)),
            (
                &cached,
                Some(&cleared),
                Class::Orphan(OrphanReason::AttachmentCleared),
            ),
            // A local row never stores under cache/: a stale copy (issue 9.5).
            (&cached, Some(&local), Class::Stale),
            (&legacy, Some(&local), Class::Referenced(Kept::Owned)),
            // A local row's replaced file (another name) is stale too.
            (&old_name, Some(&local), Class::Stale),
            (
                &old_name,
                Some(&local_cleared),
                Class::Referenced(Kept::LocalRow),
            ),
            (&cached, None, Class::Referenced(Kept::Uncertain)),
        ];
        for (key, owners, want) in cases {
            assert_eq!(class(key, owners), want, "{key}");
        }
    }

    #[test]
    fn a_copy_under_the_wrong_style_is_stale_a_converted_variant_is_not() {
        let video = |remote: bool| StoredAttachment {
            content_type: Some("video/mp4"),
            storage_schema_version: Some(i32::from(remote)),
            ..file("0a1b2c3d4e5f6071.mp4", Some(1), remote)
        };
        let remote_video = [owner(Some(video(true)), true)];
        let wrong = format!("cache/media_attachments/files/{P18}/small/0a1b2c3d4e5f6071.mp4");
        let right = format!("cache/media_attachments/files/{P18}/small/0a1b2c3d4e5f6071.png");
        assert_eq!(class(&wrong, Some(&remote_video)), Class::Stale);
        assert_eq!(
            class(&right, Some(&remote_video)),
            Class::Referenced(Kept::Owned)
        );
        // The same for a local video (no cache/).
        let local_video = [owner(Some(video(false)), false)];
        let wrong_local = format!("media_attachments/files/{P18}/small/0a1b2c3d4e5f6071.mp4");
        assert_eq!(class(&wrong_local, Some(&local_video)), Class::Stale);
        // A row stored as image/jpeg with a .heic name: the real small file is .jpeg, a name
        // no style has; Mastodon's own orphan test counts it as the row's: kept.
        let heic = [owner(
            Some(StoredAttachment {
                content_type: Some("image/jpeg"),
                ..file("1122334455667788.heic", Some(1), true)
            }),
            true,
        )];
        let converted = format!("cache/media_attachments/files/{P18}/small/1122334455667788.jpeg");
        assert_eq!(
            class(&converted, Some(&heic)),
            Class::Referenced(Kept::Variant)
        );
        let heic_local = [owner(
            Some(StoredAttachment {
                content_type: Some("image/jpeg"),
                ..file("1122334455667788.heic", None, false)
            }),
            false,
        )];
        let converted_local = format!("media_attachments/files/{P18}/small/1122334455667788.jpeg");
        assert_eq!(
            class(&converted_local, Some(&heic_local)),
            Class::Referenced(Kept::LocalRow)
        );
    }

    #[test]
    fn only_a_row_naming_the_file_vouches_for_it() {
        let none = KeyPrefix::default();
        let named = |key: &str, owners: &[Owner<'_>]| {
            row_names(key, &parse_key(key, &none).unwrap(), owners, &none)
        };
        let local = [owner(
            Some(file("8f3a2b1c4d5e6f70.png", None, false)),
            false,
        )];
        let own = format!("media_attachments/files/{P18}/original/8f3a2b1c4d5e6f70.png");
        let other = format!("media_attachments/files/{P18}/original/ffffffffffffffff.jpg");
        assert!(named(&own, &local));
        assert!(!named(&other, &local), "a row in the folder is not enough");
        assert!(!named(&own, &[owner(None, false)]), "blank attachment");
        // A shared 17-digit partition: only an exact key of a row counts.
        let shared = "media_attachments/files/984/249/801/768/961/original/0123456789abcdef.jpg";
        let neighbour = [Owner {
            id: 98424980176896130,
            remote: false,
            file: Some(StoredAttachment {
                id: 98424980176896130,
                ..file("0123456789abcdee.jpg", None, false)
            }),
        }];
        assert!(!named(shared, &neighbour));
    }

    #[test]
    fn shared_partitions_keep_what_a_neighbour_may_own() {
        let key = "cache/media_attachments/files/999/999/999/999/999/original/bbbbbbbbbbbbbbb1.png";
        let neighbour = |name| Owner {
            id: 99999999999999998,
            remote: true,
            file: Some(StoredAttachment {
                id: 99999999999999998,
                ..file(name, Some(1), true)
            }),
        };
        // The neighbour holds this very name at another location: uncertain, kept.
        let legacy_neighbour = [Owner {
            file: Some(StoredAttachment {
                storage_schema_version: None,
                ..neighbour("bbbbbbbbbbbbbbb1.png").file.unwrap()
            }),
            ..neighbour("x")
        }];
        assert_eq!(
            class(key, Some(&legacy_neighbour)),
            Class::Referenced(Kept::Uncertain)
        );
        // Exactly owned by the neighbour (same partition, same name).
        assert_eq!(
            class(key, Some(&[neighbour("bbbbbbbbbbbbbbb1.png")])),
            Class::Referenced(Kept::Owned)
        );
        // A neighbour with an unrelated name: nobody holds this one.
        assert_eq!(
            class(key, Some(&[neighbour("cccccccccccccc99.png")])),
            Class::Stale
        );
        assert_eq!(class(key, Some(&[])), Class::Orphan(OrphanReason::RowGone));
    }

    #[test]
    fn only_orphans_and_opted_in_stale_copies_are_deletable() {
        assert!(Class::Orphan(OrphanReason::RowGone).deletable(false));
        assert!(!Class::Stale.deletable(false));
        assert!(Class::Stale.deletable(true));
        for c in [
            Class::Referenced(Kept::Owned),
            Class::Referenced(Kept::Uncertain),
            Class::Unrecognised(Unrecognised::BadShape),
        ] {
            assert!(!c.deletable(true), "{c:?}");
        }
    }

    #[test]
    fn age_gate() {
        let now = DateTime::parse_from_rfc3339("2025-06-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let ago = |h: i64| Some(now - chrono::Duration::hours(h));
        assert!(too_young(None, now, 1.0));
        assert!(too_young(ago(23), now, 1.0));
        assert!(!too_young(ago(25), now, 1.0));
        assert!(!too_young(ago(0), now, 0.0));
        assert!(
            too_young(Some(now + chrono::Duration::hours(1)), now, 0.0),
            "clock skew"
        );
    }
}
