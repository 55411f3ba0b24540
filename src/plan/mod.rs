//! Pure decisions: the key layout ([`layout`]) and the prune policy ([`prune`]). Nothing
//! here touches tokio, sqlx or the AWS SDK; everything is table-tested inline.

pub mod headers;
pub mod layout;
pub mod migrate;
pub mod orphans;
pub mod ownership;
pub mod parse;
pub mod prune;
