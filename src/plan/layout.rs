//! Paperclip's key layout, as Mastodon 4.2–4.6 writes it: pure functions from a row's
//! attachment columns to the exact object keys (or paths below `PAPERCLIP_ROOT_PATH`) it owns.
//!
//! Template (see `mastodon-storage.md` §3):
//! `[S3_KEY_PREFIX "/"] [cache/] <class>/<attachment>/<id_partition>/<style>/<filename>`.
//! Nothing here performs I/O; everything is covered by table tests with the documented
//! worked examples.

pub use crate::model::{Attachment, KeyPrefix, ObjectKey};

/// A style of an attachment: its directory name and, when Paperclip converts it, the output
/// format (file extension) of the stored variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Directory segment (`original`, `small`, `static`, `@1x`, ...).
    pub name: &'static str,
    /// Output extension, `None` to keep the stored extension.
    pub format: Option<&'static str>,
}

const fn style(name: &'static str, format: Option<&'static str>) -> Style {
    Style { name, format }
}

const ORIGINAL: Style = style("original", None);
const APP_ICON_SIZES: [&str; 18] = [
    "36", "48", "57", "60", "72", "76", "96", "114", "120", "144", "152", "167", "180", "192",
    "256", "384", "512", "1024",
];

/// The styles stored for an attachment (§3.6). `original` always comes first; the stored
/// name is used for it whatever its format.
///
/// - `content_type`: the row's `<att>_content_type` (media styles and GIF avatars depend on it).
/// - `site_upload_var`: `site_uploads.var` (`thumbnail`, `favicon`, `app_icon`, `mascot`, ...).
pub fn styles(
    attachment: Attachment,
    content_type: Option<&str>,
    site_upload_var: Option<&str>,
) -> Vec<Style> {
    let ct = content_type.unwrap_or("").trim().to_ascii_lowercase();
    match attachment {
        Attachment::MediaFile => match ct.as_str() {
            "image/gif" | "video/webm" | "video/quicktime" | "video/mp4" | "video/ogg" => {
                vec![ORIGINAL, style("small", Some("png"))]
            }
            "image/heic" | "image/heif" | "image/avif" => {
                vec![ORIGINAL, style("small", Some("jpeg"))]
            }
            "image/jpeg" | "image/png" | "image/webp" => vec![ORIGINAL, style("small", None)],
            _ => vec![ORIGINAL],
        },
        Attachment::Avatar | Attachment::Header => {
            if ct == "image/gif" {
                vec![ORIGINAL, style("static", Some("png"))]
            } else {
                vec![ORIGINAL]
            }
        }
        Attachment::EmojiImage => vec![ORIGINAL, style("static", Some("png"))],
        Attachment::SiteUploadFile => {
            let mut v = vec![ORIGINAL];
            match site_upload_var.unwrap_or("") {
                "thumbnail" => {
                    v.push(style("@1x", Some("png")));
                    v.push(style("@2x", Some("png")));
                }
                "favicon" => {
                    v.push(style("ico", Some("ico")));
                    v.extend(["16", "32", "48"].map(|s| style(s, Some("png"))));
                }
                "app_icon" => v.extend(APP_ICON_SIZES.map(|s| style(s, Some("png")))),
                _ => {}
            }
            v
        }
        Attachment::MediaThumbnail
        | Attachment::PreviewCardImage
        | Attachment::BackupDump
        | Attachment::ImportData
        | Attachment::ProviderIcon => vec![ORIGINAL],
    }
}

/// Paperclip's `id_partition` (§3.4): ids of up to 9 digits are zero-padded to 9, longer
/// ones to 12; the digits are cut into groups of three from the left and a final group
/// shorter than three is dropped. `1` → `000/000/001`; an 18-digit snowflake gives six groups.
pub fn id_partition(id: i64) -> String {
    let digits = id.unsigned_abs().to_string();
    let padded = if digits.len() <= 9 {
        format!("{digits:0>9}")
    } else {
        format!("{digits:0>12}")
    };
    let groups: Vec<&str> = padded
        .as_bytes()
        .chunks(3)
        .filter(|c| c.len() == 3)
        .map(|c| std::str::from_utf8(c).expect("ascii digits"))
        .collect();
    groups.join("/")
}

