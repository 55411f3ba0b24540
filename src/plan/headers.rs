//! The headers an object must carry to look as if Mastodon wrote it (`mastodon-storage.md`
//! §6, provider-quirks M3, A3): Content-Type from the bytes (magic numbers) else the
//! extension, never empty or `binary/octet-stream` for media; Mastodon's ten-year
//! immutable Cache-Control; the ACL from `S3_PERMISSION`, except backups and imports,
//! which stay private, and objects Mastodon (or an admin) made private, which stay private
//! unless the database says their owner and post are in good standing ([`decide_acl`]).

pub use crate::model::Standing;

/// Mastodon's `Cache-Control` for every uploaded file (about ten years, immutable).
pub const CACHE_CONTROL: &str = "public, max-age=315576000, immutable";

/// The Content-Type of an object from its first bytes (`head`, 64 bytes are plenty) and
/// its key's extension (case-insensitive). Magic numbers win; then the extension; then
/// `application/octet-stream` for files Mastodon does not serve as media.
pub fn content_type(key: &str, head: &[u8]) -> String {
    if let Some(t) = infer::get(head) {
        let mime = t.mime_type();
        // infer calls ISO-BMFF audio "video/mp4" only by brand; keep its answer, but map the
        // generic zip family (docx etc. are not Mastodon files) to application/zip.
        if mime.starts_with("application/vnd.openxmlformats") {
            return "application/zip".to_owned();
        }
        return mime.to_owned();
    }
    let ext = key.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    if let Some(ext) = ext.as_deref() {
        if let Some(t) = match ext {
            // Types Mastodon serves whose registry answers vary between systems.
            "ico" => Some("image/vnd.microsoft.icon"),
            "csv" => Some("text/csv"),
            "mp3" => Some("audio/mpeg"),
            "m4a" => Some("audio/mp4"),
            "oga" | "ogg" | "opus" => Some("audio/ogg"),
            _ => None,
        } {
            return t.to_owned();
        }
        if let Some(m) = mime_guess::from_ext(ext).first() {
            return m.essence_str().to_owned();
        }
    }
    "application/octet-stream".to_owned()
}

/// The canned ACL for `key` (without `S3_KEY_PREFIX`): `permission` (`S3_PERMISSION`,
/// `None` when set but empty = send no ACL), except `backups/` and `imports/`, which are
/// private (or carry no ACL when `permission` is `None`).
pub fn acl_for(key: &str, permission: Option<&str>) -> Option<String> {
    let private = key.starts_with("backups/") || key.starts_with("imports/");
    match permission {
        None => None,
        Some(_) if private => Some("private".to_owned()),
        Some(p) => Some(p.to_owned()),
    }
}

