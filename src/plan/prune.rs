//! Prune policy: which keys a candidate row owns, which retention applies, and whether a
//! row may be cleared given what happened to its keys.

use chrono::{DateTime, Duration, Utc};

use super::layout::{KeyPrefix, ObjectKey, StoredAttachment};
use crate::model::CandidateRow;

/// Every key a candidate row owns: all styles of all its stored attachments, for a remote
/// record (candidates are remote by selection). Exact keys only, never a prefix.
pub fn row_keys(row: &CandidateRow, prefix: &KeyPrefix) -> Vec<ObjectKey> {
    row.files
        .iter()
        .flat_map(|f| {
            StoredAttachment {
                attachment: f.attachment,
                id: row.id,
                file_name: &f.file_name,
                content_type: f.content_type.as_deref(),
                storage_schema_version: f.storage_schema_version,
                remote: true,
                site_upload_var: None,
            }
            .keys(prefix)
        })
        .collect()
}

/// Where the retention window came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DaysSource {
    /// `--days` on the command line.
    Flag,
    /// The instance's "media cache retention period" setting.
    InstanceSetting,
    /// Neither: tootctl's default of 7 days.
    Default,
}

impl std::fmt::Display for DaysSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DaysSource::Flag => "--days",
            DaysSource::InstanceSetting => "the instance's media cache retention period",
            DaysSource::Default => "the default (no --days, no retention setting)",
        })
    }
}

/// Default retention when neither `--days` nor the setting gives one, as `tootctl media remove`.
pub const DEFAULT_MEDIA_DAYS: u32 = 7;
/// Default preview card retention, as `tootctl preview_cards remove`.
pub const DEFAULT_PREVIEW_CARD_DAYS: u32 = 180;
/// Below this, preview cards are not re-fetched for links shared again (Mastodon re-fetches
/// a card only after two weeks), so we refuse without `--force`.
pub const MIN_PREVIEW_CARD_DAYS: u32 = 14;

/// Longest retention honoured, in days (100 years); longer values are clamped to it.
pub const MAX_DAYS: u32 = 36_500;

/// `--days`, else the instance setting (a positive integer), else [`DEFAULT_MEDIA_DAYS`];
/// clamped to [`MAX_DAYS`].
pub fn effective_days(flag: Option<u32>, setting: Option<i64>) -> (u32, DaysSource) {
    match (flag, setting) {
        (Some(d), _) => (d.min(MAX_DAYS), DaysSource::Flag),
        (None, Some(s)) if s > 0 => (
            u32::try_from(s).unwrap_or(MAX_DAYS).min(MAX_DAYS),
            DaysSource::InstanceSetting,
        ),
        _ => (DEFAULT_MEDIA_DAYS, DaysSource::Default),
    }
}

/// `now - days` (days beyond [`MAX_DAYS`] count as [`MAX_DAYS`]).
pub fn cutoff(now: DateTime<Utc>, days: u32) -> DateTime<Utc> {
    now - Duration::days(i64::from(days.min(MAX_DAYS)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CandidateFile, RowTable};
    use crate::plan::layout::Attachment;

    #[test]
    fn days_precedence() {
        assert_eq!(effective_days(Some(3), Some(30)), (3, DaysSource::Flag));
        assert_eq!(
            effective_days(None, Some(30)),
            (30, DaysSource::InstanceSetting)
        );
        assert_eq!(effective_days(None, None), (7, DaysSource::Default));
        assert_eq!(effective_days(None, Some(0)), (7, DaysSource::Default));
        assert_eq!(
            effective_days(None, Some(99_999_999)),
            (MAX_DAYS, DaysSource::InstanceSetting),
            "a huge setting is clamped, never a panic"
        );
        let _ = cutoff(Utc::now(), u32::MAX);
    }

    #[test]
    fn a_media_row_owns_file_styles_and_thumbnail() {
        let row = CandidateRow {
            table: RowTable::MediaAttachments,
            id: 109345678901234567,
            attached_to_status: true,
            files: vec![
                CandidateFile {
                    attachment: Attachment::MediaFile,
                    file_name: "0a1b2c3d4e5f6071.mp4".into(),
                    content_type: Some("video/mp4".into()),
                    storage_schema_version: Some(1),
                    db_size: 10,
                },
                CandidateFile {
                    attachment: Attachment::MediaThumbnail,
                    file_name: "1122334455667788.jpeg".into(),
                    content_type: Some("image/jpeg".into()),
                    storage_schema_version: None,
                    db_size: 5,
                },
            ],
            expected_names: vec![],
        };
        let keys: Vec<String> = row_keys(&row, &KeyPrefix::default())
            .into_iter()
            .map(|k| k.to_string())
            .collect();
        let p = "109/345/678/901/234/567";
        assert_eq!(
            keys,
            [
                format!("cache/media_attachments/files/{p}/original/0a1b2c3d4e5f6071.mp4"),
                format!("cache/media_attachments/files/{p}/small/0a1b2c3d4e5f6071.png"),
                format!("media_attachments/thumbnails/{p}/original/1122334455667788.jpeg"),
            ]
        );
    }
}
