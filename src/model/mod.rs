//! The shared nouns every layer names: object keys and the key prefix, attachment slots,
//! the rows prune works on, a row's standing, secrets, and doctor's findings ([`check`]).
//!
//! Owns: plain data types with their formatting and trivial accessors. Must not: import any
//! other module of the crate, do I/O, or hold a decision (those live in `plan/`). Every other
//! module may import it; `scripts/check-layers.py` keeps it at the bottom of the layer order.

mod attachment;
pub mod check;
mod job;
mod key;
mod row;
mod secret;
mod standing;

pub use attachment::Attachment;
pub use job::{JobKey, Shard, ShardError, key_hash};
pub use key::{KeyPrefix, ObjectKey};
pub use row::{CandidateFile, CandidateRow, RowTable};
pub use secret::{Secret, without_userinfo};
pub use standing::Standing;