/// The file name of a style (§3.5): `original` keeps the stored name; other styles take the
/// stored basename plus the style's format, or the stored extension when it has none.
pub fn style_file_name(stored: &str, style: Style) -> String {
    if style.name == "original" {
        return stored.to_owned();
    }
    let (base, ext) = match stored.rfind('.') {
        Some(i) if i > 0 => (&stored[..i], &stored[i + 1..]),
        _ => (stored, ""),
    };
    let ext = style.format.unwrap_or(ext);
    if ext.is_empty() {
        base.to_owned()
    } else {
        format!("{base}.{ext}")
    }
}

/// One stored attachment of one row: everything the key layout depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAttachment<'a> {
    /// Which slot.
    pub attachment: Attachment,
    /// The row's `id`.
    pub id: i64,
    /// `<att>_file_name` (non-empty).
    pub file_name: &'a str,
    /// `<att>_content_type`.
    pub content_type: Option<&'a str>,
    /// `<att>_storage_schema_version`; `None` when NULL or the column does not exist.
    pub storage_schema_version: Option<i32>,
    /// Whether the record is remote, decided from the database (media `remote_url <> ''`,
    /// accounts and emoji `domain IS NOT NULL`, preview cards always).
    pub remote: bool,
    /// `site_uploads.var`, for site uploads only.
    pub site_upload_var: Option<&'a str>,
}

