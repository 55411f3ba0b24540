//! `mastomedia reconcile` (issue 14, item 3): which keys a row's stored files should have
//! ([`expected_keys`], local rows too: no `cache/` for them), what is missing
//! ([`Missing`]), the report's categories ([`Category`]) and the refusal when too much is
//! missing ([`too_much_missing`]). Pure.

use super::layout::{KeyPrefix, ObjectKey, StoredAttachment};
use crate::model::{Attachment, CandidateRow};

/// A report category: the attachment kind and whether its row is remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// `media_attachments` (the file and its thumbnail).
    MediaAttachments,
    /// `accounts.avatar`.
    Avatars,
    /// `accounts.header`.
    Headers,
    /// `preview_cards.image` (always remote).
    PreviewCards,
}

impl Category {
    /// The category of an attachment slot (`None`: not one reconcile checks).
    pub fn of(a: Attachment) -> Option<Category> {
        match a {
            Attachment::MediaFile | Attachment::MediaThumbnail => Some(Category::MediaAttachments),
            Attachment::Avatar => Some(Category::Avatars),
            Attachment::Header => Some(Category::Headers),
            Attachment::PreviewCardImage => Some(Category::PreviewCards),
            _ => None,
        }
    }

    /// The name used in the report (`media_attachments`, `avatars`, …).
    pub fn name(self) -> &'static str {
        match self {
            Category::MediaAttachments => "media_attachments",
            Category::Avatars => "avatars",
            Category::Headers => "headers",
            Category::PreviewCards => "preview_cards",
        }
    }
}

/// What a key is to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The `original` style of the row's main file (media file, avatar, header, card image).
    Original,
    /// Another style of it (`small`, `static`).
    Style,
    /// A media attachment's custom thumbnail (any style).
    Thumbnail,
}

/// One expected key of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedKey {
    /// The key (exact; `cache/` decided per attachment as Mastodon does).
    pub key: ObjectKey,
    /// Its category.
    pub category: Category,
    /// Original, other style or thumbnail.
    pub role: Role,
}

/// Every key `row`'s stored files should have, in [`crate::plan::prune::row_keys`]'s order
/// (attachments in row order, `original` first): `remote` says whether the row is remote
/// (media `remote_url <> ''`, accounts `domain IS NOT NULL`, cards always), which decides
/// `cache/` with the attachment's schema version
/// (`docs/reference/key-layout.md`).
pub fn expected_keys(row: &CandidateRow, remote: bool, prefix: &KeyPrefix) -> Vec<ExpectedKey> {
    let mut out = Vec::new();
    for f in &row.files {
        let Some(category) = Category::of(f.attachment) else {
            continue;
        };
        let keys = StoredAttachment {
            attachment: f.attachment,
            id: row.id,
            file_name: &f.file_name,
            content_type: f.content_type.as_deref(),
            storage_schema_version: f.storage_schema_version,
            remote,
            site_upload_var: None,
        }
        .keys(prefix);
        for (i, key) in keys.into_iter().enumerate() {
            let role = match (f.attachment, i) {
                (Attachment::MediaThumbnail, _) => Role::Thumbnail,
                (_, 0) => Role::Original,
                _ => Role::Style,
            };
            out.push(ExpectedKey {
                key,
                category,
                role,
            });
        }
    }
    out
}

/// What is missing of one row, per category it has keys in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Missing {
    /// Keys not in the storage.
    pub keys: Vec<ObjectKey>,
    /// Categories with a missing key (a row can be in two: an account's avatar and header).
    pub categories: Vec<Category>,
    /// The original of the main file is missing.
    pub original: bool,
    /// Another style is missing while the original is there.
    pub style_only: bool,
    /// A thumbnail key is missing.
    pub thumbnail: bool,
}