/// The canned ACL an object at `key` (without `S3_KEY_PREFIX`) must carry, given whether
/// it is public now (`public_now`: at the source of a copy, from the source ACL or the
/// file mode; in place for `--repair`) and what the database says (`standing`; `None`
/// when no database is consulted). `None` = send no ACL (`S3_PERMISSION` set but empty).
///
/// Rules, in order: no ACL when `permission` is `None`; backups and imports private;
/// keys outside Mastodon's layout (`in_layout` false) keep their current privacy; hidden
/// rows private; public objects `permission`; private objects become `permission` only
/// when the database vouches for the row ([`Standing::Good`]), otherwise stay private.
/// Without a database a private object is therefore never widened.
pub fn decide_acl(
    key: &str,
    in_layout: bool,
    permission: Option<&str>,
    public_now: bool,
    standing: Option<Standing>,
) -> Option<String> {
    let permission = permission?;
    let public = Some(permission.to_owned());
    let private = Some("private".to_owned());
    if acl_for(key, Some(permission)).as_deref() == Some("private") {
        return private;
    }
    if !in_layout {
        return if public_now { public } else { private };
    }
    match (standing, public_now) {
        (Some(Standing::Hidden), _) => private,
        (_, true) | (Some(Standing::Good), false) => public,
        (_, false) => private,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_numbers_win_over_extensions() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(content_type("a/b/file.jpg", png), "image/png");
        let jpeg = b"\xff\xd8\xff\xe0\0\x10JFIF\0";
        assert_eq!(content_type("x/original/f", jpeg), "image/jpeg");
        let gif = b"GIF89a\x01\0\x01\0";
        assert_eq!(content_type("x.bin", gif), "image/gif");
        let mp4 = b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom";
        assert_eq!(content_type("x.mp4", mp4), "video/mp4");
        let webp = b"RIFF\x24\0\0\0WEBPVP8 ";
        assert_eq!(content_type("x", webp), "image/webp");
    }

    #[test]
    fn extensions_when_the_bytes_say_nothing() {
        let cases = [
            ("imports/data/000/000/001/original/follows.csv", "text/csv"),
            (
                "site_uploads/files/000/000/001/ico/f.ico",
                "image/vnd.microsoft.icon",
            ),
            ("a/b.PNG", "image/png"),
            ("a/b.mp3", "audio/mpeg"),
            ("a/b.webm", "video/webm"),
            ("a/b.svg", "image/svg+xml"),
            ("robots.txt", "text/plain"),
            ("a/no_extension", "application/octet-stream"),
        ];
        for (key, want) in cases {
            assert_eq!(content_type(key, b""), want, "{key}");
        }
    }

    #[test]
    fn backups_and_imports_stay_private() {
        assert_eq!(
            acl_for(
                "backups/dumps/000/000/001/original/a.zip",
                Some("public-read")
            )
            .as_deref(),
            Some("private")
        );
        assert_eq!(
            acl_for(
                "imports/data/000/000/001/original/a.csv",
                Some("public-read")
            )
            .as_deref(),
            Some("private")
        );
        assert_eq!(
            acl_for("media_attachments/files/x", Some("public-read")).as_deref(),
            Some("public-read")
        );
        assert_eq!(acl_for("backups/x", None), None);
        assert_eq!(acl_for("media_attachments/x", None), None);
    }

    #[test]
    fn private_objects_stay_private_unless_the_database_vouches() {
        use Standing::*;
        let media = "media_attachments/files/000/000/005/original/a.png";
        let p = Some("public-read");
        type Case<'a> = (&'a str, bool, bool, Option<Standing>, Option<&'a str>);
        let cases: [Case<'_>; 14] = [
            // outside the layout: the current privacy, whatever the database says
            (
                "private-notes/secret.txt",
                false,
                false,
                None,
                Some("private"),
            ),
            ("db-dump.sql.gz", false, false, Some(Good), Some("private")),
            ("robots.txt", false, true, None, Some("public-read")),
            // in the layout, no database: never widened
            (media, true, false, None, Some("private")),
            (media, true, true, None, Some("public-read")),
            // with a database
            (media, true, false, Some(Good), Some("public-read")),
            (media, true, false, Some(NoRow), Some("private")),
            (media, true, false, Some(Hidden), Some("private")),
            (media, true, true, Some(Hidden), Some("private")),
            (media, true, true, Some(NoRow), Some("public-read")),
            // backups and imports: always private
            (
                "backups/dumps/000/000/001/original/a.zip",
                true,
                true,
                Some(Good),
                Some("private"),
            ),
            (
                "imports/data/000/000/001/original/a.csv",
                true,
                true,
                None,
                Some("private"),
            ),
            ("backups/loose.zip", false, true, None, Some("private")),
            (media, true, true, Some(Good), Some("public-read")),
        ];
        for (key, in_layout, public_now, standing, want) in cases {
            assert_eq!(
                decide_acl(key, in_layout, p, public_now, standing).as_deref(),
                want,
                "{key} layout={in_layout} public={public_now} {standing:?}"
            );
        }
        assert_eq!(decide_acl(media, true, None, false, Some(Good)), None);
    }
}
