//! Shared nouns every layer may name (they import nothing of the crate).

pub mod check;
