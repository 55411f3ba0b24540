//! Pure decisions: the key layout ([`layout`]), the prune policy ([`prune`]) and its domain
//! filters ([`domain`]), the listing prefixes and listing ranges that size a batch of keys
//! ([`partition`], [`ranges`]) and migrate's journal diff, verify and
//! repair decisions ([`migrate`]). Nothing here touches tokio, sqlx or the AWS SDK;
//! everything is table-tested inline.

pub mod budget;
pub mod domain;
pub mod headers;
pub mod layout;
pub mod migrate;
pub mod orphans;
pub mod ownership;
pub mod parse;
pub mod partition;
pub mod prune;
pub mod ranges;
pub mod reconcile;
