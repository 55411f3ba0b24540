//! [`Standing`]: what Mastodon's database says of the row behind a key, for the ACL decision
//! of `migrate` (`src/plan/headers.rs` `decide_acl`; `src/mastodon/suspended.rs` reads it).

/// What Mastodon's database says about the row a key in its layout belongs to, for the
/// ACL decision (provider-quirks A3, `mastodon-storage.md` §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// A row with this id exists, its attachment is stored, its account is not suspended
    /// and (for media) its status is not deleted or removed by a moderator.
    Good,
    /// Mastodon hides it: the account is suspended (`accounts.suspended_at`), or the media
    /// belongs to a status that is deleted or was removed by a moderator
    /// (`statuses.deleted_at`; 4.4+ makes such media inaccessible). Also the answer when
    /// the database could not be asked (conservative).
    Hidden,
    /// No row in the key's partition stores this attachment: nothing vouches for it.
    NoRow,
}
