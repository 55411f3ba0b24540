//! What Mastodon's database says about keys `migrate` handles: whether a row still names
//! a key missing from the bucket (`--reupload-missing`, `--verify` with `--database`), and
//! the standing that may widen a private object's ACL (copies with `--database`,
//! `--repair --repair-acl`; docs/ARCHITECTURE.md invariant 10). Read-only; the decisions
//! are `plan::migrate::still_named` and `plan::migrate::vouched`.

use std::collections::HashSet;

use super::owners::Owners;
use crate::mastodon::{Db, DbError};
use crate::model::{KeyPrefix, Standing};
use crate::plan::migrate::{still_named as names_it, vouched};
use crate::plan::orphans::{classify, row_names};
use crate::plan::parse::{ParsedKey, parse_key};

/// Of `keys` (without `S3_KEY_PREFIX`), those a row of Mastodon's database still names: the
/// row's exact key, a variant of it, or a shared partition where a neighbour may (as
/// `orphans` decides, `plan::orphans::classify`). Keys outside the layout, or of tables
/// this database cannot answer for, are kept (the database cannot say they are not owed).
/// A key of a local row that now stores another file (a replaced avatar) is not named.
/// One owner lookup per 500 keys. Errors: a query.
pub async fn still_named(db: &Db, keys: &[&str]) -> Result<HashSet<String>, DbError> {
    let prefix = KeyPrefix::default();
    let mut named = HashSet::new();
    for chunk in keys.chunks(500) {
        let mut parsed = Vec::new();
        for k in chunk {
            match parse_key(k, &prefix) {
                Ok(p) => parsed.push((*k, p)),
                Err(_) => {
                    named.insert((*k).to_owned());
                }
            }
        }
        let only: Vec<_> = parsed.iter().map(|(_, p)| p.clone()).collect();
        let owners = Owners::lookup(db, &only).await?;
        for (k, p) in &parsed {
            let candidates = owners.candidates(p);
            if names_it(&classify(k, p, candidates.as_deref(), &prefix)) {
                named.insert((*k).to_owned());
            }
        }
    }
    Ok(named)
}

/// [`Db::standing`] of the rows in `key`'s partition, where [`Standing::Good`] also needs a
/// row that names this very file (`plan::orphans::row_names`, `plan::migrate::vouched`): a
/// row in the same folder (another file name, a neighbour in a shared 13–17-digit
/// partition) never vouches for publishing a private object. `key` is without
/// `S3_KEY_PREFIX`. Errors: a query.
pub async fn vouched_standing(
    db: &Db,
    key: &str,
    parsed: &ParsedKey<'_>,
) -> Result<Standing, DbError> {
    let s = db.standing(parsed.attachment, &parsed.id_ranges()).await?;
    if s != Standing::Good {
        return Ok(s);
    }
    let owners = Owners::lookup(db, std::slice::from_ref(parsed)).await?;
    let named = owners
        .candidates(parsed)
        .is_some_and(|c| row_names(key, parsed, &c, &KeyPrefix::default()));
    Ok(vouched(s, named))
}

/// [`vouched_standing`], or [`Standing::Hidden`] (keep private) without a database or when
/// it cannot answer (with a warning).
pub async fn standing_or_hidden(db: Option<&Db>, key: &str, parsed: &ParsedKey<'_>) -> Standing {
    let Some(db) = db else {
        return Standing::Hidden;
    };
    vouched_standing(db, key, parsed).await.unwrap_or_else(|e| {
        tracing::warn!("{e}: left private");
        Standing::Hidden
    })
}