impl Missing {
    /// Nothing is missing.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Compares `expected` with `present` (one answer per key: listed in the storage or not).
pub fn missing(expected: &[ExpectedKey], present: &[bool]) -> Missing {
    let mut m = Missing::default();
    for (e, &p) in expected.iter().zip(present) {
        if p {
            continue;
        }
        m.keys.push(e.key.clone());
        if !m.categories.contains(&e.category) {
            m.categories.push(e.category);
        }
        match e.role {
            Role::Original => m.original = true,
            Role::Style => m.style_only = true,
            Role::Thumbnail => m.thumbnail = true,
        }
    }
    // A row with its original gone is "missing original", whatever else is.
    if m.original {
        m.style_only = false;
    }
    m
}

/// Missing rows at or below this count never trigger the refusal (a small instance with a
/// few lost files).
pub const REFUSE_MIN_MISSING: u64 = 20;
/// The refusal's fraction: more than half of the checked rows missing a file.
pub const REFUSE_FRACTION: f64 = 0.5;

/// `reconcile --apply` refuses (exit 3, unless `--force-missing`) when more than
/// [`REFUSE_FRACTION`] of the `checked` rows miss a file and more than
/// [`REFUSE_MIN_MISSING`] do: against the wrong bucket, a copy of another instance's
/// database or a half-finished migration, every row looks missing, and clearing them would
/// make Mastodon forget files that are only elsewhere.
pub fn too_much_missing(checked: u64, missing: u64) -> bool {
    missing > REFUSE_MIN_MISSING && (missing as f64) > REFUSE_FRACTION * (checked as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CandidateFile, RowTable};

    fn media(id: i64, thumb: bool) -> CandidateRow {
        let mut files = vec![CandidateFile {
            attachment: Attachment::MediaFile,
            file_name: "0123456789abcdef.png".into(),
            content_type: Some("image/png".into()),
            storage_schema_version: Some(1),
            db_size: 10,
        }];
        if thumb {
            files.push(CandidateFile {
                attachment: Attachment::MediaThumbnail,
                file_name: "fedcba9876543210.jpeg".into(),
                content_type: Some("image/jpeg".into()),
                storage_schema_version: None,
                db_size: 5,
            });
        }
        CandidateRow {
            table: RowTable::MediaAttachments,
            id,
            attached_to_status: false,
            files,
            expected_names: vec![],
        }
    }

    #[test]
    fn local_rows_have_no_cache_prefix_and_roles_follow_the_styles() {
        let row = media(109_345_678_901_234_567, true);
        let remote = expected_keys(&row, true, &KeyPrefix::default());
        let local = expected_keys(&row, false, &KeyPrefix::default());
        let roles: Vec<Role> = remote.iter().map(|k| k.role).collect();
        assert_eq!(roles, [Role::Original, Role::Style, Role::Thumbnail]);
        assert_eq!(
            remote[0].key.as_str(),
            "cache/media_attachments/files/109/345/678/901/234/567/original/0123456789abcdef.png"
        );
        assert_eq!(
            local[0].key.as_str(),
            "media_attachments/files/109/345/678/901/234/567/original/0123456789abcdef.png"
        );
        // The thumbnail has schema version NULL: no cache/ even when remote.
        assert!(
            remote[2]
                .key
                .as_str()
                .starts_with("media_attachments/thumbnails/")
        );
        // Same keys as prune's for a remote row.
        let prune: Vec<ObjectKey> = crate::plan::prune::row_keys(&row, &KeyPrefix::default());
        let ours: Vec<ObjectKey> = remote.into_iter().map(|k| k.key).collect();
        assert_eq!(prune, ours);
    }

    #[test]
    fn missing_tells_original_style_and_thumbnail_apart() {
        let keys = expected_keys(&media(1, true), true, &KeyPrefix::default());
        let cases = [
            ([true, true, true], (false, false, false, 0)),
            ([false, true, true], (true, false, false, 1)),
            ([false, false, true], (true, false, false, 2)),
            ([true, false, true], (false, true, false, 1)),
            ([true, true, false], (false, false, true, 1)),
        ];
        for (present, (original, style, thumb, n)) in cases {
            let m = missing(&keys, &present);
            assert_eq!(
                (m.original, m.style_only, m.thumbnail, m.keys.len()),
                (original, style, thumb, n),
                "{present:?}"
            );
        }
    }

    #[test]
    fn the_refusal_needs_many_and_most() {
        assert!(!too_much_missing(10, 10));
        assert!(!too_much_missing(100, 40));
        assert!(too_much_missing(100, 51));
        assert!(!too_much_missing(100, 50));
        assert!(too_much_missing(30, 21));
    }
}