impl StoredAttachment<'_> {
    /// Whether the keys start with `cache/` (§3.2): schema version ≥ 1 on this row and
    /// attachment, and a remote record. Site uploads, backups, imports and provider icons
    /// are never remote.
    pub fn cached(&self) -> bool {
        let can_be_remote = !matches!(
            self.attachment,
            Attachment::SiteUploadFile
                | Attachment::BackupDump
                | Attachment::ImportData
                | Attachment::ProviderIcon
        );
        can_be_remote && self.remote && self.storage_schema_version.unwrap_or(0) >= 1
    }

    /// Every key of this attachment, one per style, `original` first.
    pub fn keys(&self, prefix: &KeyPrefix) -> Vec<ObjectKey> {
        let cache = if self.cached() { "cache/" } else { "" };
        let partition = id_partition(self.id);
        styles(self.attachment, self.content_type, self.site_upload_var)
            .into_iter()
            .map(|s| {
                prefix.apply(format!(
                    "{cache}{}/{}/{partition}/{}/{}",
                    self.attachment.class(),
                    self.attachment.segment(),
                    s.name,
                    style_file_name(self.file_name, s)
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_partitions_match_the_documented_table() {
        let cases: [(i64, &str); 9] = [
            (1, "000/000/001"),
            (4242, "000/004/242"),
            (123456789, "123/456/789"),
            (1000000000, "001/000/000/000"),
            (99999999999, "099/999/999/999"),
            (1234567890123, "123/456/789/012"),
            (99999999999999999, "999/999/999/999/999"),
            (109345678901234567, "109/345/678/901/234/567"),
            (111677748019200000, "111/677/748/019/200/000"),
        ];
        for (id, want) in cases {
            assert_eq!(id_partition(id), want, "id {id}");
        }
    }

    fn media<'a>(
        name: &'a str,
        ct: &'a str,
        version: Option<i32>,
        remote: bool,
    ) -> StoredAttachment<'a> {
        StoredAttachment {
            attachment: Attachment::MediaFile,
            id: 109345678901234567,
            file_name: name,
            content_type: Some(ct),
            storage_schema_version: version,
            remote,
            site_upload_var: None,
        }
    }

    fn keys(a: &StoredAttachment<'_>) -> Vec<String> {
        a.keys(&KeyPrefix::default())
            .into_iter()
            .map(|k| k.as_str().to_owned())
            .collect()
    }

    #[test]
    fn worked_keys_from_the_reference() {
        let p = "109/345/678/901/234/567";
        let cases: Vec<(StoredAttachment<'_>, Vec<String>)> = vec![
            (
                media("8f3a2b1c4d5e6f70.png", "image/png", Some(1), true),
                vec![
                    format!("cache/media_attachments/files/{p}/original/8f3a2b1c4d5e6f70.png"),
                    format!("cache/media_attachments/files/{p}/small/8f3a2b1c4d5e6f70.png"),
                ],
            ),
            (
                media("8f3a2b1c4d5e6f70.png", "image/png", None, true),
                vec![
                    format!("media_attachments/files/{p}/original/8f3a2b1c4d5e6f70.png"),
                    format!("media_attachments/files/{p}/small/8f3a2b1c4d5e6f70.png"),
                ],
            ),
            (
                media("0a1b2c3d4e5f6071.mp4", "video/mp4", Some(1), true),
                vec![
                    format!("cache/media_attachments/files/{p}/original/0a1b2c3d4e5f6071.mp4"),
                    format!("cache/media_attachments/files/{p}/small/0a1b2c3d4e5f6071.png"),
                ],
            ),
            (
                media("0a1b2c3d4e5f6071.jpeg", "image/jpeg", Some(1), false),
                vec![
                    format!("media_attachments/files/{p}/original/0a1b2c3d4e5f6071.jpeg"),
                    format!("media_attachments/files/{p}/small/0a1b2c3d4e5f6071.jpeg"),
                ],
            ),
            (
                StoredAttachment {
                    attachment: Attachment::MediaThumbnail,
                    file_name: "1122334455667788.jpeg",
                    content_type: Some("image/jpeg"),
                    ..media("", "", None, true)
                },
                vec![format!(
                    "media_attachments/thumbnails/{p}/original/1122334455667788.jpeg"
                )],
            ),
            (
                StoredAttachment {
                    attachment: Attachment::MediaThumbnail,
                    file_name: "1122334455667788.jpeg",
                    content_type: Some("image/jpeg"),
                    ..media("", "", Some(1), true)
                },
                vec![format!(
                    "cache/media_attachments/thumbnails/{p}/original/1122334455667788.jpeg"
                )],
            ),
            (
                StoredAttachment {
                    attachment: Attachment::Avatar,
                    id: 123456789,
                    file_name: "aaaaaaaaaaaaaaaa.gif",
                    content_type: Some("image/gif"),
                    storage_schema_version: Some(1),
                    remote: true,
                    site_upload_var: None,
                },
                vec![
                    "cache/accounts/avatars/123/456/789/original/aaaaaaaaaaaaaaaa.gif".into(),
                    "cache/accounts/avatars/123/456/789/static/aaaaaaaaaaaaaaaa.png".into(),
                ],
            ),
            (
                StoredAttachment {
                    attachment: Attachment::EmojiImage,
                    id: 1,
                    file_name: "bbbbbbbbbbbbbbbb.png",
                    content_type: Some("image/png"),
                    storage_schema_version: Some(1),
                    remote: true,
                    site_upload_var: None,
                },
                vec![
                    "cache/custom_emojis/images/000/000/001/original/bbbbbbbbbbbbbbbb.png".into(),
                    "cache/custom_emojis/images/000/000/001/static/bbbbbbbbbbbbbbbb.png".into(),
                ],
            ),
            (
                StoredAttachment {
                    attachment: Attachment::PreviewCardImage,
                    id: 4242,
                    file_name: "cccccccccccccccc.jpg",
                    content_type: Some("image/jpeg"),
                    storage_schema_version: Some(1),
                    remote: true,
                    site_upload_var: None,
                },
                vec!["cache/preview_cards/images/000/004/242/original/cccccccccccccccc.jpg".into()],
            ),
            (
                StoredAttachment {
                    attachment: Attachment::SiteUploadFile,
                    id: 3,
                    file_name: "dddddddddddddddd.png",
                    content_type: Some("image/png"),
                    storage_schema_version: Some(1),
                    remote: true, // ignored: site uploads are never cached
                    site_upload_var: Some("thumbnail"),
                },
                vec![
                    "site_uploads/files/000/000/003/original/dddddddddddddddd.png".into(),
                    "site_uploads/files/000/000/003/@1x/dddddddddddddddd.png".into(),
                    "site_uploads/files/000/000/003/@2x/dddddddddddddddd.png".into(),
                ],
            ),
        ];
        for (att, want) in cases {
            assert_eq!(keys(&att), want, "{att:?}");
        }
    }

    #[test]
    fn styles_follow_the_stored_content_type() {
        let p = "109/345/678/901/234/567";
        let gif = media("1111111111111111.gif", "image/gif", Some(1), true);
        assert_eq!(
            keys(&gif)[1],
            format!("cache/media_attachments/files/{p}/small/1111111111111111.png")
        );
        let heic = media("2222222222222222.heic", "image/heic", Some(1), true);
        assert_eq!(
            keys(&heic)[1],
            format!("cache/media_attachments/files/{p}/small/2222222222222222.jpeg")
        );
        let audio = media("3333333333333333.mp3", "audio/mpeg", Some(1), true);
        assert_eq!(keys(&audio).len(), 1, "audio has only the original");
        let webp = media("4444444444444444.webp", "image/webp", Some(1), true);
        assert_eq!(
            keys(&webp)[1],
            format!("cache/media_attachments/files/{p}/small/4444444444444444.webp")
        );
        let still_avatar = StoredAttachment {
            attachment: Attachment::Header,
            content_type: Some("image/png"),
            ..media("5555555555555555.png", "", Some(1), true)
        };
        assert_eq!(
            keys(&still_avatar).len(),
            1,
            "a PNG header has no static style"
        );
    }

    #[test]
    fn local_records_and_never_remote_classes_have_no_cache_prefix() {
        let local = media("8f3a2b1c4d5e6f70.png", "image/png", Some(1), false);
        assert!(!local.cached());
        for att in [
            Attachment::SiteUploadFile,
            Attachment::BackupDump,
            Attachment::ImportData,
            Attachment::ProviderIcon,
        ] {
            let a = StoredAttachment {
                attachment: att,
                ..media("x.png", "image/png", Some(1), true)
            };
            assert!(!a.cached(), "{att:?}");
        }
    }

    #[test]
    fn site_upload_styles_by_var() {
        let su = |var| StoredAttachment {
            attachment: Attachment::SiteUploadFile,
            id: 7,
            file_name: "eeeeeeeeeeeeeeee.png",
            content_type: Some("image/png"),
            storage_schema_version: None,
            remote: false,
            site_upload_var: Some(var),
        };
        assert_eq!(keys(&su("mascot")).len(), 1);
        let fav = keys(&su("favicon"));
        assert_eq!(fav.len(), 5);
        assert_eq!(
            fav[1],
            "site_uploads/files/000/000/007/ico/eeeeeeeeeeeeeeee.ico"
        );
        assert_eq!(
            fav[2],
            "site_uploads/files/000/000/007/16/eeeeeeeeeeeeeeee.png"
        );
        assert_eq!(keys(&su("app_icon")).len(), 19);
    }

    #[test]
    fn seventeen_digit_ids_share_a_partition() {
        let a = media("aaaaaaaaaaaaaaaa.png", "image/png", Some(1), true);
        let b = StoredAttachment {
            id: 99999999999999998,
            ..a.clone()
        };
        let c = StoredAttachment {
            id: 99999999999999999,
            ..a
        };
        assert_eq!(id_partition(b.id), id_partition(c.id));
        assert_eq!(
            keys(&c)[0],
            "cache/media_attachments/files/999/999/999/999/999/original/aaaaaaaaaaaaaaaa.png"
        );
    }

    #[test]
    fn key_prefix_is_normalised_and_joined_with_one_slash() {
        let card = StoredAttachment {
            attachment: Attachment::PreviewCardImage,
            id: 4242,
            file_name: "cccccccccccccccc.jpg",
            content_type: Some("image/jpeg"),
            storage_schema_version: Some(1),
            remote: true,
            site_upload_var: None,
        };
        for raw in ["social", "social/", "/social/", " social"] {
            let k = card.keys(&KeyPrefix::new(Some(raw)));
            assert_eq!(
                k[0].as_str(),
                "social/cache/preview_cards/images/000/004/242/original/cccccccccccccccc.jpg",
                "{raw:?}"
            );
        }
        assert_eq!(KeyPrefix::new(Some("/")), KeyPrefix::default());
        assert_eq!(KeyPrefix::new(Some("")), KeyPrefix::default());
    }

    #[test]
    fn style_names_without_extension() {
        assert_eq!(style_file_name("abc", style("small", None)), "abc");
        assert_eq!(
            style_file_name("abc", style("small", Some("png"))),
            "abc.png"
        );
        assert_eq!(
            style_file_name("a.b.gif", style("static", Some("png"))),
            "a.b.png"
        );
        assert_eq!(style_file_name("a.b.gif", ORIGINAL), "a.b.gif");
    }
}
