//! The rows prune works on: [`RowTable`] (a table prune writes to), [`CandidateRow`] (one
//! selected row) and [`CandidateFile`] (one of its stored attachments). `src/inventory/mod.rs`
//! selects them; `src/plan/prune.rs` derives their keys; `src/mastodon/update.rs` clears them.

use super::Attachment;

/// The tables prune writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowTable {
    /// `media_attachments` (remote rows only: `remote_url <> ''`).
    MediaAttachments,
    /// `accounts` (remote rows only: `domain IS NOT NULL`).
    Accounts,
    /// `preview_cards` (always remote).
    PreviewCards,
}

impl RowTable {
    /// The table name.
    pub fn name(self) -> &'static str {
        match self {
            RowTable::MediaAttachments => "media_attachments",
            RowTable::Accounts => "accounts",
            RowTable::PreviewCards => "preview_cards",
        }
    }
}

/// One stored attachment of a candidate row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateFile {
    /// Which slot.
    pub attachment: Attachment,
    /// `<att>_file_name` (non-blank).
    pub file_name: String,
    /// `<att>_content_type`.
    pub content_type: Option<String>,
    /// `<att>_storage_schema_version` (`None`: NULL or no such column).
    pub storage_schema_version: Option<i32>,
    /// `<att>_file_size` as the database has it (0 when NULL), bytes.
    pub db_size: i64,
}

/// One candidate row: its stored files and the file names the clear must still find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateRow {
    /// The table.
    pub table: RowTable,
    /// Primary key.
    pub id: i64,
    /// Media only: attached to a status or scheduled status (comes back via the media proxy).
    pub attached_to_status: bool,
    /// Non-blank attachments, whose keys are deleted.
    pub files: Vec<CandidateFile>,
    /// `<att>_file_name` per clear group of the selection, as selected.
    pub expected_names: Vec<Option<String>>,
}
