//! [`Attachment`]: one Paperclip attachment slot of one Mastodon model (the `<class>/<attachment>`
//! pair of a key and the `<name>_*` column group of a row). `src/plan/layout.rs` derives the
//! styles and keys of each slot.

/// One Paperclip attachment slot of one Mastodon model: the `<class>/<attachment>` pair of
/// the key and the `<name>_*` column group on the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Attachment {
    /// `media_attachments.file` (`media_attachments/files`).
    MediaFile,
    /// `media_attachments.thumbnail` (`media_attachments/thumbnails`), the custom poster.
    MediaThumbnail,
    /// `accounts.avatar` (`accounts/avatars`).
    Avatar,
    /// `accounts.header` (`accounts/headers`).
    Header,
    /// `preview_cards.image` (`preview_cards/images`).
    PreviewCardImage,
    /// `custom_emojis.image` (`custom_emojis/images`).
    EmojiImage,
    /// `site_uploads.file` (`site_uploads/files`); styles depend on the row's `var`.
    SiteUploadFile,
    /// `backups.dump` (`backups/dumps`).
    BackupDump,
    /// `imports.data` (`imports/data`).
    ImportData,
    /// `preview_card_providers.icon` (`preview_card_providers/icons`).
    ProviderIcon,
}

impl Attachment {
    /// Every attachment slot, in a stable order.
    pub const ALL: [Attachment; 10] = [
        Attachment::MediaFile,
        Attachment::MediaThumbnail,
        Attachment::Avatar,
        Attachment::Header,
        Attachment::PreviewCardImage,
        Attachment::EmojiImage,
        Attachment::SiteUploadFile,
        Attachment::BackupDump,
        Attachment::ImportData,
        Attachment::ProviderIcon,
    ];

    /// The `<class>` key segment (the model's table name).
    pub fn class(self) -> &'static str {
        match self {
            Attachment::MediaFile | Attachment::MediaThumbnail => "media_attachments",
            Attachment::Avatar | Attachment::Header => "accounts",
            Attachment::PreviewCardImage => "preview_cards",
            Attachment::EmojiImage => "custom_emojis",
            Attachment::SiteUploadFile => "site_uploads",
            Attachment::BackupDump => "backups",
            Attachment::ImportData => "imports",
            Attachment::ProviderIcon => "preview_card_providers",
        }
    }

    /// The `<attachment>` key segment (the pluralised attachment name).
    pub fn segment(self) -> &'static str {
        match self {
            Attachment::MediaFile | Attachment::SiteUploadFile => "files",
            Attachment::MediaThumbnail => "thumbnails",
            Attachment::Avatar => "avatars",
            Attachment::Header => "headers",
            Attachment::PreviewCardImage | Attachment::EmojiImage => "images",
            Attachment::BackupDump => "dumps",
            Attachment::ImportData => "data",
            Attachment::ProviderIcon => "icons",
        }
    }

    /// The column group prefix on the row (`file`, `thumbnail`, `avatar`, ...).
    pub fn column(self) -> &'static str {
        match self {
            Attachment::MediaFile | Attachment::SiteUploadFile => "file",
            Attachment::MediaThumbnail => "thumbnail",
            Attachment::Avatar => "avatar",
            Attachment::Header => "header",
            Attachment::PreviewCardImage | Attachment::EmojiImage => "image",
            Attachment::BackupDump => "dump",
            Attachment::ImportData => "data",
            Attachment::ProviderIcon => "icon",
        }
    }
}
